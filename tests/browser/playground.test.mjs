// End-to-end tests of the playground page in Debian's headless Chromium, driven by
// playwright-core (which never downloads a browser). Each run starts its own `quantlab serve`
// on a free loopback port and a browser with a fresh profile.
//
// Run from the repository root after ./scripts/build-web.sh and a release build of the CLI:
//   (cd tests/browser && npm ci && npm test)
// QUANTLAB_BIN overrides the CLI binary, CHROMIUM the browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
const BIN = process.env.QUANTLAB_BIN ?? path.join(TARGET, 'release', 'quantlab');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const TEXT = 'www/texts/prose.txt';

// Small enough for a 2-core CI machine: 2 windows of 128 tokens (llama.cpp protocol).
const CTX = 128;
const WINDOWS = 2;
// The browser (wasm) and the CLI (native) run the same Rust code; they may differ only by
// float rounding in differently vectorised loops.
const PPL_REL_TOL = 1e-4;
// 3-bit RTN must move the perplexity by more than this (relative) to count as a change.
const MIN_REL_CHANGE = 1e-3;
const LOAD_TIMEOUT_MS = 5 * 60_000;
const RUN_TIMEOUT_MS = 15 * 60_000;

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
];

let server;
let context;
let page;
let url;
let profile;
const pageLog = [];
let asLoaded; // {ppl, bpw, memory} from the first test

function requireFile(file, hint) {
  if (!existsSync(file)) throw new Error(`${file} is missing: ${hint}`);
}

// Start `quantlab serve --port 0` and read the URL it prints.
function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '--port', '0', '--root', ROOT], { stdio: ['ignore', 'pipe', 'inherit'] });
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

// Wait until the result panel shows a run newer than `prevRun` (that matches `want`, a
// substring of the run's quant config), or fail with the page's error message.
async function waitForResult(prevRun, want = '') {
  await page.waitForFunction(([prev, w]) => {
    const r = document.getElementById('result');
    return r.dataset.state === 'error'
      || (r.dataset.state === 'done' && r.dataset.run !== prev && (r.dataset.config ?? '').includes(w));
  }, [prevRun, want], { timeout: RUN_TIMEOUT_MS, polling: 250 });
  const state = await page.getAttribute('#result', 'data-state');
  if (state === 'error') throw new Error(`page error: ${await page.textContent('#error')}`);
  return {
    run: await page.getAttribute('#result', 'data-run'),
    ppl: Number(await page.getAttribute('#ppl', 'data-value')),
    bpw: Number(await page.getAttribute('#bpw', 'data-value')),
    memory: Number(await page.getAttribute('#memory', 'data-value')),
    kl: await page.getAttribute('#kl', 'data-value'),
    top1: await page.getAttribute('#top1', 'data-value'),
    protocol: await page.textContent('#protocol-desc'),
  };
}

