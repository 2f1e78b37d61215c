// llama.cpp's reference quantizers in the page (issue 16 item 4: "so the Pareto chart can show
// what llama-quantize gives"): the method menu offers them, the type menu sets the bits, each run
// is the CLI's `--method ggml --ggml-type T` to the last digits with the bits per weight of the
// format (Q4_0 4.5, Q8_0 8.5), the runs land in their own series of the Pareto chart, the link
// keeps the type, and the GGUF download holds every block linear in that exact type. CPU path,
// a small evaluation of the default model.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, MODEL, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, openSibling, waitForResult } from './harness.mjs';

const CTX = 64;
const WINDOWS = 1;
// The same Rust code natively and in wasm, summing in another order (as qlab.test.mjs).
const PPL_REL_TOL = 1e-4;
// Bits per weight of the block linears: the codes plus the f16 scale (and min) per 32 weights.
const BPW = { q4_0: 4.5, q4_1: 5, q8_0: 8.5 };

let page;
let close;
let url;
let dir;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'quantlab-ggml-'));
  ({ page, close, url } = await openPage(`?backend=cpu#ql=1&ctx=${CTX}&win=${WINDOWS}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const cli = (type) => JSON.parse(execFileSync(BIN, ['eval', '--model', MODEL, '--text', TEXT, '--ctx', String(CTX),
  '--windows', String(WINDOWS), '--method', 'ggml', '--ggml-type', type, '--bits', String(type === 'q8_0' ? 8 : 4),
  '--no-kl', '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n').pop());

async function chooseType(type) {
  await page.$eval('#method-fields [data-key="type"]', (e, v) => {
    e.value = v;
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, type);
}

test('the ggml method: the type sets the bits; each run is the CLI\'s and lands in its series', { timeout: RUN_TIMEOUT_MS }, async () => {
  let prev = await page.getAttribute('#result', 'data-run');
  await page.selectOption('#method', 'ggml');
  const first = await waitForResult(page, prev, '"method":{"ggml":{"type":"q4_0"}}');
  assert.equal(await page.inputValue('#bits'), '4');
  assert.ok(await page.isDisabled('#bits'), 'the bits control follows the type');
  const runs = { q4_0: first };
  for (const type of ['q4_1', 'q8_0']) {
    prev = await page.getAttribute('#result', 'data-run');
    await chooseType(type);
    runs[type] = await waitForResult(page, prev, `"method":{"ggml":{"type":"${type}"}}`);
    assert.equal(await page.inputValue('#bits'), type === 'q8_0' ? '8' : '4');
  }
  for (const [type, r] of Object.entries(runs)) {
    const c = cli(type);
    const rel = Math.abs(r.ppl - c.ppl) / c.ppl;
    console.log(`# ggml ${type}: page ppl ${r.ppl} (${r.bpw} bits/weight), CLI ${c.ppl} (${c.bits_per_weight}), rel ${rel.toExponential(2)}`);
    assert.ok(rel <= PPL_REL_TOL, `${type}: page ${r.ppl} vs CLI ${c.ppl}`);
    assert.equal(r.bpw, c.bits_per_weight);
    assert.ok(Math.abs(r.bpw - BPW[type]) < 1e-9, `${type}: ${r.bpw} bits per weight`);
  }
  assert.ok(runs.q8_0.ppl < runs.q4_0.ppl, `Q8_0 ${runs.q8_0.ppl} is not below Q4_0 ${runs.q4_0.ppl}`);
  const p = await page.evaluate(() => self.quantlabCharts.pareto);
  assert.equal(p.series.ggml.filter((v) => v !== null).length, 3, JSON.stringify(p.labels));
});

test('the link keeps the ggml type; the GGUF download stores every block linear in that type', { timeout: RUN_TIMEOUT_MS }, async () => {
  const config = await page.getAttribute('#result', 'data-config');
  assert.match(config, /"ggml":\{"type":"q8_0"\}/);
  const link = new URL(await page.evaluate(() => location.href));
  const other = await openSibling(page, `${url}?backend=cpu${link.hash}`);
  try {
    await waitForResult(other, '0', '"ggml":{"type":"q8_0"}');
    assert.equal(await other.inputValue('#method'), 'ggml');
    assert.equal(await other.inputValue('#method-fields [data-key="type"]'), 'q8_0');
    assert.equal(await other.inputValue('#bits'), '8');
  } finally {
    await other.close();
  }
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save-gguf')]);
  const file = path.join(dir, download.suggestedFilename());
  await download.saveAs(file);
  await page.waitForFunction(() => document.getElementById('save-report').children.length > 0);
  const report = await page.textContent('#save-report');
  assert.match(report, /210 of 210 block linears in an exact ggml type/);
  // The CLI reads the download back: every block linear is Q8_0 (the source's are Q4_1).
  const info = execFileSync(BIN, ['info', '--model', file], { cwd: ROOT, encoding: 'utf8' });
  console.log(`# ${report}\n# ${info.split('\n').filter((l) => /block linears/.test(l)).join('\n# ')}`);
  assert.match(info, /block linears\s+Q8_0\s+210 tensors/);
});
