// CMPQ in the page (issue 6 item 7; arXiv 2410.13056 as in docs/methods.md §3): the budget
// slider moved by keyboard, achieved against requested effective bits, the outlier sliders, the
// per-channel map's data, the share link and the "CMPQ curve" preset. CPU path
// (`?backend=cpu`), kept small: calibration 4 × 128 tokens of the other built-in texts, 1 window
// of 64 tokens. Screenshots go to out/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, openSibling, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CALIB = '4x128';
// The allocation meets every tensor's budget within 0.01 bit (cmpq_alloc::BUDGET_TOL), so the
// whole model's linear layers do too.
const BUDGET_TOL = 0.01;
// Budgets the keyboard reaches from the default 3.00: ten steps of 0.05 down.
const START_BUDGET = 3;
const KEY_STEPS = 10;
const MOVED_BUDGET = 2.5;
// Outlier extraction A moved from its default 0.5 % of columns to 1 %.
const OUTLIER_COLS = 0.01;
// The preset's points: five CMPQ budgets, RTN and GPTQ at 2, 3 and 4 bits.
const CURVE = { cmpq: 5, rtn: 3, gptq: 3 };
const PRESET_TIMEOUT_MS = RUN_TIMEOUT_MS;
const TINY_DIMS = { dim: 256, ffn: 512 };
const SHOTS = path.join(ROOT, 'out', 'screenshots');

let page;
let close;
let moved; // the result at MOVED_BUDGET

// A substring of the run's config (data-config) at `budget`: only CMPQ has a budget (the
// option keys arrive sorted, as serde_json's map writes them).
const cmpqConfig = (budget) => `"budget":${budget},`;
const shot = (name, p = page) => p.screenshot({ path: path.join(SHOTS, `${name}.png`) });

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  ({ page, close } = await openPage(`?backend=cpu#ql=1&ctx=64&win=1&calib=${CALIB}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
});

test('CMPQ: the budget slider moved by keyboard gives its effective bits, perplexity and memory', { timeout: 2 * RUN_TIMEOUT_MS }, async () => {
  let prev = await page.getAttribute('#result', 'data-run');
  await page.selectOption('#method', 'cmpq');
  // The bits control is now the budget slider.
  assert.equal(await page.getAttribute('#bits', 'step'), '0.05');
  assert.equal(await page.getAttribute('#bits', 'min'), '2');
  assert.equal(await page.getAttribute('#bits', 'max'), '4');
  assert.equal(await page.textContent('#bits-out'), START_BUDGET.toFixed(2));
  const t0 = Date.now();
  const first = await waitForResult(page, prev, cmpqConfig(START_BUDGET));
  console.log(`# CMPQ ${START_BUDGET.toFixed(2)}: ppl ${first.ppl}, ${first.bpw} bits/weight, ${((Date.now() - t0) / 1000).toFixed(0)} s (calibration and every column fitted)`);
  assert.ok(Math.abs(first.bpw - START_BUDGET) <= BUDGET_TOL, `achieved ${first.bpw} for ${START_BUDGET}`);
  assert.equal(Number(await page.getAttribute('#bpw', 'data-budget')), START_BUDGET);
  assert.match(await page.textContent('#bpw'), /^\d\.\d\d achieved for 3\.00 requested/);

  prev = await page.getAttribute('#result', 'data-run');
  await page.focus('#bits');
  for (let i = 0; i < KEY_STEPS; i += 1) await page.keyboard.press('ArrowLeft');
  assert.equal(await page.inputValue('#bits'), String(MOVED_BUDGET));
  assert.equal(await page.textContent('#bits-out'), MOVED_BUDGET.toFixed(2));
  const t1 = Date.now();
  moved = await waitForResult(page, prev, cmpqConfig(MOVED_BUDGET));
  console.log(`# CMPQ ${MOVED_BUDGET.toFixed(2)}: ppl ${moved.ppl}, ${moved.bpw} bits/weight, ${((Date.now() - t1) / 1000).toFixed(0)} s (cached fits reused)`);
  assert.ok(Math.abs(moved.bpw - MOVED_BUDGET) <= BUDGET_TOL, `achieved ${moved.bpw} for ${MOVED_BUDGET}`);
  assert.match(await page.textContent('#bpw'), new RegExp(`^${moved.bpw.toFixed(2).replace('.', '\\.')} achieved for 2\\.50 requested`));
  assert.ok(moved.ppl > first.ppl, `perplexity at ${MOVED_BUDGET} (${moved.ppl}) is not above ${START_BUDGET}'s (${first.ppl})`);
  assert.ok(moved.memory < first.memory, `memory at ${MOVED_BUDGET} (${moved.memory}) is not below ${START_BUDGET}'s (${first.memory})`);
  assert.match(await page.textContent('#calib-status'), /calibrated on 4 × 128 tokens/);
  await page.locator('#quant').scrollIntoViewIfNeeded();
  await shot('cmpq-1-budget');
});

