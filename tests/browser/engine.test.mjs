// Issue 17, items 4 and 5: the page never picks an engine slower than the other, says which and
// why, and shows its first perplexity as soon as one window is scored, labelled with what it
// covers.
//  - Default (no ?backend=): on a machine whose only WebGPU adapter is software (CI's and this
//    machine's Chromium: SwiftShader) the page runs on the CPU and the note names the adapter; on a
//    hardware adapter the choice comes from the probe (www/choose-engine.js). Either way the note
//    says how it chose, and the first result ran where the note says.
//  - ?backend=gpu forces WebGPU (even on SwiftShader) and says so.
//  - The first number: after 1 of 4 windows, equal to the CLI's perplexity over that one window
//    (`quantlab eval --windows 1`, the same tokens), then the whole result, equal to the CLI's
//    over all 4.
// The model is fixture.mjs's tiny Llama (served by a local Hub): the choice and the labels do not
// depend on the model's size, and a window of it takes milliseconds even on SwiftShader.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BIN, ROOT, RUN_TIMEOUT_MS, TEXT, openPage, waitForResult } from './harness.mjs';
import { servedTinyLlama } from './fixture.mjs';

const CTX = 64;
const WINDOWS = 4;
// The page (WebAssembly, CPU) against the native CLI (CPU), relative: the same Rust code, but
// wasm's SIMD128 and the native build's vectorised loops may sum f32 products in another order.
const PPL_REL_TOL = 1e-4;

let tiny;
const cli = (args) => execFileSync(BIN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const cliPpl = (windows) => JSON.parse(cli(['eval', '--backend', 'cpu', '--model', tiny.modelDir, '--text', TEXT,
  '--ctx', String(CTX), '--windows', String(windows), '--json']).trim().split('\n').pop()).ppl;

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
    const first = await page.evaluate(() => self.quantlabFirstNumber);
    const timings = await page.evaluate(() => self.quantlabTimings);
    assert.deepEqual([first.window, first.windows], [1, WINDOWS], `first number ${JSON.stringify(first)}`);
    const one = cliPpl(1);
    console.log(`# first number ${first.ppl} after 1 of ${WINDOWS} windows (CLI --windows 1: ${one}); whole ${r.ppl}; `
      + `timings ${JSON.stringify(timings)}`);
    assert.ok(rel(first.ppl, one) <= PPL_REL_TOL, `first ${first.ppl} vs CLI ${one}`);
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
