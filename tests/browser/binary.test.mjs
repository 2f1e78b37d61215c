// 1-bit weights in the page (issue 15 item 5): BinaryMoS is in the method menu with its lite
// training, and the "1 bit" preset puts sign binarization, OneBit (SVID) and BinaryMoS with 1, 2,
// 4 and 8 scale experts beside RTN and GPTQ at 2 bits (groups of 64) on the Pareto chart. Each
// point is what the native CLI measures for the run's configuration on the same model, text and
// calibration, and more experts cost more bits.
//
// The model is fixture.mjs's tiny Llama, served by the local Hub and written to a folder for the
// CLI: the preset trains four BinaryMoS models layer by layer, which on the real model takes
// minutes each in single-threaded wasm. CPU path (`?backend=cpu`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, linkOf, openPage, waitForResult } from './harness.mjs';

// WebGPU (SwiftShader) against the native CPU: calibration on the GPU sums in another order, and
// lite training carries the difference a little further (as TRAINED_REL_TOL).
const GPU_PPL_REL_TOL = 1e-3;
// Lite steps per linear of the WebGPU run.
const GPU_STEPS = 5;
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 2;
const CALIB_N = 16;
const CALIB_LEN = 128;
// sign, OneBit, BinaryMoS × 4, RTN and GPTQ at 2 bits.
const PRESET_POINTS = 8;
const EXPERTS = [1, 2, 4, 8];
// Page (wasm) against CLI (native), the same code. Closed forms (sign, SVID, RTN) differ only by
// float rounding; Adam's steps and GPTQ's error feedback carry such differences further.
const CLOSED_REL_TOL = 1e-5;
const TRAINED_REL_TOL = 1e-3;

let page;
let close;
let tiny; // servedTinyLlama(): the checkpoint for the page and the CLI

before(async () => {
  tiny = await servedTinyLlama();
  const read = (n) => readFileSync(path.join(ROOT, 'www/texts', `${n}.txt`), 'utf8');
  writeFileSync(path.join(tiny.root, 'calib.txt'), `${read('dialogue')}\n\n${read('code')}`);
  ({ page, close } = await openPage(`?backend=cpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await tiny?.close();
});

function cliRun(config) {
  const args = ['eval', '--model', tiny.modelDir, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--config', config, '--no-kl', '--json'];
  if (/"(gptq|binarymos)"/.test(config)) {
    args.push('--calib-text', path.join(tiny.root, 'calib.txt'), '--calib-n', String(CALIB_N), '--calib-len', String(CALIB_LEN));
  }
  const out = execFileSync(BIN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out.trim().split('\n').pop());
}

test('the 1-bit preset: sign, OneBit, BinaryMoS N = 1, 2, 4, 8 and 2-bit RTN/GPTQ, each the CLI\'s result', { timeout: RUN_TIMEOUT_MS }, async () => {
  const t0 = Date.now();
  await page.selectOption('#preset', 'binary');
  await page.click('#preset-run');
  await page.waitForSelector('#preset-status[data-done="true"]', { timeout: RUN_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#result', 'data-state'), 'done', await page.textContent('#error'));
  console.log(`# 1-bit preset on the tiny Llama: ${PRESET_POINTS} configurations in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const runs = await page.$$eval('#history tbody tr', (rows) => rows.map((r) => ({
    label: r.cells[0].textContent, config: r.dataset.config,
    bpw: Number(r.cells[6].textContent), ppl: Number(r.cells[3].textContent.split(' ')[0]),
  })));
  // The newest run is on top; the preset's are the newest PRESET_POINTS.
  const preset = runs.slice(0, PRESET_POINTS).reverse();
  const kinds = preset.map((r) => {
    const m = JSON.parse(r.config).method;
    return typeof m === 'string' ? m : Object.keys(m)[0];
  });
  assert.deepEqual(kinds, ['sign', 'onebit', 'binarymos', 'binarymos', 'binarymos', 'binarymos', 'rtn', 'gptq']);
  const experts = preset.filter((r) => r.config.includes('"binarymos"')).map((r) => JSON.parse(r.config).method.binarymos.experts);
  assert.deepEqual(experts, EXPERTS);

  // The chart holds the same points (perplexity, bits) under the same labels.
  const p = await page.evaluate(() => self.quantlabCharts.pareto);
  const chart = p.labels.map((label, i) => ({ label, bpw: p.bpw[i], ppl: p.ppl[i] }));
  for (const r of preset) {
    const pt = chart.find((c) => c.label === r.label);
    assert.ok(pt, `no chart point ${r.label}: ${p.labels.join(', ')}`);
    const cli = cliRun(r.config);
    const rel = Math.abs(pt.ppl - cli.ppl) / cli.ppl;
    const tol = /"(gptq|binarymos)"/.test(r.config) ? TRAINED_REL_TOL : CLOSED_REL_TOL;
    console.log(`#   ${r.label.padEnd(34)} ${pt.bpw.toFixed(3)} bits  ppl ${pt.ppl.toFixed(3)}  CLI ${cli.ppl.toFixed(3)} (rel ${rel.toExponential(1)})`);
    assert.ok(rel <= tol, `${r.label}: page ${pt.ppl} vs CLI ${cli.ppl} (rel ${rel} > ${tol})`);
    assert.ok(Math.abs(pt.bpw - cli.bits_per_weight) <= 1e-9, `${r.label}: page ${pt.bpw} bits vs CLI ${cli.bits_per_weight}`);
  }
  // Every expert costs its scale vectors and router column: bits grow with N (on 64-wide rows
  // the f16 vectors weigh a lot: 1.67 bits at N = 1 here, 1.07 on the default model).
  const mosBits = preset.filter((r) => r.config.includes('"binarymos"'))
    .map((r) => chart.find((c) => c.label === r.label).bpw);
  for (let i = 1; i < mosBits.length; i += 1) assert.ok(mosBits[i] > mosBits[i - 1], `bits ${mosBits}`);
  const shots = path.join(ROOT, 'out', 'screenshots');
  mkdirSync(shots, { recursive: true });
  await page.locator('#pareto-box').scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, 'binary-preset.png') });
});

