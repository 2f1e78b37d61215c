// Screenshots for issue 20's closing note (not a test): the page on the default model, CPU path,
// in the states the issue names. Usage:
//   QUANTLAB_BIN=… node tests/browser/screens-truth.mjs /tmp/shots-truth
// writes into that folder:
//   1-failed-run.png        a run failed on a too-short text: the notice beside the text control
//   2-run-in-progress.png   a run in progress beside the previous result (marked stale, named)
//   3-pareto-hover.png      the Pareto chart's tooltip naming the point under the pointer
//   4-pareto-recalled.png   that point clicked: its stored result back, phase "recalled"
//   5-cancelled-run.png     a run stopped part way, its finished windows kept
//   6-rejected-link.png     a link asking for groups of 48 (not a divisor of the layers' inputs)
// Shot 5 clicks Stop once the status says window 2 or 3 of 4 is reached (it says where the run
// stopped: inside a window, or between two).

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { linkOf, openPage, openSibling, setQuant, configOf, waitForResult } from './harness.mjs';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tests/browser/screens-truth.mjs OUTPUT_DIR');
  process.exit(2);
}
mkdirSync(dir, { recursive: true });
const shot = (page, name, opts = {}) => page.screenshot({ path: path.join(dir, name), ...opts });

const { page, close } = await openPage('?backend=cpu#ql=1&ctx=64&win=2');
try {
  await waitForResult(page, '0');
  const run = () => page.getAttribute('#result', 'data-run');

  let prev = await run();
  await setQuant(page, 'rtn', 4);
  await waitForResult(page, prev, configOf('rtn', 4));

  // 2: the next run while it works, beside the previous result.
  prev = await run();
  await setQuant(page, 'rtn', 3);
  await page.waitForSelector('#result[data-phase="evaluating"]', { timeout: 120_000 });
  await page.locator('#eval').scrollIntoViewIfNeeded();
  await shot(page, '2-run-in-progress.png');
  await waitForResult(page, prev, configOf('rtn', 3));

  // 6: a link the controls cannot show for this model.
  const q = await linkOf(page, {
    version: 1, method: { gptq: { damp: 0.01, block: 128, act_order: true } },
    default: { bits: 4, gran: { group: 48 }, sym: true, clip_search: false }, overrides: [],
  });
  const other = await openSibling(page, `${page.url().split('#')[0]}#ql=1&ctx=64&win=1&q=${q}`);
  await other.waitForFunction(() => document.getElementById('link-error').textContent.length > 0);
  await shot(other, '6-rejected-link.png');
  await other.close();
  // 5: stopped part way through 4 windows (a window of this model takes a second or two here).
  await page.selectOption('#windows', '4');
  await setQuant(page, 'rtn', 5);
  await page.waitForFunction(() => /RTN 5-bit/.test(document.getElementById('result-of').textContent)
    && /window [2-3] of 4/.test(document.getElementById('eval-status').textContent), null, { timeout: 120_000, polling: 50 });
  await page.click('#eval-stop');
  console.log(`# ${await page.textContent('#eval-status')}`);
  await page.waitForSelector('#result[data-state="cancelled"]', { timeout: 300_000 });
  await page.locator('#eval').scrollIntoViewIfNeeded();
  await shot(page, '5-cancelled-run.png');

  // 1: a text too short for one window.
  await page.fill('#text-view', 'Too short.');
  await page.waitForSelector('#result[data-phase="failed"]', { timeout: 120_000 });
  await page.locator('.run-error').scrollIntoViewIfNeeded();
  await shot(page, '1-failed-run.png');

  // Back to the text the runs so far were measured on (a new run: RTN 5 was stopped).
  await page.selectOption('#windows', '2');
  prev = await run();
  await page.selectOption('#text-select', 'prose');
  await page.waitForFunction(() => document.getElementById('result').dataset.phase !== 'failed');
  await waitForResult(page, prev);

  // 3 and 4: hover the RTN 4-bit point, then click it.
  const chart = await page.evaluate(() => self.quantlabCharts.pareto.runs);
  const i = chart.findIndex((x) => x.label.startsWith('RTN 4-bit'));
  await page.locator('#pareto-box').scrollIntoViewIfNeeded();
  const at = await page.evaluate((k) => self.quantlabParetoPoint(k), i);
  await page.mouse.move(at.x, at.y);
  await page.waitForSelector('#pareto-tip:not([hidden])');
  await shot(page, '3-pareto-hover.png');
  prev = await run();
  await page.mouse.click(at.x, at.y);
  await page.waitForFunction((p) => document.getElementById('result').dataset.run !== p, prev);
  await page.locator('#result').scrollIntoViewIfNeeded();
  await shot(page, '4-pareto-recalled.png');

  console.log(`# six screenshots in ${dir}`);
} finally {
  await close();
}
