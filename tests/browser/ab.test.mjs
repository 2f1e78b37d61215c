// A/B comparison (issue 19, item 3) on fixture.mjs's tiny Llama, CPU path: pin a 4-bit RTN run
// as A, move to 2 bits (B): the table holds both runs' perplexity, KL, top-1 and bits, the
// per-layer error difference is there for every layer (2 bits worse in each), and the texts the
// quantized model generated under A and under B are shown with the differing words marked.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RUN_TIMEOUT_MS, configOf, openPage, setQuant, waitForResult } from './harness.mjs';
import { TINY, servedTinyLlama } from './fixture.mjs';

const GEN_TOKENS = 12;

let served;
let page;
let close;

before(async () => {
  served = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=cpu&${served.hub}#ql=1&${served.model}&ctx=64&win=1`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await served?.close();
});

async function generate() {
  await page.fill('#gen-n', String(GEN_TOKENS));
  await page.click('#gen-run');
  await page.waitForFunction(() => document.getElementById('gen-box').dataset.state === 'done', null, { timeout: RUN_TIMEOUT_MS });
  return page.textContent('#gen-quant');
}

async function run(bits) {
  const prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', bits);
  return waitForResult(page, prev, configOf('rtn', bits));
}

const row = (key) => page.$eval(`#ab-table tr[data-key=${key}]`, (tr) => [Number(tr.dataset.a), Number(tr.dataset.b)]);

test('A/B: pinned 4-bit run against 2 bits, side by side', { timeout: 2 * RUN_TIMEOUT_MS }, async () => {
  const a = await run(4);
  // The layer map arrives after the result; pin once it is there.
  await page.waitForFunction(() => !document.getElementById('ab-pin').disabled);
  const textA = await generate();
  await page.click('#ab-pin');
  const b = await run(2);
  const textB = await generate();
  await page.waitForFunction((n) => document.querySelectorAll('#ab-layers tr[data-layer]').length === n, TINY.layers, { timeout: RUN_TIMEOUT_MS });

  assert.deepEqual(await row('ppl'), [a.ppl, b.ppl]);
  assert.deepEqual(await row('bpw'), [a.bpw, b.bpw]);
  assert.deepEqual(await row('kl'), [Number(a.kl), Number(b.kl)]);
  assert.deepEqual(await row('top1'), [Number(a.top1), Number(b.top1)]);
  assert.ok(b.ppl !== a.ppl && b.bpw < a.bpw, `A ${a.ppl} @ ${a.bpw}, B ${b.ppl} @ ${b.bpw}`);
  // Two bits lose more of every layer than four.
  const diffs = await page.$$eval('#ab-layers tr[data-layer]', (trs) => trs.map((t) => Number(t.dataset.diff)));
  assert.ok(diffs.every((d) => d > 0), `per-layer B − A: ${diffs}`);

  assert.equal(await page.textContent('#ab-text-a'), textA);
  assert.equal(await page.textContent('#ab-text-b'), textB);
  // The marked words are exactly those that differ at their position.
  const words = (s) => s.split(/(\s+)/).filter((w) => w !== '' && !/^\s+$/.test(w));
  const marked = await page.$$eval('#ab-text-b span[data-diff]', (s) => s.map((x) => x.textContent));
  const wa = textA.split(/(\s+)/).filter((w) => w !== '');
  const want = textB.split(/(\s+)/).filter((w) => w !== '').filter((w, i) => !/^\s+$/.test(w) && w !== wa[i]);
  assert.deepEqual(marked, want);
  console.log(`# A ppl ${a.ppl} (${a.bpw} b/w), B ppl ${b.ppl} (${b.bpw} b/w); ${marked.length} of ${words(textB).length} words of B differ; texts: ${JSON.stringify(textA)} / ${JSON.stringify(textB)}`);
  // Markup is text only: no element came from the generated text.
  assert.equal(await page.$$eval('#ab-text-b *:not(span)', (n) => n.length), 0);
});