before(async () => {
  requireFile(path.join(ROOT, MODEL), 'run scripts/fetch-model.sh');
  requireFile(BIN, 'build the CLI: cargo build --release (or set QUANTLAB_BIN)');
  requireFile(path.join(ROOT, 'www/pkg/quantlab_bg.wasm'), 'run scripts/build-web.sh');
  requireFile(CHROMIUM, 'install Debian chromium (scripts/ci-setup.sh)');
  ({ child: server, url } = await startServer());
  profile = mkdtempSync(path.join(tmpdir(), 'quantlab-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 720 },
  });
  page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => pageLog.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => pageLog.push(`[pageerror] ${e.message}`));
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForSelector('#model-status[data-state="ready"], #model-status[data-state="error"]',
    { timeout: LOAD_TIMEOUT_MS });
  const state = await page.getAttribute('#model-status', 'data-state');
  if (state !== 'ready') throw new Error(`model did not load: ${await page.textContent('#error')}`);
  console.log(`# model downloaded and loaded in the page in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

after(async () => {
  if (pageLog.length) console.log(`# page console:\n${pageLog.map((l) => `#   ${l}`).join('\n')}`);
  await context?.close();
  server?.removeAllListeners('exit');
  server?.kill();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test('the page is cross-origin isolated, sees WebGPU and shows an honest model card', async () => {
  assert.equal(await page.evaluate(() => self.crossOriginIsolated), true, 'COOP/COEP headers missing');
  await page.waitForSelector('#webgpu[data-available]');
  assert.equal(await page.getAttribute('#webgpu', 'data-available'), 'true', 'no WebGPU adapter');
  const card = await page.textContent('#model-card');
  assert.match(card, /llama/);
  assert.match(card, /Q4_1/);
  assert.match(await page.textContent('#model-note'), /already quantized/);
});

test('perplexity in the browser equals the CLI on the same text and settings', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.selectOption('#bits', 'loaded');
  await page.selectOption('#text-select', 'prose');
  await page.selectOption('#protocol', 'llamacpp');
  await page.selectOption('#ctx', String(CTX));
  await page.selectOption('#windows', String(WINDOWS));
  const prev = await page.getAttribute('#result', 'data-run');
  const t0 = Date.now();
  await page.click('#evaluate');
  const web = await waitForResult(prev, '"method":"none"');
  const webSeconds = (Date.now() - t0) / 1000;
  assert.ok(Number.isFinite(web.ppl) && web.ppl > 1, `browser perplexity ${web.ppl}`);
  assert.ok(web.protocol.length > 0, 'no protocol description next to the number');

  const t1 = Date.now();
  const out = execFileSync(BIN, ['eval', '--model', MODEL, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const cliSeconds = (Date.now() - t1) / 1000;
  const cli = JSON.parse(out.trim().split('\n').pop());
  console.log(`# browser ppl ${web.ppl} (${webSeconds.toFixed(1)} s), CLI ppl ${cli.ppl} (${cliSeconds.toFixed(1)} s)`);
  const rel = Math.abs(web.ppl - cli.ppl) / cli.ppl;
  assert.ok(rel <= PPL_REL_TOL, `browser ${web.ppl} vs CLI ${cli.ppl}: relative difference ${rel} > ${PPL_REL_TOL}`);
  asLoaded = web;
});

test('3-bit RTN changes perplexity, bits per weight and memory', { timeout: RUN_TIMEOUT_MS }, async () => {
  if (!asLoaded) {
    // Run on its own: measure the weights as loaded first.
    await page.selectOption('#ctx', String(CTX));
    await page.selectOption('#windows', String(WINDOWS));
    const prev = await page.getAttribute('#result', 'data-run');
    await page.click('#evaluate');
    asLoaded = await waitForResult(prev, '"method":"none"');
  }
  const prev = await page.getAttribute('#result', 'data-run');
  const t0 = Date.now();
  await page.selectOption('#bits', '3'); // re-runs by itself after a short debounce
  const q = await waitForResult(prev, '"bits":3');
  console.log(`# 3-bit ppl ${q.ppl}, KL ${q.kl}, top-1 ${q.top1}, ${q.bpw} bits/weight (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const rel = Math.abs(q.ppl - asLoaded.ppl) / asLoaded.ppl;
  assert.ok(rel > MIN_REL_CHANGE, `3-bit perplexity ${q.ppl} hardly differs from ${asLoaded.ppl}`);
  assert.ok(Number.isFinite(q.bpw) && q.bpw !== asLoaded.bpw, `bits per weight ${q.bpw} vs ${asLoaded.bpw}`);
  assert.ok(Number.isFinite(q.memory) && q.memory !== asLoaded.memory, `memory ${q.memory} vs ${asLoaded.memory}`);
  assert.ok(Number(q.kl) > 0, `KL ${q.kl}`);
  assert.ok(Number(q.top1) > 0 && Number(q.top1) <= 1, `top-1 ${q.top1}`);

  const shots = path.join(ROOT, 'out', 'screenshots');
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, 'playground.png') });
});

test('a newer setting cancels a running evaluation between windows', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.selectOption('#ctx', String(CTX));
  await page.selectOption('#windows', '4');
  const before = Number(await page.getAttribute('#result', 'data-cancelled') ?? 0);
  const prev = await page.getAttribute('#result', 'data-run');
  await page.selectOption('#bits', 'loaded'); // starts a 4-window run after the debounce
  await page.waitForFunction(() => /^Window 1 of 4/.test(document.getElementById('eval-status').textContent),
    null, { timeout: RUN_TIMEOUT_MS, polling: 50 });
  await page.selectOption('#bits', '4');
  const q = await waitForResult(prev, '"bits":4');
  const after = Number(await page.getAttribute('#result', 'data-cancelled') ?? 0);
  assert.ok(after > before, `the overtaken run was not cancelled (${before} -> ${after})`);
  assert.match(await page.getAttribute('#result', 'data-config'), /"bits":4/);
  assert.ok(Number.isFinite(q.ppl), `perplexity ${q.ppl}`);
});
