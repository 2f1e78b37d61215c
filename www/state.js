// The page's shareable state, kept in the URL hash. Everything here is plain data: no DOM.
//
// Format (version 1), a URLSearchParams string after '#':
//   ql=1             link version (a newer one is refused with a message, never guessed at)
//   model=default | https://… | org/name | org/name/sub/dir   (a folder inside a Hub repository)
//   text=prose|dialogue|code|wikitext   (wikitext: WikiText-2 test from the Hub, when online)
//   proto=llamacpp|gptq  ctx=64|128|256|512  win=1|2|4|all
//   q=v1.…           the QuantConfig, exactly as Rust's QuantConfig::to_url writes it (the worker
//                    parses it with QuantConfig::from_url, which validates it); it carries the
//                    activation panel too: `act` (bits, granularity, scale, percentile, and
//                    Tender's `tender`: groups k, chunk T, rounding) and
//                    `smooth` (the scale transform and its options)
//   calib=NxL        calibration sequences × tokens (L: the calibration length, SLAC's knob)
//   hide=a,b         instructor flags: controls to hide (see HIDEABLE)
//   gen=N            the generation length (1..MAX_GEN), when not the page's default
//   tensor=blk.L.K.weight  row=N   the tensor and row "Inside one tensor" shows, when chosen
// Every field is validated; an invalid link yields {error} and the caller falls back to defaults.

export const LINK_VERSION = 1;
export const TEXTS = ['prose', 'dialogue', 'code', 'wikitext'];
export const PROTOCOLS = ['llamacpp', 'gptq'];
export const CTXS = ['64', '128', '256', '512'];
export const WINDOWS = ['1', '2', '4', 'all'];
export const HIDEABLE = ['model', 'text', 'method', 'bits', 'gran', 'sym', 'clip', 'imatrix', 'method-options',
  'lorc', 'calib', 'overrides', 'presets', 'eval', 'generate', 'act'];
export const DEFAULTS = {
  model: 'default', text: 'prose', proto: 'llamacpp', ctx: '256', win: '4', q: null,
  calib: { n: 32, len: 512 }, hide: [], gen: null, tensor: null, row: null, col: null, pts: null,
};
export const MAX_GEN = 256;
export const MAX_ROW = 1_000_000;
// The row view's "Weights drawn" menu (index.html).
const ROW_POINTS = ['32', '64', '128', '256'];
const TENSOR = /^[A-Za-z0-9_.]{1,120}$/;
const MAX_HASH = 8192;
// A Hub id: org/name, optionally followed by a folder inside the repository (org/name/sub/dir),
// at most MAX_HUB_DEPTH folders deep. Every segment starts with a letter or digit, so "." and
// ".." cannot occur.
const HUB_SEG = '[A-Za-z0-9][A-Za-z0-9_.-]{0,95}';
const MAX_HUB_DEPTH = 8;
const HUB_ID = new RegExp(`^${HUB_SEG}/${HUB_SEG}(/${HUB_SEG}){0,${MAX_HUB_DEPTH}}$`);
const HUB_REV = new RegExp(`^${HUB_SEG}$`);

// A Hub page URL as the Hub writes it for a repository's files, on `endpoint`
// (https://huggingface.co or a mirror): ENDPOINT/org/name/tree/REV[/sub/dir] (a folder at a
// revision). Returns {id: 'org/name[/sub/dir]', rev} or null for any other URL.
export function hubFromUrl(ref, endpoint) {
  let u;
  let e;
  try {
    u = new URL(ref);
    e = new URL(endpoint);
  } catch {
    return null;
  }
  if (u.origin !== e.origin || u.search !== '') return null;
  const below = e.pathname.replace(/\/$/, '');
  if (!u.pathname.startsWith(`${below}/`)) return null;
  const segs = u.pathname.slice(below.length + 1).split('/').filter((x) => x !== '').map((x) => {
    try {
      return decodeURIComponent(x);
    } catch {
      return '\0';
    }
  });
  // Only tree URLs: ENDPOINT/org/name alone could as well be a file on a plain server.
  if (segs.length < 4 || segs[2] !== 'tree') return null;
  const rev = segs[3];
  const joined = segs.slice(0, 2).concat(segs.slice(4)).join('/');
  return HUB_ID.test(joined) && HUB_REV.test(rev) ? { id: joined, rev } : null;
}

