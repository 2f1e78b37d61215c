// The pictures, drawn with uPlot (npm `uplot`, copied into www/pkg/ by scripts/build-web.sh so
// the page works offline). Each chart keeps the data it draws in `chartData` (exposed as
// window.quantlabCharts) so tests can check the numbers rather than pixels.

import uPlot from './pkg/uPlot.esm.js';
import { paretoFront } from './state.js';

export const chartData = { pareto: null, memory: null, layers: null, histogram: null, activations: null };
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

// runs: [{bpw, ppl, label}]; onPick(index into runs).
export function drawPareto(runs, onPick) {
  const pts = runs.map((r) => ({ x: r.bpw, y: r.ppl }));
  const front = new Set(paretoFront(pts));
  const order = runs.map((_, i) => i).sort((a, b) => runs[a].bpw - runs[b].bpw);
  const xs = order.map((i) => runs[i].bpw);
  const ys = order.map((i) => runs[i].ppl);
  const fs = order.map((i) => (front.has(i) ? runs[i].ppl : null));
  chartData.pareto = { bpw: xs, ppl: ys, front: fs, labels: order.map((i) => runs[i].label) };
  const plot = draw('pareto-chart', {
    scales: { x: { time: false } },
    axes: [{ label: 'effective bits per weight (linear layers)' }, { label: 'perplexity' }],
    series: [{ label: 'bits' },
      { label: 'configuration', ...points('#2b5fd9') },
      { label: 'Pareto front', stroke: '#b3261e', width: 2, spanGaps: true, points: { show: true, size: 6 } }],
    legend: { show: true },
  }, [xs, ys, fs]);
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
