// The Web Worker that owns the wasm module. The page (main.js) only posts messages here; all
// model code runs in this thread, so the page stays responsive during a long evaluation.
//
// Messages in:  {type: 'init', control, backend}  control: Int32Array on a SharedArrayBuffer or
//                                                  null; backend: 'auto' (WebGPU when available)
//                                                  or 'cpu'
//               {type: 'load', url} | {type: 'load', file}
//               {type: 'run', gen, quant, text, options}
// Messages out: ready | engine | download | loaded | quantizing | quantized | progress | result |
//               cancelled | error
//               (each run's messages carry its `gen`).
//
// Backend: on 'init' the worker asks the wasm module for WebGPU (`initGpu`, a Promise); models
// loaded afterwards live in GPU buffers. Without WebGPU, or with backend 'cpu', the CPU path runs
// and the 'engine' message carries a note the page shows.
//
// Requests run one at a time, in arrival order (`serial`): `evaluate` returns a Promise, and on
// the GPU it yields while buffers map, so without the queue a 'load' could arrive mid-run.
//
// Cancellation: the page bumps control[0] (shared memory) when it starts a newer run; the
// progress callbacks, which quantization calls after every tensor and evaluation after every
// window, compare it with their own generation and return false to stop. On the CPU backend no
// message can arrive while wasm runs, hence shared memory. Without it (a server without
// COOP/COEP headers) a newer queued run stops a GPU evaluation at its next window; on the CPU
// runs overtaken while queued are skipped, and a running one finishes and is ignored.

import init, { Playground } from './pkg/quantlab.js';

// Refuse model files larger than this before allocating for them (wasm32 has 4 GiB in all).
const MAX_MODEL_BYTES = 2 ** 31;

let playground = null;
let control = null;
let memory = null; // MemoryReport of the weights as currently quantized
let quantKey = null; // JSON of the QuantConfig the session currently holds
let pending = null; // the newest run not yet started
let running = false;

const post = (msg) => self.postMessage(msg);
const message = (e) => (e && e.message) || String(e);
const stale = (gen) => (control !== null
  ? Atomics.load(control, 0) !== gen
  : pending !== null && pending.gen !== gen);

// Every request runs after the previous one settled; `ok` is false when WebAssembly failed.
let chain = init().then(() => {
  playground = new Playground();
  post({ type: 'ready' });
  return true;
}, (e) => {
  post({ type: 'error', where: 'init', message: `could not start WebAssembly: ${message(e)}` });
  return false;
});
function serial(task) {
  chain = chain.then(async (ok) => {
    if (ok) await task();
    return ok;
  });
}

self.onmessage = ({ data: msg }) => {
  if (msg.type === 'init') {
    control = msg.control;
    serial(() => initEngine(msg.backend));
  } else if (msg.type === 'load') {
    serial(() => load(msg));
  } else if (msg.type === 'run') {
    pending = msg;
    if (!running) {
      running = true;
      serial(drain);
    }
  }
};

// WebGPU when available (and not declined by the page), else the CPU with a note saying why.
async function initEngine(backend) {
  if (backend === 'cpu') {
    post({ type: 'engine', backend: 'cpu', note: 'Running on the CPU (chosen with ?backend=cpu).' });
    return;
  }
  if (!self.navigator.gpu) {
    post({ type: 'engine', backend: 'cpu', note: 'WebGPU not available: running on the CPU.' });
    return;
  }
  try {
    const adapter = await playground.initGpu();
    post({ type: 'engine', backend: 'gpu', adapter, note: `Running on WebGPU: ${adapter}.` });
  } catch (e) {
    post({ type: 'engine', backend: 'cpu', note: `WebGPU not available: running on the CPU (${message(e)}).` });
  }
}

async function load(msg) {
  try {
    let bytes;
    let label;
    if (msg.file) {
      label = msg.file.name;
      if (msg.file.size > MAX_MODEL_BYTES) throw new Error(`${label} is larger than 2 GiB`);
      bytes = new Uint8Array(await msg.file.arrayBuffer());
    } else {
      label = msg.url.split('/').pop();
      bytes = await download(msg.url, label);
    }
    post({ type: 'download', loaded: bytes.length, total: bytes.length, parsing: true });
    quantKey = null;
    const info = playground.load(bytes, label);
    memory = info.memory;
    post({ type: 'loaded', info });
  } catch (e) {
    post({ type: 'error', where: 'load', message: message(e) });
  }
}

// Fetch with progress into one preallocated buffer (when the size is known).
async function download(url, label) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`${label}: HTTP ${response.status} (run ./scripts/serve.sh, which fetches the model)`);
  }
  const total = Number(response.headers.get('Content-Length')) || 0;
  if (total > MAX_MODEL_BYTES) throw new Error(`${label} is larger than 2 GiB`);
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  let lastPost = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    if (loaded > MAX_MODEL_BYTES) throw new Error(`${label} is larger than 2 GiB`);
    const now = performance.now();
    if (now - lastPost > 100) {
      lastPost = now;
      post({ type: 'download', loaded, total });
    }
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return bytes;
}

// Run the newest pending request; yielding between runs lets queued messages replace it.
async function drain() {
  while (pending) {
    const msg = pending;
    pending = null;
    await run(msg);
    await new Promise((r) => setTimeout(r, 0));
  }
  running = false;
}

async function run({ gen, quant, text, options }) {
  if (stale(gen)) return post({ type: 'cancelled', gen });
  try {
    const key = JSON.stringify(quant);
    if (key !== quantKey) {
      quantKey = null; // unknown state if setQuant throws
      const t0 = performance.now();
      memory = playground.setQuant(quant, (done, total) => {
        post({ type: 'quantizing', gen, done, total });
        return !stale(gen);
      });
      quantKey = key;
      post({ type: 'quantized', gen, memory, seconds: (performance.now() - t0) / 1000 });
    }
    if (stale(gen)) return post({ type: 'cancelled', gen });
    const result = await playground.evaluate(text, options, (progress) => {
      post({ type: 'progress', gen, progress });
      return !stale(gen);
    });
    post({ type: 'result', gen, result, memory, engine: playground.engine() });
  } catch (e) {
    if (stale(gen)) post({ type: 'cancelled', gen });
    else post({ type: 'error', gen, where: 'run', message: message(e) });
  }
}
