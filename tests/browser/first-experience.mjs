// The page's "first experience" (issue 4) as a benchmark, not a test: seconds from opening the page
// (served locally by `quantlab serve`) to the first perplexity on the default model and the first
// 1,024 tokens of the built-in prose text (the page's defaults), in headless Chromium. Prints one
// line per run and the backend the page chose, so a number is never quoted without its engine.
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

for (let i = 0; i < runs; i++) {
  const { page, close } = await openPage(query);
  try {
    const r = await waitForResult(page, '0');
    const seconds = await page.evaluate(() => self.quantlabFirstResult / 1000);
    const adapter = await page.textContent('#backend');
    console.log(`first experience${query ? ` (${query})` : ''}: ${seconds.toFixed(2)} s to the first `
      + `perplexity ${r.ppl} (${r.protocol.trim()}) on ${adapter.trim()}`);
  } finally {
    await close();
  }
}
