// End-to-end tests of the playground's share links, model loading and pictures (issue 4) on the
// CPU path (`?backend=cpu`) in Debian's headless Chromium (see harness.mjs). Screenshots of the
// main states go to out/screenshots/. Also prints the "first experience": seconds from opening
// the page to the first perplexity on the default model and the first 1,024 tokens of the
// built-in prose text (the page's defaults: llama.cpp protocol, 4 windows of 256 tokens).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, configOf, openPage, openSibling, setQuant, waitForResult } from './harness.mjs';

const CTX = 128;
const WINDOWS = 2;
// The same link on the same machine runs the same code on the same tokens: the perplexity must
// agree to float printing precision.
const SAME_PPL_REL_TOL = 1e-9;
const SHOTS = path.join(ROOT, 'out', 'screenshots');
// Chart values are the report's bytes divided by 1e6: equal up to float rounding.
const MB_REL_TOL = 1e-12;
// The layer clicked in the layer map.
const PICK_LAYER = 5;

let page;
let close;
let firstSeconds;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  ({ page, close } = await openPage('?backend=cpu'));
  // The page evaluates the default configuration by itself once the model is ready.
  await waitForResult(page, '0');
  firstSeconds = await page.evaluate(() => self.quantlabFirstResult / 1000);
});

after(async () => {
  await close?.();
});

const shot = (name, p = page) => p.screenshot({ path: path.join(SHOTS, `${name}.png`) });

test('first experience: the default model evaluates by itself after opening the page', async () => {
  const desc = await page.textContent('#protocol-desc');
  console.log(`# first experience: ${firstSeconds.toFixed(1)} s from opening the page to the first perplexity (${desc})`);
  assert.ok(firstSeconds > 0 && Number.isFinite(firstSeconds));
  // The first run is the built-in prose text's first 1,024 tokens: 4 windows of 256.
  assert.match(desc, /4 non-overlapping windows of 256 tokens/);
  assert.match(desc, /of 1024 evaluated/);
  assert.match(await page.getAttribute('#result', 'data-config'), /"method":"none"/);
  await shot('1-first-result');
});