// The map of the tensor chosen under "Inside one tensor", checked against the config that made it.
async function channelMap(wantFrac) {
  await page.waitForFunction((f) => {
    const c = self.quantlabCharts.channels;
    return c && c.name === document.getElementById('hist-tensor').value
      && c.n_f16 === Math.round(f * c.cols);
  }, wantFrac, { timeout: RUN_TIMEOUT_MS, polling: 250 });
  const c = await page.evaluate(() => self.quantlabCharts.channels);
  const config = JSON.parse(await page.getAttribute('#result', 'data-config')).method.cmpq;
  assert.equal(c.bits.length, c.cols);
  assert.equal(c.act.length, c.cols);
  const f16 = c.bits.filter((b) => b === 16).length;
  assert.equal(f16, Math.round(config.outlier_cols * c.cols), 'f16 columns = round(fraction × cols)');
  assert.ok(c.bits.every((b) => b === 16 || b === c.lo || b === c.lo + 1), `widths ${[...new Set(c.bits)]}`);
  assert.equal(c.bits.filter((b) => b === c.lo + 1).length, c.n_hi);
  // The f16 columns and then the wider ones are those with the largest magnitudes.
  const ranked = c.order.map((j) => c.bits[j]);
  assert.ok(ranked.slice(0, f16).every((b) => b === 16), 'f16 columns are the largest activations');
  assert.ok(ranked.slice(f16, f16 + c.n_hi).every((b) => b === c.lo + 1), 'wider columns come next');
  const sparse = c.sparse.reduce((a, b) => a + b, 0);
  assert.equal(sparse, c.n_sparse);
  assert.equal(sparse, Math.round(config.outlier_sparse * c.rows * c.cols), 'sparse = round(fraction × rows × cols)');
  assert.ok(Math.abs(c.bits_per_weight - config.budget) <= BUDGET_TOL, `tensor at ${c.bits_per_weight} for ${config.budget}`);
  return c;
}

