// What WebGPU adapter Chromium offers under sets of flags (issue 17 item 3: "try WebGPU on the
// GPU machine's real GPU in Chromium … try Vulkan ICD/loader settings, GPU-sandbox and blocklist
// flags, and report what works"). A tool, not a test: for each flag set it starts a fresh
// headless Chromium on the page's origin (served by `quantlab serve`, a secure context), asks for a
// high-performance adapter and prints what it is (vendor, architecture, description, fallback or
// not), its features and the limits the kernels care about, plus the Dawn adapters and GPU
// feature status from chrome://gpu, so a run on a new machine says which flags reach which
// driver. Extra flag sets come as arguments, each one space-separated string:
//
//   node adapter-probe.mjs '' '--enable-features=Vulkan --use-vulkan=native'
//
// CHROMIUM as in harness.mjs. Environment variables (e.g. VK_DRIVER_FILES for an ICD outside the
// loader's search path) pass through to the browser. PROBE_DUMP_DIR, when set, receives the whole
// chrome://gpu text of each flag set (gpu-N.txt).

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const BASE = ['--headless=new', '--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
const sets = process.argv.length > 2 ? process.argv.slice(2) : [''];

// Runs in the page: the adapter as WebGPU describes it, or why there is none.
async function describeAdapter(options) {
  if (!navigator.gpu) return { error: 'navigator.gpu is undefined' };
  const t0 = performance.now();
  const adapter = await navigator.gpu.requestAdapter(options);
  const ms = performance.now() - t0;
  if (!adapter) return { error: `requestAdapter() returned null after ${ms.toFixed(0)} ms` };
  const i = adapter.info ?? {};
  const l = adapter.limits;
  return {
    ms,
    info: { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
      isFallbackAdapter: i.isFallbackAdapter ?? adapter.isFallbackAdapter,
      subgroupMinSize: i.subgroupMinSize, subgroupMaxSize: i.subgroupMaxSize },
    features: [...adapter.features].sort(),
    limits: { maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize, maxBufferSize: l.maxBufferSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup },
  };
}

// A blank page on localhost (a secure context, as WebGPU needs); nothing of the project is served.
const server = createServer((req, res) => res.end('<!doctype html><title>probe</title>'));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/`;
// Asked in this order, each in the same page: on the H100 the first request of a fresh browser came
// back null once ("A valid external Instance reference no longer exists") and the next one
// succeeded, so the plain request is asked twice.
const OPTIONS = [{}, { powerPreference: 'high-performance' }, {}, { featureLevel: 'compatibility' }];
try {
  for (const [n, set] of sets.entries()) {
    const extra = set.split(' ').filter(Boolean);
    const profile = mkdtempSync(path.join(tmpdir(), 'quantlab-probe-'));
    console.log(`\n=== flags: ${extra.join(' ') || '(none beyond the harness defaults)'}`);
    let context;
    try {
      context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...BASE, ...extra] });
      const page = context.pages()[0] ?? await context.newPage();
      // The browser's own words on why an adapter is missing come as console warnings.
      page.on('console', (m) => console.log(`  console ${m.type()}: ${m.text()}`));
      await page.goto(url);
      for (const options of OPTIONS) {
        console.log(`requestAdapter(${JSON.stringify(options)}):`);
        console.log(`  ${JSON.stringify(await page.evaluate(describeAdapter, options))}`);
      }
      await page.goto('chrome://gpu');
      await page.waitForTimeout(3000);
      // chrome://gpu draws its tables inside shadow roots: walk them for their text.
      const text = await page.evaluate(() => {
        const walk = (n) => (n.shadowRoot ? walk(n.shadowRoot) : '') + [...n.children].map(walk).join('')
          + (n.children?.length ? '' : `${n.textContent}\n`);
        return walk(document.body);
      });
      // The parts that say which GPU and driver the browser's GPU process and Dawn found.
      const keep = text.split('\n').map((l) => l.trim())
        .filter((line) => /WebGPU|Vulkan:|Dawn|NVIDIA|nvidia|DEVICE=|Backend>|[Aa]dapter|Sandboxed/.test(line) && !/^Disabled/.test(line));
      // Dawn Info starts with one header line per adapter Dawn enumerated.
      const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
      const dawn = lines.indexOf('Dawn Info');
      if (dawn >= 0) keep.push(...lines.slice(dawn + 1, dawn + 8).map((l) => `dawn: ${l}`));
      if (process.env.PROBE_DUMP_DIR) writeFileSync(path.join(process.env.PROBE_DUMP_DIR, `gpu-${n + 1}.txt`), text);
      console.log([...new Set(keep)].slice(0, 60).map((l) => `  | ${l.slice(0, 200)}`).join('\n'));
    } catch (e) {
      console.log(`launch or probe failed: ${e.message.split('\n')[0]}`);
    } finally {
      if (context) await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  }
} finally {
  server.close();
}
