// The page's activation panel (issue 13, W4A8; arXiv 2311.05161, docs/w4a8.md) on the tiny Llama
// checkpoint transformers saved (tests/fixtures/tiny/llama, 2 layers), served by the local Hub
// mock as in gpucalib.test.mjs, on the CPU path (`?backend=cpu`): the controls built from the
// schema (activation bits, granularity, scale kind, percentile; the scale transform), a run with
// A8 static scales and AQAS before RTN W4 per row, its W/A label, memory line and α chart; the
// share link restoring the panel; the weight grid switch (INT4 / dINT4) in the config, label and
// link; the underflow meter (INT4 vs dINT4 zeroed per layer type); and the "W4A8 (paper
// comparison)" preset, every row labelled (with AQAS + dINT4, before RTN and GPTQ); the
// per-channel activation view drawing max|x|/s under the transform beside max|x|.
// Screenshots: out/screenshots/w4a8-panel.png, w4a8-alpha.png, w4a8-result.png, w4a8-runs.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, openSibling, setQuant, waitForResult } from './harness.mjs';
import { startFixtureServer } from './fixture.mjs';

const REPO = 'test-org/tiny-llama';
const DIR = path.join(ROOT, 'tests/fixtures/tiny/llama');
const FILES = Object.fromEntries(readdirSync(DIR).filter((n) => !n.endsWith('reference.json'))
  .map((n) => [n, readFileSync(path.join(DIR, n))]));
const SHOTS = path.join(ROOT, 'out', 'screenshots');
// The tiny model reads 128 positions; one window of 64 keeps each run short.
const CTX = 64;
// The same config on the same tokens in the same build: the perplexity agrees to printing
// precision.
const SAME_PPL_REL_TOL = 1e-9;
// The config the panel sends for A8 static per tensor with AQAS at its default step (the JSON
// the page builds: QuantConfig's field order, the schema's defaults).
const AQAS_A8 = '"smooth":{"aqas":{"step":0.05}},"act":{"bits":8,"gran":"per_tensor","scale":"static"}';
// The preset's rows (www/main.js, w4a8Configs): run label → W/A label.
const PRESET_ROWS = {
  'RTN 4-bit row sym, A8 static per tensor': 'W4A8',
  'RTN 4-bit row sym +SmoothQuant α 0.5, A8 static per tensor': 'W4A8',
  'RTN 4-bit row sym +AWQ scales, A8 static per tensor': 'W4A8',
  'RTN 4-bit row sym +AQAS, A8 static per tensor': 'W4A8',
  'GPTQ 4-bit row sym +AQAS, A8 static per tensor': 'W4A8',
  'RTN 8-bit row sym +SmoothQuant α 0.5, A8 static per tensor': 'W8A8',
  'RTN 4-bit row sym dINT4 +AQAS, A8 static per tensor': 'W4A8',
  'GPTQ 4-bit row sym dINT4 +AQAS, A8 static per tensor': 'W4A8',
};
// The grid the switch sends for dINT4 (LayerQuant.grid at the spec's defaults).
const DINT = '"grid":{"dint":{"denorm":4,"max":6,"zero":true}}';
const SITES = 4;
const LAYERS = 2;

let page;
let close;
let server;
let first; // the AQAS run: {config, ppl}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  server = await startFixtureServer({ repos: { [REPO]: FILES } });
  ({ page, close } = await openPage(`?backend=cpu&hub=${encodeURIComponent(server.url)}`
    + `#ql=1&model=${encodeURIComponent(REPO)}&ctx=${CTX}&win=1&calib=2x64`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await server?.close();
});

