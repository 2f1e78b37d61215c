// Calibration on WebGPU in the page (headless Chromium's SwiftShader; see harness.mjs): the
// statistics of shaders/gram.wgsl + gram_reduce.wgsl (src/gpu/calib.rs), computed by the wasm
// module on the GPU, against its CPU path (src/quant/calib.rs, the reference) on the same tokens;
// then GPTQ through the page, whose calibration must run on the GPU. The native counterpart is
// tests/gpu_calib.rs (lavapipe), which compares them on the real model. Here the model is the
// tiny Llama checkpoint transformers saved (tests/fixtures/tiny/llama), served by the local Hub
// mock: SwiftShader is a CPU implementation of Vulkan, and the real model's 30 layers of
// statistics took ~10 minutes of CI there, for the same kernels.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, TEXT, openPage, waitForResult } from './harness.mjs';
import { startFixtureServer } from './fixture.mjs';

const REPO = 'test-org/tiny-llama';
const DIR = path.join(ROOT, 'tests/fixtures/tiny/llama');
const FILES = Object.fromEntries(readdirSync(DIR).filter((n) => !n.endsWith('reference.json'))
  .map((n) => [n, readFileSync(path.join(DIR, n))]));

// Two sequences of 64 tokens; the page's evaluation: one window of 64.
const CALIB_N = 2;
const CALIB_LEN = 64;
// GPU against CPU statistics, |gpu − cpu| relative to each statistic's largest |cpu| entry: the
// definition and value of tests/gpu_calib.rs's CALIB_TOL (the activations differ by the two
// backends' f32 rounding over 30 layers; the Gram sums run in another order). max|x| too: it is
// the max of activations that already differ by rounding, so it is not bit-equal across backends
// (measured on SwiftShader: 178 of layer 0's 576 channels differ, by at most 5e-8 relative); the
// kernel's max against the CPU's on the same inputs is exact in tests/gpu_calib.rs.
const CALIB_TOL = 1e-4;

let page;
let close;
let server;

