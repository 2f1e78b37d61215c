// Shared set-up of the browser tests: the CLI's `quantlab serve` on a free loopback port, Debian's
// headless Chromium (driven by playwright-core, which never downloads a browser) with a fresh
// profile, the page loaded with the default model, and a wait for the next result.
// QUANTLAB_BIN overrides the CLI binary, CHROMIUM the browser.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
export const BIN = process.env.QUANTLAB_BIN ?? path.join(TARGET, 'release', 'quantlab');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
export const TEXT = 'www/texts/prose.txt';
const LOAD_TIMEOUT_MS = 5 * 60_000;
export const RUN_TIMEOUT_MS = 15 * 60_000;

// Flags: quiet networking (this machine has no outside network, and Chromium would keep
// trying), WebGPU allowed on the bundled SwiftShader (so no --disable-gpu).
const CHROMIUM_ARGS = [
  '--headless=new',
  '--enable-unsafe-webgpu',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  // Extra flags for other machines (e.g. Vulkan WebGPU on a GPU host), space-separated.
  ...(process.env.CHROMIUM_EXTRA_ARGS ?? '').split(' ').filter(Boolean),
];

function requireFile(file, hint) {
  if (!existsSync(file)) throw new Error(`${file} is missing: ${hint}`);
}

// Start `quantlab serve --port PORT` (0: a free one) on `root` and read the URL it prints.
export function startServer(root = ROOT, port = 0) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '--port', String(port), '--root', root], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`quantlab serve printed no URL: ${out}`)), 30_000);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`quantlab serve exited with ${code}: ${out}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+\//);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[0] });
      }
    });
  });
}

// Serve the repository, open the page at `query` (e.g. '?backend=cpu') and wait for the model.
// `webgpu: false` starts Chromium without --enable-unsafe-webgpu: on Linux it then offers
// `navigator.gpu` but no adapter, as a browser without WebGPU support would.
// `root` serves another directory (a copy of the page). Returns {page, log, close, url,
// stopServer}; `stopServer()` ends the server but keeps the browser (offline tests).
export async function openPage(query = '', { webgpu = true, root = ROOT } = {}) {
  requireFile(path.join(ROOT, MODEL), 'run scripts/fetch-model.sh');
  requireFile(BIN, 'build the CLI: cargo build --release (or set QUANTLAB_BIN)');
  requireFile(path.join(ROOT, 'www/pkg/quantlab_bg.wasm'), 'run scripts/build-web.sh');
  requireFile(CHROMIUM, 'install Debian chromium (scripts/ci-setup.sh)');
  let { child: server, url } = await startServer(root);
  const profile = mkdtempSync(path.join(tmpdir(), 'quantlab-chromium-'));
  const log = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: webgpu ? CHROMIUM_ARGS : CHROMIUM_ARGS.filter((a) => a !== '--enable-unsafe-webgpu'),
    viewport: { width: 1280, height: 720 },
  });
  const stopServer = () => new Promise((resolve) => {
    if (server.exitCode !== null || server.signalCode !== null) return resolve();
    server.removeAllListeners('exit');
    server.once('exit', () => resolve());
    server.kill();
  });
  // Serve again on the same port (the same origin, so the same caches and service worker).
  const restartServer = async () => {
    await stopServer();
    ({ child: server } = await startServer(root, Number(new URL(url).port)));
  };
  const close = async () => {
    if (log.length) console.log(`# page console:\n${log.map((l) => `#   ${l}`).join('\n')}`);
    await context.close();
    await stopServer();
    rmSync(profile, { recursive: true, force: true });
  };
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  // The wasm lives in a worker: its console (e.g. a Rust panic's message) goes to the log too.
  page.on('worker', (w) => w.on('console', (m) => log.push(`[worker ${m.type()}] ${m.text()}`)));
  const t0 = Date.now();
  await page.goto(url + query);
  await page.waitForSelector('#model-status[data-state="ready"], #model-status[data-state="error"]',
    { timeout: LOAD_TIMEOUT_MS });
  const state = await page.getAttribute('#model-status', 'data-state');
  if (state !== 'ready') {
    const error = await page.textContent('#error');
    await close();
    throw new Error(`model did not load: ${error}`);
  }
  console.log(`# model downloaded and loaded in the page${query} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { page, log, close, url, stopServer, restartServer };
}

// Wait until the result panel shows a run newer than `prevRun` (that matches `want`, a
// substring of the run's quant config), or fail with the page's error message.
export async function waitForResult(page, prevRun, want = '') {
  await page.waitForFunction(([prev, w]) => {
    const r = document.getElementById('result');
    return r.dataset.state === 'error'
      || (r.dataset.state === 'done' && r.dataset.run !== prev && (r.dataset.config ?? '').includes(w));
  }, [prevRun, want], { timeout: RUN_TIMEOUT_MS, polling: 250 });
  const state = await page.getAttribute('#result', 'data-state');
  if (state === 'error') throw new Error(`page error: ${await page.textContent('#error')}`);
  const num = async (sel) => Number(await page.getAttribute(sel, 'data-value'));
  return {
    run: await page.getAttribute('#result', 'data-run'),
    ppl: await num('#ppl'),
    bpw: await num('#bpw'),
    memory: await num('#memory'),
    kl: await page.getAttribute('#kl', 'data-value'),
    top1: await page.getAttribute('#top1', 'data-value'),
    protocol: await page.textContent('#protocol-desc'),
    backend: await page.getAttribute('#backend', 'data-value'),
    gpuMemory: await page.getAttribute('#gpu-memory', 'data-value'),
  };
}

// Choose a method ('none' = as loaded) and, for a quantizer, the bits slider's value; the page
// re-runs by itself after its debounce.
export async function setQuant(page, method, bits) {
  await page.selectOption('#method', method);
  if (bits !== undefined) {
    await page.$eval('#bits', (e, b) => {
      e.value = String(b);
      e.dispatchEvent(new Event('input', { bubbles: true }));
      e.dispatchEvent(new Event('change', { bubbles: true }));
    }, bits);
  }
}

// The `want` substring of data-config for `method` at `bits` (its JSON starts with these keys).
export const configOf = (method, bits) => `"method":"${method}","default":{"bits":${bits}`;

// Open another page of the same browser at `url` and wait for its model (not for a first run:
// a link the page refuses starts none; callers that need the run wait for it).
export async function openSibling(page, url) {
  const other = await page.context().newPage();
  await other.goto(url);
  await other.waitForSelector('#model-status[data-state="ready"], #model-status[data-state="error"]', { timeout: LOAD_TIMEOUT_MS });
  return other;
}

// QuantLab's own link encoding (`q=`) of config `cfg`, made by the wasm module in `page`.
export const linkOf = (page, cfg) => page.evaluate(async (c) => {
  const m = await import(new URL('www/pkg/quantlab.js', document.baseURI).href);
  await m.default();
  return m.quantToLink(c);
}, cfg);
