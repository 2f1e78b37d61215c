// Offline after the first load (issue 4: "works offline after the first load"): the service
// worker (www/sw.js) keeps the page's files, www/download.js the default model. The page is
// served from a copy of the site in a temporary directory, so the second test can make a "new
// build" without touching the real one. CPU path, a small evaluation.
//
// Offline here means both: Playwright's offline mode for the browser context, and the server
// stopped, so nothing could be fetched even by a part of the browser the emulation misses.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';

// The same model, text and settings run the same code offline: the same perplexity, exactly.
const SAME_PPL_REL_TOL = 0;
const QUERY = '?backend=cpu#ql=1&ctx=64&win=1';
const NEW_BUILD = 'testnewbuild0001';
const MARKER = 'Explainer of the new build.';
// The service worker answers a message in milliseconds; a status still "checking…" after this
// is the bug, not a slow machine.
const STATUS_TIMEOUT_MS = 30_000;
// Ten times what a new build's takeover takes on a loaded 2-core machine (10–14 s for this file).
// Chromium's own fallback for a worker left waiting is minutes, so a failure shows here.
const TAKEOVER_TIMEOUT_MS = 120_000;

let site;
let page;
let close;
let stopServer;
let restartServer;
let online;

before(async () => {
  site = mkdtempSync(path.join(tmpdir(), 'quantlab-site-'));
  cpSync(path.join(ROOT, 'index.html'), path.join(site, 'index.html'));
  cpSync(path.join(ROOT, 'www'), path.join(site, 'www'), { recursive: true, dereference: true });
  symlinkSync(path.join(ROOT, 'models'), path.join(site, 'models'));
  ({ page, close, stopServer, restartServer } = await openPage(QUERY, { root: site }));
  online = await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  if (site) rmSync(site, { recursive: true, force: true });
});

async function goOffline() {
  await stopServer();
  await page.context().setOffline(true);
}

async function reloadAndEvaluate() {
  await page.reload();
  await page.waitForSelector('#model-status[data-state="ready"], #model-status[data-state="error"]', { timeout: RUN_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#model-status', 'data-state'), 'ready', await page.textContent('#error'));
  return waitForResult(page, '0');
}

const shellCaches = () => page.evaluate(async () => (await caches.keys()).filter((k) => k.startsWith('quantlab-shell-')));

test('after one load the page opens, loads the default model and evaluates offline', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.waitForSelector('#offline[data-state="ready"]', { timeout: RUN_TIMEOUT_MS });
  const build = await page.getAttribute('#offline', 'data-build');
  const shell = readFileSync(path.join(site, 'www/pkg/shell.js'), 'utf8');
  assert.ok(shell.includes(`'${build}'`), `the worker keeps build ${build}, www/pkg/shell.js says otherwise`);
  assert.deepEqual(await shellCaches(), [`quantlab-shell-${build}`]);

  await goOffline();
  const t0 = Date.now();
  const r = await reloadAndEvaluate();
  console.log(`# offline: reloaded, loaded the model from Cache Storage and evaluated in ${((Date.now() - t0) / 1000).toFixed(1)} s; ppl ${r.ppl} (online ${online.ppl})`);
  const rel = Math.abs(r.ppl - online.ppl) / online.ppl;
  assert.ok(rel <= SAME_PPL_REL_TOL, `offline perplexity ${r.ppl} vs online ${online.ppl}`);
  assert.equal(r.bpw, online.bpw);
  const state = await page.evaluate(() => ({
    controlled: navigator.serviceWorker.controller !== null,
    isolated: self.crossOriginIsolated,
    explainer: document.getElementById('method-explainer').textContent,
  }));
  assert.ok(state.controlled, 'the offline page is not controlled by the service worker');
  // The cached page keeps its COOP/COEP headers (cancellation needs SharedArrayBuffer).
  assert.ok(state.isolated, 'the offline page is not cross-origin isolated');
  assert.ok(state.explainer.length > 0, 'the method explainer did not load offline');
  // And it says so: the offline page names the build it runs (not "checking…" for minutes).
  await page.waitForSelector(`#offline[data-state="ready"][data-build="${build}"]`, { timeout: STATUS_TIMEOUT_MS });
});

test('a new build replaces the kept one (no old cache left behind)', { timeout: RUN_TIMEOUT_MS }, async () => {
  await page.waitForSelector('#offline[data-state="ready"]', { timeout: STATUS_TIMEOUT_MS });
  const old = await page.getAttribute('#offline', 'data-build');
  assert.match(old ?? '', /^[0-9a-f]{16}$/, 'the page does not name the build it keeps');
  // A "new build": another build id in shell.js and a changed file.
  const shellPath = path.join(site, 'www/pkg/shell.js');
  writeFileSync(shellPath, readFileSync(shellPath, 'utf8').replace(`'${old}'`, `'${NEW_BUILD}'`));
  writeFileSync(path.join(site, 'www/methods/none.txt'), MARKER);
  await page.context().setOffline(false);
  await restartServer();
  await page.reload();
  // The new worker installs while the page loads and takes over once it has loaded: seconds.
  await page.waitForSelector(`#offline[data-build="${NEW_BUILD}"]`, { timeout: TAKEOVER_TIMEOUT_MS });
  await page.waitForFunction((b) => caches.keys().then((ks) => ks.filter((k) => k.startsWith('quantlab-shell-')).join() === `quantlab-shell-${b}`),
    NEW_BUILD, { timeout: TAKEOVER_TIMEOUT_MS, polling: 250 });

  // Offline again: the page is the new build's.
  await goOffline();
  await reloadAndEvaluate();
  await page.waitForFunction((m) => document.getElementById('method-explainer').textContent.startsWith(m), MARKER, { timeout: RUN_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#offline', 'data-build'), NEW_BUILD);
});
