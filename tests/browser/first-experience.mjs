// The page's "first experience" (issue 4, issue 17 item 5) as a benchmark, not a test: seconds
// from opening the page (served locally by `quantlab serve`) to the first perplexity (on the CPU
// the worker's first look, one window of 64 tokens, labelled so; else the first window's,
// "after 1 of 4 windows") and to the whole result on the default model and the
// first 1,024 tokens of the built-in prose text (the page's defaults), in headless Chromium.
// Prints one line per run with the engine the page chose and how, so a number is never quoted
// without its engine, and a breakdown of where the seconds went (www/engine.js's timings).
//
//   node first-experience.mjs [--query '?backend=cpu'] [--runs N]
//
// CHROMIUM and QUANTLAB_BIN override the browser and the CLI as in harness.mjs; extra Chromium
// flags (e.g. for a machine whose WebGPU runs on Vulkan) come from CHROMIUM_EXTRA_ARGS,
// space-separated. Each run uses a fresh profile, so nothing is cached between runs.

import { openPage, waitForResult } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const query = opt('--query', '');
const runs = Number(opt('--runs', '1'));
if (!Number.isInteger(runs) || runs < 1 || runs > 20) {
  console.error(`--runs must be an integer in 1..20, got ${opt('--runs', '1')}`);
  process.exit(2);
}

// The start-up moments the page recorded (www/engine.js), in seconds since navigation, in the
// order they happen; a moment the run did not reach is left out.
const STEPS = [
  ['wasm-ready', 'wasm fetched and compiled'], ['engine-chosen', 'engine chosen'],
  ['model-fetched', 'model fetched'],
  // Inside the load (www/worker.js loadBytes; src/playground/load.rs): GGUF container and config,
  // tokenizer, weights copied out still packed, weights put on the engine (f32 on the CPU), and
  // the SHA-256 from crypto.subtle, which runs beside them.
  ['parse-container', 'container parsed'], ['parse-tokenizer', 'tokenizer built'], ['parse-weights', 'weights read'],
  ['parse-engine', 'weights on the engine'], ['model-hashed', 'SHA-256 done'],
  ['model-parsed', 'model parsed'], ['eval-start', 'evaluation started'],
  // The worker's first look: one window of 64 tokens before the run's own (www/worker.js).
  ['preview', 'first look scored'], ['first-report', 'tokenized + first block'], ['first-window', 'first window scored'],
  ['first-number', 'first perplexity shown'], ['first-result', 'whole result shown'],
];

for (let i = 0; i < runs; i++) {
  const { page, close } = await openPage(query);
  try {
    const r = await waitForResult(page, '0');
    const { timings, first } = await page.evaluate(() => ({ timings: self.quantlabTimings, first: self.quantlabFirstNumber ?? null }));
    const seconds = timings['first-result'] / 1000;
    const adapter = await page.textContent('#backend');
    const how = await page.getAttribute('#engine-note', 'data-how');
    console.log(`first experience${query ? ` (${query})` : ''}: ${(timings['first-number'] / 1000).toFixed(2)} s to the first `
      + `perplexity${first ? ` ${first.ppl.toFixed(4)}${first.preview ? ' (first look)' : ''} after ${first.window} of ${first.windows} windows `
        + `of ${first.ctx} tokens (${first.tokens_scored} tokens scored)` : ''}, `
      + `${seconds.toFixed(2)} s to the whole result ${r.ppl} (${r.protocol.trim()}) on ${adapter.trim()} (engine chosen: ${how})`);
    console.log(`  breakdown (s since navigation): ${STEPS.filter(([k]) => k in timings)
      .map(([k, words]) => `${words} ${(timings[k] / 1000).toFixed(2)}`).join(' · ')}`);
  } finally {
    await close();
  }
}
