// A page everyone can use (issue 19, item 4), on fixture.mjs's tiny Llama, CPU path: every
// control has an accessible name (Chromium's own accessibility tree, through the DevTools
// protocol) and is reachable by keyboard; the page fits a 390 px phone and a 1280 px window at
// 200 % zoom without sideways scrolling, with the result near the top on the phone; the charts
// are images with a text alternative whose table holds the numbers they draw; a link restores
// the generation length and the histogram's tensor and row; the main flow works by keyboard only
// (Tab to the method, arrows to RTN at 3 bits, Shift+Tab back, Space on Evaluate: no click, no
// value set by script) and the result is said in a status region with the perplexity and bits
// per weight the panel shows.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RUN_TIMEOUT_MS, configOf, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';
import { PASTE_CHARS, pasteAndMeasure } from './paste-measure.mjs';

// Sub-pixel layout rounding, in CSS pixels.
const EDGE_TOL_PX = 1;
const PHONE = { width: 390, height: 844 };
// A 1280 px wide window at 200 % zoom lays the page out in 640 CSS pixels.
const ZOOM_200 = { width: 640, height: 360 };
// "Near the top" on the phone: the result starts within the first two screens.
const RESULT_TOP_MAX_PX = 2 * PHONE.height;
// The roles of controls (ARIA names Chromium gives inputs, selects, buttons and text boxes).
// The paste: the longest task the page's thread may run for it. Before the fix a 5 MB paste ran
// one task of seconds (2.7 s in issue 19's trial); after it, the work left is hashing the text
// and handing it to the worker, tens of milliseconds, so 500 ms leaves room for a loaded machine.
const LONG_TASK_MAX_MS = 500;
const PASTE_SETTLE_MS = 3000;
// The most key presses one keyboard move may take (Tab through the header's and the model's
// controls).
const MAX_PRESSES = 120;
const CONTROL_ROLES = ['button', 'checkbox', 'combobox', 'listbox', 'radio', 'slider', 'spinbutton', 'textbox', 'searchbox', 'switch', 'menuitem', 'link'];

let served;
let page;
let close;

before(async () => {
  served = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=cpu&${served.hub}#ql=1&${served.model}&ctx=64&win=1&gen=7&tensor=blk.1.ffn_down.weight&row=3&col=16&pts=32`));
  await waitForResult(page, '0');
  await page.waitForFunction(() => self.quantlabCharts.layers !== null && self.quantlabCharts.histogram !== null, null, { timeout: RUN_TIMEOUT_MS });
});

after(async () => {
  await close?.();
  await served?.close();
});

test('every control the page shows has an accessible name and takes keyboard focus', async () => {
  const cdp = await page.context().newCDPSession(page);
  const { nodes } = await cdp.send('Accessibility.getFullAXTree');
  const controls = nodes.filter((n) => !n.ignored && CONTROL_ROLES.includes(n.role?.value));
  assert.ok(controls.length > 40, `${controls.length} controls found`);
  const unnamed = [];
  for (const n of controls.filter((c) => !(c.name?.value ?? '').trim())) {
    const { node } = await cdp.send('DOM.describeNode', { backendNodeId: n.backendDOMNodeId });
    const attrs = Object.fromEntries((node.attributes ?? []).reduce((a, v, i, all) => (i % 2 ? a : [...a, [v, all[i + 1]]]), []));
    unnamed.push(`${n.role.value} <${node.localName}${attrs.id ? ` id=${attrs.id}` : ''}${attrs.class ? ` class=${attrs.class}` : ''}>`);
  }
  assert.deepEqual(unnamed, [], `controls without an accessible name:\n${unnamed.join('\n')}`);
  // Keyboard: no visible control is taken out of the tab order.
  const untabbable = await page.$$eval('input, select, button, textarea, summary, a[href]', (all) => all
    .filter((e) => e.getClientRects().length > 0 && e.tabIndex < 0).map((e) => e.id || e.outerHTML.slice(0, 60)));
  assert.deepEqual(untabbable, []);
});

