// One row before your eyes (issue 19, item 2) on fixture.mjs's tiny Llama, CPU path: after a run
// the row view draws the chosen row's weights, its levels and a line per weight; its numbers are
// the CLI's (`quantlab row`, the same quantizer natively) for the same config, tensor and row;
// moving the bits redraws it with the new grid.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BIN, ROOT, RUN_TIMEOUT_MS, configOf, openPage, setQuant, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const ROW = 3;
const POINTS = 64;

let served;
let page;
let close;

before(async () => {
  served = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=cpu&${served.hub}#ql=1&${served.model}&ctx=64&win=1`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await served?.close();
});

// The row view once it shows a format starting `prefix` (the view follows the run's layer map).
async function viewOf(prefix) {
  await page.waitForFunction((f) => self.quantlabRowView?.format.startsWith(f), prefix, { timeout: RUN_TIMEOUT_MS, polling: 100 });
  return page.evaluate(() => self.quantlabRowView);
}

// Every number in `x` (arrays and objects walked) rounded to f32.
const asF32 = (x) => (typeof x === 'number' ? Math.fround(x)
  : Array.isArray(x) ? x.map(asF32)
    : x && typeof x === 'object' ? Object.fromEntries(Object.entries(x).map(([k, v]) => [k, asF32(v)])) : x);

function cli(config, tensor) {
  const out = execFileSync(BIN, ['row', '--model', served.modelDir, '--config', config, '--tensor', tensor,
    '--row', String(ROW), '--points', String(POINTS)], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out);
}

test('the row view shows the CLI\'s row, levels and error, and follows the bits', { timeout: 2 * RUN_TIMEOUT_MS }, async () => {
  await page.$eval('#hist-row', (e, r) => {
    e.value = String(r);
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, ROW);
  let prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', 4);
  const r4 = await waitForResult(page, prev, configOf('rtn', 4));
  const config = await page.getAttribute('#result', 'data-config');
  const v4 = await viewOf('int4');
  const tensor = await page.$eval('#hist-tensor', (e) => e.value);
  assert.equal(v4.name, tensor);
  assert.equal(v4.row, ROW);
  const c4 = cli(config, tensor);
  // The same Rust code natively and in wasm (no fused multiply-add in either): equal numbers.
  // f32 fields reach the page as their exact f64 value but the CLI's JSON as the shortest
  // decimal that reads back as that f32, so both are compared as f32 (Math.fround); the errors
  // are f64 on both sides.
  for (const k of ['format', 'cols', 'start', 'weights', 'quantized', 'groups', 'clipped', 'outlier', 'n_clipped', 'n_outliers']) {
    assert.deepEqual(asF32(v4[k]), asF32(c4[k]), k);
  }
  assert.equal(v4.mse, c4.mse);
  assert.equal(v4.max_abs, c4.max_abs);
  assert.equal(v4.weights.length, POINTS);
  assert.ok(v4.groups.every((g) => g.bits === 4 && g.levels.length === 16), JSON.stringify(v4.groups[0]));
  // Drawn: a dot and a line per weight, level ticks, and the error as text.
  assert.equal(await page.$$eval('#row-chart [data-part=weights] circle', (c) => c.length), POINTS);
  assert.equal(await page.$$eval('#row-chart [data-part=arrows] line', (c) => c.length), POINTS);
  assert.ok(await page.$$eval('#row-chart [data-part=levels] line', (c) => c.length) >= 16);
  assert.equal(Number(await page.getAttribute('#row-error', 'data-mse')), c4.mse);
  assert.match(await page.textContent('#row-error'), /MSE .* largest error/);
  console.log(`# rtn 4 bits (run ${r4.run}): row ${ROW} of ${tensor}, ${c4.format}, MSE ${c4.mse}, max ${c4.max_abs}`);

  // Two bits: four levels a group, and a larger error than at four bits.
  prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', 2);
  await waitForResult(page, prev, configOf('rtn', 2));
  const v2 = await viewOf('int2');
  const c2 = cli(await page.getAttribute('#result', 'data-config'), tensor);
  assert.deepEqual(asF32(v2.quantized), asF32(c2.quantized));
  assert.equal(v2.mse, c2.mse);
  assert.ok(v2.groups.every((g) => g.levels.length === 4));
  assert.ok(v2.mse > v4.mse, `2 bits ${v2.mse} vs 4 bits ${v4.mse}`);
  assert.notDeepEqual(v2.quantized, v4.quantized);
});
