// The page under faults (issue "Hardening", item 3), on WebGPU (SwiftShader, see harness.mjs):
//  - the WebGPU device lost in the middle of an evaluation (the page is opened with
//    ?test-hooks=1, whose `quantlabTest.loseDevice({afterWindow: 1})` makes the worker destroy the
//    device, as a driver reset would lose it, once the run has reported its first window): the
//    page says so, reloads the model onto a new device with its configuration, restarts the run
//    and ends with the undisturbed result (the native CLI on the CPU, within the WebGPU-vs-CPU
//    tolerance);
//  - the same when no GPU can be had again (the hook's `gpuAgain: false`): the page falls back
//    to the CPU and says so;
//  - a model too large for the page's WebAssembly memory (4 GiB) is refused before its bytes
//    are copied in, from the server's Content-Length and, for a small GGUF whose header declares
//    a huge tensor, from the header in Rust; the error names the file, the size and the limit,
//    and the previous model stays loaded and usable.
// The model is fixture.mjs's tiny Llama, served by the local Hub and written to a folder for the
// CLI: recovery does not depend on the model's size, and each window of the real model takes tens
// of seconds on SwiftShader.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
// Two windows: the device is lost after the first, so the second fails (fewer would leave nothing
// to interrupt).
const WINDOWS = 2;
// GPU vs CPU perplexity, relative: as webgpu.test.mjs (f32 kernels summing in another order).
const PPL_REL_TOL = 1e-3;
const HUGE_GGUF = '/files/huge-tensor.gguf';
const HUGE_CLAIM = '/files/five-gib.gguf';
const FIVE_GIB = 5 * 2 ** 30;

let page;
let close;
let tiny; // servedTinyLlama(): the checkpoint for the page and the CLI
let server; // its local Hub, which also serves the oversized files

const cli = (args) => execFileSync(BIN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

// The undisturbed result: the native CLI on the CPU with the page's configuration.
function cpuPpl(configJson) {
  const config = JSON.parse(configJson);
  const args = ['eval', '--backend', 'cpu', '--model', tiny.modelDir, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--json'];
  if (config.method !== 'none') args.push('--config', configJson);
  return JSON.parse(cli(args).trim().split('\n').pop()).ppl;
}

// A GGUF of 120-odd bytes whose header declares one f32 tensor of 65536 × 16384 (4 GiB).
function hugeTensorGguf() {
  const u32 = (x) => { const b = Buffer.alloc(4); b.writeUInt32LE(x); return b; };
  const u64 = (x) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(x)); return b; };
  const name = Buffer.from('token_embd.weight');
  const head = Buffer.concat([Buffer.from('GGUF'), u32(3), u64(1), u64(0),
    u64(name.length), name, u32(2), u64(16384), u64(65536), u32(0), u64(0)]);
  return Buffer.concat([head, Buffer.alloc(32 - (head.length % 32) + 64)]);
}

// What a user set up: the model card, the configuration (controls and link) and the runs table.
const snapshot = () => page.evaluate(() => {
  const v = (id) => document.getElementById(id)?.value ?? null;
  return {
    card: document.getElementById('model-card').textContent,
    controls: ['method', 'bits', 'gran', 'sym', 'clip', 'protocol', 'ctx', 'windows', 'text-select'].map(v),
    hash: location.hash,
    runs: [...document.querySelectorAll('#history tbody tr')].map((r) => r.textContent),
  };
});

before(async () => {
  tiny = await servedTinyLlama();
  ({ server } = tiny);
  server.addRoute(HUGE_GGUF, hugeTensorGguf());
  server.claimRoute(HUGE_CLAIM, FIVE_GIB);
  ({ page, close } = await openPage(`?backend=gpu&test-hooks=1&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await tiny?.close();
});

test('a WebGPU device lost mid-evaluation: recovered on a new device, model, configuration and result intact', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.waitForSelector('#engine-note[data-backend]');
  assert.equal(await page.getAttribute('#engine-note', 'data-backend'), 'gpu', await page.textContent('#engine-note'));
  const before = await snapshot();
  const config = await page.getAttribute('#result', 'data-config');
  const prev = await page.getAttribute('#result', 'data-run');
  await page.evaluate(() => self.quantlabTest.loseDevice({ afterWindow: 1 }));
  await page.click('#evaluate');
  const r = await waitForResult(page, prev);

  const note = await page.textContent('#engine-note');
  assert.equal(await page.getAttribute('#engine-note', 'data-recovered'), 'gpu', note);
  assert.equal(await page.getAttribute('#engine-note', 'data-backend'), 'gpu', note);
  assert.match(note, /WebGPU device was lost \(.+\) and recovered on a new device/, note);
  assert.match(note, /model, its quantization and calibration were kept/, note);
  assert.equal(r.backend, 'gpu', 'the restarted run ran on the new device');
  assert.equal(await page.getAttribute('#result', 'data-config'), config);

  const now = await snapshot();
  assert.equal(now.card, before.card, 'the model card changed');
  assert.deepEqual(now.controls, before.controls, 'the configuration changed');
  assert.equal(now.hash, before.hash, 'the link changed');
  assert.equal(now.runs.length, before.runs.length + 1, 'the runs table lost or skipped a row');

  const cpu = cpuPpl(config);
  const rel = Math.abs(r.ppl - cpu) / cpu;
  console.log(`# lost device, recovered: WebGPU ppl ${r.ppl}, undisturbed (CPU) ${cpu}, rel ${rel.toExponential(2)}; config ${config}`);
  assert.ok(rel <= PPL_REL_TOL, `recovered ${r.ppl} vs undisturbed ${cpu}: relative difference ${rel} > ${PPL_REL_TOL}`);

  const shots = path.join(ROOT, 'out', 'screenshots');
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, 'faults-recovered.png'), fullPage: true });
});