before(async () => {
  server = await startFixtureServer({ repos: { [REPO]: FILES } });
  // A share link loads the tiny model, makes the first run (as loaded) small and sets the
  // calibration size, so that choosing GPTQ later calibrates 2 × 64 tokens.
  ({ page, close } = await openPage(`?backend=gpu&hub=${encodeURIComponent(server.url)}`
    + `#ql=1&model=${encodeURIComponent(REPO)}&ctx=64&win=1&calib=${CALIB_N}x${CALIB_LEN}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await server?.close();
});

test('calibration on WebGPU equals the CPU path on the same tokens', { timeout: RUN_TIMEOUT_MS }, async () => {
  // A second Playground in the page's own thread (the worker keeps its own), so the test can
  // force the CPU path and read the statistics back.
  const r = await page.evaluate(async ({ n, len, hub, repo, textUrl }) => {
    const m = await import(new URL('www/pkg/quantlab.js', location.href).href);
    await m.default();
    const p = new m.Playground();
    try {
      await p.initGpu();
      const get = async (f) => new Uint8Array(await (await fetch(`${hub}/${repo}/resolve/main/${f}`)).arrayBuffer());
      p.loadHf(repo, await get('config.json'), await get('tokenizer.json'), undefined, undefined, undefined,
        ['model.safetensors'], [await get('model.safetensors')]);
      const text = await (await fetch(textUrl)).text();
      const layers = p.info().n_layer;
      // Layer 0's attention input and the last layer's down-projection input (Site::ALL order).
      const sites = [[0, 0], [layers - 1, 3]];
      const read = () => sites.map(([l, s]) => p.calibrationSite(l, s));
      let calls = 0;
      const gpu = await p.calibrate(text, n, len, () => { calls += 1; return true; });
      const a = read();
      const cpu = await p.calibrate(text, n, len, () => true, true);
      const b = read();
      const reuse = await p.calibrate(text, n, len, () => true);
      const errors = [];
      for (const [l, s] of [[layers, 0], [0, 4]]) {
        try {
          p.calibrationSite(l, s);
          errors.push(null);
        } catch (e) {
          errors.push(e.message);
        }
      }
      // Largest |x − y| relative to the largest |y|, and how many entries differ at all.
      const rel = (x, y) => {
        if (x.length !== y.length) return Infinity;
        let scale = 1e-6;
        for (const v of y) scale = Math.max(scale, Math.abs(v));
        let worst = 0;
        for (let i = 0; i < x.length; i += 1) worst = Math.max(worst, Math.abs(x[i] - y[i]) / scale);
        return worst;
      };
      const unequal = (x, y) => x.length !== y.length ? Infinity : x.reduce((k, v, i) => k + (v !== y[i]), 0);
      const cmp = a.map((x, i) => {
        const y = b[i];
        return {
          site: sites[i], dim: [x.dim, y.dim], rows: [x.rows, y.rows], backend: [x.backend, y.backend],
          gramLen: x.gram.length, nonzero: y.gram.some((v) => v !== 0),
          gram: rel(x.gram, y.gram), mean_abs: rel(x.mean_abs, y.mean_abs), l2: rel(x.l2, y.l2),
          max_abs: rel(x.max_abs, y.max_abs), max_abs_unequal: unequal(x.max_abs, y.max_abs),
        };
      });
      return { gpu, cpu, reuse, calls, cmp, errors, layers };
    } finally {
      p.free();
    }
  }, { n: CALIB_N, len: CALIB_LEN, hub: server.url, repo: REPO, textUrl: TEXT });

  console.log(`# GPU calibration ${r.gpu.n_seq} × ${r.gpu.seq_len}: ${r.gpu.seconds.toFixed(1)} s; CPU: ${r.cpu.seconds.toFixed(1)} s`);
  assert.equal(r.gpu.backend, 'gpu');
  assert.equal(r.gpu.reused, false);
  assert.deepEqual([r.gpu.n_seq, r.gpu.seq_len], [CALIB_N, CALIB_LEN]);
  assert.ok(r.calls >= 2, `progress called ${r.calls} times`);
  assert.equal(r.cpu.backend, 'cpu');
  assert.equal(r.cpu.reused, false, 'forcing the CPU path must not reuse the GPU statistics');
  // A CPU calibration serves a later call with the same tokens.
  assert.deepEqual([r.reuse.backend, r.reuse.reused], ['cpu', true]);
  for (const c of r.cmp) {
    const what = `layer ${c.site[0]} site ${c.site[1]}`;
    console.log(`# ${what}: dim ${c.dim[0]}, relative difference gram ${c.gram.toExponential(2)}, mean|x| ${c.mean_abs.toExponential(2)}, l2 ${c.l2.toExponential(2)}, max|x| ${c.max_abs.toExponential(2)} (${c.max_abs_unequal} of ${c.dim[0]} channels differ)`);
    assert.deepEqual(c.backend, ['gpu', 'cpu'], what);
    assert.equal(c.dim[0], c.dim[1], what);
    assert.equal(c.gramLen, c.dim[0] * c.dim[0], what);
    assert.deepEqual(c.rows, [CALIB_N * CALIB_LEN, CALIB_N * CALIB_LEN], what);
    assert.ok(c.nonzero, `${what}: the CPU Gram is all zero`);
    for (const k of ['gram', 'mean_abs', 'l2', 'max_abs']) {
      assert.ok(c[k] <= CALIB_TOL, `${what} ${k}: GPU vs CPU relative difference ${c[k]} > ${CALIB_TOL}`);
    }
  }
  assert.match(r.errors[0] ?? '', new RegExp(`layer.*${r.layers} is out of range.*${r.layers} layers`));
  assert.match(r.errors[1] ?? '', /site.*4 is out of range.*4 sites/);
});

test('GPTQ through the page on WebGPU calibrates on the GPU', { timeout: RUN_TIMEOUT_MS }, async () => {
  const prev = await page.getAttribute('#result', 'data-run');
  const t0 = Date.now();
  await page.selectOption('#method', 'gptq');
  const r = await waitForResult(page, prev, '"method":{"gptq"');
  const status = await page.textContent('#calib-status');
  console.log(`# GPTQ on WebGPU: ppl ${r.ppl}; ${status}; ${((Date.now() - t0) / 1000).toFixed(0)} s in the page`);
  assert.equal(r.backend, 'gpu');
  assert.equal(await page.getAttribute('#calib-status', 'data-backend'), 'gpu', `calibration status: ${status}`);
  assert.match(status, new RegExp(`calibrated on ${CALIB_N} × ${CALIB_LEN} tokens on the GPU in`));
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `perplexity ${r.ppl}`);
});
