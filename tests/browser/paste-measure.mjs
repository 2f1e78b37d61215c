// The longest main-thread task when 5 MB of text is pasted into the text box (issue 19: it froze
// the page for 2.7 s): a real paste (Control+V from the clipboard) into the page served from
// ROOT (default: this checkout), on the default model, CPU path. A benchmark, not a test;
// access.test.mjs asserts the bound.
//
//   QUANTLAB_BIN=…/release/quantlab node paste-measure.mjs [ROOT]

import { openPage } from './harness.mjs';

export const PASTE_CHARS = 5_000_000;

// Paste `n` characters into #text-view of `page`; returns the longest task (ms) the page's
// thread ran from the paste to `settleMs` later, and the count of tasks over 50 ms.
export async function pasteAndMeasure(page, n = PASTE_CHARS, settleMs = 4000) {
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(page.url()).origin });
  await page.evaluate(async (k) => {
    const line = 'The keeper climbed the stairs of the lighthouse and looked out over the grey sea. ';
    await navigator.clipboard.writeText(line.repeat(Math.ceil(k / line.length)).slice(0, k));
    self.quantlabLongTasks = [];
    new PerformanceObserver((l) => { for (const e of l.getEntries()) self.quantlabLongTasks.push(e.duration); })
      .observe({ type: 'longtask' });
  }, n);
  await page.focus('#text-view');
  await page.keyboard.press('Control+V');
  await page.waitForTimeout(settleMs);
  const tasks = await page.evaluate(() => self.quantlabLongTasks);
  return { longest: Math.max(0, ...tasks), over50: tasks.length };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const root = process.argv[2];
  const { page, close } = await openPage('?backend=cpu#ql=1&ctx=64&win=1', root ? { root } : {});
  try {
    const m = await pasteAndMeasure(page);
    const size = await page.textContent('#text-size');
    console.log(`${root ?? 'this checkout'}: longest main-thread task ${m.longest.toFixed(0)} ms (${m.over50} tasks over 50 ms); ${size}`);
  } finally {
    await close();
  }
}
