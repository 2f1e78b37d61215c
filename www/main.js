// The page: controls and results. It never touches model code; everything model-related is a
// message to or from www/worker.js. Text from files, users or links is only ever set as
// textContent (never as HTML).
//
// The whole configuration lives in the URL hash (www/state.js); the method panel is built from
// the schema Rust sends (src/playground/schema.rs); the pictures are in www/charts.js.

import { DEFAULTS, HIDEABLE, MAX_GEN, MAX_ROW, hubFromUrl, makeHash, parseHash, validModel } from './state.js';
import { RunStore, overridesText, runKey, textId } from './runs.js';
import { clearFailures, explain, progressText, showFailure } from './status.js';
import { drawActivations, drawAlpha, drawChannelMap, drawHistogram, drawLayerMap, drawMemory, drawPareto, drawTender, drawTraining } from './charts.js';
import { download } from './download.js';
import { autoCurveConfigs, autoLabel, showAuto } from './auto.js';
import { initRowView, requestRowView } from './rowview.js';
import { abShow, initAB } from './ab.js';
import { initAnnounce } from './announce.js';
import { initLessons, keepLesson } from './lessons.js';
import { splitLessonHash } from './lesson-format.js';
import { endSoFar, noteLoaded, onTiming, showEngineChoice, showFinal, showPreview, showSoFar } from './engine.js';
import { atStep, markGenerationStopped, runParts, stopWorkerOnLeave } from './truth2.js';
import { initResume, keptTensor, resumeCancelled, resumeDone, resumeOnRun, resumeStopped } from './resume.js';
import { precisionSet, showPrecisions } from './web16.js';

const DEFAULT_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const DEFAULT_GROUP = 32;
const DEBOUNCE_MS = 300;
// `?backend=cpu|gpu` forces an engine; otherwise the worker picks the faster one (www/choose-engine.js).
const BACKEND = ['cpu', 'gpu'].find((b) => b === new URLSearchParams(self.location.search).get('backend')) ?? 'auto';
// `?test-hooks=1` (browser tests only, tests/browser/faults.test.mjs): `window.quantlabTest`
// offers `loseDevice({gpuAgain, afterWindow})`, which makes the worker destroy its WebGPU device
// mid-run.
const TEST_HOOKS = new URLSearchParams(self.location.search).get('test-hooks') === '1';

const $ = (id) => document.getElementById(id);
const el = {
  modelStatus: $('model-status'), download: $('download-progress'), card: $('model-card'),
  note: $('model-note'), file: $('model-file'), drop: $('drop-zone'), url: $('model-url'),
  urlLoad: $('model-url-load'), modelDefault: $('model-default'),
  textSelect: $('text-select'), textView: $('text-view'), textSize: $('text-size'), textFile: $('text-file'),
  method: $('method'), bits: $('bits'), bitsOut: $('bits-out'), bitsLabel: $('bits-label'), gran: $('gran'), sym: $('sym'), clip: $('clip'), imatrix: $('imatrix'),
  fields: $('method-fields'), lorc: $('lorc'), lorcRank: $('lorc-rank'), lorc8: $('lorc-8bit'),
  calibBox: $('calib-box'), calibN: $('calib-n'), calibLen: $('calib-len'), calibStatus: $('calib-status'),
  explainer: $('method-explainer'), preset: $('preset'), presetRun: $('preset-run'), presetStatus: $('preset-status'),
  protocol: $('protocol'), ctx: $('ctx'), windows: $('windows'), evaluate: $('evaluate'),
  evalProgress: $('eval-progress'), evalStatus: $('eval-status'), evalStop: $('eval-stop'),
  resultOf: $('result-of'), layersBox: $('layers-box'), layersOf: $('layers-of'), paretoOf: $('pareto-of'),
  ovNote: $('ov-note'), showControls: $('show-controls'),
  result: $('result'), ppl: $('ppl'), pplErr: $('ppl-err'), protocolDesc: $('protocol-desc'),
  kl: $('kl'), top1: $('top1'), bpw: $('bpw'), memory: $('memory'), error: $('error'),
  history: document.querySelector('#history tbody'), webgpu: $('webgpu'),
  engine: $('engine'), engineNote: $('engine-note'), soFar: $('ppl-so-far'), backend: $('backend'), gpuMemory: $('gpu-memory'),
  copyLink: $('copy-link'), linkStatus: $('link-status'), linkError: $('link-error'),
  ovLayer: $('ov-layer'), ovBits: $('ov-bits'), ovAdd: $('ov-add'), ovClear: $('ov-clear'), ovList: $('ov-list'),
  histTensor: $('hist-tensor'), histRow: $('hist-row'), histNote: $('hist-note'),
  actLayer: $('act-layer'), actShow: $('act-show'), actNote: $('act-note'),
  chanBox: $('chan-box'), chanNote: $('chan-note'),
  trainBox: $('train-box'), trainStop: $('train-stop'), trainStatus: $('train-status'),
  gatesBox: $('gates-box'), gatesText: $('gates-text'), gatesNote: $('gates-note'), gatesLegend: $('gates-legend'),
  genBox: $('gen-box'), genPrompt: $('gen-prompt'), genN: $('gen-n'), genRun: $('gen-run'), genStop: $('gen-stop'),
  genRef: $('gen-ref'), genQuant: $('gen-quant'), genQuantH: $('gen-quant-h'), genStatus: $('gen-status'),
  offline: $('offline'),
  actBits: $('act-bits'), actFields: $('act-fields'), smooth: $('smooth'), smoothFields: $('smooth-fields'),
  grid: $('grid'), gridNote: $('grid-note'), underflowRun: $('underflow-run'), underflowStatus: $('underflow-status'),
  underflowTable: $('underflow-table'),
  w4a8Note: $('w4a8-note'), actExplainer: $('act-explainer'), resultWa: $('result-wa'),
  alphaBox: $('alpha-box'), alphaNote: $('alpha-note'), alphaSite: $('alpha-site'),
  actMethod: $('act-method'), tenderControls: $('tender-controls'), tenderFields: $('tender-fields'),
  tenderExplainer: $('tender-explainer'), tenderBox: $('tender-box'), tenderSite: $('tender-site'),
  tenderOut: $('tender-out'), tenderShow: $('tender-show'), tenderNote: $('tender-note'), tenderTable: $('tender-table'),
  saveQlab: $('save-qlab'), saveStatus: $('save-status'), saveReport: $('save-report'),
  saveButtons: [...document.querySelectorAll('button.save')],
};

const texts = new Map();
let text = '';
let loaded = false;
let info = null; // model card
let schema = null;
let gen = 0;
let runs = 0;
let debounce = null;
let current = null;
let overrides = []; // [{pattern, quant}]
let modelRef = 'default'; // what a link says about the model ('default', URL or Hub id; files are not shareable)
let hidden = [];
let pendingLink = null; // a parsed link state waiting for the schema and the model
const explainers = new Map();
let preset = null; // {queue, done}
// α per layer and site of the runs with a scale transform, newest last: [{label, method, alpha}]
// (one entry per run label, so SmoothQuant, AWQ and AQAS can be compared side by side).
const alphaRuns = [];
const MAX_ALPHA_RUNS = 8;
let alphaCurrent = null; // the newest run's {label, method, alpha}

// control[0]: the newest run's generation; control[1]: the newest text generation's (both
// read by the worker to cancel work in flight).
const control = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(8)) : null;
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
initRowView(worker, el.histTensor, el.histRow);
initAB();
stopWorkerOnLeave(worker);
initAnnounce();
// `?hub=URL` resolves Hub ids on a mirror of the Hugging Face Hub (same paths) instead.
const HUB = (() => {
  const h = new URLSearchParams(self.location.search).get('hub');
  try {
    const u = h && new URL(h);
    return u && (u.protocol === 'https:' || u.protocol === 'http:') ? u.href.replace(/\/$/, '') : null;
  } catch {
    return null;
  }
})();
worker.postMessage({ type: 'init', control, backend: BACKEND, hub: HUB, testHooks: TEST_HOOKS });
if (TEST_HOOKS) {
  self.quantlabTest = {
    // `afterWindow`: arm the loss for the next evaluation, once it has reported that many
    // windows (deterministic, where a message sent after a progress report may arrive after a
    // small model's run ended); without it, the device is lost now.
    loseDevice: ({ gpuAgain = true, afterWindow = 0 } = {}) => worker.postMessage({ type: 'test-lose-device', gpuAgain, afterWindow }),
    // Press Stop when the next run reports `step` inside window `window` + 1: the worker pauses
    // there (shared memory only) until the page's Stop reaches it, so a tiny model's run, which
    // ends in milliseconds, is stopped inside a window as a user's click would stop a long one.
    stopInside: ({ window = 1, step = 1 } = {}) => worker.postMessage({ type: 'test-stop-inside', window, step }),
  };
}

// ---------------------------------------------------------------------------- formatting
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const fixed = (v, d) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '—');
const pct = (v) => (typeof v === 'number' ? `${(100 * v).toFixed(2)} %` : '—');
function setText(node, value, dataValue) {
  node.textContent = value;
  if (dataValue === undefined) node.removeAttribute('data-value');
  else node.dataset.value = String(dataValue);
}
function formatsSummary(formats) {
  if (!Array.isArray(formats) || formats.length === 0) return '—';
  return formats.map((f) => `${f.format} × ${f.tensors} tensor${f.tensors === 1 ? '' : 's'}`).join(', ');
}
function memoryText(m) {
  const parts = [];
  if (typeof m.total_bytes === 'number') parts.push(mb(m.total_bytes));
  if (typeof m.f16_bytes === 'number') parts.push(`(f16: ${mb(m.f16_bytes)})`);
  // Activations are not stored, but the model runs with them quantized: say so.
  if (typeof m.act === 'string') parts.push(`· activations ${m.act}`);
  return parts.join(' ') || '—';
}
function showError(e) {
  el.error.textContent = e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------- model card
function showModel(card) {
  info = card;
  el.card.replaceChildren();
  const rows = [
    ['File', card.label],
    ['Architecture', card.arch],
    ['Parameters', typeof card.params === 'number' ? `${(card.params / 1e6).toFixed(1)} M` : '—'],
    ['Layers × width', `${card.n_layer} × ${card.dim}`],
    // The block's linears as the architecture's topology lists them, with the input each reads.
    ['Block linears', card.topology.linears.map((l) => `${l.name} (${card.topology.sites[l.site].name})`).join(', ')],
    ['Vocabulary', card.vocab],
    ['Linear layers', formatsSummary(card.linear_formats)],
    ['Embedding, head', formatsSummary(card.other_formats)],
    ['Memory as loaded', card.memory ? memoryText(card.memory) : '—'],
    ...savedRows(card.saved),
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = v ?? '—';
    el.card.append(dt, dd);
  }
  el.note.textContent = card.already_quantized
    ? `The weights in this file are already quantized (${formatsSummary(card.linear_formats)}). `
      + '"As loaded" therefore means these weights, not the original 16-bit model: perplexity, KL and '
      + 'top-1 below compare against the file as loaded.'
    : '"As loaded" means the weights exactly as stored in the file.';
  offerGroups();
  // Layer pickers.
  const layerOpts = (sel) => {
    sel.replaceChildren();
    for (let l = 0; l < card.n_layer; l += 1) sel.add(new Option(`${l}`, String(l)));
  };
  layerOpts(el.ovLayer);
  layerOpts(el.actLayer);
  el.tenderSite.replaceChildren(...card.topology.sites.map((x, k) => new Option(x.name, String(k))));
  el.histTensor.replaceChildren();
  // The block's linears, as the architecture's topology lists them (Llama, OPT, GPT-2 differ).
  const kinds = card.topology.linears.map((x) => x.name);
  for (let l = 0; l < card.n_layer; l += 1) {
    for (const k of kinds) el.histTensor.add(new Option(`blk.${l}.${k}.weight`, `blk.${l}.${k}.weight`));
  }
}

// What a QuantLab file says of itself (SavedInfo): where it came from and what was done to it.
// Its text is shown with textContent only: a file's strings are never HTML.
function savedRows(saved) {
  if (!saved || typeof saved !== 'object') return [];
  const src = saved.source ?? {};
  const quant = Array.isArray(saved.quant) ? saved.quant : [];
  return [
    ['Saved from', `${src.name ?? '?'}${src.sha256 ? ` (SHA-256 ${String(src.sha256).slice(0, 12)}…)` : ''}`],
    ['Quantization applied', quant.length ? quant.map(quantName).join(', then ') : 'none (saved as loaded)'],
    ['Saved by', String(saved.created_by ?? '?')],
    ...trainingRows(saved.extra?.binarize),
  ];
}

// How `quantlab binarize` trained the file (lite or full BinaryMoS), when it did.
function trainingRows(b) {
  if (!b || typeof b !== 'object') return [];
  const n = (v) => (Number.isFinite(Number(v)) ? Number(v) : null);
  const parts = [`${String(b.method ?? '?')} ${String(b.mode ?? '?')}`];
  if (n(b.steps) !== null) parts.push(`${n(b.steps)} steps`);
  if (n(b.tokens_seen) !== null) parts.push(`${n(b.tokens_seen)} tokens`);
  if (n(b.seconds) !== null) parts.push(`${n(b.seconds).toFixed(0)} s`);
  return [['Training', parts.join(', ')]];
}

// A short name of a QuantConfig: method and bits (CMPQ: its budget), and activations.
function quantName(q) {
  if (!q || typeof q !== 'object') return 'as loaded';
  const m = typeof q.method === 'string' ? q.method : Object.keys(q.method ?? {})[0] ?? '?';
  if (m === 'none') return q.act ? `activations A${q.act.bits}` : 'as loaded';
  const w = m === 'cmpq' || m === 'auto' ? `${m} ${q.method[m].budget} bits` : `${m} ${q.default?.bits}-bit`;
  return q.act ? `${w}, A${q.act.bits}` : w;
}

// Group sizes must divide every input dimension a linear layer has.
function offerGroups() {
  const prev = el.gran.value;
  for (const o of [...el.gran.options]) if (o.value.startsWith('g')) o.remove();
  const inputs = info ? [...new Set(info.topology.linears.map((x) => x.cols))].filter((n) => n > 0) : [];
  const sizes = schema ? schema.group_sizes : [];
  for (const g of sizes) {
    if (inputs.length > 0 && inputs.every((n) => n % g === 0)) el.gran.add(new Option(`group of ${g}`, `g${g}`));
  }
  const has = (v) => [...el.gran.options].some((o) => o.value === v);
  el.gran.value = has(prev) && prev !== 'per_row' ? prev : (has(`g${DEFAULT_GROUP}`) ? `g${DEFAULT_GROUP}` : 'per_row');
}

// ---------------------------------------------------------------------------- method panel
function methodSchema() {
  return schema?.methods.find((m) => m.id === el.method.value) ?? null;
}

// A method whose schema has a "budget" field (CMPQ) borrows the bits slider for it: fractional
// effective bits (2.00–4.00 in steps of 0.05) instead of integer bits. The integer value is
// kept meanwhile and comes back when another method is chosen.
const budgetField = (m) => m?.fields.find((f) => f.kind === 'budget') ?? null;
const methodId = (q) => (typeof q.method === 'string' ? q.method : Object.keys(q.method)[0]);
// The budget a QuantConfig asks for, or null for a method with integer bits.
function budgetOf(q) {
  const m = schema?.methods.find((x) => x.id === methodId(q));
  const f = budgetField(m);
  return f && typeof q.method === 'object' ? q.method[m.id][f.key] : null;
}
let intBits = '4';
function syncBitsSlider(m, values) {
  const bf = budgetField(m);
  if (bf) {
    if (el.bits.dataset.mode !== 'budget') intBits = el.bits.value;
    // Step first, so that the value is not snapped to the old integer steps.
    el.bits.step = String(bf.step);
    el.bits.min = String(bf.min);
    el.bits.max = String(bf.max);
    el.bits.value = String(values?.[bf.key] ?? m.defaults?.[bf.key] ?? bf.min);
    el.bits.dataset.mode = 'budget';
    el.bitsLabel.textContent = bf.label;
    el.bits.title = bf.help;
    return;
  }
  if (el.bits.dataset.mode === 'budget') {
    el.bits.min = '1';
    el.bits.max = '8';
    el.bits.step = '1';
    el.bits.value = intBits;
  }
  el.bits.dataset.mode = 'bits';
  el.bitsLabel.textContent = 'Weight bits';
  el.bits.removeAttribute('title');
}
const bitsText = () => (el.bits.dataset.mode === 'budget' ? Number(el.bits.value).toFixed(2) : el.bits.value);

function buildMethodMenu() {
  for (const m of schema.methods) el.method.add(new Option(m.label, m.id));
  el.lorcRank.max = String(schema.lorc.max_rank);
}

// Controls follow the chosen method: the bits it allows, its own options, calibration.
function syncMethodControls(keepFieldValues = null) {
  const m = methodSchema();
  const none = m === null;
  el.bits.disabled = none;
  syncBitsSlider(m, keepFieldValues);
  if (m && m.bits.length) {
    el.bits.min = String(m.bits[0]);
    el.bits.max = String(m.bits[m.bits.length - 1]);
    if (Number(el.bits.value) < m.bits[0]) el.bits.value = String(m.bits[0]);
    if (Number(el.bits.value) > m.bits[m.bits.length - 1]) el.bits.value = String(m.bits[m.bits.length - 1]);
  }
  el.bitsOut.textContent = none ? '—' : bitsText();
  el.gran.disabled = none || !m.granularity;
  el.sym.disabled = none || !m.symmetric;
  el.clip.disabled = none || !m.clip_search;
  // LoRC corrects a weight matrix; some methods have none (BinaryMoS: the schema says).
  el.lorc.disabled = none || !m.lorc;
  el.calibBox.hidden = none || !m.needs_calibration || hidden.includes('calib');
  el.fields.replaceChildren();
  if (m) {
    const values = keepFieldValues ?? m.defaults ?? {};
    for (const f of m.fields.filter((x) => x.kind !== 'budget')) el.fields.append(fieldControl(f, values));
    followBitsSetter(m);
  }
  el.imatrix.disabled = !imatrixApplies(m);
  syncCalibBox();
  el.trainBox.hidden = none || m.id !== 'binarymos';
  showExplainer(none ? 'none' : m.id);
}

// A choice that fixes the weight bits (schema `Field::sets_bits`, ggml's type): the bits control
// shows what the chosen type stores and is not set by hand.
function followBitsSetter(m) {
  const f = m.fields.find((x) => x.sets_bits?.length);
  const c = f && el.fields.querySelector(`[data-key="${f.key}"]`);
  if (!c) return;
  const follow = () => {
    const b = f.sets_bits[f.choices.indexOf(c.value)];
    if (b === undefined) return;
    el.bits.value = String(b);
    el.bitsOut.textContent = bitsText();
  };
  follow();
  c.addEventListener('change', follow);
  el.bits.disabled = true;
  el.bits.title = `set by the ${f.label}`;
}

// One control for a schema `Field` (src/playground/schema.rs), starting from `values[f.key]`:
// a checkbox, a menu, a range with its value shown, or a number. An optional field gets a
// checkbox beside it (unticked: left out of the config). Every control carries data-key and
// data-kind, so `readFields` can collect them.
function fieldControl(f, values) {
  const label = document.createElement('label');
  label.title = f.help;
  label.dataset.field = f.key;
  let opt = null;
  if (f.optional != null) {
    opt = document.createElement('input');
    opt.type = 'checkbox';
    opt.dataset.optional = f.key;
    opt.checked = values[f.key] != null;
    label.append(opt);
  }
  label.append(`${f.label} `);
  // Options that Rust holds as f32 come back from a link as the nearest f64 (0.05 as
  // 0.05000000074505806): show them as the decimal they were (f32 keeps 7 significant digits).
  const raw = values[f.key] ?? f.optional;
  const start = typeof raw === 'number' ? Number(raw.toPrecision(7)) : raw;
  let input;
  if (f.kind === 'bool') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = Boolean(start);
  } else if (f.kind === 'choice') {
    input = document.createElement('select');
    for (const c of f.choices) input.add(new Option(c.replaceAll('_', ' '), c));
    input.value = String(start);
  } else if (f.kind === 'slider') {
    // A range with its value shown beside it (fractions as a percentage).
    input = document.createElement('input');
    input.type = 'range';
    input.min = String(f.min);
    input.max = String(f.max);
    input.step = String(f.step);
    input.value = String(start);
    const out = document.createElement('output');
    const places = Math.max(0, -Math.floor(Math.log10(f.step) + 1e-9));
    const show = () => {
      out.textContent = f.percent ? `${(100 * Number(input.value)).toFixed(3)} %` : Number(input.value).toFixed(places);
    };
    show();
    input.addEventListener('input', show);
    label.append(input, out);
  } else {
    input = document.createElement('input');
    input.type = 'number';
    input.min = String(f.min);
    input.max = String(f.max);
    input.step = String(f.step);
    input.size = 6;
    input.value = atStep(start, f.step);
    // Typed values too: before scheduleRun reads it (listeners run in order).
    input.addEventListener('change', () => { input.value = atStep(input.value, f.step); });
  }
  input.dataset.key = f.key;
  input.dataset.kind = f.kind;
  // Named by its field: beside an optional field's checkbox, the label names only the checkbox.
  input.setAttribute('aria-label', f.label);
  input.addEventListener('change', scheduleRun);
  if (opt) {
    input.disabled = !opt.checked;
    opt.addEventListener('change', () => {
      input.disabled = !opt.checked;
      scheduleRun();
    });
  }
  if (!label.contains(input)) label.append(input);
  return label;
}