test('the router\'s gates of a BinaryMoS tensor over the text: one token each, every row a softmax', { timeout: RUN_TIMEOUT_MS }, async () => {
  const prev = await page.getAttribute('#result', 'data-run');
  await page.selectOption('#method', 'binarymos');
  const r = await waitForResult(page, prev, '"binarymos"');
  assert.ok(Number.isFinite(r.ppl));
  await page.waitForSelector('#gates-box:not([hidden])');
  await page.selectOption('#hist-tensor', 'blk.1.ffn_down.weight');
  await page.waitForFunction(() => /ffn_down/.test(document.getElementById('gates-note').textContent));
  const note = await page.textContent('#gates-note');
  const rows = await page.$$eval('#gates-text span', (s) => s.map((x) => ({ text: x.textContent, gates: JSON.parse(x.dataset.gates) })));
  console.log(`# ${note}`);
  assert.match(note, /blk\.1\.ffn_down\.weight reads down_in of layer 1/);
  assert.ok(rows.length > 16, `${rows.length} tokens`);
  const experts = JSON.parse(await page.getAttribute('#result', 'data-config')).method.binarymos.experts;
  for (const { gates } of rows) {
    assert.equal(gates.length, experts);
    // A softmax: positive, summing to 1 (f32 rounding of a few terms).
    assert.ok(Math.abs(gates.reduce((a, b) => a + b, 0) - 1) < 1e-5 && gates.every((v) => v > 0), JSON.stringify(gates));
  }
  // The router tells tokens apart: the gates are not the same on every token.
  const spread = Math.max(...rows.map(({ gates }) => Math.abs(gates[0] - rows[0].gates[0])));
  assert.ok(spread > 1e-4, `gate 1 varies by ${spread} over the tokens`);
  // The tokens are the text's, as text.
  const text = await page.inputValue('#text-view');
  assert.ok(text.includes(rows.slice(1, 6).map((x) => x.text).join('')), rows.slice(0, 6).map((x) => x.text).join('|'));
  await page.locator('#gates-box').scrollIntoViewIfNeeded();
  await page.locator('#gates-box').screenshot({ path: path.join(ROOT, 'out', 'screenshots', 'binary-gates.png') });
});

