// The Web Worker that owns the wasm module. The page (main.js) only posts messages here; all
// model code runs in this thread, so the page stays responsive during a long evaluation.
//
// Messages in:  {type: 'init', control, backend, testHooks}  control: Int32Array on a
//                                                  SharedArrayBuffer or null; backend: 'auto'
//                                                  (WebGPU when available) or 'cpu'; testHooks:
//                                                  true when the page has ?test-hooks=1
//               {type: 'load', url} | {type: 'load', file} | {type: 'load', files} (GGUF, .qlab, or
//                                                  safetensors + config.json + tokenizer.json)
//               {type: 'load', hub, rev}           a Hub id (org/name or org/name/folder) at a
//                                                  revision (default main)
//               {type: 'run', gen, quant, text, options, calib: {text, n, len} | null}
//               {type: 'to-link', quant} | {type: 'parse-link', q, id?}   (share links, no model needed)
//               {type: 'histogram', name, row} | {type: 'activations', text, layer}
//               {type: 'channels', name}             CMPQ per-channel map of one tensor
//               {type: 'rowview', name, row, start, points}   one row quantized (www/rowview.js)
//               {type: 'tender', quant, text, layer, site, row}   Tender's channel picture and
//                                                  shift-accumulate identity (on the CPU)
//               {type: 'save', form, name}         the current model as a .qlab, GGUF or Hugging
//                                                  Face files ('saved': files, report, quant,
//                                                  label; or error)
//               {type: 'generate', ggen, prompt, n, quant, calib}   greedy text, reference then quantized
//               {type: 'gen-cancel', ggen}                           (without shared memory)
//               {type: 'precision', value}         'f32' | 'f16': the weight products of later
//                                                  runs ('precision': value, or error; www/web16.js)
//               {type: 'cancel', gen}              Stop: the run `gen` (and older) stops between two
//                                                  blocks of the model
//               {type: 'test-lose-device', gpuAgain, afterWindow}   test hook, ignored unless testHooks: destroy
//                                                  the WebGPU device now, or once the next
//                                                  evaluation reports window `afterWindow` (gpuAgain
//                                                  false: and find no GPU when recovering)
// Messages out: ready | schema | engine | download | loaded | calibrating | calibrated |
//               quantizing | training (BinaryMoS: {name, step, loss}) | quantized | progress |
//               result (with `wa`, the W/A label, and
//               `smooth`, Session::smooth_report) | layers | link | parsed |
//               histogram | activations | channels | gates | tender | rowview | cancelled | error |
//               gen-token | gen-done | gen-error   (each carries its `ggen`) |
//               device-lost   (the WebGPU device was lost; recovering: an 'engine' message with
//                              `recovered` follows) |
//               preview {gen, result}   the first look: one short window before a run's own
//                                   (PREVIEW_CTX, below) |
//               precisions {list}   what setPrecision accepts here (after 'engine'; f32 again
//                                   after a recovery, on the new device) | precision |
//               timing {name, at}   a start-up moment (wall-clock ms) for the first-experience
//                                   breakdown (www/engine.js)
//               (each run's messages carry its `gen`).
//
// Backend: on 'init' the worker chooses the engine (initEngine, www/choose-engine.js) and, for
// WebGPU, asks the wasm module for it (`initGpu`, a Promise); models loaded afterwards live in GPU
// buffers. Otherwise the CPU path runs. The 'engine' message carries the choice and its reason,
// which the page shows.
//
// Device loss: when a run or a generation fails because the WebGPU device was lost (a driver
// reset, a GPU process crash, or the test hook), the session moves to a new device, or to the
// CPU when none can be had (`recoverGpu`: the model, its quantization and calibration are kept,
// reloaded from the weights the wasm side holds), the page is told ('device-lost', then
// 'engine' with `recovered`), and the interrupted work starts again, once.
//
// Requests run one at a time, in arrival order (`serial`): `evaluate` returns a Promise, and on
// the GPU it yields while buffers map, so without the queue a 'load' could arrive mid-run.
//
// Cancellation: the page bumps control[0] (shared memory) when it starts a newer run or stops
// one, and control[1] when it starts or stops a generation; the progress callbacks, which
// quantization calls after every tensor and evaluation between every two blocks of the model
// (on the GPU as the paced blocks finish, src/gpu/pace.rs), compare it with their own
// generation and return false to stop. A cancelled run's 'cancelled' carries `partial`, the
// progress over its finished windows, and for BinaryMoS `lite`, the tensors its lite training
// kept for resuming (`liteKept`). On the CPU backend no
// message can arrive while wasm runs, hence shared memory. Without it (a server without
// COOP/COEP headers) a newer queued run stops a GPU evaluation at its next window; on the CPU
// runs overtaken while queued are skipped, and a running one finishes and is ignored.