// The values of the field controls in `box`, as the option struct's JSON: a field whose `when`
// does not hold (data-off) or an unticked optional one is left out.
function readFields(box) {
  const v = {};
  for (const input of box.querySelectorAll('[data-key]')) {
    const label = input.closest('label');
    if (label?.dataset.off === 'true') continue;
    const opt = label?.querySelector('[data-optional]');
    if (opt && !opt.checked) continue;
    v[input.dataset.key] = input.dataset.kind === 'bool' ? input.checked
      : input.dataset.kind === 'number' || input.dataset.kind === 'slider' ? Number(input.value) : input.value;
  }
  return v;
}

// The schema's rules between the controls of `box` (src/playground/schema.rs: `Implies`,
// `Field::when`): a forced setting is set and locked, with the reason as its tooltip; a field
// whose condition fails is disabled and left out.
const holds = (w, values) => w != null && JSON.stringify(values[w.key]) === JSON.stringify(w.value);
function applyRules(box, fields, implies = []) {
  const control = (key) => box.querySelector(`[data-key="${key}"]`);
  const raw = () => {
    const v = {};
    for (const input of box.querySelectorAll('[data-key]')) v[input.dataset.key] = input.dataset.kind === 'bool' ? input.checked : input.value;
    return v;
  };
  for (const i of implies) {
    const c = control(i.key);
    if (!c) continue;
    const on = holds(i.when, raw());
    if (on) c.value = String(i.value);
    c.disabled = on;
    c.closest('label').title = on ? i.why : (fields.find((f) => f.key === i.key)?.help ?? '');
  }
  for (const f of fields) {
    if (!f.when) continue;
    const label = box.querySelector(`label[data-field="${f.key}"]`);
    if (!label) continue;
    const on = holds(f.when, raw());
    label.dataset.off = String(!on);
    const opt = label.querySelector('[data-optional]');
    if (opt) opt.disabled = !on;
    control(f.key).disabled = !on || (opt !== null && !opt.checked);
  }
}

// ---------------------------------------------------------------------------- activation panel
// Built from schema.act and schema.smooth: the activation quantizer (off, or its bits and
// fields) and the scale transform folded in before the weights are rounded.
const transformSchema = (id) => schema?.smooth.transforms.find((t) => t.id === id) ?? null;
function buildActPanel() {
  for (const b of schema.act.bits) el.actBits.add(new Option(`A${b} (${b}-bit)`, String(b)));
  el.actMethod.add(new Option(schema.act.tender.label, 'tender'));
  for (const t of schema.smooth.transforms) el.smooth.add(new Option(t.label, t.id));
  for (const c of schema.grid.choices) el.grid.add(new Option(c.label, c.id));
  syncActControls();
  showActExplainer();
}
// Rebuild the fields of both halves from `act` / `smooth` (config JSON; null keeps what the
// controls hold) and apply the schema's rules.
function syncActControls(act = null, smooth = null) {
  if (!schema) return;
  const actValues = act ?? { ...schema.act.defaults, ...readFields(el.actFields) };
  el.actFields.replaceChildren(...schema.act.fields.map((f) => fieldControl(f, actValues)));
  const off = el.actBits.value === 'off';
  for (const c of el.actFields.querySelectorAll('input, select')) c.disabled = off;
  if (!off) applyRules(el.actFields, schema.act.fields, schema.act.implies);
  syncTenderControls(act?.tender ?? null);
  const t = transformSchema(el.smooth.value);
  const prev = smooth && t ? smooth[t.id] : (el.smoothFields.dataset.for === el.smooth.value ? readFields(el.smoothFields) : null);
  el.smoothFields.replaceChildren(...(t ? t.fields.map((f) => fieldControl(f, { ...t.defaults, ...prev })) : []));
  el.smoothFields.dataset.for = el.smooth.value;
  // A transform folds scales into the weights before a method rounds them: only before the
  // methods the schema lists.
  const usable = schema.smooth.methods.includes(el.method.value);
  el.smooth.disabled = !usable;
  for (const c of el.smoothFields.querySelectorAll('input, select')) c.disabled = !usable;
  const names = schema.smooth.methods.map((id) => schema.methods.find((m) => m.id === id)?.label ?? id);
  el.w4a8Note.textContent = usable ? ''
    : `A scale transform folds scales into the weights before they are rounded: choose ${names.join(' or ')} as the method to use one.`;
  syncGrid();
  syncCalibBox();
}
// The weight grid (schema.grid): dINT4 only for its methods at its bits, symmetric.
function gridUsable() {
  return Boolean(schema) && schema.grid.methods.includes(el.method.value)
    && Number(el.bits.value) === schema.grid.bits && el.sym.checked && el.bits.dataset.mode !== 'budget';
}
function syncGrid() {
  if (!schema) return;
  const usable = gridUsable();
  el.grid.disabled = !usable;
  const names = schema.grid.methods.map((id) => schema.methods.find((m) => m.id === id)?.label ?? id);
  el.gridNote.textContent = usable ? ''
    : `dINT4 needs ${names.join(' or ')} at ${schema.grid.bits} bits, symmetric.`;
}
function gridConfig() {
  if (!gridUsable()) return null;
  return schema.grid.choices.find((c) => c.id === el.grid.value)?.value ?? null;
}
function actConfig() {
  if (!schema || el.actBits.value === 'off') return null;
  const act = { ...schema.act.defaults, bits: Number(el.actBits.value), ...readFields(el.actFields) };
  if (!tenderOn()) return act;
  // Tender (schema.act.tender): its forced keys, then its own options under `tender`.
  for (const f of schema.act.tender.forces) {
    if (f.value === null) delete act[f.key];
    else act[f.key] = f.value;
  }
  // In the schema's field order (groups, chunk, round), as Rust writes TenderAct.
  const t = { ...schema.act.tender.defaults, ...readFields(el.tenderFields) };
  act.tender = Object.fromEntries(schema.act.tender.fields.map((f) => [f.key, t[f.key]]));
  return act;
}

// ---------------------------------------------------------------------------- Tender controls
// The activation method switch (schema.act.tender, arXiv 2406.12930): Tender offers its own
// bits (8, 4), sets the keys it forces (per tensor; no percentile) and locks their controls
// saying why, and shows its fields (k, chunk T, rounding) and its explainer.
const tenderOn = () => Boolean(schema) && el.actMethod.value === 'tender' && el.actBits.value !== 'off';
function syncTenderControls(tender = null) {
  if (!schema) return;
  const t = schema.act.tender;
  const on = el.actMethod.value === 'tender';
  for (const o of el.actBits.options) o.disabled = on && o.value !== 'off' && !t.bits.includes(Number(o.value));
  if (on && el.actBits.value !== 'off' && !t.bits.includes(Number(el.actBits.value))) el.actBits.value = String(t.bits[0]);
  const prev = tender ?? (el.tenderFields.childElementCount ? readFields(el.tenderFields) : null);
  el.tenderFields.replaceChildren(...t.fields.map((f) => fieldControl(f, { ...t.defaults, ...prev })));
  el.tenderControls.hidden = !on;
  el.tenderExplainer.hidden = !on;
  el.tenderBox.hidden = !on;
  const off = el.actBits.value === 'off';
  for (const c of el.tenderFields.querySelectorAll('input, select')) c.disabled = off;
  applyTenderForces();
  if (on) showTenderExplainer();
}
function applyTenderForces() {
  if (!tenderOn()) return;
  for (const f of schema.act.tender.forces) {
    const c = el.actFields.querySelector(`[data-key="${f.key}"]`);
    if (!c) continue;
    const label = c.closest('label');
    if (f.value === null) {
      const opt = label?.querySelector('[data-optional]');
      if (opt) {
        opt.checked = false;
        opt.disabled = true;
      }
    } else {
      c.value = String(f.value);
    }
    c.disabled = true;
    if (label) label.title = f.why;
  }
}
let tenderExplainerText = null;
async function showTenderExplainer() {
  if (tenderExplainerText === null) {
    try {
      const r = await fetch('www/methods/tender.txt');
      tenderExplainerText = r.ok ? await r.text() : '';
    } catch {
      tenderExplainerText = '';
    }
  }
  el.tenderExplainer.textContent = `${tenderExplainerText} Paper: ${schema.act.tender.paper}.`.trim();
}
el.actMethod.addEventListener('change', () => {
  syncActControls();
  scheduleRun();
});
function smoothConfig() {
  const t = transformSchema(el.smooth.value);
  if (!t || !schema.smooth.methods.includes(el.method.value)) return null;
  return { [t.id]: { ...t.defaults, ...readFields(el.smoothFields) } };
}
// Does a config need calibration statistics? As Rust's QuantConfig::needs_calibration, from
// what the schema says: the method's, a scale transform's, or the activation quantizer's.
function needsCalibration(q) {
  if (!schema) return false;
  const m = schema.methods.find((x) => x.id === methodId(q));
  const t = q.smooth ? transformSchema(Object.keys(q.smooth)[0]) : null;
  return Boolean(m?.needs_calibration) || Boolean(t?.needs_calibration) || Boolean(q.imatrix)
    || (q.act != null && holds(schema.act.calibration_when, q.act));
}
function syncCalibBox() {
  el.calibBox.hidden = !needsCalibration(quantConfig()) || hidden.includes('calib');
}
el.actBits.addEventListener('change', () => {
  syncActControls();
  scheduleRun();
});
el.smooth.addEventListener('change', () => {
  syncActControls();
  scheduleRun();
});
el.actFields.addEventListener('change', () => {
  applyRules(el.actFields, schema.act.fields, schema.act.implies);
  applyTenderForces();
  syncCalibBox();
});
async function showActExplainer() {
  try {
    const r = await fetch('www/methods/w4a8.txt');
    el.actExplainer.textContent = `${r.ok ? await r.text() : ''} Paper: ${schema.act.paper}.`.trim();
  } catch {
    el.actExplainer.textContent = `Paper: ${schema.act.paper}.`;
  }
}

