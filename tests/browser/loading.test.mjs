// Loading models into the page (issue 4, "Load a model"), against a local server that plays the
// Hugging Face Hub and a plain file host (fixture.mjs; nothing leaves 127.0.0.1):
//  - a Hub id of a sharded safetensors repository, resolved through the Hub's model API and
//    model.safetensors.index.json; the same checkpoint in a folder of a repository (org/name/dir
//    and the Hub's tree URL), and folders that lack a file or do not exist;
//  - a URL whose download breaks part way, three times: each retry resumes with an HTTP Range
//    request, the page reports the failure after its attempts, and loading again resumes from
//    the pieces kept in Cache Storage; the model then gives the same perplexity as the default;
//  - drag and drop of safetensors + config.json + tokenizer.json onto the drop zone.
// CPU path, small evaluations.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { MODEL, ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';
import { TINY, fileSize, startFixtureServer, tinyCheckpoint } from './fixture.mjs';

const REPO = 'test-org/tiny-sharded';
// The same checkpoint kept in a folder of another repository (as training runs keep theirs),
// beside a folder that lacks its tokenizer.json.
const FOLDER_REPO = 'test-org/tiny-runs';
const FOLDER = 'checkpoints/step-100';
const BROKEN_FOLDER = 'checkpoints/no-tokenizer';
const GGUF_PATH = '/files/SmolLM2-135M-Instruct.Q4_1.gguf';
// Bytes each broken response delivers before the connection is cut (more than one 8 MiB piece).
const BREAK_AFTER = 20_000_000;
// A model loaded from another URL is the same file: the same perplexity, exactly.
const SAME_PPL_REL_TOL = 0;

let page;
let close;
let server;
let defaultPpl;
let shardedPpl;
const checkpoint = tinyCheckpoint();
const inFolder = (dir, files) => Object.fromEntries(Object.entries(files).map(([n, b]) => [`${dir}/${n}`, b]));
const folderRepo = {
  'README.md': Buffer.from('# runs\n'),
  ...inFolder(FOLDER, checkpoint.files),
  ...inFolder(BROKEN_FOLDER, Object.fromEntries(Object.entries(checkpoint.files).filter(([n]) => n !== 'tokenizer.json'))),
};

before(async () => {
  server = await startFixtureServer({
    repos: { [REPO]: checkpoint.files, [FOLDER_REPO]: folderRepo },
    paths: { [GGUF_PATH]: path.join(ROOT, MODEL) },
  });
  ({ page, close } = await openPage(`?backend=cpu&hub=${encodeURIComponent(server.url)}#ql=1&ctx=64&win=1`));
  defaultPpl = (await waitForResult(page, '0')).ppl;
});

after(async () => {
  await close?.();
  await server?.close();
});

async function loadFromField(ref) {
  const loads = Number(await page.getAttribute('#model-status', 'data-loads'));
  await page.fill('#model-url', ref);
  await page.click('#model-url-load');
  return loads;
}

// Wait for the next load to succeed (data-loads grows) or fail (data-failed).
async function loadOutcome(loadsBefore) {
  await page.waitForFunction((n) => {
    const s = document.getElementById('model-status');
    return Number(s.dataset.loads) > n || s.dataset.failed === 'true';
  }, loadsBefore, { timeout: RUN_TIMEOUT_MS, polling: 100 });
  return (await page.getAttribute('#model-status', 'data-failed')) === 'true' ? 'failed' : 'loaded';
}

async function evaluate() {
  const prev = await page.getAttribute('#result', 'data-run');
  await page.click('#evaluate');
  return waitForResult(page, prev, '"method":"none"');
}

test('a Hub id of a sharded safetensors repository loads through the API and the index', { timeout: RUN_TIMEOUT_MS }, async () => {
  const from = server.log.length;
  const outcome = await loadOutcome(await loadFromField(REPO));
  assert.equal(outcome, 'loaded', await page.textContent('#error'));
  const card = await page.textContent('#model-card');
  assert.match(card, new RegExp(REPO));
  assert.match(card, new RegExp(`${TINY.layers} × ${TINY.dim}`));
  const asked = server.log.slice(from).map((r) => r.path);
  for (const p of [`/api/models/${REPO}`, `/${REPO}/resolve/main/model.safetensors.index.json`,
    `/${REPO}/resolve/main/config.json`, `/${REPO}/resolve/main/tokenizer.json`,
    ...checkpoint.shards.map((s) => `/${REPO}/resolve/main/${s}`)]) {
    assert.ok(asked.includes(p), `the page did not fetch ${p}: ${asked.join(', ')}`);
  }
  const r = await evaluate();
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `tiny model perplexity ${r.ppl}`);
  shardedPpl = r.ppl;
  // The link names the Hub id.
  await page.click('#copy-link');
  await page.waitForSelector('#copy-link[data-url]');
  assert.match(await page.getAttribute('#copy-link', 'data-url'), new RegExp(`model=${encodeURIComponent(REPO)}`));
});