// Set a control the page builds (a <select> or an <input>) and tell the page.
async function set(p, selector, value) {
  await p.$eval(selector, (e, v) => {
    e.value = String(v);
    e.dispatchEvent(new Event('input', { bubbles: true }));
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, value);
}

// The runs table: [{label, wa, ppl}] newest first.
const table = (p) => p.$$eval('#history tbody tr', (rows) => rows.map((r) => {
  const c = [...r.cells].map((td) => td.textContent);
  return { label: c[0], wa: c[1], ppl: Number(c[3].split(' ')[0]) };
}));

test('A8 static + AQAS + RTN W4 per row: the result says W4A8, a finite perplexity, α per layer and site', { timeout: RUN_TIMEOUT_MS }, async () => {
  const t0 = Date.now();
  // The panel comes from the schema: bits 8/6/4, its fields, the transforms.
  assert.deepEqual(await page.$$eval('#act-bits option', (os) => os.map((o) => o.value)), ['off', '8', '6', '4']);
  assert.deepEqual(await page.$$eval('#smooth option', (os) => os.map((o) => o.value)), ['none', 'smoothquant', 'awq', 'aqas']);
  assert.deepEqual(await page.$$eval('#act-fields [data-key]', (es) => es.map((e) => e.dataset.key)), ['gran', 'scale', 'percentile']);
  await page.waitForFunction(() => /2311\.05161/.test(document.getElementById('act-explainer').textContent)
    && /2211\.10438/.test(document.getElementById('act-explainer').textContent));
  // A transform is offered only before RTN or GPTQ.
  await setQuant(page, 'none');
  assert.equal(await page.isDisabled('#smooth'), true);
  assert.match(await page.textContent('#w4a8-note'), /RTN|Round to nearest/);
  await setQuant(page, 'rtn', 4);
  await page.selectOption('#gran', 'per_row');
  assert.equal(await page.isDisabled('#smooth'), false);
  await page.selectOption('#act-bits', '8');
  await set(page, '#act-fields select[data-key="scale"]', 'static');
  // A static scale is per tensor: the schema's rule sets and locks the granularity, and enables
  // the percentile (left out while unticked).
  assert.equal(await page.inputValue('#act-fields select[data-key="gran"]'), 'per_tensor');
  assert.equal(await page.isDisabled('#act-fields select[data-key="gran"]'), true);
  assert.equal(await page.isDisabled('#act-fields [data-optional="percentile"]'), false);
  await page.selectOption('#smooth', 'aqas');
  assert.equal(await page.inputValue('#smooth-fields input[data-key="step"]'), '0.05');
  // Static scales and AQAS need calibration: its box shows, the length labelled as SLAC's.
  assert.equal(await page.isVisible('#calib-box'), true);
  assert.match(await page.textContent('#calib-box'), /calibration length \(SLAC\)/);
  const prev = await page.getAttribute('#result', 'data-run');
  const r = await waitForResult(page, prev, AQAS_A8);
  const config = await page.getAttribute('#result', 'data-config');
  assert.match(config, /"method":"rtn","default":\{"bits":4,"gran":"per_row"/);
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `perplexity ${r.ppl}`);
  assert.equal(await page.getAttribute('#result-wa', 'data-value'), 'W4A8');
  assert.match(await page.textContent('#result-wa'), /^W4A8 · RTN 4-bit row sym \+AQAS/);
  assert.match(await page.textContent('#memory'), /activations A8 \(static, per tensor\)/);
  assert.match(await page.textContent('#calib-status'), /calibrated on 2 × 64 tokens/);
  const [row] = await table(page);
  assert.deepEqual([row.label, row.wa], ['RTN 4-bit row sym +AQAS, A8 static per tensor', 'W4A8']);
  // α per layer (2) and site (4), on AQAS's grid, drawn as one line per site.
  await page.waitForSelector('#alpha-box:not([hidden])');
  const a = await page.evaluate(() => {
    const u = self.quantlabPlots.get('alpha-chart');
    return { chart: self.quantlabCharts.alpha, series: u.series.map((s) => s.label), data: u.data };
  });
  assert.equal(a.chart.method, 'AQAS');
  assert.equal(a.chart.alpha.length, LAYERS);
  assert.equal(a.series.length, 1 + SITES, `series ${a.series}`);
  const points = a.data.slice(1).flat().filter((v) => v != null);
  assert.ok(points.length > 0, 'the α chart has no points');
  for (const v of points) assert.ok(v >= 0 && v <= 1 && Math.abs(v / 0.05 - Math.round(v / 0.05)) < 1e-4, `α ${v}`);
  console.log(`# W4A8 AQAS on the tiny Llama: ppl ${r.ppl}; α ${JSON.stringify(a.chart.alpha)}; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  // The optional percentile: ticked, it joins the config (static scales at the 99.9th
  // percentile of the tokens' absmax).
  const prevRun = await page.getAttribute('#result', 'data-run');
  await page.check('#act-fields [data-optional="percentile"]');
  const rp = await waitForResult(page, prevRun, '"scale":"static","percentile":99.9}');
  assert.ok(Number.isFinite(rp.ppl), `perplexity ${rp.ppl}`);
  assert.match(await page.textContent('#result-wa'), /A8 static per tensor p99\.9$/);
  first = { config: await page.getAttribute('#result', 'data-config'), ppl: rp.ppl };
  await page.locator('#act-box').scrollIntoViewIfNeeded();
  await page.locator('#act-box').screenshot({ path: path.join(SHOTS, 'w4a8-panel.png') });
});

test('the share link restores the activation panel and its config', { timeout: RUN_TIMEOUT_MS }, async () => {
  assert.ok(first, 'the first test did not run');
  await page.click('#copy-link');
  const url = await page.getAttribute('#copy-link', 'data-url');
  const other = await openSibling(page, url);
  try {
    const r = await waitForResult(other, '0');
    assert.equal(await other.getAttribute('#result', 'data-config'), first.config);
    assert.equal(await other.inputValue('#method'), 'rtn');
    assert.equal(await other.inputValue('#gran'), 'per_row');
    assert.equal(await other.inputValue('#act-bits'), '8');
    assert.equal(await other.inputValue('#act-fields select[data-key="scale"]'), 'static');
    assert.equal(await other.inputValue('#act-fields select[data-key="gran"]'), 'per_tensor');
    assert.equal(await other.isChecked('#act-fields [data-optional="percentile"]'), true);
    assert.equal(await other.inputValue('#act-fields input[data-key="percentile"]'), '99.9');
    assert.equal(await other.inputValue('#smooth'), 'aqas');
    assert.equal(await other.inputValue('#smooth-fields input[data-key="step"]'), '0.05');
    assert.equal(await other.getAttribute('#result-wa', 'data-value'), 'W4A8');
    assert.ok(Math.abs(r.ppl - first.ppl) <= SAME_PPL_REL_TOL * first.ppl, `link perplexity ${r.ppl} vs ${first.ppl}`);
    assert.equal(await other.textContent('#link-error'), '');
  } finally {
    await other.close();
  }
});

test('the grid switch: dINT4 before RTN W4 goes into the config, the label and the link', { timeout: RUN_TIMEOUT_MS }, async () => {
  assert.deepEqual(await page.$$eval('#grid option', (os) => os.map((o) => o.value)), ['int', 'dint']);
  // Offered only at 4 bits, symmetric.
  await setQuant(page, 'rtn', 3);
  assert.equal(await page.isDisabled('#grid'), true);
  assert.match(await page.textContent('#grid-note'), /4 bits/);
  await setQuant(page, 'rtn', 4);
  await page.selectOption('#gran', 'per_row');
  assert.equal(await page.isDisabled('#grid'), false);
  const prev = await page.getAttribute('#result', 'data-run');
  await page.selectOption('#grid', 'dint');
  const r = await waitForResult(page, prev, DINT);
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `perplexity ${r.ppl}`);
  const config = await page.getAttribute('#result', 'data-config');
  assert.ok(config.includes(DINT), config);
  assert.match(await page.textContent('#result-wa'), /RTN 4-bit row sym dINT4/);
  await page.click('#copy-link');
  const other = await openSibling(page, await page.getAttribute('#copy-link', 'data-url'));
  try {
    await waitForResult(other, '0');
    assert.equal(await other.getAttribute('#result', 'data-config'), config);
    assert.equal(await other.inputValue('#grid'), 'dint');
    assert.equal(await other.textContent('#link-error'), '');
  } finally {
    await other.close();
  }
});

test('the underflow meter: per layer type, INT4 zeroes at least as many weights as dINT4', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.click('#underflow-run');
  await page.waitForSelector('#underflow-table:not([hidden])', { timeout: RUN_TIMEOUT_MS });
  const rows = await page.$$eval('#underflow-table tbody tr', (rs) => rs.map((r) => ({
    kind: r.dataset.kind, int: Number(r.dataset.int), dint: Number(r.dataset.dint), cells: r.cells.length,
  })));
  console.log(`# underflow on the tiny Llama: ${rows.map((x) => `${x.kind} ${(100 * x.int).toFixed(2)} % / ${(100 * x.dint).toFixed(2)} %`).join('; ')}`);
  // One row per layer type of a Llama block (attention q, k, v, output; MLP gate, up, down).
  assert.equal(new Set(rows.map((x) => x.kind)).size, 7, rows.map((x) => x.kind).join(', '));
  assert.ok(rows.some((x) => x.kind === 'attn_q'), rows.map((x) => x.kind).join(', '));
  for (const x of rows) {
    assert.equal(x.cells, 5);
    assert.ok(Number.isFinite(x.int) && Number.isFinite(x.dint) && x.int >= x.dint, `${x.kind}: ${x.int} vs ${x.dint}`);
  }
});

test('the W4A8 paper-comparison preset runs every row with its label', { timeout: RUN_TIMEOUT_MS }, async () => {
  const t0 = Date.now();
  await page.selectOption('#preset', 'w4a8');
  await page.click('#preset-run');
  await page.waitForSelector('#preset-status[data-done="true"], #result[data-state="error"]', { timeout: RUN_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#result', 'data-state'), 'done', await page.textContent('#error'));
  const rows = (await table(page)).slice(0, Object.keys(PRESET_ROWS).length);
  console.log(`# W4A8 preset on the tiny Llama: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  for (const x of rows.slice().reverse()) console.log(`#   ${x.wa} ${x.label.padEnd(70)} ppl ${x.ppl}`);
  assert.deepEqual(rows.map((x) => x.label).sort(), Object.keys(PRESET_ROWS).sort());
  for (const x of rows) {
    assert.equal(x.wa, PRESET_ROWS[x.label], x.label);
    assert.ok(Number.isFinite(x.ppl) && x.ppl > 1, `${x.label}: ppl ${x.ppl}`);
  }
  assert.match(await page.textContent('#calib-status'), /16 × 128/);
  // The α of every run with a transform is kept: one line per run label at the chosen site.
  const runs = await page.evaluate(() => {
    const u = self.quantlabPlots.get('alpha-runs-chart');
    return { labels: u.series.slice(1).map((s) => s.label), kept: self.quantlabCharts.alpha.runs };
  });
  const withTransform = Object.keys(PRESET_ROWS).filter((l) => l.includes(' +'));
  for (const l of withTransform) assert.ok(runs.labels.includes(l), `no α line for ${l}: ${runs.labels}`);
  for (const k of runs.kept) assert.equal(k.alpha.length, LAYERS, k.label);
  await page.locator('#alpha-box').scrollIntoViewIfNeeded();
  await page.locator('#act-box').screenshot({ path: path.join(SHOTS, 'w4a8-alpha.png') });
  await page.locator('#result').screenshot({ path: path.join(SHOTS, 'w4a8-result.png') });
  await page.locator('#history-box').screenshot({ path: path.join(SHOTS, 'w4a8-runs.png') });
});

test('the per-channel activation view draws max|x|/s under the scale transform beside max|x|', { timeout: RUN_TIMEOUT_MS }, async () => {
  // The preset's last run (GPTQ dINT4 + AQAS) holds the session's transform.
  await page.$eval('#act-show', (b) => b.click());
  await page.waitForFunction(() => /^Input of/.test(document.getElementById('act-note').textContent)
    || /error|fail/i.test(document.getElementById('act-note').textContent), null, { timeout: RUN_TIMEOUT_MS });
  const a = await page.evaluate(() => {
    const u = self.quantlabPlots.get('act-chart');
    const s = self.quantlabCharts.activations.sites.at(-1);
    return { labels: u.series.map((x) => x.label), n: u.data.map((d) => d.length), smoothed: s.smoothed_max_abs, max: s.max_abs };
  });
  assert.equal(a.labels.length, 4, `series ${a.labels}`);
  assert.match(a.labels[3], /^max \|x\|\/s smoothed/);
  assert.ok(Array.isArray(a.smoothed) && a.smoothed.length === a.max.length, 'no smoothed_max_abs');
  assert.deepEqual(new Set(a.n).size, 1);
});