import init, { Playground, methodSchema, quantFromLink, quantSummary, quantToLink } from './pkg/quantlab.js';
import { MAX_MODEL_BYTES, cachesWritten, download as fetchModelFile, resolveHub, tooLarge } from './download.js';
import { adapterWords, probeVerdict, softwareAdapter } from './choose-engine.js';

// Where Hub ids resolve ('init' may name a mirror).
let hubEndpoint = 'https://huggingface.co';

let playground = null;
let control = null;
let memory = null; // MemoryReport of the weights as currently quantized
let quantKey = null; // JSON of the QuantConfig the session currently holds
let pending = null; // the newest run not yet started
let running = false;
let genCancelled = 0; // the newest generation cancelled by message (no shared memory)
let runCancelled = 0; // the newest run cancelled by message (Stop without shared memory)
let onGpu = false; // whether the session runs on WebGPU (so a failure may be a lost device)
let testHooks = false; // the page was opened with ?test-hooks=1
let loseArmed = null; // test hook: {window, gpuAgain}, lose the device once a run reports `window`
let stopArmed = null; // test hook: {window, step}, wait for the page's Stop at that point of the next run
// The first look (issue 17, item 5): on the CPU one 256-token window of the default model takes
// 4-8 s on a 2-core machine, so the first run after a model loads first scores one short window
// (PREVIEW_CTX tokens of the same text, the run's protocol and settings: what `quantlab eval
// --ctx 64 --windows 1` computes) and shows it, labelled as such; the run's own windows follow
// and replace it. Only when the run's windows are longer, and not on WebGPU, where a window is
// fast anyway.
const PREVIEW_CTX = 64;
let previewDue = false; // set by each load, taken by the next run

const post = (msg) => self.postMessage(msg);
// A moment of the page's start-up, for the first-experience breakdown (www/engine.js keeps the
// first of each name): `at` is wall-clock ms, comparable across the page and this worker.
const mark = (name) => post({ type: 'timing', name, at: performance.timeOrigin + performance.now() });
const message = (e) => (e && e.message) || String(e);
const stale = (gen) => gen <= runCancelled || (control !== null
  ? Atomics.load(control, 0) !== gen
  : pending !== null && pending.gen !== gen);
const genStale = (ggen) => (control !== null ? Atomics.load(control, 1) !== ggen : genCancelled >= ggen);

