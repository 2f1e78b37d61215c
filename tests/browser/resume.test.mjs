// Resuming a stopped BinaryMoS lite training in the page (issue 15; www/resume.js,
// src/playground/lite.rs): on the CPU path (`?backend=cpu`) a run stopped after a few tensors
// says how many it kept with a Resume button; Resume (pressed from the keyboard) trains only the
// rest, the trace shows the kept tensors as already trained, and the model evaluates to exactly
// the perplexity of an uninterrupted run of the same configuration in a fresh page. The offer
// also goes when the configuration changes.
//
// The model is fixture.mjs's tiny Llama (2 blocks of 7 linears) served by the local Hub.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 2;
const CALIB_N = 4;
const CALIB_LEN = 64;
// Enough steps per linear that the run can be stopped between its first and last tensor.
const STEPS = 400;
// Block linears of the tiny Llama, all BinaryMoS.
const TENSORS = 14;
// Stop once this many tensors finished training.
const STOP_AFTER = 2;
// Resumed against uninterrupted: the same wasm, the same kept tables, the same order of sums, so
// the perplexity is the same number exactly.
const PPL_TOL = 0;
const CONFIG = {
  version: 1, method: { binarymos: { experts: 4, steps: STEPS, lr: 0.01 } },
  default: { bits: 1, gran: 'per_row', sym: true, clip_search: false }, overrides: [],
};

let tiny;
let url;
const pages = [];

before(async () => {
  tiny = await servedTinyLlama();
  const q = `v1.${Buffer.from(JSON.stringify(CONFIG)).toString('base64url')}`;
  url = `?backend=cpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}&calib=${CALIB_N}x${CALIB_LEN}&q=${q}`;
});

after(async () => {
  for (const p of pages) await p.close();
  await tiny?.close();
});

// Wait until `k` tensors finished training, then press the training panel's Stop.
async function stopAfter(page, k) {
  await page.waitForFunction((n) => {
    const m = /\((\d+) tensors done\)/.exec(document.getElementById('train-status').textContent);
    return m && Number(m[1]) >= n;
  }, k, { timeout: RUN_TIMEOUT_MS, polling: 20 });
  await page.click('#train-stop');
  await page.waitForSelector('#train-resume:not([hidden])');
}

async function setSteps(page, steps) {
  await page.$eval('#method-fields [data-key="steps"]', (e, v) => {
    e.value = String(v);
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, steps);
}

test('a stopped lite training resumes from the button and ends at the uninterrupted run\'s PPL', { timeout: RUN_TIMEOUT_MS }, async () => {
  const t0 = Date.now();
  const { page, close } = await openPage(url);
  pages.push({ close });
  // The link's configuration trains at once; stopped when STOP_AFTER tensors are done.
  await stopAfter(page, STOP_AFTER);
  const said = await page.textContent('#train-resume-text');
  const m = /^Stopped: (\d+) of (\d+) tensors trained\.$/.exec(said);
  assert.ok(m, said);
  const kept = Number(m[1]);
  assert.equal(Number(m[2]), TENSORS);
  assert.ok(kept >= 1 && kept < TENSORS, said);
  assert.equal(await page.getAttribute('#result', 'data-state'), 'cancelled');
  const prev = await page.getAttribute('#result', 'data-run');
  const shots = path.join(ROOT, 'out', 'screenshots');
  mkdirSync(shots, { recursive: true });
  await page.locator('#train-resume-button').scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, 'binary-resume.png') });

  // A real button, reached and pressed from the keyboard.
  await page.focus('#train-resume-button');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'train-resume-button');
  await page.keyboard.press('Enter');
  const resumed = await waitForResult(page, prev, `"steps":${STEPS}`);
  await page.waitForSelector('#train-status[data-done="true"]');
  assert.ok(await page.isHidden('#train-resume'), 'the offer goes when the run completes');
  const t = await page.evaluate(() => self.quantlabCharts.training);
  assert.equal(t.tensors.length, TENSORS);
  // The first `kept` tensors came from the stopped run, the rest trained now.
  assert.deepEqual(t.tensors.map((x) => x.kept), t.tensors.map((_, i) => i < kept));
  assert.match(await page.textContent('#train-status'), new RegExp(`Trained ${TENSORS} tensors \\(${kept} kept from the stopped run\\)`));
  const tResumed = (Date.now() - t0) / 1000;

  // The same configuration, never stopped, in a fresh page (a new session, nothing kept).
  const fresh = await openPage(url);
  pages.push(fresh);
  const straight = await waitForResult(fresh.page, '0', `"steps":${STEPS}`);
  console.log(`# stopped after ${kept} of ${TENSORS} tensors, resumed: ppl ${resumed.ppl} (${tResumed.toFixed(1)} s); uninterrupted: ppl ${straight.ppl} (${((Date.now() - t0) / 1000 - tResumed).toFixed(1)} s)`);
  assert.ok(Math.abs(resumed.ppl - straight.ppl) <= PPL_TOL, `resumed ${resumed.ppl} vs uninterrupted ${straight.ppl}`);
  assert.equal(resumed.bpw, straight.bpw);

  // Another configuration stopped, then changed to a third, long one: the offer goes when its
  // run starts, before that run could finish (the status still says the last run stopped).
  await setSteps(fresh.page, STEPS + 1);
  await stopAfter(fresh.page, 1);
  await setSteps(fresh.page, STEPS + 2);
  await fresh.page.waitForSelector('#train-resume', { state: 'hidden' });
  assert.equal(await fresh.page.getAttribute('#train-status', 'data-done'), 'stopped');
  console.log(`# whole test ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});
