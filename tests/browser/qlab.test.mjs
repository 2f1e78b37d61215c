// Keeping a result (issue 16): the page saves its quantized model as a .qlab download; a fresh
// page opened on that file evaluates it to the same perplexity, to the last digit, and its model
// card says where the file came from; the CLI evaluates the same download to the page's
// perplexity. The page's GGUF is byte for byte the CLI's export of the same config, and the
// Hugging Face checkpoint comes as its four files. CPU path, a small evaluation.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, configOf, openPage, setQuant, waitForResult } from './harness.mjs';

const CTX = 64;
const WINDOWS = 1;
// As onebit.test.mjs: the same Rust code natively and in wasm, summing in another order.
const PPL_REL_TOL = 1e-4;
const QUERY = `?backend=cpu#ql=1&ctx=${CTX}&win=${WINDOWS}`;

let page;
let close;
let dir;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'quantlab-qlab-'));
  ({ page, close } = await openPage(QUERY));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a saved .qlab reopens in a fresh page with the same perplexity and its history', { timeout: RUN_TIMEOUT_MS }, async () => {
  const prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', 3);
  const r = await waitForResult(page, prev, configOf('rtn', 3));
  const pplText = await page.getAttribute('#ppl', 'data-value');

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save-qlab')]);
  const file = path.join(dir, download.suggestedFilename());
  await download.saveAs(file);
  assert.match(download.suggestedFilename(), /^SmolLM2-135M-Instruct\.Q4_1-rtn-3-bit\.qlab$/);
  const bytes = readFileSync(file);
  await page.waitForFunction(() => /Saved .*\.qlab \(\d+\.\d MB\)/.test(document.getElementById('save-status').textContent));
  assert.equal(Number(await page.getAttribute('#save-status', 'data-bytes')), bytes.length);
  // Its size is the model's memory plus the header and tokenizer (a few MB at most).
  assert.ok(bytes.length >= r.memory && bytes.length < r.memory + 4e6, `${bytes.length} bytes for ${r.memory}`);

  // The CLI reads the download to the page's perplexity.
  const out = execFileSync(BIN, ['eval', '--model', file, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--no-kl', '--json'],
  { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const c = JSON.parse(out.trim().split('\n').pop());
  console.log(`# page ppl ${r.ppl}; the download in the CLI ${c.ppl}`);
  assert.ok(Math.abs(c.ppl - r.ppl) <= PPL_REL_TOL * r.ppl, `CLI ${c.ppl} vs page ${r.ppl}`);
  assert.equal(c.bits_per_weight, r.bpw);

  // A fresh page (its own browser profile) opens the file: the same weights, so the same number.
  const fresh = await openPage(QUERY);
  try {
    const p = fresh.page;
    await waitForResult(p, '0');
    const loads = await p.getAttribute('#model-status', 'data-loads');
    const before = await p.getAttribute('#result', 'data-run');
    await p.setInputFiles('#model-file', file);
    await p.waitForFunction((n) => document.getElementById('model-status').dataset.loads !== n, loads,
      { timeout: RUN_TIMEOUT_MS });
    const card = await p.textContent('#model-card');
    assert.match(card, /Saved fromSmolLM2-135M-Instruct\.Q4_1\.gguf \(SHA-256 [0-9a-f]{12}…\)/);
    assert.match(card, /Quantization appliedrtn 3-bit/);
    // A new model keeps the page's settings (here: as loaded) and waits for Evaluate.
    await p.click('#evaluate');
    const back = await waitForResult(p, before);
    assert.equal(await p.getAttribute('#ppl', 'data-value'), pplText, 'the reopened file evaluates to the same perplexity');
    assert.equal(back.bpw, r.bpw);
    const shots = path.join(ROOT, 'out', 'screenshots');
    mkdirSync(shots, { recursive: true });
    await p.screenshot({ path: path.join(shots, '16-qlab-reopened.png'), fullPage: true });
  } finally {
    await fresh.close();
  }
});

test('a damaged .qlab is refused by name and the model in use stays', { timeout: RUN_TIMEOUT_MS }, async () => {
  const good = readFileSync(path.join(dir, 'SmolLM2-135M-Instruct.Q4_1-rtn-3-bit.qlab'));
  const bad = path.join(dir, 'damaged.qlab');
  // Cut in the middle of the tensor data.
  writeFileSync(bad, good.subarray(0, Math.floor(good.length / 2)));
  const label = await page.textContent('#model-card');
  await page.setInputFiles('#model-file', bad);
  await page.waitForFunction(() => /damaged\.qlab/.test(document.getElementById('error').textContent),
    null, { timeout: RUN_TIMEOUT_MS });
  assert.match(await page.textContent('#error'), /damaged\.qlab: data: .*file truncated/);
  assert.equal(await page.textContent('#model-card'), label, 'the previous model stays');
  assert.equal(await page.$eval('#save-qlab', (b) => b.disabled), false, 'it can still be saved');
});

test('GGUF from the page is byte for byte the CLI export of the same config; the HF files come as four', { timeout: RUN_TIMEOUT_MS }, async () => {
  // The page still holds RTN 3-bit from the first test (the damaged file did not replace it).
  const config = await page.getAttribute('#result', 'data-config');
  assert.match(config, /"method":"rtn"/);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save-gguf')]);
  const name = download.suggestedFilename();
  assert.match(name, /^SmolLM2-135M-Instruct\.Q4_1-rtn-3-bit\.gguf$/);
  const file = path.join(dir, name);
  await download.saveAs(file);
  await page.waitForFunction(() => document.getElementById('save-report').children.length > 0);
  const report = await page.textContent('#save-report');
  assert.match(report, /210 of 210 block linears in an exact ggml type/);
  // The CLI, with the page's config and the same file name (GGUF's general.name).
  const cliDir = path.join(dir, 'cli');
  mkdirSync(cliDir, { recursive: true });
  execFileSync(BIN, ['export', '--model', 'models/SmolLM2-135M-Instruct.Q4_1.gguf', '--config', config,
    '--to', 'gguf', '--out', path.join(cliDir, name)], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  const a = readFileSync(file);
  const b = readFileSync(path.join(cliDir, name));
  console.log(`# GGUF: page ${a.length} bytes, CLI ${b.length} bytes`);
  assert.equal(a.length, b.length);
  assert.ok(a.equals(b), 'the page and the CLI wrote different GGUF bytes');

  // Hugging Face: four downloads, each named after its file in the checkpoint.
  const got = [];
  const onDownload = (d) => got.push(d);
  page.on('download', onDownload);
  await page.click('#save-hf');
  await page.waitForFunction(() => document.getElementById('save-status').dataset.form === 'hf', null, { timeout: RUN_TIMEOUT_MS });
  for (let i = 0; i < 50 && got.length < 4; i += 1) await new Promise((r) => setTimeout(r, 100));
  page.off('download', onDownload);
  const names = got.map((d) => d.suggestedFilename().split('__')[1]).sort();
  assert.deepEqual(names, ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const cfg = got.find((d) => d.suggestedFilename().endsWith('__config.json'));
  const cfgPath = path.join(dir, 'config.json');
  await cfg.saveAs(cfgPath);
  assert.equal(JSON.parse(readFileSync(cfgPath, 'utf8')).architectures[0], 'LlamaForCausalLM');
});
