// The pictures, all drawn with uPlot (npm `uplot`, copied into www/pkg/ by scripts/build-web.sh
// so the page works offline; no chart is drawn by hand). Each chart keeps the data it draws in
// `chartData` (exposed as window.quantlabCharts) so tests can check the numbers rather than
// pixels; window.quantlabPlots holds the uPlot instances themselves.

import uPlot from './pkg/uPlot.esm.js';
import { paretoFront } from './state.js';

export const chartData = { pareto: null, memory: null, layers: null, histogram: null, activations: null, channels: null, alpha: null, tender: null, training: null };
self.quantlabCharts = chartData;

const WIDTH = 520;
const plots = new Map(); // element id -> uPlot
// The uPlot instances by element id, so tests can read the data a chart actually holds.
self.quantlabPlots = plots;

function draw(id, opts, data) {
  const node = document.getElementById(id);
  const old = plots.get(id);
  if (old) old.destroy();
  const width = Math.max(280, Math.min(WIDTH, node.clientWidth || WIDTH));
  const plot = new uPlot({ width, height: 200, ...opts }, data, node);
  plots.set(id, plot);
  describe(node, opts, data);
  return plot;
}

// The text alternative of a chart (issue 19: a screen reader, or anyone, can read what it
// draws): the chart is an image named by its axes and series, and a table of every number it
// draws follows it, folded (built when opened: a channel map draws thousands of points).
const label = (a) => (typeof a?.label === 'string' ? a.label : '');
function describe(node, opts, data) {
  const axes = opts.axes ?? [];
  const names = (opts.series ?? []).slice(1).map(label).filter(Boolean);
  const x = label(axes[0]) || label(opts.series?.[0]) || 'x';
  const y = axes.slice(1).map(label).filter(Boolean).join(', ') || 'value';
  node.setAttribute('role', 'img');
  node.setAttribute('aria-label', `Chart of ${y} against ${x}${names.length ? `: ${names.join(', ')}` : ''}. Its numbers are in the table that follows.`);
  let box = node.nextElementSibling;
  if (!box?.classList.contains('chart-data')) {
    box = document.createElement('details');
    box.className = 'chart-data';
    node.after(box);
  }
  const summary = document.createElement('summary');
  summary.textContent = `The numbers in this chart (${data[0].length} points)`;
  box.replaceChildren(summary);
  const fill = () => {
    if (!box.open || box.querySelector('table')) return;
    const table = document.createElement('table');
    const head = table.createTHead().insertRow();
    for (const h of [x, ...(opts.series ?? []).slice(1).map((sr, k) => label(sr) || `series ${k + 1}`)]) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = h;
      head.append(th);
    }
    const body = table.createTBody();
    const cell = (v) => (v == null ? '—' : typeof v === 'number' ? String(Number(v.toPrecision(6))) : String(v));
    for (let i = 0; i < data[0].length; i += 1) {
      const row = body.insertRow();
      for (const series of data) row.insertCell().textContent = cell(series[i]);
    }
    box.append(table);
  };
  box.ontoggle = fill;
  fill();
}

const points = (stroke) => ({ stroke, width: 0, points: { show: true, size: 8, fill: stroke }, paths: () => null });

