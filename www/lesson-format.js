// Guided lessons as plain data (issue 19; docs/lessons.md describes the format for instructors).
// Nothing here touches the DOM or the model: a lesson is checked here, field by field, before the
// page does any work with it, and each step's configuration becomes a share link (www/state.js),
// so a lesson's configuration takes exactly the path a shared link takes (parseHash here, then
// QuantConfig::from_url in the worker, then the page's and the worker's checks against the model).

import { parseHash, validModel } from './state.js';

export const LESSON_VERSION = 1;

// Built-in lessons: www/lessons/ID.json, opened by `?lesson=ID`. The titles are repeated here so
// the menu needs no fetch; tests/browser/lesson_format.test.mjs checks they match the files.
export const BUILT_IN = [
  { id: 'one-row', title: 'What quantization does to one row of weights' },
  { id: 'bits', title: 'Bits against perplexity against memory' },
  { id: 'groups', title: 'Groups and scales' },
  { id: 'outliers', title: 'Outliers: why CMPQ and AWQ protect channels' },
  { id: 'w4a8', title: 'W4A8: weights rounded to zero, and dINT' },
  { id: 'tender', title: 'Tender: power-of-two groups of activation channels' },
  { id: 'binarymos', title: 'BinaryMoS: one bit with a mixture of scales' },
];

// Limits. A lesson is read by people in a classroom: short texts, a few steps, a few choices.
// The link limit keeps an instructor's lesson within what browsers and chat tools pass along
// (about 16 k characters; a 12-step lesson with long texts fits in about 9 k).
export const LIMITS = {
  link: 16384, title: 120, text: 700, question: 240, choice: 160, choices: [2, 5], steps: [1, 12],
  config: 4000, tensor: 120, row: 1_000_000,
  // A step's calibration must finish in a classroom's browser: at most 64 sequences of 512 tokens
  // (the built-in lessons use 16 × 128, which takes seconds on SmolLM2-135M).
  calibSeqs: 64, calibLen: 512,
};

// The parts of the page a step may point at (the answer to its question): key → element id.
export const TARGETS = {
  ppl: 'ppl', kl: 'kl', top1: 'top1', bpw: 'bpw', memory: 'memory', 'memory-bar': 'memory-bar', result: 'result',
  histogram: 'inspect-box', layers: 'layers-box', pareto: 'pareto-box', runs: 'history-box',
  channels: 'chan-box', underflow: 'underflow-box', tender: 'tender-box', gates: 'gates-box', alpha: 'alpha-box',
};
// What a step may do after its result, besides pointing at it: the button it presses.
export const ACTIONS = { underflow: 'underflow-run', tender: 'tender-show' };

const LESSON_KEYS = ['lesson', 'title', 'intro', 'model', 'steps'];
const STEP_KEYS = ['text', 'setup', 'predict', 'explain', 'show', 'then', 'row'];
const SETUP_KEYS = ['q', 'text', 'proto', 'ctx', 'win', 'calib'];
const PREDICT_KEYS = ['question', 'choices', 'expected'];
const ROW_KEYS = ['tensor', 'row'];
const NAME = /^[a-z0-9][a-z0-9-]{0,39}$/;

class LessonError extends Error {}
const fail = (field, why) => { throw new LessonError(`${field} ${why}`); };
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function onlyKeys(v, keys, field) {
  if (!isObject(v)) fail(field, 'must be an object');
  for (const k of Object.keys(v)) {
    if (!keys.includes(k)) fail(`${field}.${k}`, `is not a lesson field (${field} takes ${keys.join(', ')})`);
  }
}
function str(v, field, max, { optional = false } = {}) {
  if (v === undefined && optional) return;
  if (typeof v !== 'string' || v.trim() === '') fail(field, 'must be a non-empty text');
  if (v.length > max) fail(field, `is ${v.length} characters long, more than the ${max} allowed`);
}
function count(v, field, [lo, hi]) {
  if (!Array.isArray(v)) fail(field, 'must be a list');
  if (v.length < lo || v.length > hi) fail(field, `has ${v.length} entries; a lesson allows ${lo} to ${hi}`);
}