test('a checkpoint in a folder of a Hub repository loads, as org/name/folder and as the Hub\'s tree URL', { timeout: RUN_TIMEOUT_MS }, async () => {
  assert.ok(shardedPpl, 'the sharded-repository test did not run');
  const refs = [`${FOLDER_REPO}/${FOLDER}`, `${server.url}/${FOLDER_REPO}/tree/main/${FOLDER}`];
  for (const [i, ref] of refs.entries()) {
    const from = server.log.length;
    assert.equal(await loadOutcome(await loadFromField(ref)), 'loaded', `${ref}: ${await page.textContent('#error')}`);
    assert.match(await page.textContent('#model-card'), new RegExp(`${TINY.layers} × ${TINY.dim}`));
    const asked = server.log.slice(from).map((x) => x.path);
    const base = `/${FOLDER_REPO}/resolve/main/${FOLDER}`;
    // The second time the files come from Cache Storage (the same URLs); only the file list is asked.
    const want = [`/api/models/${FOLDER_REPO}`, `${base}/model.safetensors.index.json`, `${base}/config.json`,
      `${base}/tokenizer.json`, ...checkpoint.shards.map((x) => `${base}/${x}`)];
    for (const p of i === 0 ? want : want.slice(0, 1)) {
      assert.ok(asked.includes(p), `${ref}: the page did not fetch ${p}: ${asked.join(', ')}`);
    }
    // The same checkpoint as the sharded repository: the same perplexity.
    const r = await evaluate();
    const rel = Math.abs(r.ppl - shardedPpl) / shardedPpl;
    assert.ok(rel <= SAME_PPL_REL_TOL, `${ref}: perplexity ${r.ppl} vs ${shardedPpl} from ${REPO}`);
  }
});

test('a Hub folder without tokenizer.json, or no such folder: the error names the missing file', { timeout: RUN_TIMEOUT_MS }, async () => {
  for (const [ref, want] of [
    [`${FOLDER_REPO}/${BROKEN_FOLDER}`, `${FOLDER_REPO}: the repository has no ${BROKEN_FOLDER}/tokenizer.json`],
    [`${FOLDER_REPO}/checkpoints/step-999`, `${FOLDER_REPO}: the repository has no folder checkpoints/step-999`],
  ]) {
    assert.equal(await loadOutcome(await loadFromField(ref)), 'failed', ref);
    const err = await page.textContent('#error');
    assert.ok(err.includes(want), `${ref}: ${err}`);
    assert.match(await page.textContent('#model-status'), /still using/);
  }
});

test('a broken URL download resumes with Range requests, also after the page gave up', { timeout: RUN_TIMEOUT_MS }, async () => {
  const url = `${server.url}${GGUF_PATH}`;
  const size = fileSize(path.join(ROOT, MODEL));
  server.breakNext(GGUF_PATH, 3, BREAK_AFTER);
  let from = server.log.length;
  assert.equal(await loadOutcome(await loadFromField(url)), 'failed');
  const err = await page.textContent('#error');
  assert.match(err, /broke off after 3 attempts/, err);
  assert.match(err, /loading it again resumes/, err);
  // The previous model (the tiny one) is still loaded.
  assert.match(await page.textContent('#model-status'), /still using/);
  const ranges = (since) => server.log.slice(since).filter((r) => r.path === GGUF_PATH)
    .map((r) => (r.range === null ? 0 : Number(/^bytes=(\d+)-(\d*)$/.exec(r.range)?.[1] ?? NaN)));
  const first = ranges(from);
  const rangesSeen = server.log.slice(from).filter((r) => r.path === GGUF_PATH).map((r) => r.range);
  assert.equal(first.length, 3, `requests: ${JSON.stringify(rangesSeen)}`);
  assert.equal(first[0], 0);
  assert.ok(first[1] >= BREAK_AFTER && first[2] > first[1], `each retry resumes further: ${JSON.stringify(rangesSeen)}`);

  from = server.log.length;
  assert.equal(await loadOutcome(await loadFromField(url)), 'loaded', await page.textContent('#error'));
  const second = ranges(from);
  assert.equal(second.length, 1, `requests: ${JSON.stringify(second)}`);
  assert.ok(second[0] > first[2] && second[0] < size, `the new load resumed at ${second[0]} of ${size}`);
  console.log(`# resumable download: attempts from bytes ${first.join(', ')}; after a new load from ${second[0]} of ${size}`);
  assert.match(await page.textContent('#model-card'), /SmolLM2|Q4_1/);
  const r = await evaluate();
  const rel = Math.abs(r.ppl - defaultPpl) / defaultPpl;
  assert.ok(rel <= SAME_PPL_REL_TOL, `resumed model perplexity ${r.ppl} vs the default's ${defaultPpl}`);
});

test('dropping safetensors + config.json + tokenizer.json on the page loads them', { timeout: RUN_TIMEOUT_MS }, async () => {
  const loads = Number(await page.getAttribute('#model-status', 'data-loads'));
  const files = Object.entries(checkpoint.files).filter(([n]) => !n.endsWith('.index.json'))
    .map(([name, b]) => ({ name, b64: b.toString('base64') }));
  await page.evaluate((list) => {
    const dt = new DataTransfer();
    for (const { name, b64 } of list) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], name, { type: 'application/octet-stream' }));
    }
    const zone = document.getElementById('drop-zone');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, files);
  assert.equal(await loadOutcome(loads), 'loaded', await page.textContent('#error'));
  assert.match(await page.textContent('#model-card'), new RegExp(`${TINY.layers} × ${TINY.dim}`));
  const r = await evaluate();
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1);
});