// runs: [{bpw, ppl, label, group}]; onPick(index into runs). One series of points per group
// (the method: "RTN", "GPTQ", "GPTQ +LoRC", …), and the Pareto front over all runs as a line.
export function drawPareto(runs, onPick) {
  const pts = runs.map((r) => ({ x: r.bpw, y: r.ppl }));
  const front = new Set(paretoFront(pts));
  const order = runs.map((_, i) => i).sort((a, b) => runs[a].bpw - runs[b].bpw);
  const xs = order.map((i) => runs[i].bpw);
  const ys = order.map((i) => runs[i].ppl);
  const fs = order.map((i) => (front.has(i) ? runs[i].ppl : null));
  const groups = [...new Set(order.map((i) => runs[i].group ?? 'runs'))];
  const byGroup = groups.map((g) => order.map((i) => ((runs[i].group ?? 'runs') === g ? runs[i].ppl : null)));
  // Also by method id ("rtn", "gptq", "cmpq", …) for readers of the data.
  const methods = order.map((i) => runs[i].method ?? 'other');
  const series = Object.fromEntries([...new Set(methods)].map((id) => [id, methods.map((mt, k) => (mt === id ? ys[k] : null))]));
  chartData.pareto = {
    bpw: xs, ppl: ys, front: fs, labels: order.map((i) => runs[i].label), groups: order.map((i) => runs[i].group ?? 'runs'),
    methods, series, ids: order.map((i) => runs[i].id ?? null), hover: null,
    // In the caller's order (the indices onPick gets), for tests and the hover.
    runs: runs.map((r) => ({ bpw: r.bpw, ppl: r.ppl, id: r.id ?? null, label: r.label, detail: r.detail ?? r.label })),
  };
  const plot = draw('pareto-chart', {
    // Perplexity on a log scale: 2-bit RTN and CMPQ's budgets differ by orders of magnitude.
    scales: { x: { time: false }, y: { distr: 3 } },
    // Compact tick labels: 2-bit perplexities reach 1e9 and would not fit the axis.
    axes: [{ label: 'effective bits per weight (linear layers)' },
      { label: 'perplexity', size: 60, values: (u, vals) => vals.map((v) => (v == null ? '' : v >= 1e5 ? v.toExponential(0) : String(v))) }],
    series: [{ label: 'bits' },
      ...groups.map((g, k) => ({ label: g, ...points(PALETTE[k % PALETTE.length]) })),
      { label: 'Pareto front', stroke: '#5a6272', width: 1.5, dash: [4, 3], spanGaps: true, points: { show: false } }],
    legend: { show: true },
  }, [xs, ...byGroup, fs]);
  // Hover names the run nearest the pointer (in pixels, both axes: runs at equal bits no
  // longer hide one another); a click picks that run. uPlot's own cursor only knows x.
  const tip = document.getElementById('pareto-tip');
  const nearest = (e) => {
    const box = plot.over.getBoundingClientRect();
    const x = e.clientX - box.left;
    const y = e.clientY - box.top;
    let best = null;
    let bd = NEAR_PX * NEAR_PX;
    runs.forEach((r, i) => {
      const d = (plot.valToPos(r.bpw, 'x') - x) ** 2 + (plot.valToPos(r.ppl, 'y') - y) ** 2;
      if (d <= bd) {
        bd = d;
        best = i;
      }
    });
    return best;
  };
  plot.over.addEventListener('mousemove', (e) => {
    const i = nearest(e);
    chartData.pareto.hover = i == null ? null : runs[i].detail ?? runs[i].label;
    if (!tip) return;
    tip.hidden = i == null;
    tip.textContent = i == null ? '' : chartData.pareto.hover;
    tip.dataset.run = i == null ? '' : String(runs[i].id ?? '');
  });
  plot.over.addEventListener('mouseleave', () => {
    chartData.pareto.hover = null;
    if (tip) tip.hidden = true;
  });
  plot.over.addEventListener('click', (e) => {
    const i = nearest(e);
    if (i != null) onPick(i);
  });
}

// How near (pixels) the pointer must be to a point to name or pick it.
const NEAR_PX = 14;

// Where run `i` of the Pareto chart is on the page (tests point at it as a user would).
export function paretoPointOnPage(i) {
  const plot = plots.get('pareto-chart');
  const r = chartData.pareto?.runs?.[i];
  if (!plot || !r) return null;
  const box = plot.over.getBoundingClientRect();
  return { x: box.left + plot.valToPos(r.bpw, 'x'), y: box.top + plot.valToPos(r.ppl, 'y') };
}
self.quantlabParetoPoint = paretoPointOnPage;

// Colours: one per method in the Pareto chart, one per tensor kind in the layer map.
const PALETTE = ['#2b5fd9', '#b3261e', '#1e8a4c', '#e08a1e', '#9b59b6', '#0b8fa3', '#7a5c2e', '#d14f9a'];
const mbText = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

