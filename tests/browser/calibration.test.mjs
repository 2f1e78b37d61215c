// Held-out calibration and the importance matrix in the page (issue 18 items 2 and 4), on
// fixture.mjs's tiny Llama (CPU path): the result line names what calibration used (the built-in
// texts other than the evaluated one, sequences and tokens), and the "importance-weighted
// (imatrix)" box goes into the config, calibrates, changes the result, and round-trips through
// the share link.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RUN_TIMEOUT_MS, openPage, openSibling, setQuant, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 2;
const CALIB = '4x64';

let page;
let close;
let tiny;

before(async () => {
  tiny = await servedTinyLlama();
  ({ page, close } = await openPage(`?backend=cpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}&calib=${CALIB}`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await tiny?.close();
});

test('RTN with the importance matrix calibrates on held-out built-in texts, says so, and differs from plain RTN', { timeout: 3 * RUN_TIMEOUT_MS }, async () => {
  let prev = await page.getAttribute('#result', 'data-run');
  await setQuant(page, 'rtn', 3);
  await page.selectOption('#gran', 'g32');
  const plain = await waitForResult(page, prev, '"method":"rtn","default":{"bits":3');
  assert.doesNotMatch(plain.protocol, /calibration/, 'plain RTN does not calibrate');
  assert.equal(await page.isDisabled('#imatrix'), false);

  prev = plain.run;
  await page.check('#imatrix');
  const weighted = await waitForResult(page, prev, '"imatrix":true');
  // The evaluated text is the prose one: calibration reads the two others, never it.
  assert.match(weighted.protocol, /calibration: 4 × 64 of \d+ tokens \(built-in dialogue \+ code, held out from the evaluated text\)/, weighted.protocol);
  assert.match(await page.textContent('#calib-status'), /calibrated on 4 × 64 tokens/);
  assert.notEqual(weighted.ppl, plain.ppl, 'the importance changed no rounding');
  assert.equal(weighted.bpw, plain.bpw, 'same storage format');

  // The share link carries it: a page opened from the link has the box checked and the same run.
  const link = await page.evaluate(() => self.location.href);
  const sib = await openSibling(page, link);
  try {
    const again = await waitForResult(sib, '0', '"imatrix":true');
    assert.equal(await sib.isChecked('#imatrix'), true);
    assert.equal(again.ppl, weighted.ppl);
  } finally {
    await sib.close();
  }

  // GPTQ has its own use of calibration: the box is disabled there and left out of the config.
  prev = weighted.run;
  await setQuant(page, 'gptq', 3);
  assert.equal(await page.isDisabled('#imatrix'), true);
  const gptq = await waitForResult(page, prev, '"method":{"gptq"');
  assert.doesNotMatch(await page.getAttribute('#result', 'data-config'), /imatrix/);
  assert.match(gptq.protocol, /held out from the evaluated text/);
});