let explainerFor = null; // the newest request wins (fetches may finish out of order)
async function showExplainer(id) {
  explainerFor = id;
  if (!explainers.has(id)) {
    try {
      const r = await fetch(`www/methods/${id}.txt`);
      explainers.set(id, r.ok ? await r.text() : '');
    } catch {
      explainers.set(id, '');
    }
  }
  if (explainerFor !== id) return;
  const m = schema?.methods.find((x) => x.id === id);
  const paper = m ? ` Paper: ${m.paper}.` : '';
  el.explainer.textContent = `${explainers.get(id)}${paper}`.trim();
}

function fieldValues() {
  const v = readFields(el.fields);
  const bf = budgetField(methodSchema());
  if (bf && el.bits.dataset.mode === 'budget') v[bf.key] = Number(el.bits.value);
  return v;
}

function granValue() {
  const g = el.gran.value;
  return g.startsWith('g') ? { group: Number(g.slice(1)) } : g;
}

function quantConfig() {
  const m = methodSchema();
  // A budget method ignores `bits`; it gets the LayerQuant default so its links stay stable.
  const layer = { bits: m && !budgetField(m) ? Number(el.bits.value) : 4, gran: granValue(), sym: el.sym.checked, clip_search: m ? el.clip.checked && m.clip_search : false };
  const method = !m ? 'none' : (m.defaults ? { [m.id]: { ...m.defaults, ...fieldValues() } } : m.id);
  const cfg = { version: schema?.config_version ?? 1, method, default: layer, overrides: m ? overrides : [] };
  if (m && el.lorc.checked && !el.lorc.disabled) cfg.lorc = { rank: Number(el.lorcRank.value), bits8: el.lorc8.checked };
  const grid = gridConfig();
  if (grid) {
    layer.clip_search = false; // the clip search is for the int grid
    layer.grid = grid;
  }
  const sm = smoothConfig();
  if (sm) cfg.smooth = sm;
  const act = actConfig();
  if (act) cfg.act = act;
  if (el.imatrix.checked && imatrixApplies(m)) cfg.imatrix = true;
  return cfg;
}
// Does the importance matrix apply to method `m` (the schema's list; for ggml, its chosen
// type)? Where it does not, the box is disabled and left out of the config.
function imatrixApplies(m) {
  const im = schema?.imatrix;
  if (!m || !im || !im.methods.includes(m.id)) return false;
  if (m.id !== 'ggml') return true;
  const t = fieldValues().type;
  return t == null || im.ggml_types.includes(String(t).toLowerCase());
}

// Put a QuantConfig (from a link or a chart point) back into the controls.
function applyQuant(cfg) {
  const id = typeof cfg.method === 'string' ? cfg.method : Object.keys(cfg.method)[0];
  const opts = typeof cfg.method === 'string' ? null : cfg.method[id];
  el.method.value = [...el.method.options].some((o) => o.value === id) ? id : 'none';
  syncBitsSlider(methodSchema(), opts);
  if (el.bits.dataset.mode !== 'budget') el.bits.value = String(cfg.default.bits);
  const g = cfg.default.gran;
  const gv = typeof g === 'object' ? `g${g.group}` : g;
  if (![...el.gran.options].some((o) => o.value === gv)) el.gran.add(new Option(`group of ${g.group}`, gv));
  el.gran.value = gv;
  el.sym.checked = cfg.default.sym;
  el.clip.checked = Boolean(cfg.default.clip_search);
  el.imatrix.checked = Boolean(cfg.imatrix);
  el.lorc.checked = Boolean(cfg.lorc);
  if (cfg.lorc) {
    el.lorcRank.value = String(cfg.lorc.rank);
    el.lorc8.checked = Boolean(cfg.lorc.bits8);
  }
  overrides = Array.isArray(cfg.overrides) ? cfg.overrides.map((o) => ({ ...o })) : [];
  showOverrides();
  syncMethodControls(opts);
  el.grid.value = cfg.default.grid ? Object.keys(cfg.default.grid)[0] : 'int';
  el.actBits.value = cfg.act ? String(cfg.act.bits) : 'off';
  el.actMethod.value = cfg.act?.tender ? 'tender' : 'uniform';
  const sid = cfg.smooth ? Object.keys(cfg.smooth)[0] : 'none';
  el.smooth.value = [...el.smooth.options].some((o) => o.value === sid) ? sid : 'none';
  syncActControls(cfg.act ? { ...schema.act.defaults, ...cfg.act } : null, cfg.smooth ?? null);
}

// What the activation axis and the scale transform add to a run's label, e.g.
// " +SmoothQuant α 0.5, A8 static per tensor".
function w4a8Label(q) {
  let out = '';
  if (q.smooth) {
    const id = Object.keys(q.smooth)[0];
    const t = transformSchema(id);
    // A slider's value always (SmoothQuant's α is what one compares); other options only
    // where they differ from the schema's defaults.
    const opts = (t?.fields ?? []).filter((f) => f.kind === 'slider' || q.smooth[id][f.key] !== t.defaults[f.key])
      .map((f) => `${f.label} ${q.smooth[id][f.key]}`).join(', ');
    out += ` +${t?.label ?? id}${opts ? ` ${opts}` : ''}`;
  }
  if (q.act?.tender) {
    const a = q.act;
    const t = a.tender;
    out += `, A${a.bits} Tender k${t.groups} T${t.chunk} ${a.scale}${t.round === 'down' ? ' round down' : ''}`;
  } else if (q.act) {
    const a = q.act;
    out += `, A${a.bits} ${a.scale} ${a.gran.replaceAll('_', ' ')}${a.percentile != null ? ` p${a.percentile}` : ''}`;
  }
  return out;
}

function weightsLabel(q) {
  return weightsOnlyLabel(q) + w4a8Label(q);
}

function weightsOnlyLabel(q) {
  if (q.method === 'none') return 'as loaded';
  const id = typeof q.method === 'string' ? q.method : Object.keys(q.method)[0];
  const d = q.default;
  const gran = typeof d.gran === 'object' ? `g${d.gran.group}` : d.gran.replace('per_', '');
  const extra = (q.lorc ? ` +LoRC${q.lorc.rank}` : '') + (q.overrides.length ? ` +${q.overrides.length} ov` : '');
  if (id === 'cmpq') {
    const o = q.method.cmpq;
    const off = [o.outlier_cols === 0 && 'no f16 cols', o.outlier_sparse === 0 && 'no sparse', !o.act_alloc && 'widths by index',
      !o.kmeans && 'uniform grids', o.act !== 'mean_abs' && o.act].filter(Boolean);
    return `CMPQ ${Number(o.budget).toFixed(2)} bits${off.length ? ` (${off.join(', ')})` : ''}${extra}`;
  }
  if (id === 'auto') return `${autoLabel(q.method.auto)}${extra}`;
  if (id === 'binarymos') {
    const o = q.method.binarymos;
    return `BinaryMoS N${o.experts} 1-bit, ${o.steps} steps${extra}`;
  }
  if (id === 'ggml') return `llama.cpp ${q.method.ggml.type.toUpperCase()}${extra}`;
  const grid = d.grid ? ` ${Object.keys(d.grid)[0] === 'dint' ? 'dINT4' : Object.keys(d.grid)[0]}` : '';
  // Scales per row or group, and symmetry, only where the method uses them (the schema says).
  const m = schema?.methods.find((x) => x.id === id);
  const g = m && !m.granularity ? '' : ` ${gran}`;
  const sym = m && !m.symmetric ? '' : ` ${d.sym ? 'sym' : 'asym'}`;
  return `${methodName(id)} ${d.bits}-bit${g}${sym}${grid}${extra}`;
}

// Display names where the upper-cased id is not the paper's spelling.
const METHOD_NAMES = { sign: 'Sign', onebit: 'OneBit', binarymos: 'BinaryMoS', ggml: 'llama.cpp' };
const methodName = (id) => METHOD_NAMES[id] ?? id.toUpperCase();

// The Pareto chart's series a run belongs to: its method, and whether LoRC was added.
function methodGroup(q) {
  const t = q.smooth ? transformSchema(Object.keys(q.smooth)[0]) : null;
  const w4a8 = `${t ? ` +${t.label}` : ''}${q.act ? ` A${q.act.bits}${q.act.tender ? ' Tender' : ''}` : ''}`;
  if (q.method === 'none') return `as loaded${w4a8}`;
  const id = typeof q.method === 'string' ? q.method : Object.keys(q.method)[0];
  return `${methodName(id)}${q.lorc ? ' +LoRC' : ''}${w4a8}`;
}

// ---------------------------------------------------------------------------- overrides
function showOverrides() {
  el.ovList.replaceChildren();
  for (const o of overrides) {
    const li = document.createElement('li');
    li.textContent = `${o.pattern}: ${o.quant ? `${o.quant.bits}-bit` : 'kept as loaded'}`;
    el.ovList.append(li);
  }
}
for (let b = 8; b >= 2; b -= 1) el.ovBits.add(new Option(`${b}`, String(b)));
el.ovBits.value = '8';
el.ovAdd.addEventListener('click', () => {
  const pattern = `blk.${el.ovLayer.value}.*`;
  const quant = el.ovBits.value === 'keep' ? null : { ...quantConfig().default, bits: Number(el.ovBits.value) };
  overrides = overrides.filter((o) => o.pattern !== pattern).concat([{ pattern, quant }]);
  showOverrides();
  scheduleRun();
});
el.ovClear.addEventListener('click', () => {
  overrides = [];
  showOverrides();
  scheduleRun();
});
function pickLayer(l) {
  el.ovLayer.value = String(l);
  el.actLayer.value = String(l);
  // The last linear of a block (the down projection in every architecture so far).
  const last = info.topology.linears.at(-1).name;
  el.histTensor.value = `blk.${l}.${last}.weight`;
  el.ovBits.focus();
}

// ---------------------------------------------------------------------------- texts
// WikiText-2 (raw) test split, as the Hugging Face Hub serves it: one parquet file whose "text"
// rows carry their own newlines, so the text is the rows joined as they are. Parsed with
// hyparquet (npm, copied into www/pkg/ by scripts/build-web.sh); cached like the models.
const WIKITEXT_REPO = 'Salesforce/wikitext';
const WIKITEXT_FILE = /^wikitext-2-raw-v1\/test-[0-9]+-of-[0-9]+\.parquet$/;
async function fetchWikitext() {
  const hub = HUB ?? 'https://huggingface.co';
  let file = 'wikitext-2-raw-v1/test-00000-of-00001.parquet';
  try {
    const r = await fetch(`${hub}/api/datasets/${WIKITEXT_REPO}`);
    const found = r.ok ? (await r.json()).siblings?.map((x) => x?.rfilename).find((n) => WIKITEXT_FILE.test(n ?? '')) : null;
    if (found) file = found;
  } catch {
    // No API answer: try the file name the Hub has used.
  }
  el.textSize.textContent = 'Fetching WikiText-2 from the Hugging Face Hub…';
  const bytes = await download(`${hub}/datasets/${WIKITEXT_REPO}/resolve/main/${file}`, 'WikiText-2 test', (p) => {
    el.textSize.textContent = `Fetching WikiText-2 from the Hugging Face Hub: ${mb(p.loaded)}${p.total ? ` of ${mb(p.total)}` : ''}`;
  });
  const { parquetReadObjects } = await import('./pkg/hyparquet/index.js');
  const rows = await parquetReadObjects({ file: bytes.buffer, columns: ['text'] });
  const joined = rows.map((r) => (typeof r.text === 'string' ? r.text : '')).join('');
  if (!joined) throw new Error(`${file} has no "text" rows`);
  return joined;
}

async function loadText(name) {
  if (name === 'wikitext' && !texts.has(name)) {
    try {
      texts.set(name, await fetchWikitext());
    } catch (e) {
      throw new Error(`WikiText-2 could not be fetched from the Hugging Face Hub (is this computer online?): ${e.message}`);
    }
  }
  if (!texts.has(name)) {
    const r = await fetch(`www/texts/${name}.txt`);
    if (!r.ok) throw new Error(`the built-in text "${name}" could not be fetched (HTTP ${r.status})`);
    texts.set(name, await r.text());
  }
  return texts.get(name);
}
async function selectText(name) {
  if (name === 'custom') {
    text = longText ?? el.textView.value;
  } else {
    keepLongText(null);
    try {
      text = await loadText(name);
    } catch (e) {
      if (name !== 'wikitext') throw e;
      // Offline: say so and keep a built-in text.
      showError(`${e.message}. Using the prose text instead.`);
      el.textSelect.value = 'prose';
      text = await loadText('prose');
    }
    el.textView.value = text;
  }
  showTextSize();
}
function showTextSize() {
  el.textSize.textContent = longText === null ? `${text.length.toLocaleString('en')} characters`
    : `${text.length.toLocaleString('en')} characters; the box shows the first ${SHOWN_CHARS.toLocaleString('en')} and is read-only `
      + '(paste or open another text to change it).';
}
// A long text (issue 19: pasting 5 MB froze the page for 2.7 s) is kept here, not in the text
// box: the browser lays out and edits a text box's whole value on the page's thread, which for
// megabytes takes seconds. The box shows the first part, read-only, and the size line says so.
const SHOWN_CHARS = 100_000;
let longText = null;
function keepLongText(t) {
  longText = t;
  el.textView.readOnly = t !== null;
  if (t !== null) el.textView.value = t.slice(0, SHOWN_CHARS);
}
function useText(t) {
  keepLongText(t.length > SHOWN_CHARS ? t : null);
  if (longText === null && el.textView.value !== t) el.textView.value = t;
  el.textSelect.value = 'custom';
  text = t;
  showTextSize();
}
el.textView.addEventListener('paste', (e) => {
  const t = e.clipboardData?.getData('text/plain') ?? '';
  if (t.length <= SHOWN_CHARS && longText === null) return;
  // A long paste replaces the whole text (splicing it into the box would lay it out again).
  e.preventDefault();
  useText(t);
  scheduleRun();
});
// Calibration reads the built-in texts other than the evaluated one, so that calibration and
// evaluation tokens are disjoint.
// The page never calibrates on the evaluated text (issue 18); the result line names the source.
async function calibrationText() {
  const names = ['prose', 'dialogue', 'code'].filter((n) => n !== el.textSelect.value);
  // Evaluating on WikiText-2: calibrate on the built-in texts other than the default one.
  if (el.textSelect.value === 'wikitext') names.splice(names.indexOf('prose'), 1);
  const parts = [];
  for (const n of names) parts.push(await loadText(n));
  return { text: parts.join('\n\n'), names };
}
// What the last calibration used, for the result line: sequences, tokens, which texts.
let calibUsed = null;
function calibrationLine() {
  const u = calibUsed;
  if (!u) return '';
  const of = `built-in ${u.names.join(' + ')}, held out from the evaluated text`;
  return ` · calibration: ${u.n_seq} × ${u.seq_len} of ${u.text_tokens} tokens (${of})`;
}
el.textSelect.addEventListener('change', () => selectText(el.textSelect.value).then(scheduleRun, showError));
el.textView.addEventListener('input', () => {
  useText(el.textView.value);
  scheduleRun();
});
el.textFile.addEventListener('change', async () => {
  const f = el.textFile.files[0];
  if (!f) return;
  if (f.size > 8e6) return showError(`${f.name} is larger than 8 MB; choose a shorter text`);
  useText(await f.text());
  scheduleRun();
});

