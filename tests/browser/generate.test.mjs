// The page's side-by-side generation (issue 4): the model as loaded and the quantized model
// continue the same prompt greedily, streamed into two panes. Both texts must be what the native
// CLI (`quantlab generate`, the same Rust code) produces for the same prompt and quantization,
// token for token; the Stop button must end a generation, keep each pane's text so far labelled
// as stopped, and leave the page usable.
// CPU path (`?backend=cpu`); a share link makes the page's own first evaluation small.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { BIN, MODEL, ROOT, RUN_TIMEOUT_MS, openPage, setQuant, waitForResult } from './harness.mjs';

const PROMPT = 'The lighthouse keeper climbed the stairs and';
// Enough tokens for 3-bit RTN to part from the model as loaded, few enough for two CPU runs in
// WebAssembly on a 2-core machine.
const NEW_TOKENS = 24;
const BITS = 3;
const GROUP = 32;

let page;
let close;

before(async () => {
  ({ page, close } = await openPage('?backend=cpu#ql=1&ctx=64&win=1'));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
});

// The CLI's progress (stderr) is not shown.
const cli = (args) => execFileSync(BIN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('reference and quantized text side by side equal the CLI\'s greedy output', { timeout: RUN_TIMEOUT_MS }, async () => {
  await setQuant(page, 'rtn', BITS);
  await page.selectOption('#gran', `g${GROUP}`);
  await page.check('#sym');
  await page.fill('#gen-prompt', PROMPT);
  await page.fill('#gen-n', String(NEW_TOKENS));
  const t0 = Date.now();
  await page.click('#gen-run');
  // Streaming: the reference pane fills before the whole job is done.
  await page.waitForFunction(() => document.getElementById('gen-ref').textContent.length > 0
    && document.getElementById('gen-box').dataset.state === 'running', null, { timeout: RUN_TIMEOUT_MS, polling: 50 });
  await page.waitForFunction(() => document.getElementById('gen-box').dataset.state !== 'running', null,
    { timeout: RUN_TIMEOUT_MS, polling: 250 });
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(await page.getAttribute('#gen-box', 'data-state'), 'done', await page.textContent('#gen-status'));
  const ref = await page.textContent('#gen-ref');
  const quant = await page.textContent('#gen-quant');
  const refTokens = JSON.parse(await page.getAttribute('#gen-ref', 'data-tokens'));
  const quantTokens = JSON.parse(await page.getAttribute('#gen-quant', 'data-tokens'));
  console.log(`# generation in the page: ${NEW_TOKENS} tokens × 2 models in ${seconds.toFixed(1)} s (CPU, wasm)`);
  console.log(`#   as loaded: ${JSON.stringify(ref)}`);
  console.log(`#   RTN ${BITS}-bit g${GROUP}: ${JSON.stringify(quant)}`);
  assert.ok(ref.length > 0 && quant.length > 0, 'a pane is empty');
  assert.match(await page.textContent('#gen-quant-h'), new RegExp(`RTN ${BITS}-bit g${GROUP}`));

  const out = cli(['generate', '--model', MODEL, '--prompt', PROMPT, '--tokens', String(NEW_TOKENS),
    '--bits', String(BITS), '--group', String(GROUP), '--json']);
  const native = JSON.parse(out.trim().split('\n').pop());
  assert.deepEqual(refTokens, native.reference.tokens, 'reference tokens differ from the CLI');
  assert.equal(ref, native.reference.text, 'reference text differs from the CLI');
  assert.deepEqual(quantTokens, native.quantized.tokens, 'quantized tokens differ from the CLI');
  assert.equal(quant, native.quantized.text, 'quantized text differs from the CLI');
  assert.equal(refTokens.length, NEW_TOKENS);
  const shots = path.join(ROOT, 'out', 'screenshots');
  mkdirSync(shots, { recursive: true });
  await page.locator('#gen-box').scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, '8-generation.png') });
});

test('Stop ends a generation and the page keeps working', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.fill('#gen-n', '200');
  await page.click('#gen-run');
  await page.waitForFunction(() => document.getElementById('gen-ref').textContent.length > 0, null,
    { timeout: RUN_TIMEOUT_MS, polling: 50 });
  await page.click('#gen-stop');
  await page.waitForFunction(() => document.getElementById('gen-box').dataset.state === 'stopped', null,
    { timeout: RUN_TIMEOUT_MS, polling: 100 });
  // The worker is free again: an evaluation runs.
  const prev = await page.getAttribute('#result', 'data-run');
  await page.click('#evaluate');
  const r = await waitForResult(page, prev);
  assert.ok(Number.isFinite(r.ppl));
  assert.equal(await page.getAttribute('#gen-box', 'data-state'), 'stopped');
});

test('Stop while the quantized model writes keeps both texts so far, labelled as stopped', { timeout: RUN_TIMEOUT_MS }, async () => {
  // Enough tokens that Stop lands while the quantized model still writes (each takes tens of ms).
  await page.fill('#gen-n', '12');
  await page.click('#gen-run');
  // The reference is done and the quantized pane has begun: stop it there.
  await page.waitForFunction(() => document.getElementById('gen-ref').dataset.tokens !== undefined
    && document.getElementById('gen-quant').textContent.length > 0, null, { timeout: RUN_TIMEOUT_MS, polling: 20 });
  await page.click('#gen-stop');
  const at = await page.textContent('#gen-quant');
  // Tokens already on their way may not change what Stop kept.
  await page.waitForTimeout(1000);
  assert.equal(await page.getAttribute('#gen-box', 'data-state'), 'stopped');
  const kept = await page.textContent('#gen-quant');
  assert.ok(kept.length > 0, 'the quantized pane was emptied');
  assert.equal(kept, at, 'the quantized pane changed after Stop');
  assert.equal(await page.getAttribute('#gen-quant', 'data-stopped'), 'true');
  assert.equal(await page.getAttribute('#gen-ref', 'data-stopped'), 'false');
  assert.match(await page.textContent('#gen-quant-h'), / — stopped part way \(text so far\)$/);
  assert.equal(await page.textContent('#gen-ref-h'), 'As loaded');
  assert.equal(await page.textContent('#gen-status'),
    'Stopped: the model as loaded finished; the quantized model stopped part way (its text so far is kept).');
  // The next generation starts clean: headings back, no stopped marks.
  await page.fill('#gen-n', '1');
  await page.click('#gen-run');
  await page.waitForFunction(() => document.getElementById('gen-box').dataset.state === 'done', null,
    { timeout: RUN_TIMEOUT_MS, polling: 100 });
  assert.doesNotMatch(await page.textContent('#gen-quant-h'), /stopped/);
  assert.equal(await page.getAttribute('#gen-quant', 'data-stopped'), null);
});