test('a WebGPU device lost with no GPU to be had again: the run finishes on the CPU, which the page says', { timeout: RUN_TIMEOUT_MS }, async () => {
  const before = await snapshot();
  const config = await page.getAttribute('#result', 'data-config');
  const prev = await page.getAttribute('#result', 'data-run');
  await page.evaluate(() => self.quantlabTest.loseDevice({ gpuAgain: false, afterWindow: 1 }));
  await page.click('#evaluate');
  const r = await waitForResult(page, prev);
  const note = await page.textContent('#engine-note');
  assert.equal(await page.getAttribute('#engine-note', 'data-recovered'), 'cpu', note);
  assert.equal(await page.getAttribute('#engine-note', 'data-backend'), 'cpu', note);
  assert.match(note, /no GPU could be had again .*running on the CPU now/, note);
  assert.equal(r.backend, 'cpu');
  const now = await snapshot();
  assert.equal(now.card, before.card);
  assert.deepEqual(now.controls, before.controls);
  assert.equal(now.runs.length, before.runs.length + 1);
  const cpu = cpuPpl(config);
  const rel = Math.abs(r.ppl - cpu) / cpu;
  console.log(`# lost device, CPU fallback: ppl ${r.ppl}, native CPU ${cpu}, rel ${rel.toExponential(2)}`);
  assert.ok(rel <= PPL_REL_TOL, `fallback ${r.ppl} vs ${cpu}`);
});

test('a model too large for wasm memory is refused before it is copied in; the previous model stays usable', { timeout: RUN_TIMEOUT_MS }, async () => {
  const card = await page.textContent('#model-card');
  for (const [file, want] of [
    // The server says 5 GiB: refused from Content-Length, before the body is read.
    [HUGE_CLAIM, /five-gib\.gguf is 5\.00 GiB, more than the 2\.00 GiB a model may take in this page \(its WebAssembly memory holds at most 4\.00 GiB/],
    // A small file whose header declares a 4 GiB tensor: refused by the GGUF reader in Rust.
    [HUGE_GGUF, /huge-tensor\.gguf: tensors: .*declares 4294967296 bytes \(4\.00 GiB\) of tensors, more than the 2\.00 GiB .*WebAssembly memory holds at most 4 GiB/],
  ]) {
    const loads = Number(await page.getAttribute('#model-status', 'data-loads'));
    const from = server.log.length;
    await page.fill('#model-url', `${server.url}${file}`);
    await page.click('#model-url-load');
    await page.waitForFunction((n) => {
      const s = document.getElementById('model-status');
      return Number(s.dataset.loads) > n || s.dataset.failed === 'true';
    }, loads, { timeout: RUN_TIMEOUT_MS, polling: 100 });
    assert.equal(await page.getAttribute('#model-status', 'data-failed'), 'true', `${file} loaded`);
    const err = await page.textContent('#error');
    console.log(`# ${file}: ${err}`);
    assert.match(err, want);
    assert.match(await page.textContent('#model-status'), /still using/);
    assert.equal(await page.textContent('#model-card'), card);
    assert.ok(server.log.slice(from).some((x) => x.path === file), `${file} was not asked for`);
  }
  // The previous model still evaluates (one window, on the CPU since the last test).
  await page.selectOption('#windows', '1');
  const prev = await page.getAttribute('#result', 'data-run');
  await page.click('#evaluate');
  const r = await waitForResult(page, prev);
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `perplexity ${r.ppl}`);
});
