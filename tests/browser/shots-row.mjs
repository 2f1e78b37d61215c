// Screenshots of the row view for three methods and of the A/B comparison (issue 19's closing
// note), on fixture.mjs's tiny Llama widened as in cmpq.test.mjs (so CMPQ meets its budget), CPU
// path. Not a test: writes PNGs for a person to look at.
//
//   cd tests/browser && QUANTLAB_BIN=…/release/quantlab node shots-row.mjs [OUT_DIR]
//
// OUT_DIR defaults to /tmp/shots-row.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { configOf, openPage, setQuant, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const OUT = process.argv[2] ?? '/tmp/shots-row';
const ROW = 5;
mkdirSync(OUT, { recursive: true });

const served = await servedTinyLlama({ dim: 256, ffn: 512 });
const { page, close } = await openPage(`?backend=cpu&${served.hub}#ql=1&${served.model}&ctx=64&win=1&calib=4x64`);
try {
  await waitForResult(page, '0');
  await page.$eval('#hist-row', (e, r) => {
    e.value = String(r);
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, ROW);
  await page.selectOption('#row-points', '64');
  for (const [method, bits, want, prefix] of [
    ['rtn', 3, configOf('rtn', 3), 'int3'], ['nf4', 4, '"method":"nf4"', 'nf4'], ['cmpq', undefined, '"cmpq"', 'cmpq'],
  ]) {
    const prev = await page.getAttribute('#result', 'data-run');
    await setQuant(page, method, bits);
    await waitForResult(page, prev, want);
    await page.waitForFunction((p) => self.quantlabRowView?.format.startsWith(p), prefix, { timeout: 120_000 });
    const v = await page.evaluate(() => self.quantlabRowView);
    const file = path.join(OUT, `row-${method}.png`);
    await page.locator('#inspect-box').screenshot({ path: file });
    console.log(`${file}: ${v.name} row ${v.row}, ${v.format}, MSE ${v.mse}, max ${v.max_abs}, ${v.n_clipped} clipped, ${v.n_outliers} outliers`);
  }
  // A/B: RTN 4 bits pinned, then 2 bits, each with a generated text.
  const generate = async () => {
    await page.fill('#gen-n', '16');
    await page.click('#gen-run');
    await page.waitForFunction(() => document.getElementById('gen-box').dataset.state === 'done', null, { timeout: 120_000 });
  };
  for (const bits of [4, 2]) {
    const prev = await page.getAttribute('#result', 'data-run');
    await setQuant(page, 'rtn', bits);
    await waitForResult(page, prev, configOf('rtn', bits));
    await generate();
    if (bits === 4) await page.click('#ab-pin');
  }
  await page.waitForFunction(() => document.querySelectorAll('#ab-layers tr[data-layer]').length > 0, null, { timeout: 120_000 });
  const file = path.join(OUT, 'ab.png');
  await page.locator('#ab-box').screenshot({ path: file });
  console.log(`${file}: ${await page.textContent('#ab-note')}`);
} finally {
  await close();
  await served.close();
}