// m: MemoryReport. Two stacked bars in MB: this model by component, and the same model in f16.
// uPlot has no stacking of its own: series k holds the sum of components 0..k and each bar fills
// from zero, so the series are drawn from the top of the stack down (the legend reads the same
// way) and each lower one paints over the part of the bar below it.
export function drawMemory(m) {
  const parts = [
    ['codes', m.linear.codes, '#2b5fd9'],
    ['scales/zeros', m.linear.scales + m.linear.zeros, '#7aa0f0'],
    ['outliers', m.linear.outliers, '#e08a1e'],
    ['low-rank', m.linear.lowrank, '#9b59b6'],
    ['untouched tensors', m.other_bytes, '#9aa3b2'],
  ];
  const bars = ['this model', 'all f16'];
  // stacks[k][bar]: bytes of components 0..k; the f16 bar is one component (its own series).
  let sum = 0;
  const stacks = parts.map(([, v]) => {
    sum += v;
    return [sum, null];
  });
  const f16 = [null, m.f16_bytes];
  chartData.memory = {
    components: parts.map(([k, v]) => ({ name: k, bytes: v })), total: m.total_bytes, f16: m.f16_bytes, bars, stacks, f16Bar: f16,
  };
  const barPaths = uPlot.paths.bars({ size: [0.55, 90] });
  const series = [{ label: 'model' }];
  const data = [[0, 1]];
  // Top of the stack first.
  for (let k = parts.length - 1; k >= 0; k -= 1) {
    const [name, bytes, colour] = parts[k];
    if (bytes <= 0) continue;
    series.push({ label: `${name} ${mbText(bytes)}`, fill: colour, stroke: colour, width: 0, paths: barPaths, points: { show: false } });
    data.push(stacks[k].map((v) => (v == null ? null : v / 1e6)));
  }
  series.push({ label: `f16 ${mbText(m.f16_bytes)}`, fill: '#c8ccd4', stroke: '#c8ccd4', width: 0, paths: barPaths, points: { show: false } });
  data.push(f16.map((v) => (v == null ? null : v / 1e6)));
  draw('memory-bar', {
    height: 170,
    scales: { x: { time: false, range: [-0.5, 1.5] }, y: { range: (u, min, max) => [0, max * 1.05] } },
    axes: [{ splits: () => [0, 1], values: (u, splits) => splits.map((i) => bars[i] ?? '') }, { label: 'MB' }],
    series,
    legend: { show: true, live: false },
    cursor: { show: false },
  }, data);
}

