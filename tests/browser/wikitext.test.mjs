// "WikiText-2 test from the Hub when online" (issue 4): the page fetches the test split as the
// Hugging Face Hub serves it (a parquet file under datasets/Salesforce/wikitext), reads it with
// hyparquet and evaluates on it. Here a local server (fixture.mjs) plays the Hub, serving a
// snappy-compressed parquet made from tests/data/wikitext-2-raw-test.txt, one row per line
// as the Hub's rows are; the page's text must be that file exactly, and its perplexity the CLI's
// on the file. Without the Hub the page says so and keeps a built-in text.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { BIN, MODEL, ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';
import { startFixtureServer } from './fixture.mjs';

const WIKI = path.resolve(ROOT, 'tests/data/wikitext-2-raw-test.txt');
const PARQUET = 'wikitext-2-raw-v1/test-00000-of-00001.parquet';
const CTX = 64;
// Browser (wasm) against native: float rounding only (as playground.test.mjs).
const PPL_REL_TOL = 1e-4;

let page;
let close;
let server;
let wiki;

before(async () => {
  if (!existsSync(WIKI)) throw new Error(`${WIKI} is missing: tests/data/README.md says where it comes from`);
  wiki = readFileSync(WIKI, 'utf8');
  const rows = wiki.split(/(?<=\n)/);
  const parquet = Buffer.from(parquetWriteBuffer({ columnData: [{ name: 'text', data: rows, type: 'STRING' }] }));
  server = await startFixtureServer();
  // The Hub's dataset paths: /api/datasets/ORG/NAME and /datasets/ORG/NAME/resolve/main/FILE.
  server.addRoute('/api/datasets/Salesforce/wikitext', Buffer.from(JSON.stringify({ siblings: [{ rfilename: 'README.md' }, { rfilename: PARQUET }] })));
  server.addRoute(`/datasets/Salesforce/wikitext/resolve/main/${PARQUET}`, parquet);
  ({ page, close } = await openPage(`?backend=cpu&hub=${encodeURIComponent(server.url)}#ql=1&ctx=${CTX}&win=1`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await server?.close();
});

test('WikiText-2 from the (local) Hub is the test split exactly and evaluates like the CLI', { timeout: RUN_TIMEOUT_MS }, async () => {
  const prev = await page.getAttribute('#result', 'data-run');
  await page.selectOption('#text-select', 'wikitext');
  const r = await waitForResult(page, prev, '"method":"none"');
  // The text area shows the text with its line breaks normalised (a textarea turns CRLF into
  // LF); the page evaluates the text itself, whose length it prints.
  const shown = await page.inputValue('#text-view');
  assert.ok(shown === wiki.replace(/\r\n/g, '\n'), `the page's WikiText-2 differs from the file (${shown.length} vs ${wiki.length} characters)`);
  assert.equal(await page.textContent('#text-size'), `${wiki.length.toLocaleString('en')} characters`);
  assert.ok(server.log.some((x) => x.path.endsWith(PARQUET)), 'the parquet file was not fetched');
  const out = execFileSync(BIN, ['eval', '--model', MODEL, '--text', WIKI, '--ctx', String(CTX), '--windows', '1', '--json'],
    { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const cli = JSON.parse(out.trim().split('\n').pop());
  const rel = Math.abs(r.ppl - cli.ppl) / cli.ppl;
  console.log(`# WikiText-2 in the page: ${wiki.length} characters; ppl ${r.ppl} (CLI ${cli.ppl}, rel ${rel.toExponential(2)})`);
  assert.ok(rel <= PPL_REL_TOL, `page ${r.ppl} vs CLI ${cli.ppl}`);
  // Links carry the choice.
  await page.click('#copy-link');
  await page.waitForSelector('#copy-link[data-url]');
  assert.match(await page.getAttribute('#copy-link', 'data-url'), /text=wikitext/);
});

test('without the Hub, choosing WikiText-2 says so and keeps a built-in text', { timeout: RUN_TIMEOUT_MS }, async () => {
  const base = page.url().split('?')[0];
  const other = await page.context().newPage();
  try {
    // A port nothing listens on: as if offline.
    await other.goto(`${base}?backend=cpu&hub=${encodeURIComponent('http://127.0.0.1:9')}#ql=1&ctx=${CTX}&win=1`);
    await other.waitForSelector('#model-status[data-state="ready"]', { timeout: RUN_TIMEOUT_MS });
    await other.selectOption('#text-select', 'wikitext');
    await other.waitForFunction(() => /could not be fetched/.test(document.getElementById('error').textContent), null, { timeout: RUN_TIMEOUT_MS });
    assert.match(await other.textContent('#error'), /Using the prose text instead/);
    assert.equal(await other.inputValue('#text-select'), 'prose');
  } finally {
    await other.close();
  }
});
