// Cancellation latency inside a window (issue 20), a measurement, not a test: the page on the
// default model at ctx 256, Stop clicked once the status says window 1 is at least MIN_PCT % done;
// prints the milliseconds from the click to the page hearing the worker stopped
// (#result[data-cancel-ms]). Usage:
//   QUANTLAB_BIN=… node tests/browser/measure-cancel.mjs cpu|gpu [samples]
// `gpu` is WebGPU; in headless Chromium without a GPU that is SwiftShader (software).

import { openPage, setQuant } from './harness.mjs';

const engine = process.argv[2] ?? 'cpu';
const samples = Number(process.argv[3] ?? 3);
// Far enough into the window that the run is surely inside it, not between two.
const MIN_PCT = 10;
const LONG_MS = 3_600_000;

const { page, close } = await openPage(`?backend=${engine}#ql=1&ctx=256&win=4`);
try {
  const got = [];
  for (let k = 0; k < samples; k += 1) {
    // The first sample stops the page's own first run; later ones a fresh RTN configuration.
    if (k > 0) await setQuant(page, 'rtn', 2 + k);
    await page.waitForFunction((min) => {
      const m = document.getElementById('eval-status').textContent.match(/Evaluating window 1 of \d+ \((\d+) % of it\)/);
      return m && Number(m[1]) >= min;
    }, MIN_PCT, { timeout: LONG_MS, polling: 100 });
    const before = await page.textContent('#eval-status');
    const cancelled = await page.getAttribute('#result', 'data-cancelled');
    await page.click('#eval-stop');
    await page.waitForFunction((c) => (document.getElementById('result').dataset.cancelled ?? null) !== c, cancelled,
      { timeout: LONG_MS, polling: 50 });
    const ms = Number(await page.getAttribute('#result', 'data-cancel-ms'));
    got.push(ms);
    console.log(`# ${engine} sample ${k + 1}: ${ms} ms (at: ${before})`);
    console.log(`#   ${await page.textContent('#eval-status')}`);
  }
  console.log(`# ${engine}: ${got.join(', ')} ms; backend ${await page.textContent('#backend')}`);
} finally {
  await close();
}
