// What the page says about a run while it happens: its phase, its progress inside a window,
// and a failure in plain words next to the control that caused it, with the technical message
// one click away. Rust's errors name the setting they are about ("config: default.gran: …",
// src/error.rs); `explain` turns that into the control to point at and a sentence.

// Settings by the field Rust names (a prefix matches its sub-fields): the control to mark and
// the setting's name in words.
const FIELDS = [
  ['text', '#text-select', 'The text'],
  ['tokens', '#text-select', 'The text'],
  ['ctx', '#ctx', 'The context'],
  ['calib.n_seq', '#calib-n', 'Calibration sequences'],
  ['calib.seq_len', '#calib-len', 'The calibration length'],
  ['calib', '#calib-n', 'The calibration'],
  ['default.gran', '#gran', 'Scales per group'],
  ['default.bits', '#bits', 'Weight bits'],
  ['default', '#method', 'The quantization'],
  ['overrides', '#ov-list', 'A per-layer setting'],
  ['lorc', '#lorc', 'LoRC'],
  ['act', '#act-bits', 'The activation quantizer'],
  ['smooth', '#smooth', 'The scale transform'],
  ['version', '#method', 'The configuration'],
];

// {control: CSS selector or null, plain: a sentence, detail: the message as Rust wrote it}.
export function explain(message, where = 'run') {
  const detail = String(message ?? '');
  if (where === 'load' || where === 'init') return explainLoad(detail);
  const m = /^(?:.*?: )?config: ([A-Za-z0-9_.*\-]+): ([\s\S]*)$/.exec(detail);
  if (!m) {
    if (/cancelled|stopped/.test(detail)) return { control: '#evaluate', plain: 'The run was stopped.', detail };
    if (/device was lost|GPU/.test(detail)) return { control: '#evaluate', plain: `The GPU failed during the run: ${firstSentence(detail)}`, detail };
    return { control: '#evaluate', plain: `The run failed: ${firstSentence(detail)}`, detail };
  }
  const [, field, msg] = m;
  const hit = FIELDS.find(([f]) => field === f || field.startsWith(`${f}.`));
  if (hit) return { control: hit[1], plain: `${hit[2]}: ${sentence(msg, field)}`, detail };
  // A method's own option ("gptq.damp"): its control in the method panel.
  const [method, key] = field.split('.');
  if (key) return { control: `#method-fields [data-key="${key}"]`, plain: `${method.toUpperCase()} ${key}: ${sentence(msg, field)}`, detail };
  return { control: '#method', plain: `The setting "${field}": ${sentence(msg, field)}`, detail };
}

// A model that could not be opened: what the file is (not), in words.
function explainLoad(detail) {
  const control = '#model-file';
  const magic = /^([^:]+): magic: expected "(\w+)"/.exec(detail);
  if (magic) return { control, plain: `${magic[1]} is not a ${magic[2]} file (its first bytes say otherwise), nor a QuantLab file.`, detail };
  const file = /^([^:]+\.(?:gguf|qlab|safetensors|json)): /.exec(detail);
  if (file) return { control, plain: `${file[1]} could not be opened: ${firstSentence(detail.slice(file[0].length))}`, detail };
  return { control, plain: `The model could not be opened: ${firstSentence(detail)}`, detail };
}

function sentence(msg, field) {
  const s = msg.trim().replace(/\.$/, '');
  if (field === 'text' && /the text has (\d+) tokens/.test(s)) {
    const [, n] = /the text has (\d+) tokens/.exec(s);
    const need = /needs at least (\d+)/.exec(s)?.[1];
    return `it has ${n} tokens, fewer than one window needs (${need ?? 'ctx'}). Choose a longer text or a shorter context.`;
  }
  return `${s}.`;
}

const firstSentence = (s) => {
  const t = s.split(/(?<=\.)\s/)[0];
  return t.length > 240 ? `${t.slice(0, 240)}…` : t;
};

// Show `failure` (from `explain`) beside its control: a notice with the sentence, the technical
// message in a <details> below it. Returns the notice. The control's label gets data-failed.
export function showFailure(failure) {
  clearFailures();
  const control = failure.control ? document.querySelector(failure.control) : null;
  const anchor = control?.closest('label') ?? control ?? document.getElementById('evaluate');
  const box = document.createElement('div');
  box.className = 'run-error';
  box.setAttribute('role', 'alert');
  box.dataset.testid = 'run-error';
  box.dataset.control = failure.control ?? '';
  const p = document.createElement('p');
  p.textContent = failure.plain;
  box.append(p);
  if (failure.detail && failure.detail !== failure.plain) {
    const d = document.createElement('details');
    const s = document.createElement('summary');
    s.textContent = 'Technical detail';
    const pre = document.createElement('code');
    pre.textContent = failure.detail;
    d.append(s, pre);
    box.append(d);
  }
  anchor.dataset.failed = 'true';
  // After the control's row, so that the notice sits under the control it is about.
  const row = anchor.closest('.row') ?? anchor;
  row.after(box);
  return box;
}

export function clearFailures() {
  for (const b of document.querySelectorAll('.run-error')) b.remove();
  for (const n of document.querySelectorAll('[data-failed="true"]:not(#link-error):not(#model-status):not(#w4a8-note)')) delete n.dataset.failed;
}

// The run's progress in words and as a fraction: `phase` is calibrating | quantizing |
// evaluating; `p` the worker's message (EvalProgress while evaluating).
export function progressText(phase, msg, windowsAsked) {
  if (phase === 'calibrating') return { frac: msg.done / Math.max(1, msg.total), text: `Calibrating: sequence ${msg.done} of ${msg.total}` };
  if (phase === 'quantizing') return { frac: msg.done / Math.max(1, msg.total), text: `Quantizing: tensor ${msg.done} of ${msg.total}` };
  const p = msg.progress;
  const inside = p.in_flight > 0 && p.steps > 0 ? p.step / p.steps : 0;
  const frac = (p.window + inside * p.in_flight) / Math.max(1, p.windows);
  const sofar = p.window > 0 ? `; perplexity over the finished ${p.window === 1 ? 'window' : `${p.window} windows`} ${fmt(p.ppl)} ± ${fmt(p.ppl_err)}` : '';
  const where = p.in_flight > 0
    ? `Evaluating window ${p.window + 1}${p.in_flight > 1 ? `–${p.window + p.in_flight}` : ''} of ${p.windows} (${Math.round(100 * inside)} % of it)`
    : `Evaluated ${p.window} of ${p.windows} windows`;
  return { frac, text: `${where}${sofar} · ${Math.round(100 * frac)} % in all`, windowsAsked };
}
const fmt = (v) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(3) : '—');