test('CMPQ per-channel map: f16 columns, widths and sparse outliers per column; the f16-column slider', { timeout: 2 * RUN_TIMEOUT_MS }, async () => {
  assert.ok(moved, 'the budget test did not run');
  // The map shows once the run's layer map has arrived (just after its result).
  await page.waitForSelector('#chan-box', { state: 'visible', timeout: RUN_TIMEOUT_MS });
  await page.selectOption('#hist-tensor', 'blk.3.ffn_down.weight');
  const c = await channelMap(0.005);
  assert.equal(c.cols, 1536);
  console.log(`# ${c.name}: lo ${c.lo}, ${c.n_lo}/${c.n_hi}/${c.n_f16} columns, ${c.n_sparse} sparse, ${c.bits_per_weight.toFixed(4)} bits/weight`);
  await page.locator('#chan-box').scrollIntoViewIfNeeded();
  await shot('cmpq-2-channel-map');

  // Outlier extraction A's slider, to 1 % of the columns.
  const prev = await page.getAttribute('#result', 'data-run');
  await page.$eval('[data-key="outlier_cols"]', (e, v) => {
    e.value = String(v);
    e.dispatchEvent(new Event('input', { bubbles: true }));
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, OUTLIER_COLS);
  const r = await waitForResult(page, prev, `"outlier_cols":${OUTLIER_COLS},`);
  assert.ok(Math.abs(r.bpw - MOVED_BUDGET) <= BUDGET_TOL, `the budget holds with more f16 columns: ${r.bpw}`);
  const c2 = await channelMap(OUTLIER_COLS);
  assert.equal(c2.n_f16, Math.round(OUTLIER_COLS * 1536));
  assert.ok(c2.n_hi < c.n_hi, `more f16 columns leave fewer wide ones (${c2.n_hi} vs ${c.n_hi})`);
});

test('the copied link reproduces the CMPQ configuration', { timeout: RUN_TIMEOUT_MS }, async () => {
  assert.ok(moved, 'the budget test did not run');
  const config = await page.getAttribute('#result', 'data-config');
  await page.click('#copy-link');
  const url = await page.getAttribute('#copy-link', 'data-url');
  assert.match(url, new RegExp(`calib=${CALIB}`));
  const other = await openSibling(page, url);
  try {
    // The sibling's first run starts from the link's config (its data-config is set at once).
    await other.waitForFunction(() => (document.getElementById('result').dataset.config ?? '').includes('cmpq'),
      null, { timeout: RUN_TIMEOUT_MS });
    assert.equal(await other.getAttribute('#result', 'data-config'), config);
    assert.equal(await other.inputValue('#method'), 'cmpq');
    assert.equal(await other.inputValue('#bits'), String(MOVED_BUDGET));
    assert.equal(await other.inputValue('[data-key="outlier_cols"]'), String(OUTLIER_COLS));
    assert.equal(await other.inputValue('#calib-n'), '4');
    assert.equal(await other.textContent('#link-error'), '');
  } finally {
    await other.close();
  }
});

// The curve preset runs on fixture.mjs's tiny Llama, widened to 256 × 512 so that CMPQ's
// per-tensor overheads (scales, outliers) leave every budget from 2 bits reachable, served by the
// local Hub, in a page of its own: eleven quantize-and-evaluate runs, three of them GPTQ, are the preset's machinery, which
// the real model would make some 40 times slower in single-threaded wasm. The budgets above ran
// on the real model.
test('the CMPQ curve preset fills CMPQ, RTN and GPTQ series in the perplexity-against-bits chart', { timeout: PRESET_TIMEOUT_MS }, async () => {
  const served = await servedTinyLlama(TINY_DIMS);
  const tiny = await openPage(`?backend=cpu&${served.hub}#ql=1&${served.model}&ctx=64&win=1&calib=${CALIB}`);
  try {
    await curvePreset(tiny.page);
  } finally {
    await tiny.close();
    await served.close();
  }
});

async function curvePreset(page) {
  await waitForResult(page, '0');
  const n0 = await page.evaluate(() => self.quantlabCharts.pareto.bpw.length);
  const t0 = Date.now();
  await page.selectOption('#preset', 'cmpq-curve');
  await page.click('#preset-run');
  await page.waitForFunction(() => ['true', 'error'].includes(document.getElementById('preset-status').dataset.done)
    || document.getElementById('result').dataset.state === 'error', null, { timeout: PRESET_TIMEOUT_MS, polling: 1000 });
  assert.notEqual(await page.getAttribute('#result', 'data-state'), 'error', await page.textContent('#error'));
  console.log(`# CMPQ curve preset: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const p = await page.evaluate(() => self.quantlabCharts.pareto);
  assert.equal(p.bpw.length, n0 + Object.values(CURVE).reduce((a, b) => a + b, 0));
  const count = (id) => p.series[id].filter((v) => v !== null).length;
  assert.equal(count('cmpq'), CURVE.cmpq);
  assert.equal(count('rtn'), CURVE.rtn);
  assert.equal(count('gptq'), CURVE.gptq);
  const points = (id) => p.bpw.map((x, i) => ({ x, y: p.series[id][i] })).filter((q) => q.y !== null);
  for (const budget of [2, 2.5, 3, 3.5, 4]) {
    assert.ok(points('cmpq').some((q) => Math.abs(q.x - budget) <= BUDGET_TOL), `no CMPQ point at ${budget}`);
  }
  for (const id of ['rtn', 'gptq']) {
    // Per-row scales: a little over each integer.
    for (const bits of [2, 3, 4]) {
      assert.ok(points(id).some((q) => q.x > bits && q.x < bits + 0.1), `no ${id} point at ${bits} bits`);
    }
  }
  assert.ok(p.front.some((v) => v !== null), 'no Pareto front marked');
  const at = (id, lo, hi) => points(id).find((q) => q.x > lo && q.x < hi).y;
  console.log(`# at 3 bits: CMPQ ${at('cmpq', 2.99, 3.01)}, RTN ${at('rtn', 3, 3.1)}, GPTQ ${at('gptq', 3, 3.1)}`);
  await page.locator('#pareto-box').scrollIntoViewIfNeeded();
  await shot('cmpq-3-curve', page);
}
