// The "study" preset (issue 5: "a 'study' preset that runs a small grid in the background and
// fills the chart"): ZeroQuant-V2 (arXiv:2303.08302) in small, on the CPU path in the page. RTN
// and GPTQ at W4/W3 with scales per row and per group of 64, and W3 per row with LoRC rank 8;
// GPTQ calibrates on 16 × 128 tokens of the other built-in texts. The Pareto chart then holds one
// point per configuration, in one series per method, and GPTQ is no worse than RTN at W4 per row.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';

// The grid: 2 methods × (2 bit widths × 2 granularities + W3 per row with LoRC).
const STUDY_POINTS = 10;
const PER_SERIES = { RTN: 4, GPTQ: 4, 'RTN +LoRC': 1, 'GPTQ +LoRC': 1 };
const CALIB = '16 × 128';
// A whole grid of quantize-and-evaluate runs on 2 shared cores.
const STUDY_TIMEOUT_MS = 2 * RUN_TIMEOUT_MS;

let page;
let close;

before(async () => {
  ({ page, close } = await openPage('?backend=cpu#ql=1&ctx=128&win=2'));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
});

test('the study preset fills the chart with RTN, GPTQ and LoRC points; GPTQ ≤ RTN at W4 per row', { timeout: STUDY_TIMEOUT_MS }, async () => {
  const before = await page.evaluate(() => self.quantlabCharts.pareto.ppl.length);
  const t0 = Date.now();
  await page.selectOption('#preset', 'study');
  await page.click('#preset-run');
  await page.waitForSelector('#preset-status[data-done="true"]', { timeout: STUDY_TIMEOUT_MS });
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(await page.getAttribute('#result', 'data-state'), 'done', await page.textContent('#error'));
  const p = await page.evaluate(() => self.quantlabCharts.pareto);
  assert.equal(p.ppl.length, before + STUDY_POINTS, `the chart holds ${p.ppl.length} points`);
  for (const [group, n] of Object.entries(PER_SERIES)) {
    assert.equal(p.groups.filter((g) => g === group).length, n, `${group}: ${JSON.stringify(p.groups)}`);
  }
  // One uPlot series per method, each holding its points.
  const series = await page.evaluate(() => {
    const u = self.quantlabPlots.get('pareto-chart');
    return u.series.map((s, i) => ({ label: s.label, points: u.data[i].filter((v) => v != null).length }));
  });
  for (const [group, n] of Object.entries(PER_SERIES)) {
    assert.deepEqual(series.find((s) => s.label === group), { label: group, points: n }, JSON.stringify(series));
  }
  const rows = p.labels.map((label, i) => ({ label, bpw: p.bpw[i], ppl: p.ppl[i] }));
  console.log(`# study preset: ${STUDY_POINTS} configurations in ${seconds.toFixed(0)} s (calibration ${CALIB})`);
  for (const r of rows) console.log(`#   ${r.label.padEnd(28)} ${r.bpw.toFixed(3)} bits  ppl ${r.ppl.toFixed(3)}`);
  const ppl = (label) => {
    const r = rows.find((x) => x.label === label);
    assert.ok(r, `no point ${label}: ${rows.map((x) => x.label).join(', ')}`);
    return r.ppl;
  };
  const rtn = ppl('RTN 4-bit row sym');
  const gptq = ppl('GPTQ 4-bit row sym');
  assert.ok(gptq <= rtn, `GPTQ W4 per row ${gptq} is above RTN's ${rtn}`);
  assert.match(await page.textContent('#calib-status'), new RegExp(CALIB));
  const shots = path.join(ROOT, 'out', 'screenshots');
  mkdirSync(shots, { recursive: true });
  await page.locator('#pareto-box').scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, '8-preset-study.png') });
});
