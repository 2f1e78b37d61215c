// End-to-end tests of the playground page's CPU path (`?backend=cpu`) in Debian's headless
// Chromium (see harness.mjs): the WebAssembly CPU backend against the native CLI, quantization,
// and cancellation. webgpu.test.mjs covers the page on WebGPU.
//
// Run from the repository root after ./scripts/build-web.sh and a release build of the CLI:
//   (cd tests/browser && npm ci && npm test)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { BIN, MODEL, ROOT, RUN_TIMEOUT_MS, TEXT, configOf, openPage, setQuant, waitForResult as waitOn } from './harness.mjs';

// Small enough for a 2-core CI machine: 2 windows of 128 tokens (llama.cpp protocol).
const CTX = 128;
const WINDOWS = 2;
// The browser (wasm) and the CLI (native) run the same Rust code; they may differ only by
// float rounding in differently vectorised loops.
const PPL_REL_TOL = 1e-4;
// 3-bit RTN must move the perplexity by more than this (relative) to count as a change.
const MIN_REL_CHANGE = 1e-3;

let page;
let close;
let asLoaded; // {ppl, bpw, memory} from the first test
const waitForResult = (prev, want) => waitOn(page, prev, want);

before(async () => {
  ({ page, close } = await openPage('?backend=cpu'));
});

after(async () => {
  await close?.();
});

test('the page is cross-origin isolated, sees WebGPU and shows an honest model card', async () => {
  assert.equal(await page.evaluate(() => self.crossOriginIsolated), true, 'COOP/COEP headers missing');
  await page.waitForSelector('#webgpu[data-available]');
  assert.equal(await page.getAttribute('#webgpu', 'data-available'), 'true', 'no WebGPU adapter');
  const card = await page.textContent('#model-card');
  assert.match(card, /llama/);
  assert.match(card, /Q4_1/);
  assert.match(await page.textContent('#model-note'), /already quantized/);
  await page.waitForSelector('#engine-note[data-backend]');
  assert.equal(await page.getAttribute('#engine-note', 'data-backend'), 'cpu');
  assert.match(await page.textContent('#engine-note'), /on the CPU/);
});

test('perplexity in the browser equals the CLI on the same text and settings', { timeout: RUN_TIMEOUT_MS }, async () => {
  await setQuant(page, 'none');
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
  assert.equal(web.backend, 'cpu', 'the result does not say it ran on the CPU');

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
  await setQuant(page, 'rtn', 3); // re-runs by itself after a short debounce
  const q = await waitForResult(prev, configOf('rtn', 3));
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
  // Evaluate measures even a configuration measured before (a scheduled run would recall it).
  await setQuant(page, 'none');
  await page.click('#evaluate');
  await page.waitForFunction(() => /^Run #\d+: Evaluat(ing window|ed) [1-4] of 4/.test(document.getElementById('eval-status').textContent),
    null, { timeout: RUN_TIMEOUT_MS, polling: 50 });
  await setQuant(page, 'rtn', 4);
  const q = await waitForResult(prev, configOf('rtn', 4));
  const after = Number(await page.getAttribute('#result', 'data-cancelled') ?? 0);
  assert.ok(after > before, `the overtaken run was not cancelled (${before} -> ${after})`);
  assert.ok((await page.getAttribute('#result', 'data-config')).includes(configOf('rtn', 4)));
  assert.ok(Number.isFinite(q.ppl), `perplexity ${q.ppl}`);
});