// map: inspect::LayerMap; onPick(layer). Two charts over the layers with one cursor: the relative
// error ‖W−Ŵ‖²/‖W‖² of each tensor kind (log scale), and its bits per weight. Clicking a layer in
// either picks it for a per-layer setting.
export function drawLayerMap(map, onPick) {
  chartData.layers = map;
  const layers = Array.from({ length: map.n_layer }, (_, l) => l);
  const grid = (field) => map.kinds.map((_, k) => layers.map((l) => {
    const c = map.cells.find((x) => x.layer === l && x.kind === k);
    // A tensor kept as loaded has no error: nothing to draw on a log scale.
    return c && (field !== 'rel_error' || c.rel_error > 0) ? c[field] : null;
  }));
  const kindSeries = (fmt) => map.kinds.map((k, i) => ({
    label: k, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: true, size: 4 }, value: (u, v) => (v == null ? '—' : fmt(v)),
  }));
  const sync = { key: 'layer-map', setSeries: true };
  const x = { label: 'layer', values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? `${v}` : '')) };
  const logRange = (u, min, max) => (min == null || !(min > 0) ? [1e-6, 1] : uPlot.rangeLog(min, max, 10, true));
  const err = draw('layer-err-chart', {
    height: 170,
    scales: { x: { time: false }, y: { distr: 3, range: logRange } },
    // uPlot's default tick labels print 1e-6 as "0".
    axes: [{ ...x, label: null }, { label: 'relative error', size: 60, values: (u, splits) => splits.map((v) => (v == null ? '' : v.toExponential(0))) }],
    series: [{ label: 'layer' }, ...kindSeries((v) => v.toExponential(2))],
    // One legend, under the second chart.
    legend: { show: false },
    cursor: { sync },
  }, [layers, ...grid('rel_error')]);
  const bits = draw('layer-bits-chart', {
    height: 190,
    scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(8, Math.ceil(max ?? 0))] } },
    axes: [x, { label: 'bits per weight', size: 60 }],
    series: [{ label: 'layer' }, ...kindSeries((v) => v.toFixed(2))],
    cursor: { sync },
  }, [layers, ...grid('bits_per_weight')]);
  for (const plot of [err, bits]) {
    plot.over.style.cursor = 'pointer';
    plot.over.title = 'Click a layer to give it its own setting';
    plot.over.addEventListener('click', () => {
      const idx = plot.cursor.idx;
      if (idx != null && layers[idx] !== undefined) onPick(layers[idx]);
    });
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
      { label: 'quantized', stroke: '#b3261e', fill: 'rgba(179,38,30,0.35)', paths: bars, points: { show: false } },
      // The Row field's row alone on the same bins: its weights and the levels they round to.
      { label: `row ${h.row} as loaded`, stroke: '#1b7f4a', width: 2, points: { show: false } },
      { label: `row ${h.row} quantized`, stroke: '#7a2fb3', fill: 'rgba(122,47,179,0.5)', paths: bars, points: { show: false } }],
  }, [centers, ...[h.loaded, h.quantized, h.row_loaded, h.row_quantized].map((s) => s.map((c) => c || null))]);
}

// a: inspect::Activations; `site` picks one of a.sites.
export function drawActivations(a, site = a.sites.length - 1) {
  const s = a.sites[site] ?? a.sites[0];
  chartData.activations = a;
  const xs = s.mean_abs.map((_, i) => i);
  // Under a scale transform, max|x_j|/s_j (what the activation quantizer sees) beside max|x_j|.
  const smoothed = Array.isArray(s.smoothed_max_abs) && s.smoothed_max_abs.length === xs.length;
  const series = [{},
    { label: 'mean |x|', stroke: '#2b5fd9', width: 1, points: { show: false } },
    { label: 'max |x|', stroke: '#e08a1e', width: 1, points: { show: false } }];
  const data = [xs, s.mean_abs.map((v) => Math.max(v, 1e-6)), s.max_abs.map((v) => Math.max(v, 1e-6))];
  if (smoothed) {
    const alpha = s.alpha != null ? ` (α ${Number(s.alpha).toFixed(2)})` : '';
    series.push({ label: `max |x|/s smoothed${alpha}`, stroke: '#2a9d5c', width: 1, points: { show: false } });
    data.push(s.smoothed_max_abs.map((v) => Math.max(v, 1e-6)));
  }
  draw('act-chart', {
    scales: { x: { time: false }, y: { distr: 3 } },
    axes: [{ label: `layer ${a.layer}, ${s.site}: input channel` }, { label: '|x|' }],
    series,
  }, data);
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

// The scale transforms' α (QuantConfig::smooth; Session::smooth_report): `current` is the newest
// run's {label, method, alpha[layer][site]} (null where a site was left unscaled), drawn as one
// line per site; `runs` the runs kept so far, drawn at site `site` as one line per run label,
// so SmoothQuant, AWQ and AQAS read side by side. α lies in 0..1.
export function drawAlpha(current, runs, sites, site) {
  const layers = current.alpha.map((_, l) => l);
  const perSite = sites.map((_, k) => current.alpha.map((row) => row[k] ?? null));
  const n = Math.max(...runs.map((r) => r.alpha.length), layers.length);
  const xs = Array.from({ length: n }, (_, l) => l);
  const perRun = runs.map((r) => xs.map((l) => r.alpha[l]?.[site] ?? null));
  chartData.alpha = {
    label: current.label, method: current.method, sites, alpha: current.alpha, site,
    runs: runs.map((r, i) => ({ label: r.label, method: r.method, alpha: perRun[i] })),
  };
  const x = { label: 'layer', values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? `${v}` : '')) };
  const y = { range: [0, 1] };
  const line = (label, i) => ({
    label, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: true, size: 5 }, value: (u, v) => (v == null ? '—' : v.toFixed(2)),
  });
  draw('alpha-chart', {
    height: 180,
    scales: { x: { time: false }, y },
    axes: [x, { label: `α (${current.method})`, size: 50 }],
    series: [{ label: 'layer' }, ...sites.map(line)],
  }, [layers, ...perSite]);
  draw('alpha-runs-chart', {
    height: 180,
    scales: { x: { time: false }, y },
    axes: [x, { label: `α at ${sites[site] ?? site}`, size: 50 }],
    series: [{ label: 'layer' }, ...runs.map((r, i) => line(r.label, i))],
  }, [xs, ...perRun]);
}