// ---------------------------------------------------------------------------- share links
function linkState(q) {
  return {
    model: modelRef,
    text: el.textSelect.value === 'custom' ? DEFAULTS.text : el.textSelect.value,
    proto: el.protocol.value, ctx: el.ctx.value, win: el.windows.value, q,
    calib: { n: Number(el.calibN.value), len: Number(el.calibLen.value) }, hide: hidden,
    // The views a learner sees, when not the page's defaults (issue 19: a link restores them).
    gen: el.genN.value !== el.genN.defaultValue ? wholeIn(el.genN.value, 1, MAX_GEN) : null,
    tensor: el.histTensor.selectedIndex > 0 ? el.histTensor.value : null,
    row: Number(el.histRow.value) > 0 ? wholeIn(el.histRow.value, 0, MAX_ROW) : null,
    col: Number($('row-start').value) > 0 ? wholeIn($('row-start').value, 0, MAX_ROW) : null,
    pts: $('row-points').value !== '64' ? Number($('row-points').value) : null,
  };
}
// A control's value as a link may carry it, or null (a value typed outside the limits is left out).
function wholeIn(v, lo, hi) {
  const n = Number(v);
  return Number.isInteger(n) && n >= lo && n <= hi ? n : null;
}
let lastLink = null;
for (const c of [el.genN, el.histTensor, el.histRow, $('row-start'), $('row-points')]) c.addEventListener('change', () => updateHash(lastLink));
// A link's tensor and row, shown once the model's tensors are listed (maybeFirstRun).
let linkView = null;
function updateHash(q) {
  lastLink = q;
  const h = keepLesson(makeHash(linkState(q)));
  if (self.location.hash !== h) history.replaceState(null, '', h);
}
el.copyLink.addEventListener('click', async () => {
  updateHash(lastLink);
  const url = self.location.href;
  // Set before the clipboard's await, so the link is readable at once.
  el.copyLink.dataset.url = url;
  let note = 'Link copied.';
  try {
    await navigator.clipboard.writeText(url);
  } catch {
    note = 'Copy this address from the address bar (the browser refused the clipboard).';
  }
  if (el.textSelect.value === 'custom') note += ' Your own text is not part of the link; it opens with the prose text.';
  if (modelRef === 'default' && info && !info.label.startsWith('SmolLM2')) note += ' A model opened from a file is not part of the link.';
  el.linkStatus.textContent = note;
});

// Instructor flags hide controls, never the status, the result or the way back: the status and
// result sit outside every hideable element, and "Show all controls" undoes the flags.
function applyHidden() {
  for (const node of document.querySelectorAll('[data-control]')) {
    node.hidden = hidden.includes(node.dataset.control) && HIDEABLE.includes(node.dataset.control);
  }
  el.showControls.hidden = hidden.length === 0;
  syncMethodControls(fieldValues());
}
el.showControls.addEventListener('click', () => {
  hidden = [];
  applyHidden();
  updateHash(lastLink);
});

// Apply a parsed link: eval settings now, the QuantConfig once the worker has validated it.
function applyLinkState(s) {
  el.textSelect.value = s.text;
  el.protocol.value = s.proto;
  el.ctx.value = s.ctx;
  el.windows.value = s.win;
  // A calibration size outside the controls' limits is never shown; maybeFirstRun refuses it.
  const fits = (v, input) => v >= Number(input.min) && v <= Number(input.max);
  if (fits(s.calib.n, el.calibN) && fits(s.calib.len, el.calibLen)) {
    el.calibN.value = String(s.calib.n);
    el.calibLen.value = String(s.calib.len);
  }
  hidden = s.hide;
  applyHidden();
  if (s.gen != null) el.genN.value = String(s.gen);
  linkView = { tensor: s.tensor, row: s.row, col: s.col, pts: s.pts };
}

function linkFailed(message) {
  el.linkError.textContent = `${message} The page opened with its default settings instead.`;
  el.linkError.dataset.failed = 'true';
}

// ---------------------------------------------------------------------------- runs
// One lifecycle per run (issue 20): queued → calibrating → quantizing → evaluating (window k of
// n, and how far inside it) → done | cancelled | failed. `#result[data-phase]` says where the
// run is; `#result[data-state]` is running | done | cancelled | error. Every number in the
// result panel belongs to one stored run (`shown`), named in `#result-of`; while a newer run
// works, the panel is marked stale (`data-stale`), and after a failure it says that what it
// shows is the last good result. A configuration already measured under the same model, text
// and evaluation is recalled from the store (www/runs.js), not recomputed, unless Evaluate is
// pressed (which measures again).
const store = new RunStore();
let active = null; // the run in flight: {gen, id, key, quant, options, calib, label, started, times, memory, partial}
let shown = null; // the stored run the result panel shows
let runIds = 0;
// What the page asked of the worker (tests assert that a recalled run asked nothing).
self.quantlabCounts = { runs: 0, calibrations: 0 };

function scheduleRun() {
  syncMethodControls(fieldValues());
  clearTimeout(debounce);
  debounce = setTimeout(() => startRun(false), DEBOUNCE_MS);
}

function evalOptions(quant) {
  return {
    protocol: el.protocol.value,
    ctx: Number(el.ctx.value),
    max_windows: el.windows.value === 'all' ? null : Number(el.windows.value),
    kl: quant.method !== 'none' || quant.act != null,
  };
}

// The identity of a run of `quant` with the page's current text and evaluation settings.
function identity(quant, calib) {
  return {
    model: info ? `${modelRef}|${info.label}|${info.params}` : modelRef,
    modelLabel: info?.label ?? '—',
    text: textId(el.textSelect.value, text),
    textLabel: el.textSelect.value === 'custom' ? `your text (${text.length.toLocaleString('en')} chars)` : el.textSelect.value,
    protocol: el.protocol.value,
    ctx: Number(el.ctx.value),
    windows: el.windows.value,
    quant,
    calib: calib ? { n: calib.n, len: calib.len } : null,
  };
}

// `measure`: true for the Evaluate button (measure again even when the store has the run).
async function startRun(measure = false) {
  if (!loaded || !schema) return;
  clearTimeout(debounce);
  gen += 1;
  const myGen = gen;
  if (control) Atomics.store(control, 0, gen);
  const quant = quantConfig();
  resumeOnRun(quant);
  const calib = await calibFor(quant);
  if (myGen !== gen) return;
  const id = identity(quant, calib);
  const key = runKey(id);
  const stored = store.get(key);
  worker.postMessage({ type: 'to-link', quant });
  if (stored && !measure) {
    // The worker may still be busy with an older run: newer generation, so it stops.
    active = null;
    recall(stored);
    return;
  }
  const options = evalOptions(quant);
  runIds += 1;
  active = {
    ...id, gen, id: runIds, key, options, calibFull: calib, label: weightsLabel(quant), started: performance.now(),
    times: {}, memory: null, partial: null,
  };
  clearFailures();
  el.error.textContent = '';
  setPhase('queued', 'Queued: waiting for the engine…', null);
  markStale();
  el.evalStop.disabled = false;
  self.quantlabCounts.runs += 1;
  worker.postMessage({ type: 'run', gen, quant, text, options, calib });
  if (!calib) calibUsed = null;
}

async function calibFor(quant) {
  if (!needsCalibration(quant)) return null;
  const { text: ctext, names } = await calibrationText();
  return { text: ctext, names, n: Number(el.calibN.value), len: Number(el.calibLen.value) };
}

// The lifecycle's phase, in the result panel's attributes, the status line and the bar (`frac`
// null: an indeterminate bar while nothing can be counted yet).
function setPhase(phase, words, frac) {
  el.result.dataset.phase = phase;
  el.result.dataset.state = { done: 'done', recalled: 'done', cancelled: 'cancelled', failed: 'error' }[phase] ?? 'running';
  el.evalStatus.textContent = words;
  el.evalStatus.dataset.phase = phase;
  if (frac === null) el.evalProgress.removeAttribute('value');
  else el.evalProgress.value = frac;
  el.evalProgress.dataset.phase = phase;
  if (active) el.result.dataset.config = JSON.stringify(active.quant);
}

// The numbers on screen belong to an older run than the one in flight: say so.
function markStale() {
  if (!shown) return;
  el.result.dataset.stale = 'true';
  el.layersBox.dataset.stale = 'true';
  el.resultOf.textContent = `Previous result, run #${shown.id}: ${describeRun(shown)} — a newer run (#${active.id}: ${active.label}) is in progress.`;
}

function describeRun(r) {
  const ov = overridesText(r.quant.overrides);
  return `${r.label}${ov ? ` (overrides: ${ov})` : ''} · ${r.modelLabel} · text ${r.textLabel} · `
    + `${r.protocol === 'gptq' ? 'GPTQ' : 'llama.cpp'} protocol, ctx ${r.ctx} × ${r.windows} windows`;
}

el.evaluate.addEventListener('click', () => startRun(true));
initResume(() => startRun(true));
el.evalStop.addEventListener('click', stopRun);
el.bits.addEventListener('input', () => { el.bitsOut.textContent = bitsText(); });
for (const c of [el.bits, el.gran, el.sym, el.clip, el.imatrix, el.lorc, el.lorcRank, el.lorc8, el.calibN, el.calibLen,
  el.protocol, el.ctx, el.windows, el.grid]) c.addEventListener('change', scheduleRun);
// The importance matrix calibrates (the calibration box shows) and applies to some ggml types.
el.imatrix.addEventListener('change', syncCalibBox);
el.fields.addEventListener('change', () => {
  el.imatrix.disabled = !imatrixApplies(methodSchema());
  syncCalibBox();
});
for (const c of [el.bits, el.sym]) c.addEventListener('input', syncGrid);
for (const c of [el.bits, el.sym]) c.addEventListener('change', syncGrid);
el.method.addEventListener('change', () => {
  // Per-layer settings belong to the method they were made for: a new method starts without
  // them (they used to persist silently, so "RTN 4-bit" could report 4.6 bits per weight).
  if (overrides.length) {
    el.ovNote.textContent = `The per-layer settings (${overridesText(overrides)}) were cleared with the change of method.`;
    overrides = [];
    showOverrides();
  }
  syncMethodControls();
  syncActControls();
  scheduleRun();
});

// The distribution of the per-token KL and the errors, as llama.cpp's --kl-divergence prints
// them (Rust's model::klstats::KlStats); data-stats carries the numbers as Rust sent them.
function showKlStats(k, missing = '— (as loaded)') {
  const node = $('kl-stats');
  if (!k) {
    setText(node, missing);
    delete node.dataset.stats;
    return;
  }
  const f = (v) => fixed(v, 5);
  setText(node, `mean ${f(k.mean)} ± ${f(k.mean_err)} · median ${f(k.median)} · 90 % ${f(k.p90)} · `
    + `95 % ${f(k.p95)} · 99 % ${f(k.p99)} · max ${f(k.max)} nats; `
    + `top-1 ${fixed(100 * k.top1, 2)} ± ${fixed(100 * k.top1_err, 2)} % of ${k.n} tokens`, k.mean);
  node.dataset.stats = JSON.stringify(k);
}

// Stop the run in flight: a newer generation (shared memory) or a message (without it) makes
// the worker stop between two blocks of the model. The worker answers 'cancelled' with what the
// finished windows measured.
function stopRun() {
  if (!active) return;
  const stopped = active;
  stopped.stopAt = performance.now();
  gen += 1;
  if (control) {
    Atomics.store(control, 0, gen);
    // A worker paused by the test hook waits on this word.
    Atomics.notify(control, 0);
  }
  worker.postMessage({ type: 'cancel', gen: stopped.gen });
  el.evalStop.disabled = true;
  el.evalStatus.textContent = 'Stopping…';
  stopping = stopped;
}
let stopping = null;

// The worker's 'cancelled' for the run the user stopped (or one overtaken by a newer run).
function onCancelled(msg) {
  const r = stopping && stopping.gen === msg.gen ? stopping : null;
  if (!r) return;
  endSoFar(el.soFar, r);
  stopping = null;
  if (active === r) active = null;
  const latency = (performance.now() - r.stopAt) / 1000;
  el.result.dataset.cancelMs = String(Math.round(latency * 1000));
  const p = msg.partial;
  const kept = p && p.window > 0;
  const rec = {
    ...r, state: 'cancelled', result: kept ? partialResult(p, r) : null, memory: r.memory, engine: msg.engine ? { backend: msg.engine } : null,
    wa: msg.wa ?? null, seconds: (r.stopAt - r.started) / 1000, windowsDone: p?.window ?? 0, windowsAsked: p?.windows ?? null,
  };
  addRow(rec);
  // Where it stopped: the last progress the page heard (inside a window, or between two).
  const at = r.partial;
  const where = at && at.in_flight > 0 ? ` inside window ${at.window + 1} of ${at.windows} (${Math.round(100 * at.step / Math.max(1, at.steps))} % of it)`
    : r.phase ? ` while ${r.phase}` : '';
  const words = `Cancelled run #${r.id}${where}; stopped ${latency.toFixed(2)} s after Stop.`;
  if (kept) {
    showRecord(rec);
    el.resultOf.textContent = `Cancelled run #${rec.id}: ${describeRun(rec)} — ${p.window} of ${p.windows} windows finished; the numbers are over those windows only.`;
  } else if (shown) {
    el.resultOf.textContent = `Last good result, run #${shown.id}: ${describeRun(shown)}. Run #${r.id} was cancelled before a window finished.`;
  }
  setPhase('cancelled', `${words}${kept ? ` Kept the ${p.window} finished window${p.window === 1 ? '' : 's'}.` : ''}`, kept ? p.window / p.windows : 0);
  el.evalStop.disabled = true;
  if (preset) {
    preset = null;
    el.presetStatus.textContent = 'Preset stopped.';
  }
  settleRun({ error: 'the run was stopped' });
}

// An EvalResult's shape from the progress over the finished windows of a cancelled run.
function partialResult(p, r) {
  return {
    ppl: p.ppl, ppl_err: p.ppl_err, kl: p.kl, top1: p.top1, tokens_scored: p.tokens_scored, windows: p.window,
    tokens_evaluated: p.window * r.ctx, ctx: r.ctx, seconds: null,
    protocol: `${r.protocol === 'gptq' ? 'GPTQ' : 'llama.cpp'} protocol: ${p.window} of ${p.windows} windows of ${r.ctx} tokens (cancelled)`,
  };
}