// Every request runs after the previous one settled; `ok` is false when WebAssembly failed.
const wasmReady = init();
let chain = wasmReady.then(() => {
  mark('wasm-ready');
  playground = new Playground();
  post({ type: 'ready' });
  post({ type: 'schema', schema: methodSchema() });
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
    testHooks = msg.testHooks === true;
    if (msg.hub) hubEndpoint = msg.hub;
    serial(async () => {
      await initEngine(msg.backend);
      mark('engine-chosen');
      post({ type: 'precisions', list: playground.precisions() });
    });
  } else if (msg.type === 'load') {
    // A URL's bytes start downloading now, while WebAssembly compiles and the engine is chosen
    // (the first experience, issue 17); the queue only orders what is done with them. A failed
    // download is reported where load() awaits it.
    const early = msg.url ? download(msg.url, msg.url.split('/').pop()) : null;
    early?.catch(() => {});
    serial(() => load(msg, early));
  } else if (msg.type === 'to-link') {
    wasmReady.then(() => {
      try {
        post({ type: 'link', link: quantToLink(msg.quant) });
      } catch (e) {
        post({ type: 'link', error: message(e) });
      }
    });
  } else if (msg.type === 'parse-link') {
    wasmReady.then(() => {
      try {
        post({ type: 'parsed', id: msg.id, config: quantFromLink(msg.q) });
      } catch (e) {
        post({ type: 'parsed', id: msg.id, error: message(e) });
      }
    });
  } else if (msg.type === 'histogram') {
    serial(async () => {
      try {
        post({ type: 'histogram', histogram: playground.histogram(msg.name, 64, msg.row) });
      } catch (e) {
        post({ type: 'histogram', error: message(e) });
      }
    });
  } else if (msg.type === 'rowview') {
    serial(async () => {
      try {
        post({ type: 'rowview', view: playground.rowView(msg.name, msg.row, msg.start, msg.points) });
      } catch (e) {
        post({ type: 'rowview', name: msg.name, error: message(e) });
      }
    });
  } else if (msg.type === 'activations') {
    serial(async () => {
      try {
        post({ type: 'activations', activations: playground.activations(msg.text, msg.layer) });
      } catch (e) {
        post({ type: 'activations', error: message(e) });
      }
    });
  } else if (msg.type === 'tender') {
    serial(async () => {
      try {
        post({ type: 'tender', view: playground.tenderView(msg.quant, msg.text, msg.layer, msg.site, msg.row) });
      } catch (e) {
        post({ type: 'tender', error: message(e) });
      }
    });
  } else if (msg.type === 'underflow') {
    serial(async () => {
      try {
        post({ type: 'underflow', report: playground.underflow(msg.layer) });
      } catch (e) {
        post({ type: 'underflow', error: message(e) });
      }
    });
  } else if (msg.type === 'channels') {
    serial(async () => {
      try {
        post({ type: 'channels', name: msg.name, channels: playground.channelMap(msg.name) });
      } catch (e) {
        post({ type: 'channels', name: msg.name, error: message(e) });
      }
    });
  } else if (msg.type === 'gates') {
    serial(async () => {
      try {
        post({ type: 'gates', name: msg.name, gates: playground.mosGates(msg.text, msg.name) });
      } catch (e) {
        post({ type: 'gates', name: msg.name, error: message(e) });
      }
    });
  } else if (msg.type === 'save') {
    // Queued behind any run, so the file holds the model that run quantized. `form`: 'qlab'
    // (QuantLab's file), 'gguf' (llama.cpp; `name` is its general.name) or 'hf' (the files of a
    // Hugging Face checkpoint).
    serial(async () => {
      try {
        if (msg.quant) await ensureQuant(msg.quant, msg.calib, { bg: true }, () => false);
        const base = { type: 'saved', form: msg.form, quant: playground.currentQuant(), label: playground.info().label };
        let files;
        let report = null;
        if (msg.form === 'gguf') {
          const out = playground.exportGguf(msg.name);
          files = [{ name: null, bytes: out.bytes }];
          report = out.report;
        } else if (msg.form === 'hf') {
          files = playground.exportHf();
        } else {
          files = [{ name: null, bytes: playground.saveQlab() }];
        }
        // Transferred, not copied: a file can be as large as the model.
        self.postMessage({ ...base, files, report }, files.map((f) => f.bytes.buffer));
      } catch (e) {
        post({ type: 'saved', form: msg.form, error: message(e) });
      }
    });
  } else if (msg.type === 'generate') {
    serial(() => generate(msg));
  } else if (msg.type === 'test-lose-device') {
    // Not queued: it must hit a run in flight (the worker takes messages while the GPU works),
    // or, with `afterWindow`, be armed for the next evaluation's progress report.
    if (!testHooks) return;
    if (msg.afterWindow > 0) loseArmed = { window: msg.afterWindow, gpuAgain: msg.gpuAgain !== false };
    else if (playground) playground.loseDeviceForTest(msg.gpuAgain !== false);
  } else if (msg.type === 'test-stop-inside') {
    if (testHooks) stopArmed = { window: msg.window, step: msg.step };
  } else if (msg.type === 'precision') {
    serial(async () => {
      try {
        playground.setPrecision(String(msg.value));
        post({ type: 'precision', value: msg.value });
      } catch (e) {
        post({ type: 'precision', error: message(e) });
      }
    });
  } else if (msg.type === 'cancel') {
    // Not queued: it must reach a run in flight (on the GPU the worker takes messages between
    // blocks; on the CPU shared memory does the same).
    runCancelled = Math.max(runCancelled, msg.gen);
  } else if (msg.type === 'gen-cancel') {
    genCancelled = Math.max(genCancelled, msg.ggen);
  } else if (msg.type === 'run') {
    pending = msg;
    if (!running) {
      running = true;
      serial(drain);
    }
  }
};

