// The page: controls and results. It never touches model code; everything model-related is a
// message to or from www/worker.js. Text from files or users is only ever set as textContent.

const DEFAULT_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const GROUP_SIZES = [16, 32, 64, 128, 192, 256]; // methods.md §1; only divisors of every row are offered
const DEFAULT_GROUP = 32;
const DEBOUNCE_MS = 300;
// `?backend=cpu` runs on the CPU even where WebGPU exists (to compare the two paths); anything
// else uses WebGPU when the browser has it.
const BACKEND = new URLSearchParams(self.location.search).get('backend') === 'cpu' ? 'cpu' : 'auto';

const $ = (id) => document.getElementById(id);
const el = {
  modelStatus: $('model-status'), download: $('download-progress'), card: $('model-card'),
  note: $('model-note'), file: $('model-file'),
  textSelect: $('text-select'), textView: $('text-view'), textSize: $('text-size'),
  bits: $('bits'), gran: $('gran'), sym: $('sym'),
  protocol: $('protocol'), ctx: $('ctx'), windows: $('windows'), evaluate: $('evaluate'),
  evalProgress: $('eval-progress'), evalStatus: $('eval-status'),
  result: $('result'), ppl: $('ppl'), pplErr: $('ppl-err'), protocolDesc: $('protocol-desc'),
  kl: $('kl'), top1: $('top1'), bpw: $('bpw'), memory: $('memory'), error: $('error'),
  history: document.querySelector('#history tbody'), webgpu: $('webgpu'),
  engine: $('engine'), engineNote: $('engine-note'), backend: $('backend'), gpuMemory: $('gpu-memory'),
};

const texts = new Map(); // name -> text, fetched once
let text = '';
let loaded = false;
let gen = 0; // generation of the newest run
let runs = 0; // completed runs
let debounce = null;
let current = null; // the newest run: {gen, quant, options, started}

// Shared memory lets the worker see a newer run while it is busy (see worker.js).
const control = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
worker.postMessage({ type: 'init', control, backend: BACKEND });

// ---------------------------------------------------------------------------- formatting
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const fixed = (v, d) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '—');
const pct = (v) => (typeof v === 'number' ? `${(100 * v).toFixed(2)} %` : '—');

function setText(node, value, dataValue) {
  node.textContent = value;
  if (dataValue === undefined) node.removeAttribute('data-value');
  else node.dataset.value = String(dataValue);
}

// [{format, tensors, params}] -> "Q4_1 × 210 tensors"
function formatsSummary(formats) {
  if (!Array.isArray(formats) || formats.length === 0) return '—';
  return formats.map((f) => `${f.format} × ${f.tensors} tensor${f.tensors === 1 ? '' : 's'}`).join(', ');
}

// ---------------------------------------------------------------------------- model card
function showModel(info) {
  el.card.replaceChildren();
  const rows = [
    ['File', info.label],
    ['Architecture', info.arch],
    ['Parameters', typeof info.params === 'number' ? `${(info.params / 1e6).toFixed(1)} M` : '—'],
    ['Layers × width', `${info.n_layer} × ${info.dim}`],
    ['Vocabulary', info.vocab],
    ['Linear layers', formatsSummary(info.linear_formats)],
    ['Embedding, head', formatsSummary(info.other_formats)],
    ['Memory as loaded', info.memory ? memoryText(info.memory) : '—'],
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = v ?? '—';
    el.card.append(dt, dd);
  }
  el.note.textContent = info.already_quantized
    ? `The weights in this file are already quantized (${formatsSummary(info.linear_formats)}). `
      + '"As loaded" therefore means these weights, not the original 16-bit model: perplexity, KL and '
      + 'top-1 below compare against the file as loaded.'
    : '"As loaded" means the weights exactly as stored in the file.';
  offerGroups(info);
}

// Group sizes must divide every input dimension a linear layer has.
function offerGroups(info) {
  const inputs = [info.dim, info.ffn_dim].filter((n) => typeof n === 'number' && n > 0);
  for (const o of [...el.gran.options]) if (o.value.startsWith('g')) o.remove();
  for (const g of GROUP_SIZES) {
    if (inputs.length > 0 && inputs.every((n) => n % g === 0)) {
      el.gran.add(new Option(`group of ${g}`, `g${g}`));
    }
  }
  // Groups of 32 are the common choice at 3-4 bits (what ggml's Q4 formats use); per-row
  // scales at 3 bits mostly show how bad that is, which the user can still pick.
  el.gran.value = [...el.gran.options].some((o) => o.value === `g${DEFAULT_GROUP}`) ? `g${DEFAULT_GROUP}` : 'per_row';
}

