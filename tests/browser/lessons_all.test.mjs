// Every built-in lesson runs to its end (issue 19, item 5), on fixture.mjs's tiny Llama, CPU
// path: one page opens each lesson of www/lesson-format.js's BUILT_IN in turn (the first by its
// `?lesson=` address, the others from the lesson menu), answers each step's prediction, runs the
// step and checks that the step's numbers appear: the run's perplexity is finite, the result
// carries the step's bits, and the part of the page the step points at is highlighted and holds
// numbers written by this step (the test blanks them before the step runs). The configurations
// are the lessons' own (2 windows of 128 tokens, calibration 16 × 128): on the tiny model the
// whole file takes under a minute on the 2-core machine.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';
import { BUILT_IN, TARGETS } from '../../www/lesson-format.js';

// Where each highlighted part of the page writes its numbers, and what they look like once
// written: a value, a note with counts, a chart's text alternative with at least one point.
const POINTS = /\(([1-9]\d*) points?\)/;
const DIGIT = /\d/;
const NUMBERS = {
  ppl: ['#ppl', DIGIT],
  bpw: ['#bpw', DIGIT],
  'memory-bar': ['#memory-bar + details.chart-data > summary', POINTS],
  pareto: ['#pareto-chart + details.chart-data > summary', POINTS],
  histogram: ['#hist-note', /^Row \d+ can take \d+ distinct/],
  channels: ['#chan-note', /^\d+ input columns: \d+ at \d+ bits/],
  runs: ['#history tbody tr:first-child', DIGIT],
  underflow: ['#underflow-table tbody', DIGIT],
  tender: ['#tender-note', /^Layer \d+/],
  gates: ['#gates-note', /\d+ tokens/],
};

// How long one step may take to show its numbers: each step takes 0.3-1 s on the tiny model
// here (whole lessons 0.8-2.5 s); a minute leaves room for a loaded CI machine and makes a
// missing number fail in a minute rather than in RUN_TIMEOUT_MS.
const STEP_MS = 60_000;
const methodName = (m) => (typeof m === 'string' ? m : Object.keys(m)[0]);
const lesson = (id) => JSON.parse(readFileSync(path.join(ROOT, 'www/lessons', `${id}.json`), 'utf8'));
let served;
let page;
let close;

before(async () => {
  served = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=cpu&lesson=${BUILT_IN[0].id}&${served.hub}#ql=1&${served.model}`));
});

after(async () => {
  await close?.();
  await served?.close();
});

// Blank the numbers `show` points at, so that only this step can fill them again.
async function blank(show) {
  await page.evaluate((sel) => {
    const n = document.querySelector(sel);
    if (n) n.textContent = '';
  }, NUMBERS[show][0]);
}

// The numbers `show` points at, once this step has written them (null while absent or hidden).
async function numbersOf(show) {
  const [sel, want] = NUMBERS[show];
  const h = await page.waitForFunction(([s, src, flags]) => {
    const n = document.querySelector(s);
    if (!n || n.closest('[hidden]')) return null;
    const t = n.textContent.trim();
    return new RegExp(src, flags).test(t) ? t : null;
  }, [sel, want.source, want.flags], { timeout: STEP_MS });
  return h.jsonValue();
}

for (const [n, { id, title }] of BUILT_IN.entries()) {
  test(`lesson ${id} runs to its end and each step's numbers appear`, { timeout: RUN_TIMEOUT_MS }, async () => {
    const t0 = Date.now();
    const want = lesson(id);
    assert.equal(want.title, title);
    if (n > 0) await page.selectOption('#lesson-menu', id);
    await page.waitForFunction((t) => document.getElementById('lesson-title').textContent === t, title, { timeout: RUN_TIMEOUT_MS });
    for (const [i, st] of want.steps.entries()) {
      await page.waitForSelector(`#lesson-panel[data-step="${i}"][data-state="asking"]`, { timeout: STEP_MS });
      assert.equal(await page.isVisible('#lesson-predict'), Boolean(st.predict), `${id} step ${i + 1}: asks iff it predicts`);
      if (st.predict) {
        assert.ok(await page.isDisabled('#lesson-run'), `${id} step ${i + 1}: the result waits for a prediction`);
        const last = st.predict.choices.length - 1;
        await page.check(`#lesson-choices input >> nth=${last}`);
      }
      await blank(st.show);
      await page.click('#lesson-run');
      await page.waitForSelector(`#lesson-panel[data-step="${i}"][data-state="answered"], #lesson-panel[data-state="error"]`, { timeout: STEP_MS });
      assert.equal(await page.getAttribute('#lesson-panel', 'data-state'), 'answered', `${id} step ${i + 1}: ${await page.textContent('#lesson-status')}`);

      const ppl = Number(await page.getAttribute('#ppl', 'data-value'));
      assert.ok(Number.isFinite(ppl) && ppl > 1, `${id} step ${i + 1}: perplexity ${ppl}`);
      // The step's configuration reached the run: its method, and its weight bits (CMPQ's
      // budget instead: the page fills CMPQ's unused default bits from its own controls) and
      // activation bits.
      const config = JSON.parse(await page.getAttribute('#result', 'data-config'));
      const q = st.setup.q;
      const where = `${id} step ${i + 1}: ${JSON.stringify(config)}`;
      assert.equal(methodName(config.method), methodName(q.method), where);
      if (methodName(q.method) === 'cmpq') assert.equal(config.method.cmpq.budget, q.method.cmpq.budget, where);
      else assert.equal(config.default.bits, q.default.bits, where);
      assert.equal(config.act?.bits, q.act?.bits, where);
      if (st.predict) assert.ok((await page.textContent('#lesson-status')).startsWith(`You predicted: ${st.predict.choices.at(-1)}.`));
      assert.equal(await page.$eval('.lesson-target', (e) => e.id), TARGETS[st.show], `${id} step ${i + 1}: highlighted`);
      assert.ok(await page.isVisible('.lesson-target'), `${id} step ${i + 1}: the highlighted part is shown`);
      const shown = await numbersOf(st.show);
      assert.ok(shown.length > 0, `${id} step ${i + 1}: ${st.show} holds ${JSON.stringify(shown)}`);
      await page.click('#lesson-next');
    }
    await page.waitForSelector('#lesson-panel[data-state="finished"]');
    console.log(`# lesson ${id}: ${want.steps.length} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });
}