// The engine (www/choose-engine.js): `backend` 'gpu' or 'cpu' from the page's ?backend= is
// obeyed; 'auto' takes WebGPU only on a hardware adapter that beats the CPU in a probe. The
// 'engine' message carries the choice, its reason (`note`) and how it was made (`how`: 'asked',
// 'unavailable', 'software' or 'probe').
async function initEngine(backend) {
  const cpu = (how, note) => post({ type: 'engine', backend: 'cpu', how, note });
  if (backend === 'cpu') return cpu('asked', 'Running on the CPU (WebAssembly): chosen with ?backend=cpu.');
  if (!self.navigator.gpu) return cpu('unavailable', 'WebGPU not available: running on the CPU.');
  let adapter = null;
  try {
    adapter = await self.navigator.gpu.requestAdapter();
    // Chromium on Linux with an NVIDIA GPU (Vulkan, headless; docs/chromium-gpu.md) answered a
    // fresh browser's first request with null and the next one with the GPU: ask once more
    // before concluding there is no adapter.
    adapter ??= await self.navigator.gpu.requestAdapter();
  } catch (e) {
    return cpu('unavailable', `WebGPU not available: running on the CPU (${message(e)}).`);
  }
  if (!adapter) return cpu('unavailable', 'WebGPU not available: running on the CPU (the browser offers no adapter).');
  const soft = softwareAdapter(adapter);
  if (soft && backend !== 'gpu') {
    return cpu('software', `Running on the CPU (WebAssembly): the only WebGPU adapter is software (${soft}: ${adapterWords(adapter.info)}), `
      + 'which runs the shaders on these same CPU cores and is far slower than the CPU path. Add ?backend=gpu to the address to use it anyway.');
  }
  let desc;
  try {
    desc = await playground.initGpu();
  } catch (e) {
    return cpu('unavailable', `WebGPU not available: running on the CPU (${message(e)}).`);
  }
  if (backend === 'gpu') {
    onGpu = true;
    const what = soft ? ` (a software adapter, ${soft}: slower than the CPU path here)` : '';
    return post({ type: 'engine', backend: 'gpu', how: 'asked', adapter: desc, note: `Running on WebGPU: ${desc}${what}: chosen with ?backend=gpu.` });
  }
  let verdict;
  try {
    verdict = probeVerdict(await playground.probeEngines());
  } catch (e) {
    playground.dropGpu();
    return cpu('probe', `Running on the CPU (WebAssembly): the WebGPU probe failed (${message(e)}).`);
  }
  if (verdict.backend === 'cpu') {
    playground.dropGpu();
    return cpu('probe', `Running on the CPU (WebAssembly): ${verdict.reason}. Add ?backend=gpu to the address to use WebGPU anyway.`);
  }
  onGpu = true;
  post({ type: 'engine', backend: 'gpu', how: 'probe', adapter: desc, note: `Running on WebGPU: ${desc}; ${verdict.reason}.` });
}

