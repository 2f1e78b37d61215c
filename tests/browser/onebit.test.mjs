// 1-bit weights in the page (issue 15, first part): sign binarization and OneBit (SVID) are in
// the method menu, each says which paper it follows, and each evaluates in the page to the CLI's
// perplexity and effective bits on the same text and settings. CPU path, a small evaluation.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { BIN, MODEL, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, setQuant, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 1;
// The same Rust code on the same tokens, compiled to wasm and natively: only float summation
// order differs (the RTN comparisons in playground.test.mjs use the same bound).
const PPL_REL_TOL = 1e-4;

let page;
let close;

before(async () => {
  ({ page, close } = await openPage(`?backend=cpu#ql=1&ctx=${CTX}&win=${WINDOWS}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
});

function cli(method, model = MODEL) {
  const out = execFileSync(BIN, ['eval', '--model', model, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--method', method, '--bits', '1', '--no-kl', '--json'],
  { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop());
}

for (const [method, want, paper] of [['sign', '"method":"sign"', /XNOR-Net/], ['onebit', '"onebit":{"fit":0}', /arXiv 2402\.11295/]]) {
  test(`${method}: 1 bit in the page equals the CLI's perplexity and effective bits`, { timeout: RUN_TIMEOUT_MS }, async () => {
    const prev = await page.getAttribute('#result', 'data-run');
    await setQuant(page, method, 1);
    // Only 1 bit is offered, and no group size (the scales are per row and column).
    assert.deepEqual(await page.$eval('#bits', (e) => [e.min, e.max, e.value]), ['1', '1', '1']);
    assert.ok(await page.$eval('#gran', (e) => e.disabled), 'the group size is offered');
    const r = await waitForResult(page, prev, want);
    const c = cli(method);
    console.log(`# ${method}: page ppl ${r.ppl}, ${r.bpw} bits/weight; CLI ppl ${c.ppl}, ${c.bits_per_weight}`);
    assert.ok(Math.abs(r.ppl - c.ppl) <= PPL_REL_TOL * c.ppl, `page ${r.ppl} vs CLI ${c.ppl}`);
    assert.ok(Math.abs(r.bpw - c.bits_per_weight) <= 1e-9, `page ${r.bpw} vs CLI ${c.bits_per_weight}`);
    assert.ok(r.bpw > 1 && r.bpw < 1.1, `${r.bpw} bits per weight`);
    await page.waitForFunction((re) => new RegExp(re).test(document.getElementById('method-explainer').textContent), paper.source);
    const shots = path.join(ROOT, 'out', 'screenshots');
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, `15-${method}.png`) });
  });
}

// OneBit's WGSL fragment (shaders/fmt_onebit.wgsl) in the browser: the page on WebGPU
// (SwiftShader) against the native CPU backend, on the tiny Llama of the fixtures: the fragment
// decodes the same way at any size, and the default model costs SwiftShader over a minute to
// upload and run.
const GPU_PPL_REL_TOL = 1e-3; // as webgpu.test.mjs: f32 kernels summing in another order

test('onebit on WebGPU in the page equals the CPU backend', { timeout: RUN_TIMEOUT_MS }, async () => {
  const tiny = await servedTinyLlama();
  let gpu;
  try {
    const c = cli('onebit', tiny.modelDir);
    // The CLI's share link opens the page on OneBit at once: the page's first (automatic)
    // evaluation is the one compared.
    gpu = await openPage(`?backend=gpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}&q=${c.config}`);
    const r = await waitForResult(gpu.page, '0', '"onebit"');
    console.log(`# onebit: WebGPU ppl ${r.ppl} (${r.backend}), CPU ppl ${c.ppl}`);
    assert.equal(r.backend, 'gpu');
    assert.ok(Math.abs(r.ppl - c.ppl) <= GPU_PPL_REL_TOL * c.ppl, `WebGPU ${r.ppl} vs CPU ${c.ppl}`);
    assert.equal(r.bpw, c.bits_per_weight);
  } finally {
    await gpu?.close();
    await tiny.close();
  }
});