// A finished run from the worker: stored, shown, charted.
function onResult(msg) {
  const r = active;
  if (!r || r.gen !== msg.gen) return;
  active = null;
  const evalSecs = msg.result.seconds;
  const total = (performance.now() - r.started) / 1000;
  const rec = store.put({
    ...r, state: 'done', result: msg.result, memory: msg.memory || {}, engine: msg.engine || {}, wa: msg.wa, smooth: msg.smooth,
    seconds: total, layers: null,
    // What calibrated this run, said on its result line (calibrationLine: source, tokens, texts).
    calibLine: calibrationLine(),
    auto: msg.auto,
  });
  el.evalStop.disabled = true;
  showRecord(rec);
  const t = r.times;
  const kept = r.quant.method === 'none' && !r.quant.act; // the model as loaded: nothing quantized
  const parts = runParts(total, { calib: t.calib, quant: kept ? null : t.quant, evaluation: evalSecs })
    .map(([what, secs]) => `${what} ${fixed(secs, 1)} s`);
  setPhase('done', `Done in ${total.toFixed(1)} s (${parts.join(', ')}).`, 1);
  if (!self.quantlabFirstResult) self.quantlabFirstResult = performance.now();
  showFinal(el.soFar, r, msg.result);
  addRow(rec);
  redrawPareto();
  showAlpha(msg.smooth, rec.label);
  if (preset) nextPreset();
  settleRun({ ok: true });
}

// A stored run back on screen at once: its configuration in the controls, its numbers in the
// panel, its layer map; nothing is sent to the worker.
function recall(rec) {
  applyQuant(rec.quant);
  if (rec.calib) {
    el.calibN.value = String(rec.calib.n);
    el.calibLen.value = String(rec.calib.len);
  }
  el.protocol.value = rec.protocol;
  el.ctx.value = String(rec.ctx);
  el.windows.value = rec.windows;
  clearFailures();
  el.error.textContent = '';
  showRecord(rec);
  setPhase('recalled', `Recalled run #${rec.id} (measured before with these settings; press Evaluate to measure again).`, 1);
  el.result.dataset.recalled = String(rec.id);
  el.evalStop.disabled = true;
  worker.postMessage({ type: 'to-link', quant: rec.quant });
  if (preset) nextPreset();
  settleRun({ ok: true });
}

// Fill the result panel from a stored (or cancelled) run.
function showRecord(rec) {
  const r = rec.result;
  shown = rec;
  abShow(rec);
  current = { quant: rec.quant, options: rec.options };
  showAuto(rec.auto);
  runs += 1;
  delete el.w4a8Note.dataset.failed;
  delete el.result.dataset.stale;
  delete el.result.dataset.recalled;
  el.result.dataset.run = String(runs);
  el.result.dataset.runId = String(rec.id);
  el.result.dataset.config = JSON.stringify(rec.quant);
  el.resultOf.textContent = `Run #${rec.id}: ${describeRun(rec)}.`;
  setText(el.ppl, fixed(r.ppl, 3), r.ppl);
  el.pplErr.textContent = `± ${fixed(r.ppl_err, 3)}`;
  // The W/A label as Rust names the config (QuantConfig::wa_label), e.g. "W4A8", or "as loaded"
  // for a config that keeps the model (then the weights label would only repeat it).
  const wa = rec.wa;
  setText(el.resultWa, wa === 'as loaded' ? wa : (wa ? `${wa} · ${rec.label}` : ''), wa ?? undefined);
  el.protocolDesc.textContent = `${r.protocol} — ${r.tokens_scored} tokens scored of ${r.tokens_evaluated} evaluated`
    + `${r.seconds != null ? `, evaluation ${fixed(r.seconds, 1)} s of the run's ${fixed(rec.seconds, 1)} s` : ''}${rec.calibLine ?? ''}`;
  // No KL: the model as loaded has nothing to compare with; any other run did not measure it
  // (a cancelled run, or KL turned off), which must not read as "as loaded".
  const kept = rec.quant.method === 'none' && !rec.quant.act;
  const noKl = kept ? '— (as loaded)' : `— (not measured${rec.state === 'cancelled' ? ' in this cancelled run' : ''})`;
  setText(el.kl, r.kl == null ? noKl : fixed(r.kl, 5), r.kl ?? undefined);
  setText(el.top1, r.top1 == null ? noKl : pct(r.top1), r.top1 ?? undefined);
  showKlStats(r.kl_stats, noKl);
  const m = rec.memory || {};
  const bpw = m.bits_per_weight;
  // A fractional budget (CMPQ): achieved against requested, to 2 decimals like the slider.
  const budget = budgetOf(rec.quant);
  setText(el.bpw, typeof bpw !== 'number' ? '—' : budget !== null
    ? `${bpw.toFixed(2)} achieved for ${Number(budget).toFixed(2)} requested (linear layers)`
    : `${bpw.toFixed(3)} (linear layers)`, bpw);
  if (budget !== null) el.bpw.dataset.budget = String(budget);
  else delete el.bpw.dataset.budget;
  setText(el.memory, memoryText(m), m.total_bytes);
  if (m.linear) drawMemory(m);
  const e = rec.engine || {};
  setText(el.backend, e.backend === 'gpu' ? `WebGPU (${e.adapter})` : e.backend ? 'CPU (WebAssembly)' : '—', e.backend);
  setText(el.gpuMemory, typeof e.weight_bytes === 'number'
    ? `${mb(e.weight_bytes)} of packed weights (${e.weight_bytes.toLocaleString('en')} bytes)`
    : '— (not on the GPU)', e.weight_bytes ?? undefined);
  showLayers(rec);
  for (const row of el.history.rows) row.dataset.current = String(row.dataset.key === rec.key);
}

// The layer map of the run on screen, or a note that it is on its way.
function showLayers(rec) {
  if (rec.layers) {
    drawLayerMap(rec.layers, pickLayer);
    delete el.layersBox.dataset.stale;
    delete el.layersBox.dataset.absent;
    el.layersOf.textContent = `Layer map of run #${rec.id}: ${rec.label}.`;
  } else {
    el.layersBox.dataset.stale = 'true';
    // A cancelled or failed run gets no map: the previous run's charts would sit under a
    // caption about this one, so they are hidden rather than greyed.
    if (rec.state === 'done') delete el.layersBox.dataset.absent;
    else el.layersBox.dataset.absent = 'true';
    el.layersOf.textContent = rec.state === 'done'
      ? `Layer map of run #${rec.id} (${rec.label}): being computed…` : `No layer map for run #${rec.id} (${rec.state}).`;
  }
}

// One row per measurement, newest on top (a recalled run adds none; Evaluate, which measures a
// configuration again on purpose, adds one, and the chart keeps the newest); the columns the
// tests read come first (weights, W/A, protocol, perplexity, KL, top-1, bits, MB, on, time),
// then the text, the model, the run's number and its state.
function addRow(rec) {
  const r = rec.result;
  const m = rec.memory || {};
  const e = rec.engine || {};
  const budget = budgetOf(rec.quant);
  const ov = overridesText(rec.quant.overrides);
  const cells = [rec.label, rec.wa ?? '—', `${rec.protocol === 'gptq' ? 'GPTQ' : 'llama.cpp'} ${rec.ctx} × ${rec.windows}`,
    r ? `${fixed(r.ppl, 3)} ± ${fixed(r.ppl_err, 3)}` : '—', fixed(r?.kl, 4), pct(r?.top1), fixed(m.bits_per_weight, budget !== null ? 2 : 3),
    typeof m.total_bytes === 'number' ? (m.total_bytes / 1e6).toFixed(1) : '—',
    e.backend === 'gpu' ? 'GPU' : e.backend === 'cpu' ? 'CPU' : '—', `${fixed(rec.seconds, 1)} s`,
    rec.textLabel, rec.modelLabel, `#${rec.id}`,
    rec.state === 'done' ? 'done' : `${rec.state}${rec.windowsAsked ? ` (${rec.windowsDone} of ${rec.windowsAsked} windows)` : ''}`];
  const row = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c;
    row.append(td);
  }
  if (ov) row.cells[0].title = `overrides: ${ov}`;
  row.dataset.wa = rec.wa ?? '';
  row.dataset.config = JSON.stringify(rec.quant);
  row.dataset.key = rec.key;
  row.dataset.state = rec.state;
  row.dataset.text = rec.text;
  row.dataset.run = String(rec.id);
  if (rec.state === 'done') {
    // The keyboard's way to a chart point (issue 19): Enter on a measured run's row, or a click,
    // brings it back as a click on its point in the chart does.
    row.tabIndex = 0;
    row.title = 'Enter or click: show this run again';
    const back = () => recall(store.get(rec.key));
    row.addEventListener('click', back);
    row.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        back();
      }
    });
  }
  el.history.prepend(row);
}

// The Pareto chart holds the runs comparable with the one on screen (same model, text and
// evaluation); its caption says which and how many others exist.
function redrawPareto() {
  const like = shown ?? identity(quantConfig(), null);
  const runsHere = store.comparable(like);
  const pts = runsHere.map((r) => ({
    bpw: r.memory?.bits_per_weight, ppl: r.result.ppl, label: r.label, quant: r.quant, method: methodId(r.quant),
    group: methodGroup(r.quant), id: r.id, key: r.key,
    detail: `run #${r.id}: ${r.label}${overridesText(r.quant.overrides) ? ` (overrides: ${overridesText(r.quant.overrides)})` : ''} — perplexity ${fixed(r.result.ppl, 3)}, ${fixed(r.memory?.bits_per_weight, 3)} bits`,
  }));
  drawPareto(pts, (i) => recall(store.get(pts[i].key)));
  const others = store.all().filter((r) => r.state === 'done').length - runsHere.length;
  el.paretoOf.textContent = `${runsHere.length} run${runsHere.length === 1 ? '' : 's'} on ${like.modelLabel}, text ${like.textLabel}, `
    + `${like.protocol === 'gptq' ? 'GPTQ' : 'llama.cpp'} ctx ${like.ctx} × ${like.windows} windows`
    + `${others > 0 ? `; ${others} run${others === 1 ? '' : 's'} on another text, model or evaluation not drawn (see the runs table)` : ''}.`;
}

// A model that could not be opened: beside the model box, in words, with the detail a click
// away; the file picker no longer shows the rejected file.
function showLoadFailure(message) {
  const f = explain(message, 'load');
  el.modelStatus.textContent += ` ${f.plain}`;
  showFailure(f);
  el.file.value = '';
  showError(message);
}

// Calibration, quantization and evaluation progress of the run in flight.
function onRunProgress(msg) {
  if (!active || active.gen !== msg.gen) return;
  if (msg.type === 'calibrating' && active.phase !== 'calibrating') self.quantlabCounts.calibrations += 1;
  const phase = msg.type === 'progress' ? 'evaluating' : msg.type;
  active.phase = phase;
  if (msg.type === 'progress') {
    active.partial = msg.progress;
    showSoFar(el.soFar, active, msg.progress);
  }
  const p = progressText(phase, msg);
  setPhase(phase, `Run #${active.id}: ${p.text}`, p.frac);
}

// The layer map arrives after its run's result: kept with the run, drawn if it is on screen.
function onLayers(msg) {
  const rec = store.all().find((r) => r.gen === msg.gen && r.state === 'done');
  if (!rec) return;
  rec.layers = msg.map;
  if (shown === rec) {
    abShow(rec);
    showLayers(rec);
    requestHistogram();
    requestChannels();
  }
}

// A failed run: the progress stops, the failure sits beside the control that caused it, and the
// panel says its numbers are the last good result.
function onRunError(msg) {
  const r = active;
  if (r) endSoFar(el.soFar, r);
  active = null;
  el.evalStop.disabled = true;
  const f = explain(msg.message, msg.where);
  showFailure(f);
  setPhase('failed', `Run #${r?.id ?? '?'} failed: ${f.plain}`, 0);
  el.error.textContent = f.plain;
  if (r) addRow({ ...r, state: 'failed', result: null, seconds: (performance.now() - r.started) / 1000 });
  if (shown) {
    el.result.dataset.stale = 'true';
    el.resultOf.textContent = `Last good result, run #${shown.id}: ${describeRun(shown)}. Run #${r?.id ?? '?'} (${r?.label ?? ''}) failed.`;
  } else {
    el.resultOf.textContent = `No result yet: run #${r?.id ?? '?'} failed.`;
  }
  // A run with the activation panel's settings: say it beside the panel too.
  if (r?.quant.act || r?.quant.smooth) el.w4a8Note.textContent = `That run failed: ${msg.message}`;
  el.w4a8Note.dataset.failed = 'true';
  if (preset) {
    preset = null;
    el.presetStatus.textContent = 'Preset stopped by an error.';
  }
  settleRun({ error: f.plain });
}

// ---------------------------------------------------------------------------- presets
function presetConfigs(name) {
  const base = { sym: true, gran: 'g32', method: 'rtn' };
  switch (name) {
    case 'bits': return [8, 4, 3, 2].map((bits) => ({ ...base, bits }));
    case 'group': return ['per_row', 'g256', 'g128', 'g64', 'g32'].filter((g) => [...el.gran.options].some((o) => o.value === g))
      .map((gran) => ({ ...base, bits: 3, gran }));
    case 'sym': return [true, false].flatMap((sym) => [4, 3].map((bits) => ({ ...base, bits, sym })));
    case 'study': {
      // ZeroQuant-V2 (arXiv:2303.08302) in small: RTN against GPTQ at W4 and W3, scales per row
      // and per group of 64, and W3 per row with LoRC rank 8 (its Section 5). GPTQ calibrates on
      // 16 × 128 tokens so that the grid finishes in a browser: 2,048 tokens, more than the
      // widest input (ffn_down's 1,536), so every Hessian has full rank. With 8 × 128 GPTQ was
      // worse than RTN on SmolLM2-135M (W4 per row: 125.0 against 97.4, ctx 128, 2 windows).
      const calib = { n: 16, len: 128 };
      const grans = ['per_row', 'g64'].filter((g) => [...el.gran.options].some((o) => o.value === g));
      const grid = [];
      for (const method of ['rtn', 'gptq']) {
        const c = method === 'gptq' ? calib : null;
        for (const bits of [4, 3]) for (const gran of grans) grid.push({ ...base, method, bits, gran, calib: c });
        grid.push({ ...base, method, bits: 3, gran: 'per_row', lorc: 8, calib: c });
      }
      return grid;
    }
    case 'cmpq-curve': return cmpqCurveConfigs();
    case 'auto-curve': return autoCurveConfigs({ schema, el, syncMethodControls });
    case 'binary': return binaryConfigs();
    case 'w4a8': return w4a8Configs();
    case 'tender': return tenderConfigs();
    default: return [];
  }
}
function applyPresetStep(c) {
  if (c.apply) return c.apply();
  el.method.value = c.method;
  syncMethodControls();
  el.bits.value = String(c.bits);
  el.gran.value = c.gran;
  el.sym.checked = c.sym;
  el.lorc.checked = Boolean(c.lorc);
  if (c.lorc) el.lorcRank.value = String(c.lorc);
  if (c.calib) {
    el.calibN.value = String(c.calib.n);
    el.calibLen.value = String(c.calib.len);
  }
  syncMethodControls();
}
function nextPreset() {
  const c = preset.queue.shift();
  if (!c) {
    el.presetStatus.textContent = `Preset done: ${preset.total} configurations in the chart.`;
    el.presetStatus.dataset.done = 'true';
    preset = null;
    return;
  }
  el.presetStatus.textContent = `Preset: configuration ${preset.total - preset.queue.length} of ${preset.total}…`;
  applyPresetStep(c);
  startRun();
}
el.presetRun.addEventListener('click', () => {
  const queue = presetConfigs(el.preset.value);
  if (!queue.length || !loaded) return;
  el.presetStatus.dataset.done = 'false';
  preset = { queue, total: queue.length };
  nextPreset();
});

