// The pictures, drawn with uPlot (npm `uplot`, copied into www/pkg/ by scripts/build-web.sh so
// the page works offline). Each chart keeps the data it draws in `chartData` (exposed as
// window.quantlabCharts) so tests can check the numbers rather than pixels.

import uPlot from './pkg/uPlot.esm.js';
import { paretoFront } from './state.js';

export const chartData = { pareto: null, memory: null, layers: null, histogram: null, activations: null, channels: null };
self.quantlabCharts = chartData;

const WIDTH = 520;
const plots = new Map(); // element id -> uPlot

function draw(id, opts, data) {
  const node = document.getElementById(id);
  const old = plots.get(id);
  if (old) old.destroy();
  const width = Math.max(280, Math.min(WIDTH, node.clientWidth || WIDTH));
  const plot = new uPlot({ width, height: 200, ...opts }, data, node);
  plots.set(id, plot);
  return plot;
}

const points = (stroke) => ({ stroke, width: 0, points: { show: true, size: 8, fill: stroke }, paths: () => null });

// One colour per method in the Pareto chart (methods not listed get the last one).
const METHOD_COLOURS = {
  none: '#5a6272', rtn: '#2b5fd9', gptq: '#1e8a4c', awq: '#8a5a1e', kmeans: '#9b59b6', nf4: '#d98a2b',
  fp4: '#2bb3d9', cmpq: '#8e24aa', other: '#333a48',
};

// runs: [{bpw, ppl, label, method}]; onPick(index into runs). One point series per method (the
// legend names them), the Pareto front over all of them as a line. Perplexity on a log scale:
// 2-bit RTN and CMPQ's budgets differ by orders of magnitude.
export function drawPareto(runs, onPick) {
  const pts = runs.map((r) => ({ x: r.bpw, y: r.ppl }));
  const front = new Set(paretoFront(pts));
  const order = runs.map((_, i) => i).sort((a, b) => runs[a].bpw - runs[b].bpw);
  const xs = order.map((i) => runs[i].bpw);
  const ys = order.map((i) => runs[i].ppl);
  const fs = order.map((i) => (front.has(i) ? runs[i].ppl : null));
  const methods = order.map((i) => runs[i].method ?? 'other');
  const ids = [...new Set(methods)];
  const series = Object.fromEntries(ids.map((id) => [id, methods.map((m, k) => (m === id ? ys[k] : null))]));
  chartData.pareto = { bpw: xs, ppl: ys, front: fs, labels: order.map((i) => runs[i].label), methods, series };
  const plot = draw('pareto-chart', {
    scales: { x: { time: false }, y: { distr: 3 } },
    // Compact tick labels: 2-bit perplexities reach 1e9 and would not fit the axis.
    axes: [{ label: 'effective bits per weight (linear layers)' },
      { label: 'perplexity', size: 60, values: (u, vals) => vals.map((v) => (v == null ? '' : v >= 1e5 ? v.toExponential(0) : String(v))) }],
    series: [{ label: 'bits' },
      ...ids.map((id) => ({ label: id === 'none' ? 'as loaded' : id.toUpperCase(), ...points(METHOD_COLOURS[id] ?? METHOD_COLOURS.other) })),
      { label: 'Pareto front', stroke: '#b3261e', width: 2, spanGaps: true, points: { show: true, size: 6 } }],
    legend: { show: true },
  }, [xs, ...ids.map((id) => series[id]), fs]);
  plot.over.addEventListener('click', () => {
    const idx = plot.cursor.idx;
    if (idx != null && order[idx] !== undefined) onPick(order[idx]);
  });
}

