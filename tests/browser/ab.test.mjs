// A/B comparison (issue 19, item 3) on fixture.mjs's tiny Llama, CPU path: pin a 4-bit RTN run
// as A, move to 2 bits (B): the table holds both runs' perplexity, KL, top-1 and bits, the
// per-layer error difference is there for every layer (2 bits worse in each), and the texts the
// quantized model generated under A and under B are shown token by token (the worker's ids and
// each token's text), the tokens that differ at the same position marked.

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
  const d = await page.$eval('#gen-quant', (e) => ({ ...e.dataset, text: e.textContent }));
  return { text: d.text, ids: JSON.parse(d.tokens), pieces: JSON.parse(d.pieces) };
}

// The spans of an A/B text pane: each token's text, id and mark.
const spans = (pane) => page.$$eval(`${pane} span`, (s) => s.map((x) => ({ text: x.textContent, id: Number(x.dataset.token), diff: x.dataset.diff === '1' && x.classList.contains('ab-diff') })));

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

  // One span per generated token, in order; the pieces join to the generated text.
  for (const [pane, mine, other] of [['#ab-text-a', textA, textB], ['#ab-text-b', textB, textA]]) {
    assert.equal(mine.pieces.join(''), mine.text);
    assert.equal(await page.textContent(pane), mine.text);
    const got = await spans(pane);
    assert.deepEqual(got.map((x) => x.id), mine.ids);
    assert.deepEqual(got.map((x) => x.text), mine.pieces);
    // Marked exactly where the token id differs from the other text's at the same position.
    assert.deepEqual(got.map((x) => x.diff), mine.ids.map((id, i) => id !== other.ids[i]), pane);
  }
  const differ = textB.ids.filter((id, i) => id !== textA.ids[i]).length;
  assert.ok(differ > 0, `2 bits and 4 bits wrote the same ${textB.ids.length} tokens: the marks are not exercised`);
  console.log(`# A ppl ${a.ppl} (${a.bpw} b/w), B ppl ${b.ppl} (${b.bpw} b/w); ${differ} of ${textB.ids.length} tokens of B differ; texts: ${JSON.stringify(textA.text)} / ${JSON.stringify(textB.text)}`);
  // Markup is text only: no element came from the generated text.
  assert.equal(await page.$$eval('#ab-text-b *:not(span)', (n) => n.length), 0);
});