// ---------------------------------------------------------------------------- CMPQ curve preset
// docs/methods.md §3: perplexity against effective bits for CMPQ (the full method, default
// outlier fractions) at budgets 2.0 to 4.0, against RTN and GPTQ (symmetric, per row) at the
// integer points, all with the page's calibration and evaluation settings. Each lands in the
// Pareto chart as a point of its method's series; calibration is computed once and reused.
const CMPQ_CURVE_BUDGETS = [2.0, 2.5, 3.0, 3.5, 4.0];
const CMPQ_CURVE_BITS = [2, 3, 4];
function cmpqCurveConfigs() {
  const cmpq = schema?.methods.find((m) => m.id === 'cmpq');
  if (!cmpq) return [];
  const steps = CMPQ_CURVE_BUDGETS.map((budget) => ({
    apply: () => {
      el.method.value = 'cmpq';
      syncMethodControls({ ...cmpq.defaults, budget });
    },
  }));
  for (const method of ['rtn', 'gptq']) {
    for (const bits of CMPQ_CURVE_BITS) {
      steps.push({
        apply: () => {
          el.method.value = method;
          syncMethodControls();
          el.bits.value = String(bits);
          el.gran.value = 'per_row';
          el.sym.checked = true;
          el.clip.checked = false;
          syncMethodControls();
        },
      });
    }
  }
  return steps;
}

// ---------------------------------------------------------------------------- lite training
// BinaryMoS's lite training as it runs (worker 'training' messages: the loss of one tensor at
// step 0, before training, then after every step). Stop cancels the run like a newer setting
// does: the model keeps its previous quantization.
let training = null; // {gen, current: {name, steps, rel, start}, tensors: [{name, ratio}], drawn}
function onTraining(msg) {
  if (!training || training.gen !== msg.gen) {
    training = { gen: msg.gen, current: null, tensors: [], drawn: 0 };
  }
  const t = training;
  if (msg.step === 0) {
    finishTensor();
    t.current = { name: msg.name, steps: [], rel: [], start: msg.loss, kept: keptTensor(msg.name) };
  }
  const c = t.current;
  if (!c) return;
  c.steps.push(msg.step);
  c.rel.push(c.start > 0 ? msg.loss / c.start : 1);
  el.trainStop.disabled = false;
  el.trainStatus.textContent = `${c.kept ? 'Already trained (kept from the stopped run)' : 'Training'} ${c.name}: step ${msg.step}, loss ${(c.rel[c.rel.length - 1]).toFixed(4)} of its start `
    + `(${t.tensors.length} tensors done).`;
  // At most a few redraws a second: a tensor's steps arrive faster than charts draw.
  const now = performance.now();
  if (now - t.drawn > 250) {
    t.drawn = now;
    drawTraining({ current: c, tensors: t.tensors });
  }
}
function finishTensor() {
  const c = training?.current;
  if (c && c.steps.length > 1) training.tensors.push({ name: c.name, ratio: c.rel[c.rel.length - 1], kept: c.kept });
}
function trainingDone(stopped) {
  el.trainStop.disabled = true;
  if (!training) return;
  // A stopped run's tensor in training is not finished: counting it would disagree with the
  // resume offer, which counts the tensors kept.
  if (!stopped) finishTensor();
  const r = training.tensors.map((x) => x.ratio);
  const median = r.length ? [...r].sort((a, b) => a - b)[Math.floor(r.length / 2)] : null;
  drawTraining({ current: training.current, tensors: training.tensors });
  el.trainStatus.dataset.done = stopped ? 'stopped' : 'true';
  el.trainStatus.textContent = stopped
    ? `Stopped after ${training.tensors.length} tensors; the model keeps its previous quantization.`
    : `Trained ${r.length} tensors${keptWords()}; the median one ends at ${median?.toFixed(3)} of its starting loss.`;
  training.current = null;
}
// How many of the finished run's tensors came from a stopped run (www/resume.js).
function keptWords() {
  const k = training.tensors.filter((x) => x.kept).length;
  return k ? ` (${k} kept from the stopped run)` : '';
}
el.trainStop.addEventListener('click', () => {
  // A newer generation makes the worker's training callback return false (shared memory).
  resumeStopped(gen);
  gen += 1;
  if (control) Atomics.store(control, 0, gen);
  el.trainStop.disabled = true;
  trainingDone(true);
  el.result.dataset.state = 'cancelled';
  el.evalStatus.textContent = 'Training stopped.';
});

// ---------------------------------------------------------------------------- 1-bit preset
// BinaryMoS's comparison (arXiv:2406.12311, Table 2's kind) in small: sign binarization, OneBit's
// SVID and BinaryMoS with N = 1, 2, 4 and 8 scale experts (lite training at its defaults) against
// RTN and GPTQ at 2 bits with groups of 64, every point at its effective bits. Calibration (for
// BinaryMoS and GPTQ) is 16 × 128 tokens, as in the study preset.
const BINARY_EXPERTS = [1, 2, 4, 8];
function binaryConfigs() {
  const mos = schema?.methods.find((m) => m.id === 'binarymos');
  if (!mos) return [];
  const calib = { n: 16, len: 128 };
  const steps = [
    { method: 'sign', bits: 1, gran: 'per_row', sym: true },
    { method: 'onebit', bits: 1, gran: 'per_row', sym: true },
  ];
  for (const experts of BINARY_EXPERTS) {
    steps.push({
      apply: () => {
        el.method.value = 'binarymos';
        el.calibN.value = String(calib.n);
        el.calibLen.value = String(calib.len);
        syncMethodControls({ ...mos.defaults, experts });
      },
    });
  }
  for (const method of ['rtn', 'gptq']) {
    steps.push({ method, bits: 2, gran: 'g64', sym: true, calib: method === 'gptq' ? calib : null });
  }
  return steps;
}

// ---------------------------------------------------------------------------- underflow meter
// INT4 against dINT4 round to nearest on the weights as loaded (quant::underflow::measure):
// per layer type, the share of nonzero weights each grid rounds to 0 and its relative error.
el.underflowRun.addEventListener('click', () => {
  if (!loaded) return;
  const g = granValue();
  el.underflowStatus.textContent = 'Measuring…';
  el.underflowRun.disabled = true;
  worker.postMessage({ type: 'underflow', layer: JSON.stringify({ bits: 4, gran: g, sym: true }) });
});
function showUnderflow(msg) {
  el.underflowRun.disabled = false;
  const body = el.underflowTable.tBodies[0];
  body.replaceChildren();
  if (msg.error) {
    el.underflowStatus.textContent = msg.error;
    el.underflowTable.hidden = true;
    return;
  }
  const r = msg.report;
  for (const k of r.kinds) {
    const nz = Math.max(k.nonzero, 1);
    const rel = (s) => (k.energy > 0 ? (s.underflow + s.rounding) / k.energy : 0);
    const row = body.insertRow();
    row.dataset.kind = k.name;
    row.dataset.int = String(k.int.zeroed / nz);
    row.dataset.dint = String(k.dint.zeroed / nz);
    for (const c of [k.name, pct(k.int.zeroed / nz), pct(k.dint.zeroed / nz), rel(k.int).toExponential(2), rel(k.dint).toExponential(2)]) {
      row.insertCell().textContent = c;
    }
  }
  el.underflowTable.hidden = false;
  const gran = typeof r.int.gran === 'object' ? `groups of ${r.int.gran.group}` : r.int.gran.replaceAll('_', ' ');
  el.underflowStatus.textContent = `${r.kinds.length} layer types, scales ${gran}.`;
}

// ---------------------------------------------------------------------------- W4A8 preset
// The comparison of arXiv:2311.05161 (Table 2's kind) in small, on the loaded model: W4 per
// row with 8-bit static per-tensor activations, by RTN alone and with each scale transform
// (SmoothQuant at its default α 0.5, AWQ's scales, AQAS), AQAS before GPTQ, and W8A8 with
// SmoothQuant for reference. Each transform runs with the defaults the schema gives it. The
// calibration is 16 × 128 tokens, as in the study preset, so the grid finishes in a browser.
function w4a8Configs() {
  if (!schema) return [];
  const calib = { n: 16, len: 128 };
  const a8 = { ...schema.act.defaults, bits: 8, gran: 'per_tensor', scale: 'static' };
  const method = (id) => {
    const m = schema.methods.find((x) => x.id === id);
    return m?.defaults ? { [id]: m.defaults } : id;
  };
  const smooth = (id) => {
    const t = transformSchema(id);
    return t ? { [id]: t.defaults } : undefined;
  };
  const dint = schema.grid.choices.find((c) => c.id === 'dint')?.value;
  const grid = [['rtn', 4, null], ['rtn', 4, 'smoothquant'], ['rtn', 4, 'awq'], ['rtn', 4, 'aqas'],
    ['gptq', 4, 'aqas'], ['rtn', 8, 'smoothquant'], ['rtn', 4, 'aqas', dint], ['gptq', 4, 'aqas', dint]];
  return grid.map(([id, bits, t, g]) => ({
    apply: () => {
      const cfg = {
        version: schema.config_version, method: method(id),
        default: { bits, gran: 'per_row', sym: true, clip_search: false }, overrides: [], act: a8,
      };
      if (t) cfg.smooth = smooth(t);
      if (g) cfg.default.grid = g;
      el.calibN.value = String(calib.n);
      el.calibLen.value = String(calib.len);
      applyQuant(cfg);
    },
  }));
}

// ---------------------------------------------------------------------------- Tender preset
// The rows of grids/tender.json (the CLI's sweep of the same comparison), in its order: the
// model as loaded; then at W8A8, W4A8 and W4A4 (weights RTN per row, symmetric) activations
// per tensor (static), per token (dynamic), SmoothQuant α 0.5 (static per tensor), and Tender
// k = 4, 8, 16 (static) and k = 8 (dynamic), chunks of 256 rows, rounding up. Calibration: 16
// sequences as long as the evaluation's context (SLAC's point; static Tender calibrates each
// chunk position's ranges).
const TENDER_GRID = [[8, 8], [4, 8], [4, 4]];
function tenderConfigs() {
  if (!schema) return [];
  const calib = { n: 16, len: Number(el.ctx.value) };
  const acts = (bits) => {
    const base = { bits, gran: 'per_tensor', scale: 'static' };
    const tender = (groups, scale = 'static') => ({ act: { ...base, scale, tender: { groups, chunk: 256, round: 'up' } } });
    return [{ act: base }, { act: { bits, gran: 'per_token', scale: 'dynamic' } },
      { act: base, smooth: { smoothquant: { alpha: 0.5 } } },
      tender(4), tender(8), tender(16), tender(8, 'dynamic')];
  };
  const rows = [{ method: 'none' }];
  for (const [w, a] of TENDER_GRID) for (const r of acts(a)) rows.push({ method: 'rtn', w, ...r });
  return rows.map((r) => ({
    apply: () => {
      const cfg = {
        version: schema.config_version, method: r.method,
        default: { bits: r.w ?? 4, gran: 'per_row', sym: true, clip_search: false }, overrides: [],
      };
      if (r.act) cfg.act = { ...r.act };
      if (r.smooth) cfg.smooth = r.smooth;
      el.calibN.value = String(calib.n);
      el.calibLen.value = String(calib.len);
      applyQuant(cfg);
    },
  }));
}

// ---------------------------------------------------------------------------- Tender pictures
// One layer's channels at one site in the first chunk of the text (the layer the activation
// view picks), and the shift-accumulate identity on the chunk's first row, under the panel's
// Tender settings (tender_view::view in Rust; it runs on the CPU).
el.tenderShow.addEventListener('click', () => {
  if (!loaded || !schema) return;
  const quant = quantConfig();
  if (!quant.act?.tender) {
    el.tenderNote.textContent = 'Choose Tender as the activation method first.';
    return;
  }
  el.tenderNote.textContent = 'Running the model to the chosen site…';
  el.tenderBox.dataset.state = 'running';
  worker.postMessage({
    type: 'tender', quant, text, layer: Number(el.actLayer.value), site: Number(el.tenderSite.value),
    row: Math.max(0, Math.floor(Number(el.tenderOut.value)) || 0),
  });
});
const num = (v, d = 6) => (typeof v === 'number' && Number.isFinite(v) ? (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(d - 1) : v.toPrecision(d)) : '—');
function showTender(msg) {
  if (msg.error) {
    el.tenderBox.dataset.state = 'error';
    el.tenderNote.textContent = msg.error;
    el.tenderTable.hidden = true;
    return;
  }
  const { channels: c, identity: id } = msg.view;
  drawTender(msg.view);
  const sizes = c.group_sizes.map((n, i) => `${n} in group ${i}`).filter((x) => !x.startsWith('0 ')).join(', ');
  el.tenderNote.textContent = `Layer ${c.layer}, ${c.site_name}: ${c.cols} channels over the first ${c.rows} tokens`
    + `${c.smoothed ? ' (divided by the scale transform\'s factors)' : ''}; tmax ${num(c.tmax, 4)}, k ${c.spec.groups}, `
    + `rounding ${c.spec.round}: ${sizes}. The decomposition is the one dynamic Tender computes from these rows.`;
  const body = el.tenderTable.tBodies[0];
  body.replaceChildren();
  const k = id.groups;
  for (let i = k - 1; i >= 0; i -= 1) {
    const row = body.insertRow();
    row.dataset.group = String(i);
    row.dataset.partial = String(id.partials[i]);
    row.dataset.acc = String(id.steps[k - 1 - i]);
    for (const v of [`group ${i}${i === k - 1 ? ' (largest)' : ''}`, String(c.group_sizes[i]), String(id.partials[i]), String(id.steps[k - 1 - i])]) {
      row.insertCell().textContent = v;
    }
  }
  const foot = el.tenderTable.tFoot;
  foot.replaceChildren();
  const line = (key, what, value) => {
    const row = foot.insertRow();
    row.dataset.key = key;
    const a = row.insertCell();
    a.colSpan = 3;
    a.textContent = what;
    row.insertCell().textContent = value;
  };
  line('acc', 'acc = Σ 2^i · P_i (integers, by shifts)', String(id.acc));
  line('scale', `s_0 · sw_${id.out_row} (one float multiply; weight ${id.linear} row ${id.out_row}, RTN ${id.w_bits}-bit per row)`,
    `${num(id.s0)} × ${num(id.sw)} = ${num(id.s0_sw)}`);
  line('beta', `(β·ŵ)_${id.out_row} (the bias term, once per chunk)`, num(id.beta_w, 8));
  line('value', 'acc · s_0 · sw + (β·ŵ)', num(id.value, 8));
  line('fake', 'x̂·ŵᵀ (fake-quantized row and weight, in floats)', num(id.fake_quant, 8));
  line('float', 'x·wᵀ (unquantized)', num(id.float, 8));
  el.tenderTable.hidden = false;
  el.tenderBox.dataset.state = 'done';
}