// A QuantConfig as a share link's "q" part: QuantConfig::to_url's form, `v{version}.` and the
// JSON in unpadded base64url. The worker's QuantConfig::from_url reads it back and validates it.
export function base64url(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}
export function fromBase64url(s) {
  const bin = atob(s.replaceAll('-', '+').replaceAll('_', '/'));
  return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

// The share link of a step (with `model`, the lesson's or the page's).
export function stepHash(step, model = 'default') {
  const s = step.setup;
  const q = `v${s.q.version}.${base64url(JSON.stringify(s.q))}`;
  const p = new URLSearchParams({ ql: '1', model, q });
  for (const k of ['text', 'proto', 'ctx', 'win', 'calib']) if (s[k] !== undefined) p.set(k, String(s[k]));
  return `#${p.toString()}`;
}

function checkStep(st, i, model) {
  const f = `steps[${i}]`;
  onlyKeys(st, STEP_KEYS, f);
  str(st.text, `${f}.text`, LIMITS.text);
  str(st.explain, `${f}.explain`, LIMITS.text, { optional: true });
  onlyKeys(st.setup, SETUP_KEYS, `${f}.setup`);
  const q = st.setup.q;
  if (!isObject(q)) fail(`${f}.setup.q`, 'must be a quantization config (an object, as in grids/*.json)');
  if (!Number.isInteger(q.version)) fail(`${f}.setup.q.version`, 'must be the config version (1)');
  const qlen = JSON.stringify(q).length;
  if (qlen > LIMITS.config) fail(`${f}.setup.q`, `is ${qlen} characters of JSON, more than the ${LIMITS.config} allowed`);
  // The evaluation fields take exactly the values a share link takes: built into one and parsed.
  const parsed = parseHash(stepHash(st, model));
  if (parsed.error) fail(`${f}.setup`, `is refused as a share link: ${parsed.error.replace(/^this link is not valid: /, '')}`);
  const { n, len } = parsed.state.calib;
  if (st.setup.calib !== undefined && (n > LIMITS.calibSeqs || len > LIMITS.calibLen)) {
    fail(`${f}.setup.calib`, `is ${n}x${len}; a lesson step calibrates on at most ${LIMITS.calibSeqs} sequences of ${LIMITS.calibLen} tokens`);
  }
  if (typeof st.show !== 'string' || !(st.show in TARGETS)) {
    fail(`${f}.show`, `must name the part of the page that answers the step, one of ${Object.keys(TARGETS).join(', ')}`);
  }
  if (st.then !== undefined && !(st.then in ACTIONS)) fail(`${f}.then`, `must be one of ${Object.keys(ACTIONS).join(', ')}`);
  if (st.predict !== undefined) {
    const p = st.predict;
    onlyKeys(p, PREDICT_KEYS, `${f}.predict`);
    str(p.question, `${f}.predict.question`, LIMITS.question);
    count(p.choices, `${f}.predict.choices`, LIMITS.choices);
    p.choices.forEach((c, j) => str(c, `${f}.predict.choices[${j}]`, LIMITS.choice));
    if (p.expected !== undefined && !(Number.isInteger(p.expected) && p.expected >= 0 && p.expected < p.choices.length)) {
      fail(`${f}.predict.expected`, `must be the index of a choice, 0 to ${p.choices.length - 1}`);
    }
  }
  if (st.row !== undefined) {
    onlyKeys(st.row, ROW_KEYS, `${f}.row`);
    str(st.row.tensor, `${f}.row.tensor`, LIMITS.tensor);
    if (!Number.isInteger(st.row.row) || st.row.row < 0 || st.row.row > LIMITS.row) {
      fail(`${f}.row.row`, `must be a whole number from 0 to ${LIMITS.row}`);
    }
  }
}

// Check a parsed lesson. Returns {lesson} or {error: 'field: what is wrong, and the limit'}.
export function validateLesson(v) {
  try {
    onlyKeys(v, LESSON_KEYS, 'lesson');
    if (v.lesson !== LESSON_VERSION) {
      fail('lesson.lesson', `must be the lesson format version ${LESSON_VERSION}${Number(v.lesson) > LESSON_VERSION ? ' (this lesson was written for a newer QuantLab; reload the page)' : ''}`);
    }
    str(v.title, 'lesson.title', LIMITS.title);
    str(v.intro, 'lesson.intro', LIMITS.text, { optional: true });
    if (v.model !== undefined && (typeof v.model !== 'string' || !validModel(v.model))) {
      fail('lesson.model', 'must be "default", a Hub id like org/name, or an http(s) URL');
    }
    count(v.steps, 'lesson.steps', LIMITS.steps);
    v.steps.forEach((st, i) => checkStep(st, i, v.model ?? 'default'));
  } catch (e) {
    if (e instanceof LessonError) return { error: `This lesson is not valid: ${e.message}.` };
    throw e;
  }
  return { lesson: v };
}

// Parse lesson text (a file's or a link's) with the size limit first, then validate it.
export function parseLesson(text) {
  if (text.length > LIMITS.link) return { error: `This lesson is ${text.length} characters long, more than the ${LIMITS.link} a lesson may have.` };
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { error: `This lesson is not JSON: ${e.message}.` };
  }
  return validateLesson(v);
}