function memoryText(m) {
  const parts = [];
  if (typeof m.total_bytes === 'number') parts.push(mb(m.total_bytes));
  if (typeof m.f16_bytes === 'number') parts.push(`(f16: ${mb(m.f16_bytes)})`);
  return parts.length ? parts.join(' ') : JSON.stringify(m);
}

// ---------------------------------------------------------------------------- texts
async function selectText(name) {
  if (name === 'custom') {
    text = el.textView.value;
  } else {
    if (!texts.has(name)) {
      const r = await fetch(`www/texts/${name}.txt`);
      if (!r.ok) throw new Error(`www/texts/${name}.txt: HTTP ${r.status}`);
      texts.set(name, await r.text());
    }
    text = texts.get(name);
    el.textView.value = text;
  }
  el.textSize.textContent = `${text.length.toLocaleString('en')} characters`;
}

el.textSelect.addEventListener('change', () => selectText(el.textSelect.value).catch(showError));
el.textView.addEventListener('input', () => {
  el.textSelect.value = 'custom';
  text = el.textView.value;
  el.textSize.textContent = `${text.length.toLocaleString('en')} characters`;
});

// ---------------------------------------------------------------------------- runs
function quantConfig() {
  const bits = el.bits.value;
  const g = el.gran.value;
  const gran = g.startsWith('g') ? { group: Number(g.slice(1)) } : g;
  return {
    version: 1,
    method: bits === 'loaded' ? 'none' : 'rtn',
    default: { bits: bits === 'loaded' ? 8 : Number(bits), gran, sym: el.sym.checked, clip_search: false },
    overrides: [],
  };
}

function weightsLabel(q) {
  if (q.method === 'none') return 'as loaded';
  const d = q.default;
  const gran = typeof d.gran === 'object' ? `g${d.gran.group}` : d.gran.replace('per_', '');
  return `RTN ${d.bits}-bit ${gran} ${d.sym ? 'sym' : 'asym'}`;
}

function startRun() {
  if (!loaded) return;
  clearTimeout(debounce);
  gen += 1;
  if (control) Atomics.store(control, 0, gen);
  const quant = quantConfig();
  const options = {
    protocol: el.protocol.value,
    ctx: Number(el.ctx.value),
    max_windows: el.windows.value === 'all' ? null : Number(el.windows.value),
    kl: quant.method !== 'none',
  };
  el.result.dataset.state = 'running';
  el.result.dataset.config = JSON.stringify(quant);
  el.error.textContent = '';
  el.evalProgress.removeAttribute('value'); // indeterminate until the first window
  el.evalStatus.textContent = quant.method === 'none' ? 'Evaluating…' : 'Quantizing…';
  worker.postMessage({ type: 'run', gen, quant, text, options });
  current = { gen, quant, options, started: performance.now() };
}

function scheduleRun() {
  el.gran.disabled = el.sym.disabled = el.bits.value === 'loaded';
  clearTimeout(debounce);
  debounce = setTimeout(startRun, DEBOUNCE_MS);
}

el.evaluate.addEventListener('click', startRun);
for (const c of [el.bits, el.gran, el.sym]) c.addEventListener('change', scheduleRun);

function showResult(msg) {
  const r = msg.result;
  runs += 1;
  el.result.dataset.state = 'done';
  el.result.dataset.run = String(runs);
  setText(el.ppl, fixed(r.ppl, 3), r.ppl);
  el.pplErr.textContent = `± ${fixed(r.ppl_err, 3)}`;
  el.protocolDesc.textContent = `${r.protocol} — ${r.tokens_scored} tokens scored of ${r.tokens_evaluated} evaluated, ${fixed(r.seconds, 1)} s`;
  setText(el.kl, r.kl == null ? '— (as loaded)' : fixed(r.kl, 5), r.kl ?? undefined);
  setText(el.top1, r.top1 == null ? '— (as loaded)' : pct(r.top1), r.top1 ?? undefined);
  const m = msg.memory || {};
  const bpw = m.bits_per_weight;
  setText(el.bpw, typeof bpw === 'number' ? `${bpw.toFixed(3)} (linear layers)` : '—', bpw);
  setText(el.memory, memoryText(m), m.total_bytes);
  const e = msg.engine || {};
  setText(el.backend, e.backend === 'gpu' ? `WebGPU (${e.adapter})` : 'CPU (WebAssembly)', e.backend);
  setText(el.gpuMemory, typeof e.weight_bytes === 'number'
    ? `${mb(e.weight_bytes)} of packed weights (${e.weight_bytes.toLocaleString('en')} bytes)`
    : '— (not on the GPU)', e.weight_bytes ?? undefined);
  el.evalProgress.value = 1;
  el.evalStatus.textContent = `Done in ${((performance.now() - current.started) / 1000).toFixed(1)} s.`;

  const row = document.createElement('tr');
  const cells = [
    weightsLabel(current.quant),
    `${current.options.protocol === 'gptq' ? 'GPTQ' : 'llama.cpp'} ${r.ctx}`,
    `${fixed(r.ppl, 3)} ± ${fixed(r.ppl_err, 3)}`,
    fixed(r.kl, 4),
    pct(r.top1),
    fixed(bpw, 3),
    typeof m.total_bytes === 'number' ? mb(m.total_bytes) : '—',
    e.backend === 'gpu' ? 'WebGPU' : 'CPU',
    `${fixed(r.seconds, 1)} s`,
  ];
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c;
    row.append(td);
  }
  el.history.prepend(row);
}