// v: tender_view::TenderView (Tender, arXiv 2406.12930). One site's channels ranked by their
// largest deviation from the chunk's bias, a_j = max|x − β| (largest first, log scale), one
// series of points per group (its colour), and the thresholds θ_i = tmax / 2^(k−1−i) as
// horizontal dashed lines: under rounding up, each group's points lie between its θ and the
// next smaller one.
export function drawTender(v) {
  const c = v.channels;
  chartData.tender = v;
  const xs = c.deviation.map((_, k) => k);
  const k = c.thresholds.length;
  const floor = c.tmax > 0 ? c.tmax * 2 ** -(k + 2) : 1e-6;
  const colour = (i) => PALETTE[i % PALETTE.length];
  const groups = Array.from({ length: k }, (_, i) => i).filter((i) => c.group_sizes[i] > 0);
  const series = [{ label: 'channel rank' },
    ...groups.map((i) => ({ label: `group ${i} (${c.group_sizes[i]})`, ...points(colour(i)), points: { show: true, size: 4, fill: colour(i) } })),
    ...c.thresholds.map((_, i) => ({ label: `θ${i}`, stroke: colour(i), width: 1, dash: [4, 3], points: { show: false } }))];
  const data = [xs,
    ...groups.map((i) => c.deviation.map((a, n) => (c.group[n] === i ? Math.max(a, floor) : null))),
    ...c.thresholds.map((t) => xs.map(() => Math.max(t, floor)))];
  draw('tender-chart', {
    height: 240,
    scales: { x: { time: false }, y: { distr: 3 } },
    axes: [{ label: `layer ${c.layer}, ${c.site_name}: channels, largest |x − β| first` },
      { label: 'max |x − β|', size: 60, values: (u, vals) => vals.map((x) => (x == null ? '' : x.toExponential(0))) }],
    series,
    legend: { show: true, live: false },
  }, data);
}

// t: {current: {name, steps, rel}, tensors: [{name, ratio}]} (BinaryMoS lite training, from the
// worker's 'training' messages). Left: the tensor in training, its loss relative to step 0 against
// the step. Right: every finished tensor's final ratio (log scale: 1 is where SVID started).
export function drawTraining(t) {
  chartData.training = t;
  const c = t.current;
  if (c && c.steps.length) {
    draw('train-chart', {
      height: 160,
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: 'step' }, { label: 'loss / start', size: 55 }],
      series: [{ label: 'step' }, { label: c.name, stroke: PALETTE[0], width: 1.5 }],
    }, [c.steps, c.rel]);
  }
  if (t.tensors.length) {
    draw('train-tensors-chart', {
      height: 160,
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: 'tensor (in order)' }, { label: 'final / start', size: 55 }],
      series: [{ label: 'tensor' }, { ...points(PALETTE[1]), label: 'final / start', value: (u, v) => (v == null ? '—' : v.toFixed(3)) }],
    }, [t.tensors.map((_, i) => i), t.tensors.map((x) => x.ratio)]);
  }
}