async function setField(key, value) {
  await page.$eval(`#method-fields [data-key="${key}"]`, (e, v) => {
    e.value = String(v);
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, value);
}

test('lite training draws each tensor\'s loss as it falls, and Stop cancels a long training', { timeout: RUN_TIMEOUT_MS }, async () => {
  assert.equal(await page.inputValue('#method'), 'binarymos');
  assert.ok(!(await page.isHidden('#train-box')), 'the training box shows for BinaryMoS');
  let prev = await page.getAttribute('#result', 'data-run');
  await setField('steps', 20);
  await waitForResult(page, prev, '"steps":20');
  await page.waitForSelector('#train-status[data-done="true"]');
  const t = await page.evaluate(() => self.quantlabCharts.training);
  // 2 blocks of 7 linears, each trained from SVID's start: every final loss below its start.
  assert.equal(t.tensors.length, 14, JSON.stringify(t.tensors.map((x) => x.name)));
  assert.ok(t.tensors.every((x) => x.ratio > 0 && x.ratio < 1), JSON.stringify(t.tensors));
  console.log(`# lite training: ${await page.textContent('#train-status')}`);
  await page.locator('#train-box').screenshot({ path: path.join(ROOT, 'out', 'screenshots', 'binary-training.png') });

  // A long training, stopped after its first steps: the run ends as cancelled and the model
  // keeps the 20-step quantization, which the next evaluation shows.
  prev = await page.getAttribute('#result', 'data-run');
  const before = await page.getAttribute('#bpw', 'data-value');
  await setField('steps', 1000);
  await page.waitForFunction(() => !document.getElementById('train-stop').disabled
    && /step [1-9]/.test(document.getElementById('train-status').textContent), null, { timeout: RUN_TIMEOUT_MS, polling: 20 });
  await page.click('#train-stop');
  await page.waitForSelector('#train-status[data-done="stopped"]');
  assert.match(await page.textContent('#train-status'), /Stopped after \d+ tensors; the model keeps its previous quantization/);
  assert.equal(await page.getAttribute('#result', 'data-run'), prev, 'no result for the stopped run');
  await page.click('#evaluate');
  const r = await waitForResult(page, prev);
  assert.match(await page.getAttribute('#result', 'data-config'), /"steps":1000/);
  assert.equal(String(r.bpw), before);
});

test('BinaryMoS on WebGPU in the page: the link\'s configuration calibrates, trains and evaluates to the CLI\'s perplexity', { timeout: RUN_TIMEOUT_MS }, async () => {
  // The page's configuration with few steps: on WebGPU BinaryMoS trains on the GPU, which
  // SwiftShader runs in software (about 2 s a step for the 14 tensors; gpulite.test.mjs).
  const cfg = JSON.parse(await page.getAttribute('#result', 'data-config'));
  cfg.method.binarymos.steps = GPU_STEPS;
  const config = JSON.stringify(cfg);
  const cli = cliRun(config);
  const link = new URL(await page.evaluate(() => location.href));
  const hash = link.hash.replace(/([#&])q=[^&]*/, `$1q=${await linkOf(page, cfg)}`);
  assert.notEqual(hash, link.hash, 'the link carries the configuration');
  const gpu = await openPage(`?backend=gpu&${tiny.hub}${hash}`);
  try {
    const r = await waitForResult(gpu.page, '0', '"binarymos"');
    const rel = Math.abs(r.ppl - cli.ppl) / cli.ppl;
    console.log(`# BinaryMoS on ${r.backend}: ppl ${r.ppl}, CLI (CPU) ${cli.ppl}, rel ${rel.toExponential(2)}; GPU memory ${r.gpuMemory} B`);
    assert.equal(r.backend, 'gpu');
    assert.ok(rel <= GPU_PPL_REL_TOL, `WebGPU ${r.ppl} vs CLI ${cli.ppl}`);
    assert.equal(r.bpw, cli.bits_per_weight);
  } finally {
    await gpu.close();
  }
});
