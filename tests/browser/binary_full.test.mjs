// A *full* BinaryMoS result file in the page (issue 15): the CLI distils fixture.mjs's tiny
// Llama (`quantlab binarize --mode full`, a few steps), the page opens the .qlab, its model card
// says how it was trained (method, mode, steps, tokens) and it evaluates to the perplexity the
// CLI gives the same file. CPU path (`?backend=cpu`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 2;
const STEPS = 3;
const SEQ_LEN = 16;
const BATCH = 2;
// The same Rust code natively and in wasm, summing in another order (as qlab.test.mjs).
const PPL_REL_TOL = 1e-4;

let page;
let close;
let tiny;
let file;

before(async () => {
  tiny = await servedTinyLlama();
  file = path.join(tiny.root, 'tiny-full.qlab');
  execFileSync(BIN, ['binarize', '--model', tiny.modelDir, '--text', path.join(ROOT, 'www/texts/dialogue.txt'),
    '--method', 'binarymos', '--experts', '2', '--mode', 'full', '--steps', String(STEPS), '--lr', '1e-3',
    '--seq-len', String(SEQ_LEN), '--batch', String(BATCH), '--keep-first', '0', '--out', file],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  ({ page, close } = await openPage(`?backend=cpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await tiny?.close();
});

test('a full-distillation .qlab opens with its training on the card and the CLI\'s perplexity', { timeout: RUN_TIMEOUT_MS }, async () => {
  const loads = await page.getAttribute('#model-status', 'data-loads');
  const before = await page.getAttribute('#result', 'data-run');
  await page.setInputFiles('#model-file', file);
  await page.waitForFunction((n) => document.getElementById('model-status').dataset.loads !== n, loads,
    { timeout: RUN_TIMEOUT_MS });
  const card = await page.textContent('#model-card');
  assert.match(card, new RegExp(`Trainingbinarymos full, ${STEPS} steps, ${STEPS * SEQ_LEN * BATCH} tokens, \\d+ s`), card);
  assert.match(card, /Quantization appliedbinarymos 1-bit/);
  await page.click('#evaluate');
  const r = await waitForResult(page, before);
  const out = execFileSync(BIN, ['eval', '--model', file, '--text', TEXT, '--ctx', String(CTX),
    '--windows', String(WINDOWS), '--no-kl', '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const c = JSON.parse(out.trim().split('\n').pop());
  console.log(`# full BinaryMoS file: page ppl ${r.ppl}, CLI ${c.ppl}, ${r.bpw} bits`);
  assert.ok(Number.isFinite(r.ppl) && Math.abs(c.ppl - r.ppl) <= PPL_REL_TOL * c.ppl, `page ${r.ppl} vs CLI ${c.ppl}`);
  assert.equal(r.bpw, c.bits_per_weight);
});
