// The page where the browser has no WebGPU adapter (see harness.mjs, `webgpu: false`): it must
// say so visibly and evaluate on the CPU instead.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';

let page;
let close;

before(async () => {
  ({ page, close } = await openPage('', { webgpu: false }));
});

after(async () => {
  await close?.();
});

test('without WebGPU the page says so and evaluates on the CPU', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.waitForSelector('#engine-note[data-backend]');
  assert.equal(await page.getAttribute('#engine-note', 'data-backend'), 'cpu');
  assert.ok(await page.isVisible('#engine-note'), 'the note is not visible');
  assert.match(await page.textContent('#engine-note'), /^WebGPU not available: running on the CPU/);
  await page.selectOption('#ctx', '64');
  await page.selectOption('#windows', '1');
  const prev = await page.getAttribute('#result', 'data-run');
  await page.click('#evaluate');
  const r = await waitForResult(page, prev, '"method":"none"');
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `perplexity ${r.ppl}`);
  assert.equal(r.backend, 'cpu');
  assert.equal(r.gpuMemory, null, 'no GPU memory without a GPU');
});