async function load(msg, early = null) {
  try {
    let info;
    if (msg.files) {
      info = await loadFiles(msg.files);
    } else if (msg.hub) {
      // A Hugging Face Hub id: its file list from the Hub's API, then the weights (one file, or
      // the shards named by model.safetensors.index.json), config.json and tokenizer.json.
      const files = await resolveHub(hubEndpoint, msg.hub, download, msg.rev);
      if (files.gguf) {
        const bytes = await download(`${files.base}${files.gguf}`, `${msg.hub}/${files.gguf}`);
        mark('model-fetched');
        post({ type: 'download', loaded: 1, total: 1, parsing: true });
        info = await loadBytes(bytes, files.gguf);
      } else {
        const config = await download(`${files.base}config.json`, `${msg.hub}/config.json`);
        const tok = {};
        for (const name of files.tokenizer) tok[name] = await download(`${files.base}${name}`, `${msg.hub}/${name}`);
        const shards = [];
        let total = 0;
        for (const [i, name] of files.shards.entries()) {
          shards.push(await download(`${files.base}${name}`, `${msg.hub}/${name}`, `file ${i + 1} of ${files.shards.length}`));
          // Each shard was checked as it came; together they must fit too (before loadHf copies).
          total += shards[i].length;
          if (total > MAX_MODEL_BYTES) throw new Error(tooLarge(msg.hub, total, i + 1 < files.shards.length));
        }
        mark('model-fetched');
        post({ type: 'download', loaded: 1, total: 1, parsing: true });
        info = loadHf(msg.hub, config, tok, files.shards, shards);
      }
    } else {
      let bytes;
      let label;
      if (msg.file) {
        label = msg.file.name;
        if (msg.file.size > MAX_MODEL_BYTES) throw new Error(tooLarge(label, msg.file.size));
        bytes = new Uint8Array(await msg.file.arrayBuffer());
      } else {
        label = msg.url.split('/').pop();
        bytes = await (early ?? download(msg.url, label));
      }
      mark('model-fetched');
      post({ type: 'download', loaded: bytes.length, total: bytes.length, parsing: true });
      info = await loadBytes(bytes, label);
    }
    // Only now does the session hold the new model (a failed load keeps the previous one).
    quantKey = null;
    memory = info.memory;
    previewDue = true;
    await cachesWritten();
    mark('model-parsed');
    post({ type: 'loaded', info });
  } catch (e) {
    post({ type: 'error', where: 'load', message: message(e), kept: playground !== null && hasModel() });
  }
}

// A GGUF or QuantLab file's bytes into the session. Its SHA-256 (the source identity a saved
// QuantLab file records) is computed by `crypto.subtle` beside the parse (native code on another
// thread; in WebAssembly it cost a second of the first experience) and handed to the session
// before anything can read it; without `crypto.subtle` (a page not served from a secure
// context) the wasm side hashes as before. The load's steps go to the first-experience
// breakdown (www/engine.js).
async function loadBytes(bytes, label) {
  const subtle = self.crypto?.subtle;
  // digest() copies the bytes when called, so the parse below may take them.
  const digest = subtle ? subtle.digest('SHA-256', bytes) : null;
  digest?.catch(() => {});
  const t0 = performance.timeOrigin + performance.now();
  const n = bytes.length;
  let info = playground.load(bytes, label, digest === null);
  let at = t0;
  for (const [name, ms] of [['parse-container', info.steps.hash_ms + info.steps.parse_ms], ['parse-tokenizer', info.steps.tokenizer_ms],
    ['parse-weights', info.steps.weights_ms], ['parse-engine', info.steps.engine_ms]]) {
    at += ms;
    post({ type: 'timing', name, at });
  }
  if (digest) {
    let sum;
    try {
      sum = new Uint8Array(await digest);
    } catch {
      // The browser could not hash (it has no reason to): load again, hashing in wasm.
      return playground.load(bytes, label, true);
    }
    const hex = Array.from(sum, (b) => b.toString(16).padStart(2, '0')).join('');
    mark('model-hashed');
    info = playground.setSourceSha256(hex, n);
  }
  return info;
}

function hasModel() {
  try {
    playground.info();
    return true;
  } catch {
    return false;
  }
}

// A Hugging Face checkpoint into the session: `tok` maps tokenizer file names to their bytes
// (tokenizer.json, or vocab.json + merges.txt [+ tokenizer_config.json]).
function loadHf(label, config, tok, names, shards) {
  return playground.loadHf(label, config, tok['tokenizer.json'], tok['vocab.json'], tok['merges.txt'],
    tok['tokenizer_config.json'], names, shards);
}

