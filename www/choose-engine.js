// Which engine the worker runs on (issue 17, item 4): never one slower than the other on this
// machine. Used by www/worker.js only; the page shows the note it returns.
//
// A software WebGPU adapter (Chromium's SwiftShader, Mesa's llvmpipe/lavapipe, Windows' WARP)
// runs the shaders on the CPU cores, emulated through Vulkan: measured on a 2-core machine, the
// page's first perplexity took 695 s on SwiftShader against 12–16 s on the CPU path
// (docs/playground.md). So such an adapter is conclusive: the CPU (WebAssembly) path is chosen
// without trying it. A hardware adapter is not conclusive by itself (a weak integrated GPU behind
// a fast CPU), so the worker times a small probe on both engines (`Playground.probeEngines`)
// and keeps the faster one. `?backend=gpu|cpu` overrides all of this, and the note says so.

// Names a software adapter reports in its vendor, architecture, device or description (WebGPU's
// GPUAdapterInfo), each with the name the note gives it.
const SOFTWARE = [
  [/swiftshader/i, 'SwiftShader'],
  [/llvmpipe/i, 'llvmpipe'],
  [/lavapipe/i, 'lavapipe'],
  [/microsoft basic render|\bwarp\b/i, 'WARP'],
];

// The adapter's info in words, e.g. "vendor google, architecture swiftshader" (fields the browser
// left empty are skipped; Chromium hides some of them).
export function adapterWords(info) {
  const parts = ['vendor', 'architecture', 'device', 'description']
    .filter((k) => typeof info?.[k] === 'string' && info[k].trim() !== '')
    .map((k) => `${k} ${info[k].trim()}`);
  return parts.length ? parts.join(', ') : 'no details given by the browser';
}

// The software renderer's name when `adapter` (a GPUAdapter) is one, else null. Chromium marks
// its own fallback adapter with `isFallbackAdapter` (on the adapter in older versions, on
// `info` in newer ones).
export function softwareAdapter(adapter) {
  const info = adapter.info ?? {};
  const text = ['vendor', 'architecture', 'device', 'description'].map((k) => info[k] ?? '').join(' ');
  for (const [pattern, name] of SOFTWARE) if (pattern.test(text)) return name;
  if (adapter.isFallbackAdapter === true || info.isFallbackAdapter === true) return 'a fallback adapter';
  return null;
}

// Browsers coarsen performance.now() (Chromium: 0.1 ms without cross-origin isolation).
const TIMER_MS = 0.1;

// The probe's verdict in words, from `{cpu_ms, gpu_ms}` (what `probeEngines` measured): which
// engine wins and by how much. GPU only when it is faster.
export function probeVerdict(probe) {
  const gpuWins = probe.gpu_ms < probe.cpu_ms;
  // Timer resolution: a time below it says only "faster than the timer can see".
  const [gpu, cpu] = [probe.gpu_ms, probe.cpu_ms].map((ms) => Math.max(ms, TIMER_MS));
  const ratio = gpuWins ? cpu / gpu : gpu / cpu;
  const times = `${probe.what}: WebGPU ${probe.gpu_ms.toFixed(1)} ms, CPU ${probe.cpu_ms.toFixed(1)} ms`;
  return {
    backend: gpuWins ? 'gpu' : 'cpu',
    reason: `${gpuWins ? 'WebGPU' : 'the CPU'} was ${ratio.toFixed(1)}× faster in a probe (${times})`,
  };
}
