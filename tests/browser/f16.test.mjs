// The f16 precision choice in the page (issue 17 item 3, www/web16.js): offered only where the
// browser's WebGPU adapter has `shader-f16` (the engine then runs shaders/matmul_f16.wgsl), f32
// staying the default. The page's offer is checked against what the adapter itself reports, so
// the test fails if the choice appears without the feature or is missing with it. This
// machine's SwiftShader (Chromium 156) offers no `shader-f16`: here the choice must be absent.
// On a browser that offers it (CHROMIUM_EXTRA_ARGS on a GPU host), the f16 run's perplexity is
// compared with the f32 run's. The model is fixture.mjs's tiny Llama.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

// f16 against f32 perplexity, relative: tests/gpu_f16.rs measured 0.12 % on the same tiny
// Llama natively (lavapipe); its random weights make perplexity far more sensitive than a
// trained model's.
const F16_PPL_REL_TOL = 3e-3;

let page;
let close;
let tiny;

before(async () => {
  tiny = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=gpu&${tiny.hub}#ql=1&${tiny.model}&ctx=64&win=1`));
});

after(async () => {
  await close?.();
  await tiny?.close();
});

test('the f16 choice appears exactly when the adapter offers shader-f16; f32 is the default', { timeout: RUN_TIMEOUT_MS }, async () => {
  const f32 = await waitForResult(page, '0');
  assert.equal(f32.backend, 'gpu');
  await page.waitForSelector('#engine-note[data-precisions]', { state: 'attached' });
  const offered = (await page.getAttribute('#engine-note', 'data-precisions')).split(' ');
  const adapterF16 = await page.evaluate(async () => {
    const a = await navigator.gpu.requestAdapter();
    return a.features.has('shader-f16');
  });
  console.log(`# adapter shader-f16: ${adapterF16}; the page offers ${offered.join(', ')}`);
  assert.deepEqual(offered, adapterF16 ? ['f32', 'f16'] : ['f32']);
  if (!adapterF16) {
    assert.equal(await page.locator('#precision').count(), 0, 'an f16 choice without shader-f16');
    return;
  }
  assert.equal(await page.inputValue('#precision'), 'f32');
  await page.selectOption('#precision', 'f16');
  await page.waitForSelector('#precision[data-state="f16"]');
  await page.click('#evaluate');
  const f16 = await waitForResult(page, f32.run);
  const rel = Math.abs(f16.ppl - f32.ppl) / f32.ppl;
  console.log(`# tiny Llama on WebGPU: f32 PPL ${f32.ppl}, f16 PPL ${f16.ppl}, rel ${rel.toExponential(2)}`);
  assert.ok(rel <= F16_PPL_REL_TOL, `f16 ${f16.ppl} vs f32 ${f32.ppl}`);
  assert.notEqual(f16.ppl, f32.ppl, 'the f16 run gave f32\'s exact perplexity: did it run in f16?');
});