test('changing bits changes perplexity and memory; the charts hold the runs', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.selectOption('#ctx', String(CTX));
  await page.selectOption('#windows', String(WINDOWS));
  await setQuant(page, 'rtn', 4);
  let prev = await page.getAttribute('#result', 'data-run');
  const q4 = await waitForResult(page, prev, configOf('rtn', 4));
  await setQuant(page, 'rtn', 2);
  prev = await page.getAttribute('#result', 'data-run');
  const q2 = await waitForResult(page, prev, configOf('rtn', 2));
  assert.ok(q2.ppl > q4.ppl, `2-bit perplexity ${q2.ppl} is not above 4-bit ${q4.ppl}`);
  assert.ok(q2.memory < q4.memory, `2-bit memory ${q2.memory} is not below 4-bit ${q4.memory}`);
  assert.ok(q2.bpw < q4.bpw, `bits per weight ${q2.bpw} vs ${q4.bpw}`);

  // Charts: check the data they draw.
  // The layer map arrives after the result: wait for the 2-bit run's map, not the 4-bit one's.
  await page.waitForFunction(() => self.quantlabCharts.layers?.cells.some((c) => c.rel_error > 0)
    && self.quantlabCharts.layers.cells.every((c) => c.bits_per_weight < 3), null, { timeout: RUN_TIMEOUT_MS });
  const charts = await page.evaluate(() => self.quantlabCharts);
  // The chart holds the runs comparable with the one on screen (this text at ctx CTX × WINDOWS):
  // the two RTN runs; the first run, at the default context, is in the runs table only.
  assert.ok(charts.pareto.ppl.length >= 2, `Pareto chart has ${charts.pareto.ppl.length} points`);
  assert.ok(charts.pareto.ppl.includes(q2.ppl) && charts.pareto.ppl.includes(q4.ppl));
  assert.ok(charts.pareto.front.some((v) => v !== null), 'no Pareto front marked');
  const codes = charts.memory.components.find((c) => c.name === 'codes').bytes;
  assert.ok(codes > 0 && charts.memory.f16 > charts.memory.total, `memory bar ${JSON.stringify(charts.memory)}`);
  assert.equal(charts.layers.cells.length, 30 * 7);
  assert.ok(charts.layers.cells.every((c) => Math.abs(c.bits_per_weight - 2.5) < 0.6), 'layer map bits do not show 2-bit groups');
  // The memory bar and the layer map are uPlot charts: check the data they hold.
  const drawn = await page.evaluate(() => {
    const p = self.quantlabPlots;
    const labels = (id) => p.get(id)?.series.map((s) => s.label);
    return {
      memory: p.get('memory-bar')?.data, memoryLabels: labels('memory-bar'),
      err: p.get('layer-err-chart')?.data, bits: p.get('layer-bits-chart')?.data,
    };
  });
  assert.ok(drawn.memory, 'no memory chart');
  // Stacked: the top series of "this model" is the total; the last series is the f16 bar.
  const near = (a, b) => Math.abs(a - b) <= MB_REL_TOL * Math.abs(b);
  assert.ok(near(drawn.memory[1][0], charts.memory.total / 1e6), `memory bar top ${drawn.memory[1][0]} vs total ${charts.memory.total}`);
  assert.ok(near(drawn.memory.at(-1)[1], charts.memory.f16 / 1e6), `f16 bar ${drawn.memory.at(-1)[1]}`);
  assert.ok(drawn.memoryLabels.some((l) => /^codes /.test(l)) && drawn.memoryLabels.some((l) => /^scales\/zeros /.test(l)), drawn.memoryLabels.join());
  const sumParts = charts.memory.components.reduce((a, c) => a + c.bytes, 0);
  assert.equal(sumParts, charts.memory.total, 'memory components do not add up to the total');
  assert.equal(drawn.err.length, 1 + 7);
  assert.equal(drawn.err[0].length, 30);
  for (const c of charts.layers.cells) {
    assert.equal(drawn.err[1 + c.kind][c.layer], c.rel_error > 0 ? c.rel_error : null, `error of ${c.name}`);
    assert.equal(drawn.bits[1 + c.kind][c.layer], c.bits_per_weight, `bits of ${c.name}`);
  }
  // Clicking layer 5 in the layer map chooses it for a per-layer setting.
  await page.locator('#layers-box').scrollIntoViewIfNeeded();
  const at = await page.evaluate((l) => {
    const u = self.quantlabPlots.get('layer-err-chart');
    const r = u.over.getBoundingClientRect();
    return { x: r.left + u.valToPos(l, 'x'), y: r.top + r.height / 2 };
  }, PICK_LAYER);
  await page.mouse.click(at.x, at.y);
  assert.equal(await page.inputValue('#ov-layer'), String(PICK_LAYER));
  await page.waitForFunction(() => self.quantlabCharts.histogram !== null, null, { timeout: RUN_TIMEOUT_MS });
  const h = await page.evaluate(() => self.quantlabCharts.histogram);
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  assert.ok(sum(h.loaded) > 0 && sum(h.loaded) === sum(h.quantized), 'histogram counts');
  assert.ok(h.row_levels.length > 1 && h.row_levels.length <= 4 * 576 / 32, `row levels ${h.row_levels.length}`);
  await page.click('#act-show');
  await page.waitForFunction(() => self.quantlabCharts.activations !== null, null, { timeout: RUN_TIMEOUT_MS });
  const a = await page.evaluate(() => self.quantlabCharts.activations);
  assert.equal(a.sites.length, 4);
  assert.ok(a.sites[3].max_abs.length === 1536 && a.sites[3].max_abs.some((v) => v > 0));
  await page.locator('#layers-box').scrollIntoViewIfNeeded();
  await shot('2-layer-map-histogram');
  await page.locator('#pareto-box').scrollIntoViewIfNeeded();
  await shot('3-pareto');
});

