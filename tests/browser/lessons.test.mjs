// Guided lessons in the page (issue 19; www/lessons.js, docs/lessons.md), on fixture.mjs's tiny
// Llama, CPU path: a built-in lesson opened by `?lesson=bits` runs to its end, each step's
// configuration reaching the result panel with its numbers and the step's part of the page
// highlighted; the lesson menu opens another (one-row: the histogram's row snaps to 2^bits
// levels); an instructor's `#lesson=` link whose step cannot run on the model is refused before
// any run starts, and one that can stays in the address (before the hash's share link) so that
// a reload mid-lesson reopens it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';
import { lessonHash } from '../../www/lesson-format.js';

// A 16-bit scale per group of 32 weights adds 16 / 32 bits to every weight of the linears; the
// page prints bits per weight to 3 decimals.
const SCALE_BITS = 16 / 32;
const BPW_TOL = 5e-4;

const lesson = (id) => JSON.parse(readFileSync(path.join(ROOT, 'www/lessons', `${id}.json`), 'utf8'));
let served;
let page;
let close;
let opened;

before(async () => {
  served = await servedTinyLlama();
  opened = Date.now();
  ({ page, close } = await openPage(`?backend=cpu&lesson=bits&${served.hub}#ql=1&${served.model}`));
});

after(async () => {
  await close?.();
  await served?.close();
});

// Answer step `i` (the first choice when it asks), wait for its result; returns the numbers.
async function answerStep(i) {
  await page.waitForSelector(`#lesson-panel[data-step="${i}"][data-state="asking"]`, { timeout: RUN_TIMEOUT_MS });
  const asks = await page.isVisible('#lesson-predict');
  if (asks) {
    assert.ok(await page.isDisabled('#lesson-run'), 'the result waits for a prediction');
    await page.check('#lesson-choices input >> nth=0');
  }
  await page.click('#lesson-run');
  await page.waitForSelector(`#lesson-panel[data-step="${i}"][data-state="answered"], #lesson-panel[data-state="error"]`, { timeout: RUN_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#lesson-panel', 'data-state'), 'answered', await page.textContent('#lesson-status'));
  return {
    asks,
    ppl: Number(await page.getAttribute('#ppl', 'data-value')),
    bpw: Number(await page.getAttribute('#bpw', 'data-value')),
    config: JSON.parse(await page.getAttribute('#result', 'data-config')),
    target: await page.$eval('.lesson-target', (e) => e.id),
    status: await page.textContent('#lesson-status'),
  };
}

test('?lesson=bits runs to its end: each step\'s bits reach the result, its numbers appear, its answer is highlighted', { timeout: RUN_TIMEOUT_MS }, async () => {
  const want = lesson('bits');
  assert.equal(await page.textContent('#lesson-title'), want.title);
  assert.equal(await page.evaluate(() => self.quantlabCounts.runs), 0, 'a lesson does not start the default run');
  for (const [i, st] of want.steps.entries()) {
    const r = await answerStep(i);
    if (i === 0) console.log(`# lesson link opened to its first answered step: ${((Date.now() - opened) / 1000).toFixed(1)} s (model load included)`);
    assert.deepEqual(r.config.default, { ...st.setup.q.default, clip_search: false });
    assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `step ${i}: perplexity ${r.ppl}`);
    assert.ok(Math.abs(r.bpw - (st.setup.q.default.bits + SCALE_BITS)) < BPW_TOL, `step ${i}: ${r.bpw} bits per weight`);
    assert.equal(r.target, { ppl: 'ppl', pareto: 'pareto-box', 'memory-bar': 'memory-bar' }[st.show]);
    assert.equal(r.asks, Boolean(st.predict));
    if (st.predict) assert.match(r.status, new RegExp(`^You predicted: ${st.predict.choices[0].replace(/[()]/g, '.')}`));
    await page.click('#lesson-next');
  }
  await page.waitForSelector('#lesson-panel[data-state="finished"]');
  // Every step's run is in the runs table.
  assert.equal(await page.$$eval('#history tbody tr', (rows) => rows.length), want.steps.length);
});

test('the menu opens the one-row lesson: the histogram\'s row takes at most 2^bits values, more with groups', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.selectOption('#lesson-menu', 'one-row');
  const want = lesson('one-row');
  await page.waitForFunction((t) => document.getElementById('lesson-title').textContent === t, want.title);
  const levels = [];
  for (const [i, st] of want.steps.entries()) {
    const prevNote = await page.textContent('#hist-note');
    await answerStep(i);
    await page.waitForFunction((p) => {
      const t = document.getElementById('hist-note').textContent;
      return t !== p && /^Row 0 can take/.test(t);
    }, prevNote, { timeout: RUN_TIMEOUT_MS });
    assert.equal(await page.inputValue('#hist-tensor'), st.row.tensor);
    levels.push(Number(/can take (\d+) distinct/.exec(await page.textContent('#hist-note'))[1]));
    if (i < want.steps.length - 1) await page.click('#lesson-next');
  }
  const [four, two, twoGroups] = levels;
  assert.ok(four <= 16 && four > 4, `4 bits: ${four} values`);
  assert.ok(two <= 4, `2 bits per row: ${two} values`);
  assert.ok(twoGroups > two, `2 bits in groups of 32: ${twoGroups} values against ${two} per row`);
});