function showError(e) {
  el.error.textContent = e instanceof Error ? e.message : String(e);
}

let cancelled = 0; // runs the worker stopped because a newer one came (shown for tests)
worker.onmessage = ({ data: msg }) => {
  if (msg.type === 'cancelled') el.result.dataset.cancelled = String(++cancelled);
  if (msg.gen !== undefined && msg.gen !== gen) return; // an overtaken run
  switch (msg.type) {
    case 'download':
      if (msg.total) el.download.value = msg.loaded / msg.total;
      el.modelStatus.textContent = msg.parsing
        ? 'Reading the model…'
        : `Downloading the model: ${mb(msg.loaded)}${msg.total ? ` of ${mb(msg.total)}` : ''}`;
      break;
    case 'engine':
      el.engine.dataset.backend = msg.backend;
      el.engine.textContent = msg.backend === 'gpu'
        ? `Evaluation runs on WebGPU (${msg.adapter}), driven from a Web Worker.`
        : 'Evaluation runs on the CPU in a Web Worker (WebAssembly).';
      el.engineNote.dataset.backend = msg.backend;
      el.engineNote.textContent = msg.note;
      break;
    case 'loaded':
      loaded = true;
      el.download.value = 1;
      el.modelStatus.dataset.state = 'ready';
      el.modelStatus.textContent = 'Model ready.';
      el.evaluate.disabled = false;
      showModel(msg.info);
      break;
    case 'quantizing':
      el.evalProgress.value = msg.done / msg.total;
      el.evalStatus.textContent = `Quantizing: tensor ${msg.done} of ${msg.total}`;
      break;
    case 'quantized':
      el.evalProgress.removeAttribute('value');
      el.evalStatus.textContent = `Quantized in ${fixed(msg.seconds, 1)} s; evaluating…`;
      break;
    case 'progress': {
      const p = msg.progress;
      el.evalProgress.value = p.window / p.windows;
      el.evalStatus.textContent = `Window ${p.window} of ${p.windows}: perplexity so far ${fixed(p.ppl, 3)} ± ${fixed(p.ppl_err, 3)}`;
      break;
    }
    case 'result':
      showResult(msg);
      break;
    case 'error':
      if (msg.where === 'load' || msg.where === 'init') {
        el.modelStatus.dataset.state = 'error';
        el.modelStatus.textContent = 'The model could not be loaded.';
      } else {
        el.result.dataset.state = 'error';
        el.evalStatus.textContent = '';
      }
      showError(msg.message);
      break;
    default:
      break;
  }
};
worker.onerror = (e) => showError(`worker: ${e.message}`);

function loadModel(source) {
  loaded = false;
  el.evaluate.disabled = true;
  el.download.value = 0;
  el.modelStatus.dataset.state = 'loading';
  el.modelStatus.textContent = 'Loading the model…';
  worker.postMessage({ type: 'load', ...source });
}
el.file.addEventListener('change', () => {
  if (el.file.files.length) loadModel({ file: el.file.files[0] });
});

async function probeWebGpu() {
  let adapter = null;
  try {
    adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
  } catch {
    adapter = null;
  }
  el.webgpu.dataset.available = String(adapter !== null);
  el.webgpu.textContent = adapter ? 'WebGPU: available' : 'WebGPU: not available';
}

el.gran.disabled = el.sym.disabled = true;
selectText(el.textSelect.value).catch(showError);
// Resolved here: inside the worker a relative URL would be relative to www/worker.js.
loadModel({ url: new URL(DEFAULT_MODEL, document.baseURI).href });
probeWebGpu();