// A GGUF file, or a Hugging Face checkpoint: config.json + tokenizer.json (or vocab.json +
// merges.txt) + *.safetensors.
async function loadFiles(files) {
  const byName = new Map(files.map((f) => [f.name, f]));
  const read = async (f) => {
    if (f.size > MAX_MODEL_BYTES) throw new Error(tooLarge(f.name, f.size));
    return new Uint8Array(await f.arrayBuffer());
  };
  // A GGUF or QuantLab file is one file; the wasm side tells the two apart by their bytes.
  const single = files.find((f) => f.name.endsWith('.gguf') || f.name.endsWith('.qlab'));
  if (single) return loadBytes(await read(single), single.name);
  const shards = files.filter((f) => f.name.endsWith('.safetensors'));
  // The shards together must fit, not only each one: refuse before reading any.
  const total = shards.reduce((a, f) => a + f.size, 0);
  if (total > MAX_MODEL_BYTES) {
    throw new Error(tooLarge(shards.length === 1 ? shards[0].name : `${shards.length} safetensors files`, total));
  }
  const bpe = !byName.has('tokenizer.json') && byName.has('vocab.json') && byName.has('merges.txt');
  const missing = ['config.json', ...(bpe ? [] : ['tokenizer.json'])].filter((n) => !byName.has(n));
  if (shards.length === 0 || missing.length) {
    throw new Error(`to open a safetensors model, choose the .safetensors file(s) together with config.json and tokenizer.json (or vocab.json and merges.txt)${missing.length ? ` (missing: ${missing.join(', ')})` : ''}`);
  }
  const datas = [];
  for (const f of shards) datas.push(await read(f));
  const tok = {};
  for (const n of ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json']) {
    if (byName.has(n)) tok[n] = await read(byName.get(n));
  }
  post({ type: 'download', loaded: 1, total: 1, parsing: true });
  return loadHf(shards[0].name.replace(/\.safetensors$/, ''), await read(byName.get('config.json')),
    tok, shards.map((f) => f.name), datas);
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

async function run({ gen, quant, text, options, calib }) {
  // What the finished windows measured, kept when the run is cancelled (they are valid).
  let partial = null;
  // A stopped BinaryMoS run also says which tensors it kept for resuming (www/resume.js).
  const cancelled = () => post({ type: 'cancelled', gen, partial, engine: onGpu ? 'gpu' : 'cpu', lite: liteKept(quant) });
  if (stale(gen)) return cancelled();
  try {
    // Everything that can be checked before work, against the model: a setting that cannot run
    // fails now, not after calibrating.
    playground.checkRun(quant, calib ? { n: calib.n, len: calib.len } : null, text, options);
  } catch (e) {
    return post({ type: 'error', gen, where: 'check', message: message(e) });
  }
  try {
    await withRecovery(async () => {
      await ensureQuant(quant, calib, { gen }, () => stale(gen));
      if (stale(gen)) return cancelled();
      partial = null;
      mark('eval-start');
      const look = previewDue && !onGpu && options.ctx > PREVIEW_CTX;
      previewDue = false;
      if (look) {
        const result = await playground.evaluate(text, { ...options, ctx: PREVIEW_CTX, max_windows: 1 }, () => !stale(gen));
        mark('preview');
        post({ type: 'preview', gen, result });
        if (stale(gen)) return cancelled();
      }
      let first = true;
      const result = await playground.evaluate(text, options, (progress) => {
        // The first report comes once the text is tokenized and the first block of the model
        // has run (between blocks); a window's (in_flight 0), once it is scored.
        if (first) mark('first-report');
        first = false;
        if (progress.in_flight === 0 && progress.window === 1) mark('first-window');
        if (progress.in_flight === 0) partial = progress;
        post({ type: 'progress', gen, progress });
        if (stopArmed && control && progress.window === stopArmed.window && progress.step === stopArmed.step && progress.in_flight > 0) {
          // Test hook: ask the page to press Stop, and wait (at most 10 s) until it has.
          stopArmed = null;
          post({ type: 'test-stop-now', gen });
          Atomics.wait(control, 0, gen, 10_000);
        }
        if (loseArmed && progress.window >= loseArmed.window) {
          playground.loseDeviceForTest(loseArmed.gpuAgain);
          loseArmed = null;
        }
        return !stale(gen);
      });
      // The W/A label as Rust names the config ("W4A8"), and what its scale transform chose
      // (α per layer and site; null without one).
      post({
        type: 'result', gen, result, memory, engine: playground.engine(), wa: quantSummary(quant).wa, smooth: playground.smoothReport(),
        auto: playground.autoReport(),
      });
      if (!stale(gen)) post({ type: 'layers', gen, map: playground.layerMap() });
    }, () => stale(gen), { gen });
  } catch (e) {
    if (stale(gen)) cancelled();
    else post({ type: 'error', gen, where: 'run', message: message(e) });
  }
}

// What the session kept of a stopped BinaryMoS run of `quant` ({done, total, names, quant}), or
// null for another method.
function liteKept(quant) {
  if (!quant?.method?.binarymos) return null;
  try {
    return { ...playground.liteKept(quant), quant };
  } catch {
    return null;
  }
}

// Run `task`; when it fails because the WebGPU device was lost, recover (see the top of this
// file) and run it once more. Anything else, or a second failure, is thrown to the caller.
async function withRecovery(task, isStale, tag) {
  try {
    return await task();
  } catch (e) {
    if (isStale() || !(await recoverIfLost(tag))) throw e;
    return task();
  }
}

// Whether the device was lost; if so move the session to a new one (or to the CPU) and tell the
// page. The failed operation's rejection may arrive before the device's lost promise settles,
// hence one short wait before concluding it was something else.
async function recoverIfLost(tag) {
  if (!onGpu) return false;
  if (!playground.deviceLost()) await new Promise((r) => setTimeout(r, 100));
  const lost = playground.deviceLost();
  if (!lost) return false;
  post({ type: 'device-lost', ...tag, reason: lost });
  const r = await playground.recoverGpu();
  onGpu = r.backend === 'gpu';
  const kept = 'The model, its quantization and calibration were kept; the interrupted work restarted.';
  const note = onGpu
    ? `The WebGPU device was lost (${r.lost}) and recovered on a new device: running on WebGPU: ${r.adapter}. ${kept}`
    : `The WebGPU device was lost (${r.lost}) and no GPU could be had again (${r.gpu_error}): running on the CPU now. ${kept}`;
  post({ type: 'engine', backend: r.backend, adapter: r.adapter, note, recovered: r.backend });
  post({ type: 'precisions', list: playground.precisions() });
  return true;
}

// Make the session hold `quant` (calibrating first when `calib` is given), unless it already
// does. Progress messages carry `tag` ({gen} or {ggen}); `isStale()` true cancels. Calibration
// is a Promise (on WebGPU it runs on the GPU); its answer says which backend calibrated.
async function ensureQuant(quant, calib, tag, isStale) {
  const key = JSON.stringify([quant, calib]);
  if (key === quantKey) return;
  quantKey = null; // unknown state if setQuant throws
  if (calib) {
    const t0 = performance.now();
    const used = await playground.calibrate(calib.text, calib.n, calib.len, (done, total) => {
      post({ type: 'calibrating', ...tag, done, total });
      return !isStale();
    }, false);
    post({ type: 'calibrated', ...tag, used, seconds: (performance.now() - t0) / 1000 });
  }
  const t0 = performance.now();
  // On WebGPU, BinaryMoS trains on the GPU: a Promise (the page cannot wait on the GPU), which
  // keeps a stopped run's trained tensors for the next run of the same configuration.
  const setQuant = onGpu ? playground.setQuantAsync.bind(playground) : playground.setQuant.bind(playground);
  memory = await setQuant(quant, (done, total) => {
    post({ type: 'quantizing', ...tag, done, total });
    return !isStale();
  }, (name, step, loss) => {
    post({ type: 'training', ...tag, name, step, loss });
    return !isStale();
  });
  quantKey = key;
  post({ type: 'quantized', ...tag, memory, seconds: (performance.now() - t0) / 1000 });
}

// Greedy generation from the same prompt by the model as loaded, then by the quantized model,
// each streamed token by token ('gen-token'), one worker job (cancellable between tokens).
async function generate({ ggen, prompt, n, quant, calib }) {
  const isStale = () => genStale(ggen);
  try {
    if (isStale()) return post({ type: 'gen-error', ggen, cancelled: true, message: 'stopped' });
    await withRecovery(async () => {
      await ensureQuant(quant, calib, { ggen }, isStale);
      for (const which of ['reference', 'quantized']) {
        const t0 = performance.now();
        const g = await playground.generate(prompt, n, which, (text, tokens) => {
          post({ type: 'gen-token', ggen, which, text, tokens });
          return !isStale();
        });
        g.seconds = (performance.now() - t0) / 1000;
        post({ type: 'gen-done', ggen, which, generation: g });
      }
    }, isStale, { ggen });
  } catch (e) {
    const cancelled = isStale();
    post({ type: 'gen-error', ggen, cancelled, message: cancelled ? 'stopped' : message(e) });
  }
}

// Download one file (resumable, cached: see download.js), reporting progress to the page.
function download(url, label, part = '') {
  return fetchModelFile(url, label, (p) => post({ type: 'download', file: label, part, ...p }));
}