test('an instructor\'s lesson link that asks for what the model cannot do is refused before any run', { timeout: RUN_TIMEOUT_MS }, async () => {
  const bad = lesson('bits');
  bad.steps[2].setup.q.default.gran = { group: 48 }; // 48 does not divide the tiny model's 64 inputs
  const runs = await page.evaluate(() => self.quantlabCounts.runs);
  const url = new URL(page.url());
  url.search = `?backend=cpu&${served.hub}`;
  bad.model = 'test-org/tiny-llama';
  url.hash = lessonHash(bad);
  await page.goto(url.href);
  await page.waitForFunction(() => document.getElementById('lesson-error').dataset.failed === 'true', null, { timeout: RUN_TIMEOUT_MS });
  assert.match(await page.textContent('#lesson-error'), /step 3 cannot run on this model: it asks for scales per group of 48, which does not divide/);
  assert.ok(await page.isHidden('#lesson-panel'));
  assert.equal(await page.evaluate(() => self.quantlabCounts.runs), 0, `runs before: ${runs}`);
});

test('an instructor\'s lesson link survives a reload mid-lesson: it reopens at its first step', { timeout: RUN_TIMEOUT_MS }, async () => {
  const mine = lesson('groups');
  mine.model = 'test-org/tiny-llama';
  const url = new URL(page.url());
  url.search = `?backend=cpu&${served.hub}`;
  url.hash = lessonHash(mine);
  // From another document: the page reads its address once, when it loads.
  await page.goto('about:blank');
  await page.goto(url.href);
  await page.waitForFunction((t) => document.getElementById('lesson-title').textContent === t, mine.title, { timeout: RUN_TIMEOUT_MS });
  await answerStep(0);
  // The hash now holds the step's share link after the lesson.
  const during = new URL(page.url()).hash;
  assert.ok(during.startsWith(`${lessonHash(mine)}&ql=1&`), during.slice(0, 80));
  await page.click('#lesson-next');
  await page.waitForSelector('#lesson-panel[data-step="1"][data-state="asking"]');
  await page.reload();
  await page.waitForFunction((t) => document.getElementById('lesson-title').textContent === t, mine.title, { timeout: RUN_TIMEOUT_MS });
  await page.waitForSelector('#lesson-panel[data-step="0"][data-state="asking"]', { timeout: RUN_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#lesson-panel', 'data-lesson'), 'link');
  assert.equal(await page.evaluate(() => self.quantlabCounts.runs), 0, 'the reopened lesson does not start the default run');
  // Closing the lesson takes it out of the address; the share link stays.
  await page.click('#lesson-close');
  assert.match(new URL(page.url()).hash, /^#ql=1&/);
});