test('a 390 px phone and 200 % zoom: nothing scrolls sideways; on the phone the result is near the top', async () => {
  for (const [name, size] of [['phone', PHONE], ['200 % zoom', ZOOM_200]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(300); // uPlot redraws on resize; layout settles
    const m = await page.evaluate(() => {
      // What sticks out (for the message): elements past the right edge, not inside a scroller.
      const inScroller = (e) => {
        for (let p = e.parentElement; p; p = p.parentElement) if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return true;
        return false;
      };
      const wide = [...document.querySelectorAll('body *')].filter((e) => e.getClientRects().length
        && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && !inScroller(e));
      const r = document.getElementById('result').getBoundingClientRect();
      return {
        scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth, resultTop: r.top + self.scrollY,
        wide: wide.slice(0, 8).map((e) => `${e.tagName.toLowerCase()}#${e.id || '-'}.${e.className} → ${Math.round(e.getBoundingClientRect().right)}`),
      };
    });
    assert.ok(m.scroll <= size.width + EDGE_TOL_PX, `${name}: the page is ${m.scroll} px wide in a ${size.width} px viewport; sticking out:\n${m.wide.join('\n')}`);
    if (name === 'phone') assert.ok(m.resultTop < RESULT_TOP_MAX_PX, `the result starts ${m.resultTop} px down`);
  }
  await page.setViewportSize({ width: 1280, height: 720 });
});

test('charts are images with a text alternative holding the numbers they draw', async () => {
  for (const id of ['pareto-chart', 'memory-bar', 'layer-err-chart', 'hist-chart']) {
    assert.equal(await page.getAttribute(`#${id}`, 'role'), 'img', id);
    assert.match(await page.getAttribute(`#${id}`, 'aria-label'), /^Chart of .+ against .+\. Its numbers are in the table that follows\.$/, id);
  }
  // The Pareto chart's table lists the run's bits and perplexity as the chart holds them.
  const data = await page.evaluate(() => self.quantlabCharts.pareto);
  await page.click('#pareto-chart + details.chart-data > summary');
  // The table is built on the details' toggle event, which fires after the click returns.
  await page.waitForSelector('#pareto-chart + details.chart-data tbody tr');
  const cells = await page.$$eval('#pareto-chart + details.chart-data tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  assert.equal(cells.length, data.bpw.length);
  assert.equal(Number(cells[0][0]), Number(data.bpw[0].toPrecision(6)));
  assert.ok(cells[0].slice(1).some((c) => Number(c) === Number(data.ppl[0].toPrecision(6))), cells[0].join(' | '));
  // The histogram's: one row per bin, the counts as drawn.
  await page.click('#hist-chart + details.chart-data > summary');
  await page.waitForSelector('#hist-chart + details.chart-data tbody tr');
  const hist = await page.evaluate(() => self.quantlabCharts.histogram);
  const rows = await page.$$eval('#hist-chart + details.chart-data tbody tr', (r) => r.length);
  assert.equal(rows, hist.edges.length - 1);
});

test('a link restores the generation length and the histogram\'s tensor and row, and carries them on', async () => {
  assert.equal(await page.inputValue('#gen-n'), '7');
  assert.equal(await page.inputValue('#hist-tensor'), 'blk.1.ffn_down.weight');
  assert.equal(await page.inputValue('#hist-row'), '3');
  assert.equal(await page.evaluate(() => self.quantlabCharts.histogram.row), 3);
  assert.equal(await page.inputValue('#row-start'), '16');
  assert.equal(await page.inputValue('#row-points'), '32');
  await page.fill('#gen-n', '12');
  await page.dispatchEvent('#gen-n', 'change');
  await page.click('#copy-link');
  const link = new URL(await page.getAttribute('#copy-link', 'data-url'));
  const p = new URLSearchParams(link.hash.slice(1));
  assert.deepEqual([p.get('gen'), p.get('tensor'), p.get('row'), p.get('col'), p.get('pts')], ['12', 'blk.1.ffn_down.weight', '3', '16', '32']);
});

test('a measured run comes back from the keyboard: Enter on its row in the runs table', async () => {
  const row = page.locator('#history tbody tr[data-state="done"]').first();
  const id = await row.getAttribute('data-run');
  await row.focus();
  await page.keyboard.press('Enter');
  await page.waitForFunction((r) => document.getElementById('result').dataset.recalled === r, id);
  assert.match(await page.textContent('#eval-status'), new RegExp(`^Recalled run #${id} `));
});

const focused = () => page.evaluate(() => document.activeElement?.id ?? '');

// Press `key` until the focus is on `id` (fails after MAX_PRESSES).
async function pressUntilFocus(key, id) {
  for (let n = 0; n < MAX_PRESSES; n += 1) {
    if (await focused() === id) return n;
    await page.keyboard.press(key);
  }
  assert.fail(`${key} never reached #${id} in ${MAX_PRESSES} presses (focus on #${await focused()})`);
}

// Press `key` on the focused control until its value is `want`.
async function pressUntilValue(key, want) {
  for (let n = 0; n < MAX_PRESSES; n += 1) {
    if (await page.evaluate(() => document.activeElement.value) === want) return;
    await page.keyboard.press(key);
  }
  assert.fail(`${key} never set the value ${want}`);
}

test('keyboard only: choose RTN at 3 bits, run, and read the result', { timeout: 2 * RUN_TIMEOUT_MS }, async () => {
  const before0 = await page.getAttribute('#result', 'data-run');
  // From the top of the page.
  await page.evaluate(() => document.activeElement?.blur());
  const tabs = await pressUntilFocus('Tab', 'method');
  const options = await page.$$eval('#method option', (os) => os.map((o) => o.value));
  const from = options.indexOf(await page.inputValue('#method'));
  await pressUntilValue(options.indexOf('rtn') > from ? 'ArrowDown' : 'ArrowUp', 'rtn');
  await pressUntilFocus('Tab', 'bits');
  await pressUntilValue(Number(await page.inputValue('#bits')) > 3 ? 'ArrowLeft' : 'ArrowRight', '3');
  // Shift+Tab goes back to the method, which kept its choice.
  await pressUntilFocus('Shift+Tab', 'method');
  assert.equal(await page.inputValue('#method'), 'rtn');
  // The page runs a changed configuration by itself after its debounce.
  const first = await waitForResult(page, before0, configOf('rtn', 3));
  // Evaluate runs it again, from the keyboard.
  await pressUntilFocus('Tab', 'evaluate');
  await page.waitForFunction(() => !document.getElementById('evaluate').disabled, null, { timeout: RUN_TIMEOUT_MS });
  await page.keyboard.press('Space');
  const again = await waitForResult(page, first.run, configOf('rtn', 3));
  assert.equal(again.ppl, first.ppl, 'the same configuration gives the same perplexity');
  assert.ok(Number.isFinite(again.ppl) && again.ppl > 1, `perplexity ${again.ppl}`);
  // The result is read out: a status region names this run's perplexity and bits per weight.
  const said = await page.waitForFunction((run) => {
    const s = document.getElementById('result-said');
    return s.dataset.run === run && s.textContent;
  }, again.run, { timeout: RUN_TIMEOUT_MS });
  const text = await said.jsonValue();
  assert.equal(await page.getAttribute('#result-said', 'role'), 'status');
  assert.ok(text.includes(await page.textContent('#ppl')), `${text} names the perplexity ${await page.textContent('#ppl')}`);
  assert.ok(text.includes(await page.textContent('#bpw')), `${text} names the bits per weight`);
  console.log(`# ${tabs} Tab presses from the top to the method; announced: ${JSON.stringify(text)}`);
});

test('pasting 5 MB of text keeps the page responsive; the size line counts the whole text and a run starts', async () => {
  const runs = await page.evaluate(() => self.quantlabCounts.runs);
  const m = await pasteAndMeasure(page, PASTE_CHARS, PASTE_SETTLE_MS);
  console.log(`# 5 MB paste: longest main-thread task ${m.longest.toFixed(0)} ms, ${m.over50} tasks over 50 ms`);
  assert.ok(m.longest < LONG_TASK_MAX_MS, `a ${m.longest.toFixed(0)} ms task`);
  assert.match(await page.textContent('#text-size'), /^5,000,000 characters; the box shows the first 100,000 and is read-only/);
  assert.equal((await page.inputValue('#text-view')).length, 100_000);
  assert.equal(await page.inputValue('#text-select'), 'custom');
  assert.ok(await page.evaluate(() => self.quantlabCounts.runs) > runs, 'the pasted text is evaluated');
  // A short paste replaces it and makes the box editable again.
  await page.evaluate(() => navigator.clipboard.writeText('A short text of my own.'));
  await page.focus('#text-view');
  await page.keyboard.press('Control+V');
  assert.equal(await page.inputValue('#text-view'), 'A short text of my own.');
  assert.equal(await page.getAttribute('#text-view', 'readonly'), null);
});
