// BinaryMoS lite training on WebGPU in the page (issue 15: "lite, also in the browser on
// WebGPU"): with `?backend=gpu` (SwiftShader here) the worker quantizes through
// `setQuantAsync`, which trains every tensor on the GPU (src/gpu/mos_train.rs) and reports each
// tensor's losses once it is trained. Each tensor's loss falls, and the model evaluates to the
// perplexity the native CLI gives for the same configuration on the CPU.
//
// The model is fixture.mjs's tiny Llama, served by the local Hub and written to a folder for the
// CLI.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 2;
// Calibration, in the page and for the CLI: small, for time (SwiftShader calibrates in software).
const CALIB_N = 4;
const CALIB_LEN = 64;
// Few steps per linear: SwiftShader runs the ~20 dispatches of a step in software (50 steps, the
// default, took 122 s here; 5 steps 30 s).
const STEPS = 3;
const CONFIG = {
  version: 1, method: { binarymos: { experts: 4, steps: STEPS, lr: 0.01 } },
  default: { bits: 1, gran: 'per_row', sym: true, clip_search: false }, overrides: [],
};
// WebGPU (SwiftShader) against the native CPU: calibration on the GPU sums in another order and
// the GPU's training sums in f32 where the CPU's loss is f64; tests/gpu_mos_train.rs measures
// the training's share at 8e-5 of PPL on the same model, and binary.test.mjs holds the GPU path
// to the same 1e-3.
const GPU_PPL_REL_TOL = 1e-3;

let page;
let close;
let tiny;

before(async () => {
  tiny = await servedTinyLlama();
  const read = (n) => readFileSync(path.join(ROOT, 'www/texts', `${n}.txt`), 'utf8');
  writeFileSync(path.join(tiny.root, 'calib.txt'), `${read('dialogue')}\n\n${read('code')}`);
});

after(async () => {
  await close?.();
  await tiny?.close();
});

function cliRun(config) {
  const args = ['eval', '--model', tiny.modelDir, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--config', config, '--no-kl', '--json',
    '--calib-text', path.join(tiny.root, 'calib.txt'), '--calib-n', String(CALIB_N), '--calib-len', String(CALIB_LEN)];
  const out = execFileSync(BIN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out.trim().split('\n').pop());
}

test('BinaryMoS trains on WebGPU in the page: every tensor\'s loss falls, and the PPL is the CLI\'s', { timeout: RUN_TIMEOUT_MS }, async () => {
  // The configuration as a link (`q=v1.` and its JSON in URL-safe base64: src/web.rs's
  // quantToLink), opened on WebGPU.
  const q = `v1.${Buffer.from(JSON.stringify(CONFIG)).toString('base64url')}`;
  const t0 = Date.now();
  ({ page, close } = await openPage(`?backend=gpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}&calib=${CALIB_N}x${CALIB_LEN}&q=${q}`));
  const r = await waitForResult(page, '0', '"binarymos"');
  await page.waitForSelector('#train-status[data-done="true"]');
  assert.equal(r.backend, 'gpu');
  const t = await page.evaluate(() => self.quantlabCharts.training);
  // 2 blocks of 7 linears, each trained from SVID's start: every final loss below its start.
  assert.equal(t.tensors.length, 14, JSON.stringify(t.tensors.map((x) => x.name)));
  assert.ok(t.tensors.every((x) => x.ratio > 0 && x.ratio < 1), JSON.stringify(t.tensors));
  const config = await page.getAttribute('#result', 'data-config');
  const cli = cliRun(config);
  const rel = Math.abs(r.ppl - cli.ppl) / cli.ppl;
  console.log(`# BinaryMoS trained on WebGPU in ${((Date.now() - t0) / 1000).toFixed(1)} s: ppl ${r.ppl}, CLI (CPU) ${cli.ppl}, rel ${rel.toExponential(2)}; ${await page.textContent('#train-status')}`);
  assert.ok(rel <= GPU_PPL_REL_TOL, `WebGPU ${r.ppl} vs CLI ${cli.ppl}`);
  assert.equal(r.bpw, cli.bits_per_weight);
});
