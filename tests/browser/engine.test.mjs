// Issue 17, items 4 and 5: the page never picks an engine slower than the other, says which and
// why, and shows its first perplexity as soon as one window is scored, labelled with what it
// covers.
//  - Default (no ?backend=): on a machine whose only WebGPU adapter is software (CI's and this
//    machine's Chromium: SwiftShader) the page runs on the CPU and the note names the adapter; on a
//    hardware adapter the choice comes from the probe (www/choose-engine.js). Either way the note
//    says how it chose, and the first result ran where the note says.
//  - ?backend=gpu forces WebGPU (even on SwiftShader) and says so.
//  - The first number: the worker's first look, one window of 64 tokens before the run's own
//    windows of 128 (www/worker.js, PREVIEW_CTX), equal to the CLI's `quantlab eval --ctx 64
//    --windows 1`; then after 1 of 4 windows, equal to the CLI's perplexity over that one window
//    (`--ctx 128 --windows 1`, the same tokens), then the whole result, equal to the CLI's over
//    all 4.
// The model is fixture.mjs's tiny Llama (served by a local Hub): the choice and the labels do not
// depend on the model's size, and a window of it takes milliseconds even on SwiftShader.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 128;
const WINDOWS = 4;
// The worker's first look (www/worker.js).
const PREVIEW_CTX = 64;
// The page (WebAssembly, CPU) against the native CLI (CPU), relative: the same Rust code, but
// wasm's SIMD128 and the native build's vectorised loops may sum f32 products in another order.
const PPL_REL_TOL = 1e-4;