// Is `m` a model reference a link may carry?
export function validModel(m) {
  if (m === 'default' || HUB_ID.test(m)) return true;
  try {
    const u = new URL(m);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}

// Parse a hash (with or without '#'). Returns {state} or {error: 'plain words'}; an empty hash
// is {state: null}.
export function parseHash(hash) {
  const h = hash.startsWith('#') ? hash.slice(1) : hash;
  if (h === '') return { state: null };
  if (h.length > MAX_HASH) return { error: `the link is ${h.length} characters long, more than the ${MAX_HASH} a QuantLab link may have` };
  const p = new URLSearchParams(h);
  const v = p.get('ql');
  if (v === null) return { error: 'this is not a QuantLab link (it has no "ql=" version)' };
  if (!/^[0-9]{1,6}$/.test(v)) return { error: `the link version "${v}" is not a number` };
  if (Number(v) > LINK_VERSION) return { error: `this link was made by a newer QuantLab (link version ${v}; this page reads up to ${LINK_VERSION}). Reload the page to get the newest version.` };
  if (Number(v) < 1) return { error: `link version ${v} does not exist` };
  const s = { ...DEFAULTS, calib: { ...DEFAULTS.calib }, hide: [] };
  const pick = (key, allowed) => {
    const x = p.get(key);
    if (x === null) return null;
    if (!allowed.includes(x)) throw new Error(`"${key}" is "${x}"; expected one of ${allowed.join(', ')}`);
    return x;
  };
  try {
    s.text = pick('text', TEXTS) ?? s.text;
    s.proto = pick('proto', PROTOCOLS) ?? s.proto;
    s.ctx = pick('ctx', CTXS) ?? s.ctx;
    s.win = pick('win', WINDOWS) ?? s.win;
    const model = p.get('model');
    if (model !== null) {
      if (!validModel(model)) throw new Error(`"model" is "${model}", neither "default", a Hub id like org/name (or org/name/folder), nor an http(s) URL`);
      s.model = model;
    }
    const q = p.get('q');
    if (q !== null) {
      if (!/^v[0-9]+\.[A-Za-z0-9_-]*$/.test(q)) throw new Error('the quantization part ("q") is not a QuantLab config link');
      s.q = q;
    }
    const calib = p.get('calib');
    if (calib !== null) {
      const m = /^([0-9]{1,4})x([0-9]{1,4})$/.exec(calib);
      if (!m || Number(m[1]) < 1 || Number(m[2]) < 2) throw new Error(`"calib" is "${calib}"; expected sequences x tokens, e.g. 32x512`);
      s.calib = { n: Number(m[1]), len: Number(m[2]) };
    }
    const whole = (key, lo, hi) => {
      const x = p.get(key);
      if (x === null) return null;
      if (!/^[0-9]{1,7}$/.test(x) || Number(x) < lo || Number(x) > hi) throw new Error(`"${key}" is "${x}"; expected a whole number from ${lo} to ${hi}`);
      return Number(x);
    };
    s.gen = whole('gen', 1, MAX_GEN);
    s.row = whole('row', 0, MAX_ROW);
    // The row view's window: first column and how many weights it draws (its menu's choices).
    s.col = whole('col', 0, MAX_ROW);
    const pts = p.get('pts');
    if (pts !== null) {
      if (!ROW_POINTS.includes(pts)) throw new Error(`"pts" is "${pts.slice(0, 12)}"; expected one of ${ROW_POINTS.join(', ')}`);
      s.pts = Number(pts);
    }
    const tensor = p.get('tensor');
    if (tensor !== null) {
      if (!TENSOR.test(tensor)) throw new Error(`"tensor" is "${tensor.slice(0, 40)}", not a tensor name like blk.0.attn_q.weight`);
      s.tensor = tensor;
    }
    const hide = p.get('hide');
    if (hide !== null && hide !== '') {
      for (const c of hide.split(',')) {
        if (!HIDEABLE.includes(c)) throw new Error(`"hide" names "${c}", which is not a control (${HIDEABLE.join(', ')})`);
        s.hide.push(c);
      }
    }
  } catch (e) {
    return { error: `this link is not valid: ${e.message}` };
  }
  return { state: s };
}

// The hash for a state (q already made by QuantConfig::to_url).
export function makeHash(s) {
  const p = new URLSearchParams();
  p.set('ql', String(LINK_VERSION));
  p.set('model', s.model);
  p.set('text', s.text);
  p.set('proto', s.proto);
  p.set('ctx', s.ctx);
  p.set('win', s.win);
  if (s.q) p.set('q', s.q);
  p.set('calib', `${s.calib.n}x${s.calib.len}`);
  if (s.hide.length) p.set('hide', s.hide.join(','));
  for (const k of ['gen', 'tensor', 'row', 'col', 'pts']) if (s[k] != null) p.set(k, String(s[k]));
  return `#${p.toString()}`;
}

// Points on the Pareto front of [{x, y}] where lower is better on both axes: indices sorted by x.
export function paretoFront(points) {
  const order = points.map((_, i) => i).sort((a, b) => points[a].x - points[b].x || points[a].y - points[b].y);
  const front = [];
  let best = Infinity;
  for (const i of order) {
    if (points[i].y < best) {
      front.push(i);
      best = points[i].y;
    }
  }
  return front;
}