// An instructor's own lesson as a link: `#lesson=` and the lesson's JSON in base64url.
export function lessonHash(lesson) {
  return `#lesson=${base64url(JSON.stringify(lesson))}`;
}

// An instructor's lesson from the base64url text of its link, as {lesson} or {error}.
function fromLink(b) {
  if (b.length > LIMITS.link) return { error: `This lesson link is ${b.length} characters long, more than the ${LIMITS.link} a lesson link may have.` };
  if (!/^[A-Za-z0-9_-]*$/.test(b)) return { error: 'This lesson link is damaged: it is not base64url text.' };
  let text;
  try {
    text = fromBase64url(b);
  } catch {
    return { error: 'This lesson link is damaged: its text is not UTF-8.' };
  }
  return parseLesson(text);
}

// An address's hash split into an instructor's lesson (the base64url text after `#lesson=`, up
// to the first `&`, or null) and the share link after it (`#ql=1&…`, or ''): once a lesson is
// open the page writes the share link of the step on screen after the lesson, and a reload
// still finds the lesson. The hash, not the query: a lesson link may be longer than servers
// accept in a request line, and the hash never reaches the server.
export function splitLessonHash(hash) {
  if (!hash.startsWith('#lesson=')) return { link: null, rest: hash };
  const amp = hash.indexOf('&');
  return amp < 0 ? { link: hash.slice(8), rest: '' } : { link: hash.slice(8, amp), rest: `#${hash.slice(amp + 1)}` };
}

// Which lesson the address asks for: {builtIn: id} from `?lesson=ID`, {lesson, link} or {error}
// from `#lesson=…` (link: its base64url text), or null.
export function lessonFromLocation(search, hash) {
  const { link } = splitLessonHash(hash);
  if (link !== null) {
    const r = fromLink(link);
    return r.error ? r : { ...r, link };
  }
  const q = new URLSearchParams(search);
  const id = q.get('lesson');
  if (id === null) return null;
  if (!NAME.test(id) || !BUILT_IN.some((l) => l.id === id)) {
    return { error: `There is no built-in lesson "${id.slice(0, 40)}" (lessons: ${BUILT_IN.map((l) => l.id).join(', ')}).` };
  }
  return { builtIn: id };
}
