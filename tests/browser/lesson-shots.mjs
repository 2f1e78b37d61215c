// Screenshots of the guided lessons (issue 19; docs/lessons.md) and of the phone layout, for a
// person to look at: not a test. Each lesson runs to its last step (answering with the choice
// the lesson expects, else the first) and the page is photographed at its key step, the last,
// with its answer highlighted; then the page at 390 × 844 (a phone).
//
//   QUANTLAB_BIN=…/release/quantlab node lesson-shots.mjs [--tiny] [--out DIR] [lesson …]
//
// --tiny: on fixture.mjs's tiny Llama (seconds); else on the default SmolLM2-135M (minutes for
// the lessons that calibrate or train). PNGs go to DIR (default /tmp/shots-lessons/).

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { openPage } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';
import { BUILT_IN } from '../../www/lesson-format.js';

const args = process.argv.slice(2);
const tiny = args.includes('--tiny');
const outAt = args.indexOf('--out');
const OUT = outAt >= 0 ? args[outAt + 1] : '/tmp/shots-lessons';
const wanted = args.filter((a, i) => !a.startsWith('--') && (outAt < 0 || i !== outAt + 1));
const ids = wanted.length ? wanted : BUILT_IN.map((l) => l.id);
const STEP_TIMEOUT_MS = 20 * 60_000;
mkdirSync(OUT, { recursive: true });

const served = tiny ? await servedTinyLlama() : null;
const where = served ? `&${served.hub}#ql=1&${served.model}` : '';
const { page, close } = await openPage(`?backend=cpu&lesson=${ids[0]}${where}`);
try {
  for (const [n, id] of ids.entries()) {
    const t0 = Date.now();
    if (n > 0) await page.selectOption('#lesson-menu', id);
    const want = BUILT_IN.find((l) => l.id === id).title;
    await page.waitForFunction((t) => document.getElementById('lesson-title').textContent === t, want, { timeout: STEP_TIMEOUT_MS });
    const steps = await page.evaluate(async (lid) => (await (await fetch(`www/lessons/${lid}.json`)).json()).steps, id);
    for (const [i, st] of steps.entries()) {
      await page.waitForSelector(`#lesson-panel[data-step="${i}"][data-state="asking"]`, { timeout: STEP_TIMEOUT_MS });
      if (st.predict) await page.check(`#lesson-choices input >> nth=${st.predict.expected ?? 0}`);
      await page.click('#lesson-run');
      await page.waitForSelector(`#lesson-panel[data-step="${i}"][data-state="answered"], #lesson-panel[data-state="error"]`, { timeout: STEP_TIMEOUT_MS });
      if (await page.getAttribute('#lesson-panel', 'data-state') === 'error') {
        console.log(`${id} step ${i + 1}: ${await page.textContent('#lesson-status')}`);
        break;
      }
      console.log(`${id} step ${i + 1}: perplexity ${Number(await page.getAttribute('#ppl', 'data-value')).toFixed(3)}, `
        + `${await page.textContent('#bpw')}; ${await page.textContent('#lesson-status')}`);
      if (i === 0) console.log(`${id}: first step answered ${((Date.now() - t0) / 1000).toFixed(1)} s after the lesson was asked for`);
      if (i < steps.length - 1) await page.click('#lesson-next');
    }
    // Let a pressed button's view (underflow, Tender) and the smooth scroll finish.
    await page.waitForTimeout(1500);
    const file = path.join(OUT, `lesson-${id}.png`);
    await page.screenshot({ path: file });
    console.log(`${id}: ${file} (${((Date.now() - t0) / 1000).toFixed(1)} s; perplexity ${await page.getAttribute('#ppl', 'data-value')})`);
  }
  await page.click('#lesson-close');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => self.scrollTo(0, 0));
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(OUT, 'phone-top.png') });
  await page.screenshot({ path: path.join(OUT, 'phone-full.png'), fullPage: true });
  console.log(`phone: ${OUT}/phone-top.png, phone-full.png`);
} finally {
  await close();
  await served?.close();
}