// m: MemoryReport. Stacked bar of the components as HTML (widths relative to f16).
export function drawMemory(m) {
  const node = document.getElementById('memory-bar');
  const parts = [
    ['codes', m.linear.codes, '#2b5fd9'],
    ['scales/zeros', m.linear.scales + m.linear.zeros, '#7aa0f0'],
    ['outliers', m.linear.outliers, '#e08a1e'],
    ['low-rank', m.linear.lowrank, '#9b59b6'],
    ['untouched tensors', m.other_bytes, '#9aa3b2'],
  ];
  chartData.memory = { components: parts.map(([k, v]) => ({ name: k, bytes: v })), total: m.total_bytes, f16: m.f16_bytes };
  node.replaceChildren();
  const bar = (label, segs, total) => {
    const row = document.createElement('div');
    row.className = 'membar-row';
    const name = document.createElement('span');
    name.className = 'membar-label';
    name.textContent = `${label} ${(total / 1e6).toFixed(1)} MB`;
    const track = document.createElement('div');
    track.className = 'membar-track';
    for (const [k, v, c] of segs) {
      if (v <= 0) continue;
      const s = document.createElement('div');
      s.style.width = `${(100 * v) / m.f16_bytes}%`;
      s.style.background = c;
      s.title = `${k}: ${(v / 1e6).toFixed(2)} MB`;
      track.append(s);
    }
    row.append(name, track);
    node.append(row);
  };
  bar('this model', parts, m.total_bytes);
  bar('all f16', [['f16', m.f16_bytes, '#c8ccd4']], m.f16_bytes);
  const legend = document.createElement('p');
  legend.className = 'hint';
  legend.textContent = parts.filter(([, v]) => v > 0).map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)} MB`).join(' · ');
  node.append(legend);
}

// map: inspect::LayerMap; onPick(layer).
export function drawLayerMap(map, onPick) {
  const node = document.getElementById('layer-map');
  chartData.layers = map;
  node.replaceChildren();
  const maxErr = Math.max(1e-12, ...map.cells.map((c) => c.rel_error));
  const head = document.createElement('div');
  head.className = 'lm-row';
  head.append(Object.assign(document.createElement('span'), { className: 'lm-name', textContent: '' }));
  for (const k of map.kinds) head.append(Object.assign(document.createElement('span'), { className: 'lm-kind', textContent: k.replace('attn_', '').replace('ffn_', '') }));
  node.append(head);
  for (let l = 0; l < map.n_layer; l += 1) {
    const row = document.createElement('div');
    row.className = 'lm-row';
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'lm-name';
    b.textContent = `blk ${l}`;
    b.setAttribute('aria-label', `Layer ${l}: give it its own setting`);
    b.addEventListener('click', () => onPick(l));
    row.append(b);
    for (const c of map.cells.filter((x) => x.layer === l)) {
      const cell = document.createElement('span');
      cell.className = 'lm-cell';
      const t = Math.sqrt(c.rel_error / maxErr); // sqrt: small errors stay visible
      cell.style.background = `rgba(179, 38, 30, ${(0.08 + 0.8 * t).toFixed(3)})`;
      cell.textContent = c.bits_per_weight.toFixed(1);
      cell.title = `${c.name}: ${c.format}, ${c.bits_per_weight.toFixed(2)} bits/weight, relative error ${c.rel_error.toExponential(2)}`;
      row.append(cell);
    }
    node.append(row);
  }
}

// h: inspect::Histogram.
export function drawHistogram(h) {
  const centers = h.edges.slice(0, -1).map((e, i) => (e + h.edges[i + 1]) / 2);
  chartData.histogram = h;
  const bars = uPlot.paths.bars({ size: [1, 100] });
  draw('hist-chart', {
    scales: { x: { time: false }, y: { distr: 3 } }, // log counts: the tails matter
    axes: [{ label: `${h.name}: weight value` }, { label: 'count' }],
    series: [{},
      { label: 'as loaded', stroke: '#2b5fd9', fill: 'rgba(43,95,217,0.25)', paths: bars, points: { show: false } },
      { label: 'quantized', stroke: '#b3261e', fill: 'rgba(179,38,30,0.35)', paths: bars, points: { show: false } }],
  }, [centers, h.loaded.map((c) => c || null), h.quantized.map((c) => c || null)]);
}

// a: inspect::Activations; `site` picks one of a.sites.
export function drawActivations(a, site = 3) {
  const s = a.sites[site] ?? a.sites[0];
  chartData.activations = a;
  const xs = s.mean_abs.map((_, i) => i);
  draw('act-chart', {
    scales: { x: { time: false }, y: { distr: 3 } },
    axes: [{ label: `layer ${a.layer}, ${s.site}: input channel` }, { label: '|x|' }],
    series: [{},
      { label: 'mean |x|', stroke: '#2b5fd9', width: 1, points: { show: false } },
      { label: 'max |x|', stroke: '#e08a1e', width: 1, points: { show: false } }],
  }, [xs, s.mean_abs.map((v) => Math.max(v, 1e-6)), s.max_abs.map((v) => Math.max(v, 1e-6))]);
}

// c: inspect::ChannelMap (CMPQ). The input columns ranked by their activation magnitude a_j
// (largest first): each column's width (lo, lo + 1, or 16 for an f16 column, on a log2 axis so
// all three read), its sparse f16 outliers, and a_j itself on the right-hand axis.
export function drawChannelMap(c) {
  const order = c.act.map((_, j) => j).sort((a, b) => c.act[b] - c.act[a] || a - b);
  chartData.channels = { ...c, order };
  const xs = order.map((_, k) => k);
  const stat = { mean_abs: 'mean |x|', l2: '‖x‖₂', max_abs: 'max |x|' }[c.act_stat] ?? c.act_stat;
  draw('chan-chart', {
    scales: { x: { time: false }, bits: { distr: 3, log: 2, range: [c.lo / 2, 32] }, act: { distr: 3 }, n: { range: [0, null] } },
    axes: [{ label: `${c.name}: input columns, largest ${stat} first` },
      { scale: 'bits', label: 'bits', values: (u, vals) => vals.map((v) => (v == null ? '' : v === 16 ? 'f16' : String(v))) },
      { scale: 'act', side: 1, label: stat, grid: { show: false } }],
    series: [{},
      { label: 'bits', scale: 'bits', stroke: '#2b5fd9', width: 2, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } },
      { label: 'sparse outliers', scale: 'n', stroke: '#e08a1e', width: 0, points: { show: true, size: 3, fill: '#e08a1e' }, paths: () => null },
      { label: stat, scale: 'act', stroke: '#5a6272', width: 1, points: { show: false } }],
  }, [xs, order.map((j) => c.bits[j]), order.map((j) => c.sparse[j] || null), order.map((j) => Math.max(c.act[j], 1e-6))]);
}
