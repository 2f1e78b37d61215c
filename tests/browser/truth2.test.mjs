// The page tells the truth at every moment (issue 20), the smaller items, on fixture.mjs's tiny
// Llama on the CPU:
//  - the histogram's Row field draws that row's weights, as loaded and quantized, on the
//    tensor's bins: the loaded row equals the fixture's own weights binned here;
//  - number controls show their schema step's precision (damping 0.010, not 0.009999…);
//  - a finished run's status splits its seconds into parts that add up to the total, and the
//    protocol line names the same evaluation seconds and the same total.
// Stop during generation is in generate.test.mjs (it needs the real model's slower tokens).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RUN_TIMEOUT_MS, linkOf, openPage, openSibling, setQuant, configOf, waitForResult } from './harness.mjs';
import { servedTinyLlama, tinyCheckpoint, TINY } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 2;
// Seconds on screen are printed to 0.1 s: each printed part is off by at most 0.05 s.
const PRINTED_SECONDS_TOL = 0.05;

let page;
let close;
let tiny;

before(async () => {
  tiny = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=cpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await tiny?.close();
});

// The fixture's f32 tensor `name` (its safetensors bytes parsed here, independently of the page).
function fixtureTensor(name) {
  for (const bytes of Object.values(tinyCheckpoint(7).files)) {
    if (!(bytes instanceof Buffer) || bytes.length < 8) continue;
    const n = Number(bytes.readBigUInt64LE(0));
    let header;
    try {
      header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    } catch {
      continue; // config.json, tokenizer.json
    }
    const t = header[name];
    if (!t) continue;
    const [a, b] = t.data_offsets;
    const data = bytes.subarray(8 + n + a, 8 + n + b);
    return { shape: t.shape, data: new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) };
  }
  throw new Error(`${name} is not in the fixture`);
}

// Bin `values` on `edges` by searching them (the last edge at or below the value; the top edge
// belongs to the last bin), as a reference to the page's own binning.
function binBySearch(values, edges) {
  const counts = new Array(edges.length - 1).fill(0);
  for (const v of values) {
    let i = 0;
    while (i + 1 < edges.length - 1 && edges[i + 1] <= v) i += 1;
    counts[i] += 1;
  }
  return counts;
}

test('the histogram\'s Row field draws that row, as loaded and quantized', { timeout: RUN_TIMEOUT_MS }, async () => {
  const prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', 2);
  await waitForResult(page, prev, configOf('rtn', 2));
  const tensor = 'blk.0.ffn_down.weight';
  const ref = fixtureTensor('model.layers.0.mlp.down_proj.weight');
  const [rows, cols] = ref.shape;
  assert.deepEqual([rows, cols], [TINY.dim, TINY.ffn]);
  const drawnFor = async (row) => {
    await page.selectOption('#hist-tensor', tensor);
    await page.fill('#hist-row', String(row));
    await page.dispatchEvent('#hist-row', 'change');
    await page.waitForFunction((r) => self.quantlabCharts.histogram?.row === r
      && self.quantlabCharts.histogram.name === 'blk.0.ffn_down.weight', row, { timeout: RUN_TIMEOUT_MS });
    return page.evaluate(() => {
      const h = self.quantlabCharts.histogram;
      const plot = self.quantlabPlots.get('hist-chart');
      return {
        h, labels: plot.series.map((s) => s.label),
        // What uPlot draws (empty bins are gaps: null).
        drawn: plot.data.slice(3).map((s) => s.map((c) => c ?? 0)),
        note: document.getElementById('hist-note').textContent,
      };
    });
  };
  const seen = [];
  for (const row of [0, 5, rows - 1]) {
    const { h, labels, drawn, note } = await drawnFor(row);
    assert.deepEqual(labels.slice(3), [`row ${row} as loaded`, `row ${row} quantized`]);
    assert.deepEqual(drawn, [h.row_loaded, h.row_quantized], 'drawn = the worker\'s row bins');
    // The loaded row is the fixture's row, binned here on the page's edges.
    const want = binBySearch(ref.data.subarray(row * cols, (row + 1) * cols), h.edges);
    assert.deepEqual(h.row_loaded, want, `row ${row} as loaded`);
    // The quantized row: all `cols` weights, only on bins holding one of its levels (2-bit
    // per-group RTN: each group of 32 has at most 4 levels).
    assert.equal(h.row_quantized.reduce((a, b) => a + b, 0), cols);
    const levelBins = new Set(binBySearch(h.row_levels, h.edges).flatMap((c, i) => (c ? [i] : [])));
    h.row_quantized.forEach((c, i) => assert.ok(c === 0 || levelBins.has(i), `row ${row}: bin ${i} holds no level`));
    assert.match(note, new RegExp(`^Row ${row} can take ${h.row_levels.length} distinct values`));
    seen.push(JSON.stringify(drawn));
  }
  assert.equal(new Set(seen).size, seen.length, 'the drawn row changes with the Row field');
});

