// One row before your eyes (issue 19, item 2): the weights of one row of the chosen tensor on a
// number line, the levels the current format gives each group of columns, a line from each
// weight to the value it was stored as, clipped weights and exact outliers marked, and the row's
// error. The data is `playground::row_view::RowView`, computed in the worker from the format's
// own bytes; nothing here re-derives a level. Drawn as SVG; every text goes in by textContent.

const NS = 'http://www.w3.org/2000/svg';
const W = 520;
const H = 230;
const PAD = 28;
const Y_WEIGHT = 30; // weights sit in a band from here (staggered so neighbours do not overlap)
const Y_LEVELS = 150; // the levels' lane
const STAGGER = 8; // rows of the weights' band
// The latest view drawn, for tests and the screenshot script (the numbers, not pixels).
self.quantlabRowView = null;

let worker = null;
let tensorEl = null;
let rowEl = null;
const el = {};

function svg(tag, attrs) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

function text(x, y, s, attrs = {}) {
  const t = svg('text', { x, y, 'font-size': 11, fill: '#5a6272', ...attrs });
  t.textContent = s;
  return t;
}

const fmt = (v) => (Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(4) : v.toExponential(2));

export function initRowView(w, tensor, row) {
  worker = w;
  tensorEl = tensor;
  rowEl = row;
  for (const id of ['row-start', 'row-points', 'row-chart', 'row-note', 'row-error']) {
    el[id] = document.getElementById(id);
  }
  el['row-start'].addEventListener('change', requestRowView);
  el['row-points'].addEventListener('change', requestRowView);
  worker.addEventListener('message', ({ data: msg }) => {
    if (msg.type !== 'rowview') return;
    if (msg.error) {
      el['row-chart'].replaceChildren();
      el['row-note'].textContent = msg.error;
      el['row-error'].textContent = '';
      delete el['row-error'].dataset.mse;
      return;
    }
    if (msg.view.name !== tensorEl.value) return;
    drawRowView(msg.view);
  });
}

export function requestRowView() {
  if (!worker || !tensorEl.value) return;
  worker.postMessage({
    type: 'rowview',
    name: tensorEl.value,
    row: Math.max(0, Number(rowEl.value) || 0),
    start: Math.max(0, Number(el['row-start'].value) || 0),
    points: Number(el['row-points'].value) || 64,
  });
}