// ---------------------------------------------------------------------------- α per layer
// After a run whose config has a scale transform: α per layer for each site (one line per
// site), and the same site across the runs kept so far (one line per run label).
function showAlpha(report, label) {
  if (!report || !info) return;
  alphaCurrent = { label, method: transformSchema(report.method)?.label ?? report.method, alpha: report.alpha };
  const i = alphaRuns.findIndex((x) => x.label === label);
  if (i >= 0) alphaRuns.splice(i, 1);
  alphaRuns.push(alphaCurrent);
  if (alphaRuns.length > MAX_ALPHA_RUNS) alphaRuns.shift();
  const sites = info.topology.sites.map((x) => x.name);
  if (el.alphaSite.options.length !== sites.length) {
    el.alphaSite.replaceChildren(...sites.map((n, k) => new Option(n, String(k))));
  }
  el.alphaBox.hidden = false;
  const unscaled = report.alpha.flat().filter((a) => a == null).length;
  el.alphaNote.textContent = `α chosen by ${label} for each layer and site${unscaled
    ? `; ${unscaled} site${unscaled === 1 ? ' was' : 's were'} left unscaled (no point drawn)` : ''}. `
    + `Below: the runs with a scale transform so far (${alphaRuns.length}), at one site.`;
  redrawAlpha();
}
function redrawAlpha() {
  if (!alphaCurrent || !info) return;
  drawAlpha(alphaCurrent, alphaRuns, info.topology.sites.map((x) => x.name), Number(el.alphaSite.value) || 0);
}
el.alphaSite.addEventListener('change', redrawAlpha);

// ---------------------------------------------------------------------------- inspection
el.histTensor.addEventListener('change', () => {
  requestHistogram();
  requestChannels();
});
// The CMPQ per-channel map of the chosen tensor, while the current result is CMPQ.
function requestChannels() {
  const cmpq = loaded && current && methodId(current.quant) === 'cmpq' && el.result.dataset.state === 'done';
  el.chanBox.hidden = !cmpq;
  if (cmpq && el.histTensor.value) worker.postMessage({ type: 'channels', name: el.histTensor.value });
  const mos = loaded && current && methodId(current.quant) === 'binarymos' && el.result.dataset.state === 'done';
  el.gatesBox.hidden = !mos;
  if (mos && el.histTensor.value) worker.postMessage({ type: 'gates', name: el.histTensor.value, text });
}

// The router's gates over the text (src/playground/mos_view.rs): one span per token, its text
// set as textContent (the text is the user's, never HTML), coloured by its strongest expert.
const EXPERT_COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
function drawGates(g) {
  const k = g.experts;
  const colour = (e) => EXPERT_COLOURS[e % EXPERT_COLOURS.length];
  el.gatesLegend.replaceChildren(...Array.from({ length: k }, (_, e) => {
    const s = document.createElement('span');
    s.textContent = `expert ${e + 1}`;
    s.style.borderBottom = `3px solid ${colour(e)}`;
    return s;
  }));
  const rows = g.tokens.map((_, i) => g.gates.slice(i * k, (i + 1) * k));
  // Uniform gates (1/k) show no colour; the token whose strongest gate is the largest here gets
  // the full colour (a briefly trained router stays near uniform, which a fixed scale would hide).
  const lift = Math.max(...rows.map((r) => Math.max(...r) - 1 / k), 1e-12);
  const spans = g.tokens.map((t, i) => {
    const row = rows[i];
    const top = row.indexOf(Math.max(...row));
    const s = document.createElement('span');
    s.textContent = t;
    s.dataset.gates = JSON.stringify(row);
    s.dataset.expert = String(top);
    const strength = k > 1 ? (row[top] - 1 / k) / lift : 0;
    s.style.backgroundColor = `color-mix(in srgb, ${colour(top)} ${Math.round(55 * strength)}%, transparent)`;
    s.title = row.map((v, e) => `expert ${e + 1}: ${v.toFixed(3)}`).join('\n');
    return s;
  });
  el.gatesText.replaceChildren(...spans);
  const counts = Array.from({ length: k }, (_, e) => spans.filter((s) => s.dataset.expert === String(e)).length);
  el.gatesNote.textContent = `${g.name} reads ${g.site} of layer ${g.layer}: ${g.tokens.length} tokens, `
    + `the strongest expert per token: ${counts.map((c, e) => `${e + 1}: ${c}`).join(', ')}. `
    + `The largest gate here is ${(lift + 1 / k).toFixed(3)} (uniform: ${(1 / k).toFixed(3)}); colours are relative to it.`;
}
el.histRow.addEventListener('change', requestHistogram);
function requestHistogram() {
  if (!loaded || !el.histTensor.value) return;
  worker.postMessage({ type: 'histogram', name: el.histTensor.value, row: Math.max(0, Number(el.histRow.value) || 0) });
  requestRowView();
}
el.actShow.addEventListener('click', () => {
  if (!loaded) return;
  el.actNote.textContent = 'Running the model to observe activations…';
  worker.postMessage({ type: 'activations', text, layer: Number(el.actLayer.value) });
});

// ---------------------------------------------------------------------------- generation
// Greedy text from the same prompt by the model as loaded and by the current quantization; one
// worker job, streamed into the two panes (as textContent), stopped by the Stop button or by a
// newer request.
let ggen = 0;
let genInfo = null; // {ggen, label}
async function startGeneration() {
  if (!loaded || !schema) return;
  ggen += 1;
  const mine = ggen;
  if (control) Atomics.store(control, 1, ggen);
  const quant = quantConfig();
  const calib = await calibFor(quant);
  if (mine !== ggen) return;
  const n = Math.min(256, Math.max(1, Math.round(Number(el.genN.value)) || 32));
  genInfo = { ggen, label: weightsLabel(quant) };
  el.genBox.dataset.state = 'running';
  for (const pane of [el.genRef, el.genQuant]) {
    delete pane.dataset.tokens;
    delete pane.dataset.pieces;
  }
  el.genRef.textContent = '';
  el.genQuant.textContent = '';
  delete el.genRef.dataset.stopped;
  delete el.genQuant.dataset.stopped;
  delete el.genQuantH.dataset.base;
  const refHead = $('gen-ref-h');
  if (refHead.dataset.base) refHead.textContent = refHead.dataset.base;
  delete refHead.dataset.base;
  el.genQuantH.textContent = quant.method === 'none' && !quant.act ? 'Quantized (none chosen: same as loaded)' : `Quantized: ${genInfo.label}`;
  el.genStatus.textContent = 'Generating with the model as loaded…';
  el.genStop.disabled = false;
  worker.postMessage({ type: 'generate', ggen, prompt: el.genPrompt.value, n, quant, calib });
}
function stopGeneration() {
  ggen += 1;
  if (control) Atomics.store(control, 1, ggen);
  else worker.postMessage({ type: 'gen-cancel', ggen: ggen - 1 });
  el.genStop.disabled = true;
  if (el.genBox.dataset.state === 'running') {
    el.genBox.dataset.state = 'stopped';
    markGenerationStopped([{ pane: el.genRef, head: $('gen-ref-h'), name: 'the model as loaded' },
      { pane: el.genQuant, head: el.genQuantH, name: 'the quantized model' }], el.genStatus);
  }
}
el.genRun.addEventListener('click', startGeneration);
el.genStop.addEventListener('click', stopGeneration);
el.genPrompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') startGeneration();
});