test('a copied link opens the same configuration with the same perplexity', { timeout: RUN_TIMEOUT_MS }, async () => {
  // A per-layer override and asymmetric scales, so more than the defaults travel.
  await page.selectOption('#ov-layer', '3');
  await page.selectOption('#ov-bits', '8');
  await page.click('#ov-add');
  await page.uncheck('#sym');
  let prev = await page.getAttribute('#result', 'data-run');
  const mine = await waitForResult(page, prev, '"pattern":"blk.3.*"');
  const config = await page.getAttribute('#result', 'data-config');
  assert.match(config, /"sym":false/);
  await page.click('#copy-link');
  const url = await page.getAttribute('#copy-link', 'data-url');
  assert.match(url, /#ql=1&/);
  const other = await openSibling(page, url);
  try {
    const theirs = await waitForResult(other, '0');
    assert.equal(await other.getAttribute('#result', 'data-config'), config);
    assert.equal(await other.inputValue('#ctx'), String(CTX));
    assert.equal(await other.inputValue('#windows'), String(WINDOWS));
    const rel = Math.abs(theirs.ppl - mine.ppl) / mine.ppl;
    assert.ok(rel <= SAME_PPL_REL_TOL, `link perplexity ${theirs.ppl} vs ${mine.ppl}`);
    assert.equal(await other.textContent('#link-error'), '');
    await shot('4-opened-link', other);
  } finally {
    await other.close();
  }
  prev = await page.getAttribute('#result', 'data-run');
  await page.click('#ov-clear');
  await waitForResult(page, prev, '"overrides":[]');
});

test('malformed and newer links show a message and the page still works', { timeout: RUN_TIMEOUT_MS }, async () => {
  const base = page.url().split('#')[0];
  const cases = [
    ['#ql=1&ctx=999', /not valid.*ctx/],
    ['#ql=7&ctx=128', /newer QuantLab/],
    ['#ql=1&q=v1.bm90IGpzb24', /quantization settings in this link are not valid/],
    ['#ql=1&text=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E', /not valid/],
  ];
  for (const [hash, want] of cases) {
    const other = await openSibling(page, base + hash);
    try {
      await other.waitForSelector('#link-error[data-failed="true"]', { timeout: RUN_TIMEOUT_MS });
      const msg = await other.textContent('#link-error');
      assert.match(msg, want, `${hash}: ${msg}`);
      assert.match(msg, /default settings/);
      // Untrusted text is never HTML.
      assert.equal(await other.locator('#link-error img').count(), 0);
      if (hash === cases[0][0]) {
        const r = await waitForResult(other, '0');
        assert.ok(Number.isFinite(r.ppl), 'the page does not evaluate after a bad link');
        await shot('5-bad-link', other);
      }
    } finally {
      await other.close();
    }
  }
});

test('a corrupt model file gives a clear error and the previous model stays usable', { timeout: RUN_TIMEOUT_MS }, async () => {
  await setQuant(page, 'none');
  let prev = await page.getAttribute('#result', 'data-run');
  const before = await waitForResult(page, prev, '"method":"none"');
  const junk = Buffer.concat([Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0]), Buffer.alloc(64, 0xff)]);
  await page.setInputFiles('#model-file', { name: 'broken.gguf', mimeType: 'application/octet-stream', buffer: junk });
  await page.waitForSelector('#model-status[data-failed="true"]', { timeout: RUN_TIMEOUT_MS });
  const err = await page.textContent('#error');
  assert.match(err, /broken\.gguf/, `error does not name the file: ${err}`);
  assert.match(await page.textContent('#model-status'), /still using SmolLM2/);
  assert.doesNotMatch(err, /at .*\.js|wasm-function|RuntimeError/, `error looks like a stack trace: ${err}`);
  await shot('6-corrupt-model');
  prev = await page.getAttribute('#result', 'data-run');
  await page.click('#evaluate');
  const after = await waitForResult(page, prev, '"method":"none"');
  assert.equal(after.ppl, before.ppl, 'the previous model no longer gives the same perplexity');
});

test('the method panel comes from the schema and a preset fills the chart', { timeout: RUN_TIMEOUT_MS }, async () => {
  const methods = await page.$$eval('#method option', (os) => os.map((o) => o.value));
  for (const m of ['none', 'rtn', 'gptq', 'awq', 'kmeans', 'nf4', 'fp4']) assert.ok(methods.includes(m), `no ${m}`);
  // Only group sizes dividing 576 and 1536 are offered.
  const grans = await page.$$eval('#gran option', (os) => os.map((o) => o.value));
  assert.deepEqual(grans.filter((g) => g.startsWith('g')), ['g16', 'g32', 'g64', 'g192']);
  await page.selectOption('#method', 'nf4');
  assert.equal(await page.getAttribute('#bits', 'min'), '4');
  assert.equal(await page.getAttribute('#bits', 'max'), '4');
  await page.waitForFunction(() => /QLoRA/.test(document.getElementById('method-explainer').textContent));
  await page.selectOption('#method', 'gptq');
  assert.equal(await page.isVisible('#calib-box'), true);
  assert.equal(await page.inputValue('#calib-n'), '32');
  assert.equal(await page.inputValue('#calib-len'), '512');
  assert.ok(await page.isChecked('#method-fields input[data-key="act_order"]'));
  await page.selectOption('#method', 'rtn');
  await page.selectOption('#windows', '1');
  await page.selectOption('#ctx', '64');
  const points = (await page.evaluate(() => self.quantlabCharts.pareto.ppl.length));
  await page.selectOption('#preset', 'bits');
  await page.click('#preset-run');
  await page.waitForSelector('#preset-status[data-done="true"]', { timeout: RUN_TIMEOUT_MS });
  const after = await page.evaluate(() => self.quantlabCharts.pareto);
  // The chart holds the runs at this context (64 × 1): the preset's four, and any measured
  // there before it (`points`, drawn with the earlier context until the preset's first run).
  assert.ok(after.ppl.length >= 4, `the chart holds ${after.ppl.length} points (before: ${points})`);
  for (const b of [8, 4, 3, 2]) assert.ok(after.labels.includes(`RTN ${b}-bit g32 sym`), `no RTN ${b}-bit in ${after.labels}`);
  await page.locator('#pareto-box').scrollIntoViewIfNeeded();
  await shot('7-preset-bits');
});

test('instructor flags in the link hide the chosen controls', { timeout: RUN_TIMEOUT_MS }, async () => {
  const base = page.url().split('#')[0];
  const other = await openSibling(page, `${base}#ql=1&hide=gran,sym,presets`);
  try {
    await other.waitForSelector('#method option[value="rtn"]', { state: 'attached' });
    assert.equal(await other.isVisible('#gran'), false);
    assert.equal(await other.isVisible('#sym'), false);
    assert.equal(await other.isVisible('#preset'), false);
    assert.equal(await other.isVisible('#bits'), true);
  } finally {
    await other.close();
  }
});