function drawRowView(v) {
  self.quantlabRowView = v;
  const n = v.weights.length;
  const all = [...v.weights, ...v.quantized, ...v.groups.flatMap((g) => g.levels.filter(Number.isFinite))];
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const x = (val) => PAD + ((val - lo) / (hi - lo)) * (W - 2 * PAD);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', 'aria-labelledby': 'row-note' });
  root.style.maxWidth = `${W}px`;
  // The number line, with its ends and zero labelled.
  root.append(svg('line', { x1: PAD, y1: H - 40, x2: W - PAD, y2: H - 40, stroke: '#999' }));
  root.append(text(PAD, H - 26, fmt(lo), { 'text-anchor': 'start' }), text(W - PAD, H - 26, fmt(hi), { 'text-anchor': 'end' }));
  if (lo < 0 && hi > 0) {
    root.append(svg('line', { x1: x(0), y1: Y_WEIGHT - 8, x2: x(0), y2: H - 36, stroke: '#ddd' }));
    root.append(text(x(0), H - 26, '0', { 'text-anchor': 'middle' }));
  }
  // Levels: one tick per level of every group in the window (groups with one grid show a
  // comb; CMPQ's and OneBit's per-column levels show as many faint ticks).
  const many = v.groups.length > 8;
  const levels = svg('g', { 'data-part': 'levels' });
  for (const g of v.groups) {
    for (const l of g.levels) {
      if (!Number.isFinite(l)) continue;
      levels.append(svg('line', {
        x1: x(l), y1: Y_LEVELS - 8, x2: x(l), y2: Y_LEVELS + 8,
        stroke: g.bits >= 16 ? '#e08a1e' : '#2b5fd9', 'stroke-opacity': many ? 0.25 : 0.9, 'stroke-width': 1.5,
      }));
    }
  }
  root.append(levels, text(W - PAD, Y_LEVELS + 22, `levels (${v.format})`, { 'text-anchor': 'end' }));
  // A line from each weight to the value it was stored as; the weight's dot marked when clipped
  // (red) or kept exactly as an outlier (orange ring).
  // Where the widths differ by column (CMPQ), each line takes its column's width's colour.
  const widthOf = new Map();
  for (const g of v.groups) for (let c = g.start; c < g.end; c += 1) widthOf.set(c, g.bits);
  const widths = [...new Set(v.groups.map((g) => g.bits))].sort((a, b) => a - b);
  const WIDTH_COLOURS = ['#8a93a5', '#2b5fd9', '#1e8a4c'];
  const widthColour = (b) => (b >= 16 ? '#e08a1e' : widths.length > 1 ? WIDTH_COLOURS[widths.indexOf(b) % 3] : '#8a93a5');
  const arrows = svg('g', { 'data-part': 'arrows', 'stroke-width': 1 });
  const dots = svg('g', { 'data-part': 'weights' });
  for (let i = 0; i < n; i += 1) {
    const yw = Y_WEIGHT + (i % STAGGER) * 8;
    const clipped = v.clipped[i];
    const outlier = v.outlier[i];
    const bits = widthOf.get(v.start + i);
    const line = svg('line', {
      x1: x(v.weights[i]), y1: yw, x2: x(v.quantized[i]), y2: Y_LEVELS,
      stroke: clipped ? '#b3261e' : outlier ? '#e08a1e' : widthColour(bits), 'stroke-opacity': 0.6,
    });
    if (bits !== undefined) line.dataset.bits = String(bits);
    arrows.append(line);
    const dot = svg('circle', {
      cx: x(v.weights[i]), cy: yw, r: outlier ? 4 : 2.5,
      fill: clipped ? '#b3261e' : outlier ? 'none' : '#1f2430',
      stroke: outlier ? '#e08a1e' : 'none', 'stroke-width': 1.5,
    });
    dot.dataset.col = String(v.start + i);
    if (clipped) dot.dataset.clipped = '1';
    if (outlier) dot.dataset.outlier = '1';
    const tip = svg('title', {});
    tip.textContent = `column ${v.start + i}: ${fmt(v.weights[i])} → ${fmt(v.quantized[i])}`;
    dot.append(tip);
    dots.append(dot);
  }
  root.append(arrows, dots, text(PAD, 16, `weights of row ${v.row}, columns ${v.start}–${v.start + n - 1} of ${v.cols}`));
  if (widths.length > 1) {
    // A key for the widths' colours, right-aligned on the title line.
    let at = W - PAD;
    for (const b of [...widths].reverse()) {
      const t = text(at, 16, b >= 16 ? 'f16' : `${b}-bit`, { 'text-anchor': 'end', fill: widthColour(b), 'font-weight': 'bold' });
      root.append(t);
      at -= 44;
    }
  }
  el['row-chart'].replaceChildren(root);
  const groupText = !v.has_levels
    ? 'this format has no level grid (weights as loaded)'
    : `${v.groups.length} group${v.groups.length === 1 ? '' : 's'} of levels in this window`
      + ` (${widths.map((b) => (b >= 16 ? 'f16 columns' : `${b}-bit`)).join(', ')})`;
  el['row-note'].textContent = `${v.name}, row ${v.row}: ${n} of ${v.cols} weights drawn; ${groupText}`
    + `${v.basis === 'smoothed' ? '; weights after the scale transform, as the quantizer saw them' : ''}`
    + `${v.basis === 'awq-unscaled' ? '; AWQ keeps no scales, so the weights are as loaded while the stored row is scaled: the error is not rounding alone' : ''}`
    + `${v.lowrank ? '; a low-rank term is added after the levels, so values sit off the grid' : ''}.`;
  const e = el['row-error'];
  e.dataset.mse = String(v.mse);
  e.dataset.maxAbs = String(v.max_abs);
  e.textContent = `Whole row: MSE ${v.mse.toExponential(3)}, largest error ${fmt(v.max_abs)}, `
    + `${v.n_clipped} clipped, ${v.n_outliers} kept as exact outliers.`;
}