function onGenMessage(msg) {
  if (msg.ggen !== ggen) return;
  const pane = msg.which === 'reference' ? el.genRef : el.genQuant;
  switch (msg.type) {
    case 'calibrating':
      el.genStatus.textContent = `Calibrating for the quantized model: sequence ${msg.done} of ${msg.total}`;
      break;
    case 'quantizing':
      el.genStatus.textContent = `Quantizing: tensor ${msg.done} of ${msg.total}`;
      break;
    case 'quantized':
      el.genStatus.textContent = 'Generating with the model as loaded…';
      break;
    case 'gen-token':
      pane.textContent = msg.text;
      el.genStatus.textContent = `${msg.which === 'reference' ? 'As loaded' : 'Quantized'}: ${msg.tokens} of ${el.genN.value} tokens`;
      break;
    case 'gen-done': {
      const g = msg.generation;
      pane.textContent = g.text;
      pane.dataset.tokens = JSON.stringify(g.tokens);
      pane.dataset.pieces = JSON.stringify(g.pieces); // each token's text, for A/B's marks
      const why = g.stopped_at_eos ? ' (the model ended the text)' : g.stopped_at_ctx ? ' (context full)' : '';
      if (msg.which === 'reference') {
        el.genStatus.textContent = `As loaded: ${g.tokens.length} tokens in ${fixed(g.seconds, 1)} s${why}. Generating with the quantized model…`;
      } else {
        el.genBox.dataset.state = 'done';
        el.genStop.disabled = true;
        const same = el.genRef.textContent === g.text;
        el.genStatus.textContent = `Quantized: ${g.tokens.length} tokens in ${fixed(g.seconds, 1)} s${why}. `
          + (same ? 'Both models wrote the same text.' : 'The texts differ.');
      }
      break;
    }
    case 'gen-error':
      el.genStop.disabled = true;
      el.genBox.dataset.state = msg.cancelled ? 'stopped' : 'error';
      el.genStatus.textContent = msg.cancelled ? 'Stopped.' : `Generation failed: ${msg.message}`;
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------- worker messages
let cancelled = 0;
worker.onmessage = ({ data: msg }) => {
  if (msg.ggen !== undefined) return onGenMessage(msg);
  // Quantizing for a save, not a run: nothing of the run lifecycle.
  if (msg.bg) return;
  if (msg.type === 'test-stop-now' && TEST_HOOKS && active?.gen === msg.gen) return el.evalStop.click();
  if (msg.type === 'cancelled') {
    el.result.dataset.cancelled = String(++cancelled);
    onCancelled(msg);
    resumeCancelled(msg);
  }
  if (msg.type === 'layers') return onLayers(msg);
  if (msg.gen !== undefined && msg.gen !== gen) return;
  switch (msg.type) {
    case 'schema':
      schema = msg.schema;
      buildMethodMenu();
      buildActPanel();
      offerGroups();
      syncMethodControls();
      if (pendingLink?.q) worker.postMessage({ type: 'parse-link', q: pendingLink.q });
      else maybeFirstRun();
      break;
    case 'parsed':
      if (msg.id) {
        lessonParsed(msg);
        break;
      }
      if (msg.error) {
        linkFailed(`The quantization settings in this link are not valid: ${explain(msg.error).plain}`);
        pendingLink = null;
      } else {
        pendingLink.config = msg.config;
      }
      pendingLink = pendingLink && { ...pendingLink, parsed: true };
      maybeFirstRun();
      break;
    case 'link':
      if (msg.link) updateHash(msg.link);
      // Rust refused the config (QuantConfig::validate): say so where the link would be.
      else if (msg.error) el.linkStatus.textContent = `This configuration cannot be put in a link: ${msg.error}`;
      break;
    case 'download':
      if (msg.total) el.download.value = msg.loaded / msg.total;
      el.modelStatus.textContent = msg.parsing ? 'Reading the model…'
        : msg.cached ? `Found ${msg.file ?? 'the model'} in this browser's cache.`
          : `${msg.resumed ? 'Resuming' : 'Downloading'} ${msg.file ?? 'the model'}${msg.part ? ` (${msg.part})` : ''}: `
            + `${mb(msg.loaded)}${msg.total ? ` of ${mb(msg.total)}` : ''}`;
      if (msg.resumed) el.modelStatus.dataset.resumedFrom = String(msg.loaded);
      break;
    case 'engine':
      el.engine.dataset.backend = msg.backend;
      el.engine.textContent = msg.backend === 'gpu'
        ? `Evaluation runs on WebGPU (${msg.adapter}), driven from a Web Worker.`
        : 'Evaluation runs on the CPU in a Web Worker (WebAssembly).';
      el.engineNote.dataset.backend = msg.backend;
      el.engineNote.textContent = msg.note;
      showEngineChoice(el.engineNote, msg);
      // After a lost device: "gpu" (a new device) or "cpu" (none could be had).
      if (msg.recovered) el.engineNote.dataset.recovered = msg.recovered;
      break;
    case 'precisions':
      showPrecisions(el.engineNote, msg.list, (value) => worker.postMessage({ type: 'precision', value }));
      break;
    case 'precision':
      precisionSet(msg);
      break;
    case 'device-lost':
      el.engineNote.dataset.recovered = 'pending';
      el.engineNote.textContent = `The WebGPU device was lost (${msg.reason}); reloading the model…`;
      el.evalStatus.textContent = 'The GPU was lost: reloading the model and restarting the run…';
      break;
    case 'loaded':
      loaded = true;
      el.download.value = 1;
      el.modelStatus.dataset.state = 'ready';
      el.modelStatus.dataset.loads = String(Number(el.modelStatus.dataset.loads ?? 0) + 1);
      el.modelStatus.textContent = 'Model ready.';
      el.evaluate.disabled = false;
      el.genRun.disabled = false;
      for (const b of el.saveButtons) b.disabled = false;
      el.saveStatus.textContent = '';
      el.saveReport.replaceChildren();
      showModel(msg.info);
      noteLoaded(msg.info);
      // α belongs to a model's layers and sites: a new model starts the comparison afresh.
      alphaRuns.length = 0;
      alphaCurrent = null;
      el.alphaBox.hidden = true;
      el.alphaSite.replaceChildren();
      // The numbers on screen were measured on the previous model.
      if (shown && firstRunDone) {
        el.result.dataset.stale = 'true';
        el.resultOf.textContent = `Run #${shown.id} was measured on ${shown.modelLabel}; ${msg.info.label} is loaded now (Evaluate to measure it).`;
      }
      maybeFirstRun();
      break;
    case 'saved':
      for (const b of el.saveButtons) b.disabled = false;
      if (msg.error) {
        el.saveStatus.textContent = `Could not save: ${msg.error}`;
        break;
      }
      offerFiles(msg);
      break;
    case 'calibrating':
    case 'quantizing':
    case 'progress':
      onRunProgress(msg);
      break;
    case 'timing':
      onTiming(msg);
      break;
    case 'preview':
      if (active?.gen === msg.gen) showPreview(el.soFar, active, msg.result);
      break;
    case 'calibrated': {
      if (active) active.times.calib = msg.seconds;
      const u = msg.used;
      calibUsed = { ...u, names: active?.calibFull?.names ?? [] };
      const on = u.backend === 'gpu' ? 'on the GPU' : 'on the CPU';
      el.calibStatus.dataset.backend = u.backend;
      el.calibStatus.textContent = u.n_seq === u.asked_n_seq && u.seq_len === u.asked_seq_len
        ? `calibrated on ${u.n_seq} × ${u.seq_len} tokens ${u.reused ? `(reused, ${on})` : `${on} in ${fixed(msg.seconds, 1)} s`}`
        : `the calibration text has ${u.text_tokens} tokens: used ${u.n_seq} × ${u.seq_len} (asked ${u.asked_n_seq} × ${u.asked_seq_len}) ${on}`;
      break;
    }
    case 'training':
      onTraining(msg);
      break;
    case 'quantized':
      if (training?.gen === msg.gen && training.current) trainingDone(false);
      resumeDone();
      if (active) {
        active.times.quant = msg.seconds;
        active.memory = msg.memory;
      }
      setPhase('evaluating', active?.quant.method === 'none' && !active?.quant.act
        ? 'Evaluating the model as loaded…' : `Quantized in ${fixed(msg.seconds, 1)} s; evaluating…`, 0);
      break;
    case 'result':
      onResult(msg);
      break;
    case 'histogram':
      if (msg.error) {
        el.histNote.textContent = msg.error;
      } else {
        drawHistogram(msg.histogram);
        const h = msg.histogram;
        el.histNote.textContent = `Row ${h.row} can take ${h.row_levels.length} distinct values`
          + `${h.row_levels.length <= 16 ? ` (${h.row_levels.map((v) => v.toFixed(4)).join(', ')})` : ''}; `
          + `${h.clipped.toLocaleString('en')} weights lie outside their row's quantized range (clipped)`
          + `${h.outliers ? `, ${h.outliers.toLocaleString('en')} kept as exact outliers` : ''}.`;
      }
      break;
    case 'channels':
      if (msg.error) {
        el.chanNote.textContent = msg.error;
      } else {
        const c = msg.channels;
        drawChannelMap(c);
        el.chanNote.textContent = `${c.cols} input columns: ${c.n_lo} at ${c.lo} bits, ${c.n_hi} at ${c.lo + 1} bits, `
          + `${c.n_f16} kept in f16; ${c.n_sparse.toLocaleString('en')} weights kept as sparse f16 outliers. `
          + `${c.bits_per_weight.toFixed(2)} effective bits per weight for a budget of ${Number(c.budget).toFixed(2)}.`;
      }
      break;
    case 'gates':
      if (msg.name !== el.histTensor.value) break;
      if (msg.error) {
        el.gatesText.replaceChildren();
        el.gatesNote.textContent = msg.error;
      } else {
        drawGates(msg.gates);
      }
      break;
    case 'underflow':
      showUnderflow(msg);
      break;
    case 'tender':
      showTender(msg);
      break;
    case 'activations':
      if (msg.error) {
        el.actNote.textContent = msg.error;
      } else {
        drawActivations(msg.activations);
        el.actNote.textContent = `Input of ${msg.activations.sites.at(-1).site} (and ${msg.activations.sites.length - 1} other sites) over ${msg.activations.tokens} tokens; a few channels far above the rest are the outliers that make activations hard to quantize.`;
      }
      break;
    case 'error':
      if (msg.where === 'load' || msg.where === 'init') {
        if (msg.kept && info) {
          // The previous model is still loaded: say so and keep going.
          loaded = true;
          el.evaluate.disabled = false;
          el.genRun.disabled = false;
          for (const b of el.saveButtons) b.disabled = false;
          el.modelStatus.dataset.state = 'ready';
          el.modelStatus.dataset.failed = 'true';
          el.modelStatus.textContent = `That model could not be opened; still using ${info.label}.`;
        } else {
          el.modelStatus.dataset.state = 'error';
          el.modelStatus.textContent = 'The model could not be loaded.';
        }
        showLoadFailure(msg.message);
      } else {
        onRunError(msg);
      }
      break;
    default:
      break;
  }
};
worker.onerror = (e) => showError(`the evaluation engine stopped: ${e.message}`);

// The first run starts by itself once the model, the schema and any link are ready.
let firstRunDone = false;
function maybeFirstRun() {
  if (firstRunDone || !loaded || !schema) return;
  if (pendingLink && pendingLink.q && !pendingLink.parsed) return;
  firstRunDone = true;
  pageReady();
  if (linkView?.tensor && [...el.histTensor.options].some((o) => o.value === linkView.tensor)) el.histTensor.value = linkView.tensor;
  if (linkView?.row != null) el.histRow.value = String(linkView.row);
  if (linkView?.col != null) $('row-start').value = String(linkView.col);
  if (linkView?.pts != null) $('row-points').value = String(linkView.pts);
  const problem = pendingLink ? linkProblem(pendingLink.config, pendingLink.calib) : null;
  if (problem) {
    // Refused before any work: the controls keep their defaults and never show the value.
    linkFailed(`This link asks for ${problem}, so its quantization settings were not used.`);
    el.calibN.value = String(DEFAULTS.calib.n);
    el.calibLen.value = String(DEFAULTS.calib.len);
  } else if (pendingLink?.config) {
    applyQuant(pendingLink.config);
  }
  pendingLink = null;
  // A lesson runs its own first step instead of the default configuration.
  selectText(el.textSelect.value).then(lessonAsked.held ? null : startRun, showError);
}

// What in a link's (already parsed and validated) config or calibration the controls cannot
// show for this model, in words, or null: a method or bits the menu lacks, a group size that
// does not divide the model's layers, a method option or calibration size outside its control's
// limits. The worker checks the rest against the model before it calibrates (checkRun).
function linkProblem(cfg, calib) {
  if (!cfg) return calibProblem(calib);
  const id = methodId(cfg);
  const m = schema.methods.find((x) => x.id === id);
  if (id !== 'none' && !m) return `the method "${id}", which this page does not offer`;
  if (m && m.bits.length && !budgetField(m) && !m.bits.includes(cfg.default.bits)) {
    return `${cfg.default.bits}-bit weights, which ${m.label} does not offer (${m.bits.join(', ')})`;
  }
  const grans = [cfg.default, ...(cfg.overrides ?? []).map((o) => o.quant).filter(Boolean)].map((q) => q.gran);
  for (const g of grans) {
    if (typeof g === 'object' && ![...el.gran.options].some((o) => o.value === `g${g.group}`)) {
      const offered = [...el.gran.options].filter((o) => o.value.startsWith('g')).map((o) => o.value.slice(1));
      return `scales per group of ${g.group}, which does not divide the inputs of this model's layers (groups offered: ${offered.join(', ')})`;
    }
  }
  const opts = m && typeof cfg.method === 'object' ? cfg.method[id] : null;
  for (const f of m?.fields ?? []) {
    const v = opts?.[f.key];
    // Options Rust holds as f32 come back as the nearest f64 (0.05 as 0.0500000007): compare at
    // f32's precision.
    const slack = (x) => Math.abs(x) * 1e-6 + 1e-9;
    if (typeof v === 'number' && f.min != null && f.max != null && !(v >= f.min - slack(f.min) && v <= f.max + slack(f.max))) {
      return `${f.label} ${v}, outside its limits ${f.min} to ${f.max}`;
    }
  }
  return calibProblem(calib);
}
function calibProblem(calib) {
  if (!calib) return null;
  for (const [what, v, input] of [['calibration sequences', calib.n, el.calibN], ['a calibration length', calib.len, el.calibLen]]) {
    if (v < Number(input.min) || v > Number(input.max)) return `${what} of ${v}, outside the limits ${input.min} to ${input.max}`;
  }
  return null;
}

// ---------------------------------------------------------------------------- loading
function loadModel(source, ref) {
  loaded = false;
  el.evaluate.disabled = true;
  el.genRun.disabled = true;
  el.download.value = 0;
  el.modelStatus.dataset.state = 'loading';
  delete el.modelStatus.dataset.failed;
  el.modelStatus.textContent = 'Loading the model…';
  if (ref !== undefined) modelRef = ref;
  for (const b of el.saveButtons) b.disabled = true;
  worker.postMessage({ type: 'load', ...source });
}
function loadRef(ref) {
  if (ref === 'default') return loadModel({ url: new URL(DEFAULT_MODEL, document.baseURI).href }, 'default');
  if (/^https?:/.test(ref)) {
    // A Hub page (a repository, or a folder of one at a revision) loads like a Hub id.
    const hub = hubFromUrl(ref, HUB ?? 'https://huggingface.co');
    return loadModel(hub ? { hub: hub.id, rev: hub.rev } : { url: ref }, ref);
  }
  return loadModel({ hub: ref }, ref);
}
// The name a saved file starts with: the model's and its quantization's.
function savedBase(label, quant) {
  const base = String(label ?? 'model').replace(/\.(gguf|qlab|safetensors)$/i, '');
  const what = quantName(quant).replace(/[^A-Za-z0-9.]+/g, '-');
  return `${base}-${what}`.replace(/[^A-Za-z0-9._-]/g, '_');
}

for (const b of el.saveButtons) {
  b.addEventListener('click', () => {
    for (const x of el.saveButtons) x.disabled = true;
    el.saveStatus.textContent = 'Writing the file…';
    el.saveReport.replaceChildren();
    // GGUF's general.name is the file's name without extension, as the CLI's export writes it.
    let quant = null;
    try {
      quant = JSON.parse(el.result.dataset.config || 'null');
    } catch {
      quant = null;
    }
    const name = savedBase(info?.label, quant);
    // The run on screen, which need not be the worker's latest quantization (a recalled run):
    // the worker quantizes it again first if it must.
    worker.postMessage({ type: 'save', form: b.dataset.form, name, quant: shown?.quant ?? null, calib: shown?.calibFull ?? null });
  });
}

function downloadFile(name, bytes) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Hand the saved bytes to the browser as downloads named after the model and its quantization;
// for GGUF, list what each tensor became (text only).
function offerFiles({ form, files, report, quant, label }) {
  const base = savedBase(label, quant);
  let total = 0;
  const names = [];
  for (const f of files) {
    // A checkpoint's files keep their names (transformers looks for them in one folder).
    const name = f.name ? `${base}-hf__${f.name}` : `${base}.${form}`;
    downloadFile(name, f.bytes);
    names.push(name);
    total += f.bytes.length;
  }
  el.saveStatus.dataset.bytes = String(total);
  el.saveStatus.dataset.form = form;
  el.saveStatus.textContent = `Saved ${names.join(', ')} (${(total / 1e6).toFixed(1)} MB).`
    + (form === 'hf' ? ' Put the four files in one folder, without the part of each name up to "__".' : '');
  if (report) {
    const linears = report.filter((r) => /^blk\./.test(r.name) && !/norm|bias/.test(r.name));
    const fell = report.filter((r) => r.why.startsWith('fallback'));
    const li = (t) => {
      const x = document.createElement('li');
      x.textContent = t;
      return x;
    };
    el.saveReport.append(li(`${linears.length - linears.filter((r) => r.why.startsWith('fallback')).length} of ${linears.length} block linears in an exact ggml type; ${fell.length} tensors fell back to F16/F32.`));
    for (const r of fell.slice(0, 8)) el.saveReport.append(li(`${r.name}: ${r.from} → ${r.to} (${r.why})`));
    if (fell.length > 8) el.saveReport.append(li(`… and ${fell.length - 8} more`));
  }
}

el.file.addEventListener('change', () => {
  if (el.file.files.length) loadModel({ files: [...el.file.files] });
});
el.drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  el.drop.classList.add('over');
});
el.drop.addEventListener('dragleave', () => el.drop.classList.remove('over'));
el.drop.addEventListener('drop', (e) => {
  e.preventDefault();
  el.drop.classList.remove('over');
  const files = [...(e.dataTransfer?.files ?? [])];
  if (files.length) loadModel({ files });
});
el.urlLoad.addEventListener('click', () => {
  const ref = el.url.value.trim();
  if (!validModel(ref)) return showError(`"${ref}" is neither a Hub id like org/name (or org/name/folder) nor an http(s) URL`);
  loadRef(ref);
});
el.modelDefault.addEventListener('click', () => loadRef('default'));

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

// Offline use: www/sw.js keeps this build's files, and www/download.js the models, so after one
// load the page (and the default model) open without a network. The worker lives in www/ but
// controls the page's directory (the server allows that scope).
async function registerOffline() {
  const say = (state, words) => {
    el.offline.dataset.state = state;
    el.offline.textContent = words;
  };
  if (!('serviceWorker' in navigator)) return say('unavailable', 'Offline use: not available in this browser.');
  const sw = navigator.serviceWorker;
  // The active worker says which build it keeps; a new build's worker takes over by itself
  // (controllerchange) and is asked again.
  sw.addEventListener('message', (e) => {
    if (e.data?.type !== 'build') return;
    el.offline.dataset.build = e.data.build;
    say('ready', 'Works offline: this page and the models it loaded are kept in this browser.');
  });
  sw.addEventListener('controllerchange', () => sw.controller?.postMessage({ type: 'build' }));
  sw.startMessages();
  // A page the worker already controls asks it at once: offline, register() below can stay
  // pending for minutes (Chromium queues it behind an update check that cannot reach the server).
  sw.controller?.postMessage({ type: 'build' });
  try {
    try {
      await sw.register(new URL('./sw.js', import.meta.url), {
        scope: new URL('./', document.baseURI).pathname, updateViaCache: 'none',
      });
    } catch (e) {
      // Offline, the update check fails; the worker already installed still serves the page.
      if (!sw.controller) throw e;
    }
    const reg = await sw.ready;
    // A new build's worker, installed and waiting, is told to take over (see www/sw.js) once this
    // page has loaded; it then claims the page (controllerchange above).
    const loaded = document.readyState === 'complete'
      ? Promise.resolve() : new Promise((r) => self.addEventListener('load', r, { once: true }));
    const takeOver = () => loaded.then(() => reg.waiting?.postMessage({ type: 'skip-waiting' }));
    const watch = (w) => w?.addEventListener('statechange', () => { if (w.state === 'installed') takeOver(); });
    reg.addEventListener('updatefound', () => watch(reg.installing));
    watch(reg.installing);
    takeOver();
    reg.active?.postMessage({ type: 'build' });
  } catch (e) {
    say('unavailable', `Offline use: not available (${e instanceof Error ? e.message : e}).`);
  }
}

// ---------------------------------------------------------------------------- lessons
// www/lessons.js drives the page through these hooks. A step's configuration is a share link,
// checked as one before anything runs: parseHash, QuantConfig::from_url in the worker, then
// linkProblem against the loaded model (the worker's checkRun follows, before calibrating).
let pageReady;
const ready = new Promise((r) => { pageReady = r; });
const lessonWaiters = new Map();
let lessonIds = 0;
function lessonParsed(msg) {
  const w = lessonWaiters.get(msg.id);
  lessonWaiters.delete(msg.id);
  w?.(msg);
}
async function checkLink(hash) {
  const p = parseHash(hash);
  if (p.error) return { error: p.error };
  let config = null;
  if (p.state.q) {
    lessonIds += 1;
    const id = lessonIds;
    const r = await new Promise((resolve) => {
      lessonWaiters.set(id, resolve);
      worker.postMessage({ type: 'parse-link', q: p.state.q, id });
    });
    if (r.error) return { error: explain(r.error).plain };
    config = r.config;
  }
  const problem = linkProblem(config, p.state.calib);
  return problem ? { error: `it asks for ${problem}` } : { state: p.state, config };
}
let runWaiter = null; // the lesson step waiting for its run's end
function settleRun(outcome) {
  const w = runWaiter;
  runWaiter = null;
  w?.(outcome);
}
async function runLink(hash) {
  const c = await checkLink(hash);
  if (c.error) return c;
  applyLinkState({ ...c.state, hide: hidden });
  if (c.config) applyQuant(c.config);
  await selectText(c.state.text);
  settleRun({ error: 'a newer step started' });
  // Measured again even when the runs table has it: the views a step points at (the histogram,
  // the channel map, Tender's) read the worker's current quantization, which must be the step's.
  return new Promise((resolve) => {
    runWaiter = resolve;
    startRun(true);
  });
}
function showRow(tensor, row) {
  if ([...el.histTensor.options].some((o) => o.value === tensor)) el.histTensor.value = tensor;
  el.histRow.value = String(row);
  requestHistogram();
}
const lessonAsked = initLessons({ ready, checkLink, runLink, showRow, modelRef: () => modelRef });

// ---------------------------------------------------------------------------- start
// An instructor's lesson (#lesson=…) is not a share link: www/lessons.js reads it; the share
// link written after it (a reload mid-lesson) is read here.
const parsed = parseHash(splitLessonHash(self.location.hash).rest);
if (parsed.error) {
  linkFailed(`${parsed.error[0].toUpperCase()}${parsed.error.slice(1)}.`);
  history.replaceState(null, '', self.location.pathname + self.location.search);
} else if (parsed.state) {
  pendingLink = { ...parsed.state };
  applyLinkState(parsed.state);
}
syncMethodControls();
selectText(el.textSelect.value).catch(showError);
loadRef(parsed.state?.model ?? lessonAsked.model ?? 'default');
probeWebGpu();
registerOffline();