let tiny;
const cli = (args) => execFileSync(BIN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const cliPpl = (windows, ctx = CTX) => JSON.parse(cli(['eval', '--backend', 'cpu', '--model', tiny.modelDir, '--text', TEXT,
  '--ctx', String(ctx), '--windows', String(windows), '--json']).trim().split('\n').pop()).ppl;

before(async () => {
  tiny = await servedTinyLlama();
});

after(async () => {
  await tiny?.close();
});

const rel = (a, b) => Math.abs(a - b) / b;

test('by default the page picks the faster engine, says why, and shows the first window at once', { timeout: RUN_TIMEOUT_MS }, async () => {
  const { page, close } = await openPage(`?${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=${WINDOWS}`);
  try {
    await page.waitForSelector('#engine-note[data-how]');
    const note = await page.textContent('#engine-note');
    const how = await page.getAttribute('#engine-note', 'data-how');
    const chosen = await page.getAttribute('#engine-note', 'data-backend');
    // What this browser offers, asked the same way the worker asks.
    const info = await page.evaluate(async () => {
      const a = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
      return a ? { vendor: a.info?.vendor ?? '', architecture: a.info?.architecture ?? '', fallback: a.info?.isFallbackAdapter === true } : null;
    });
    console.log(`# adapter ${JSON.stringify(info)}: chose ${chosen} (${how}): ${note}`);
    if (info && /swiftshader|llvmpipe|lavapipe/i.test(`${info.vendor} ${info.architecture}`)) {
      assert.equal(chosen, 'cpu', note);
      assert.equal(how, 'software');
      assert.match(note, /^Running on the CPU \(WebAssembly\): the only WebGPU adapter is software \((SwiftShader|llvmpipe|lavapipe): vendor /);
      assert.match(note, /\?backend=gpu/, 'the note says how to override');
    } else if (info) {
      assert.equal(how, 'probe', note);
      assert.match(note, /faster in a probe \(4 products of 64 × 576 by 576 × 1536: WebGPU [\d.]+ ms, CPU [\d.]+ ms\)/);
    } else {
      assert.deepEqual([chosen, how], ['cpu', 'unavailable'], note);
    }

    const r = await waitForResult(page, '0');
    assert.equal(r.backend, chosen, 'the first result ran on the engine the note names');
    const { numbers, first, timings } = await page.evaluate(() => ({
      numbers: self.quantlabNumbers, first: self.quantlabFirstNumber, timings: self.quantlabTimings,
    }));
    // The CPU run starts with the first look; on a GPU there is none.
    const look = chosen === 'cpu';
    assert.equal(numbers.length, look ? 2 + WINDOWS - 2 : WINDOWS - 1, `numbers shown ${JSON.stringify(numbers)}`);
    assert.deepEqual(first, numbers[0]);
    if (look) {
      assert.deepEqual([first.preview, first.ctx, first.window, first.windows], [true, PREVIEW_CTX, 1, 1], `first number ${JSON.stringify(first)}`);
      const short = cliPpl(1, PREVIEW_CTX);
      console.log(`# first look ${first.ppl} (CLI --ctx ${PREVIEW_CTX} --windows 1: ${short})`);
      assert.ok(rel(first.ppl, short) <= PPL_REL_TOL, `first look ${first.ppl} vs CLI ${short}`);
      // Scored before the first window (both marks are the worker's clock; the page's own
      // 'first-number' is when the page drew it, which a busy page can do after the worker has
      // scored the next window — the order shown is the numbers' order, checked above).
      assert.ok(timings.preview <= timings['first-window'], 'the first look was scored before the first window');
    }
    const win = numbers[look ? 1 : 0];
    assert.deepEqual([win.ctx, win.window, win.windows, win.preview], [CTX, 1, WINDOWS, undefined], `first window ${JSON.stringify(win)}`);
    const one = cliPpl(1);
    console.log(`# after 1 of ${WINDOWS} windows ${win.ppl} (CLI --windows 1: ${one}); whole ${r.ppl}; timings ${JSON.stringify(timings)}`);
    assert.ok(rel(win.ppl, one) <= PPL_REL_TOL, `first window ${win.ppl} vs CLI ${one}`);
    assert.ok(timings['first-number'] <= timings['first-result'], 'the first number came before the whole result');
    // The whole result, and the line saying the big number is now final.
    const all = cliPpl(WINDOWS);
    assert.ok(rel(r.ppl, all) <= PPL_REL_TOL, `whole ${r.ppl} vs CLI ${all}`);
    assert.equal(await page.getAttribute('#ppl-so-far', 'data-final'), 'true');
    assert.match(await page.textContent('#ppl-so-far'), new RegExp(`^Run #\\d+: all ${WINDOWS} windows scored \\(\\d+ tokens\\); the perplexity above is final\\.$`));
  } finally {
    await close();
  }
});

// The worker hashes a model file with crypto.subtle beside the parse instead of in WebAssembly
// (issue 17, item 5): the identity it hands the session is the file's SHA-256 as Node's OpenSSL
// computes it, and the load's steps reach the first-experience breakdown.
test('a GGUF opened in the page keeps its SHA-256, computed beside the parse', { timeout: RUN_TIMEOUT_MS }, async () => {
  const file = path.join(ROOT, 'tests/fixtures/tiny/gpt2/model-f32.gguf');
  const { page, close } = await openPage(`?${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=1`);
  try {
    await waitForResult(page, '0');
    const loads = await page.getAttribute('#model-status', 'data-loads');
    await page.setInputFiles('#model-file', file);
    await page.waitForFunction((n) => document.getElementById('model-status').dataset.loads !== n, loads, { timeout: RUN_TIMEOUT_MS });
    const { identity, timings } = await page.evaluate(() => ({ identity: self.quantlabModelIdentity, timings: self.quantlabTimings }));
    const bytes = readFileSync(file);
    assert.deepEqual(identity, { name: 'model-f32.gguf', kind: 'gguf', sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length });
    for (const step of ['parse-container', 'parse-tokenizer', 'parse-weights', 'parse-engine', 'model-hashed']) {
      assert.ok(Number.isFinite(timings[step]), `timing ${step} in ${JSON.stringify(timings)}`);
    }
  } finally {
    await close();
  }
});

test('?backend=gpu forces WebGPU and says so', { timeout: RUN_TIMEOUT_MS }, async () => {
  const { page, close } = await openPage(`?backend=gpu&${tiny.hub}#ql=1&${tiny.model}&ctx=${CTX}&win=1`);
  try {
    await page.waitForSelector('#engine-note[data-how]');
    const note = await page.textContent('#engine-note');
    assert.equal(await page.getAttribute('#engine-note', 'data-backend'), 'gpu', note);
    assert.equal(await page.getAttribute('#engine-note', 'data-how'), 'asked');
    assert.match(note, /^Running on WebGPU: .*: chosen with \?backend=gpu\.$/);
    const r = await waitForResult(page, '0');
    assert.equal(r.backend, 'gpu');
  } finally {
    await close();
  }
});
