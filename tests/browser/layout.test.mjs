// The page at a laptop's 1280×720 and a projector's 1920×1080 (issue 4: "sensible at
// 1280×720"): nothing scrolls sideways and no control sticks out of its panel. Screenshots of
// both go to out/screenshots/. CPU path, with a small first run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';

// Sub-pixel layout rounding, in CSS pixels.
const EDGE_TOL_PX = 1;
const SHOTS = path.join(ROOT, 'out', 'screenshots');

let page;
let close;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  ({ page, close } = await openPage('?backend=cpu#ql=1&ctx=64&win=1'));
  await waitForResult(page, '0');
  // The inspection charts and the layer map, so their widths count too.
  await page.waitForFunction(() => self.quantlabCharts.layers !== null, null, { timeout: RUN_TIMEOUT_MS });
});

after(async () => {
  await close?.();
});

// Visible controls (and their labels) whose box leaves their panel or the viewport.
function clipped(tol) {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const e of document.querySelectorAll('input, select, button, textarea, label, output, h2, .gen-text')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue; // hidden
    const panel = e.closest('section, header, footer') ?? document.body;
    const p = panel.getBoundingClientRect();
    if (r.right > p.right + tol || r.left < p.left - tol || r.right > width + tol) {
      out.push(`${e.tagName.toLowerCase()}#${e.id || '-'} "${(e.textContent || e.value || '').trim().slice(0, 30)}": `
        + `${r.left.toFixed(0)}..${r.right.toFixed(0)} outside ${p.left.toFixed(0)}..${p.right.toFixed(0)} (viewport ${width})`);
    }
  }
  return out;
}

for (const [w, h] of [[1280, 720], [1920, 1080]]) {
  test(`at ${w}×${h} nothing is clipped horizontally`, { timeout: RUN_TIMEOUT_MS }, async () => {
    await page.setViewportSize({ width: w, height: h });
    // Let the charts follow the new width.
    await page.waitForTimeout(300);
    const scrollWidth = await page.evaluate(() => document.scrollingElement.scrollWidth);
    assert.ok(scrollWidth <= w, `the page is ${scrollWidth} px wide at a ${w} px viewport`);
    const bad = await page.evaluate(clipped, EDGE_TOL_PX);
    assert.deepEqual(bad, [], `controls outside their panel at ${w}×${h}:\n${bad.join('\n')}`);
    await page.evaluate(() => self.scrollTo(0, 0));
    await page.screenshot({ path: path.join(SHOTS, `layout-${w}x${h}.png`) });
  });
}