test('number controls show their schema step\'s precision', { timeout: RUN_TIMEOUT_MS }, async () => {
  const base = page.url().split('#')[0];
  // A link whose damping is the f32 0.01 read back as f64 (what Rust's JSON of a config holds).
  const q = await linkOf(page, {
    version: 1, method: { gptq: { damp: 0.009999999776482582, block: 64, act_order: true } },
    default: { bits: 4, gran: { group: 32 }, sym: true, clip_search: false }, overrides: [],
  });
  const other = await openSibling(page, `${base}#ql=1&${tiny.model}&ctx=${CTX}&win=1&q=${q}&calib=2x32`);
  try {
    const damp = other.locator('#method-fields [data-key="damp"]');
    assert.equal(await damp.inputValue(), '0.010');
    assert.equal(await other.inputValue('#method-fields [data-key="block"]'), '64');
    // Typed by hand: snapped to the step's precision when the value is taken.
    await damp.fill('0.0299999');
    await damp.dispatchEvent('change');
    assert.equal(await damp.inputValue(), '0.030');
  } finally {
    await other.close();
  }
});

test('a finished run\'s seconds: parts that add up to the total, the protocol line agreeing', { timeout: RUN_TIMEOUT_MS }, async () => {
  const prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', 6);
  await waitForResult(page, prev, configOf('rtn', 6));
  const status = await page.textContent('#eval-status');
  const m = status.match(/^Done in ([\d.]+) s \((.*)\)\.$/);
  assert.ok(m, status);
  const total = Number(m[1]);
  const parts = Object.fromEntries(m[2].split(', ').map((p) => {
    const [, what, s] = p.match(/^(\w+) ([\d.]+) s$/);
    return [what, Number(s)];
  }));
  assert.ok('quantization' in parts && 'evaluation' in parts, status);
  const sum = Object.values(parts).reduce((a, b) => a + b, 0);
  const n = Object.keys(parts).length;
  assert.ok(Math.abs(sum - total) <= (n + 1) * PRINTED_SECONDS_TOL, `${status}: parts ${sum} vs ${total}`);
  const protocol = await page.textContent('#protocol-desc');
  const p = protocol.match(/evaluation ([\d.]+) s of the run's ([\d.]+) s/);
  assert.ok(p, protocol);
  assert.equal(Number(p[1]), parts.evaluation, `${status} / ${protocol}`);
  assert.equal(Number(p[2]), total, `${status} / ${protocol}`);
});

// Issue 20: "after a WebGPU tab was closed mid-run the browser's GPU process stayed busy and the
// next tab hung". A page evaluating the real model on WebGPU (SwiftShader here: one window's
// work is minutes of the software GPU when queued whole) is closed mid-run; a new page of the
// same browser, also on WebGPU, must then finish its own run. What keeps the GPU free is the
// paced recording (src/gpu/pace.rs: little work is queued at any moment) and the worker
// ended on pagehide (www/truth2.js).
test('a WebGPU page closed mid-run leaves the GPU to the next page', { timeout: 4 * RUN_TIMEOUT_MS }, async () => {
  const first = await openPage('?backend=gpu#ql=1&ctx=256&win=8');
  try {
    const context = first.page.context();
    await first.page.waitForFunction(() => document.getElementById('result').dataset.phase === 'evaluating',
      null, { timeout: RUN_TIMEOUT_MS, polling: 100 });
    assert.equal(await first.page.getAttribute('#result', 'data-state'), 'running');
    await first.page.close({ runBeforeUnload: true });
    const t0 = Date.now();
    const next = await context.newPage();
    await next.goto(`${first.url}?backend=gpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=1`);
    await next.waitForSelector('#model-status[data-state="ready"]', { timeout: RUN_TIMEOUT_MS });
    const r = await waitForResult(next, '0');
    console.log(`# next WebGPU page's first run finished ${((Date.now() - t0) / 1000).toFixed(1)} s after the busy page closed`);
    assert.equal(r.backend, 'gpu');
    assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `ppl ${r.ppl}`);
  } finally {
    await first.close();
  }
});
