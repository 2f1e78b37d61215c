// A/B comparison (issue 19, item 3): pin the run on screen as A, change the configuration, and
// the run on screen becomes B; the two side by side: perplexity, KL, top-1, bits and memory, the
// per-layer error difference (from the layer map each run keeps), and the quantized model's
// generated text at pin time and now, split into its tokens, the tokens that differ at the same
// position marked. Plain DOM built with textContent; the runs are main.js's records, read here
// and never changed.

let a = null; // {rec, gen}: the pinned run and the generation on screen when it was pinned
let b = null; // the run on screen
const el = {};

// The finished generation of the current quantization: its token ids and each token's text
// (main.js keeps both on #gen-quant when the worker's generation ends; the pieces join to the
// text). Null while none has finished: a streaming text is not compared.
function genTokens() {
  const d = el.gen?.dataset;
  if (!d?.tokens || !d.pieces) return null;
  const ids = JSON.parse(d.tokens);
  const pieces = JSON.parse(d.pieces);
  return ids.length === pieces.length ? { ids, pieces } : null;
}

export function initAB() {
  for (const id of ['ab-pin', 'ab-clear', 'ab-table', 'ab-layers', 'ab-text-a', 'ab-text-b', 'ab-note']) el[id] = document.getElementById(id);
  el.gen = document.getElementById('gen-quant');
  el['ab-pin'].addEventListener('click', () => {
    if (!b) return;
    a = { rec: b, gen: genTokens() };
    render();
  });
  el['ab-clear'].addEventListener('click', () => {
    a = null;
    render();
  });
  // A new generation redraws B's text.
  new MutationObserver(() => render()).observe(el.gen, {
    childList: true, characterData: true, subtree: true, attributes: true, attributeFilter: ['data-pieces'],
  });
  render();
}

// The run on screen (main.js calls this when it shows a run and when its layer map arrives).
export function abShow(rec) {
  b = rec;
  render();
}

const num = (v, d) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '—');

function metrics(rec) {
  const r = rec.result ?? {};
  const m = rec.memory ?? {};
  return {
    ppl: r.ppl, kl: r.kl ?? null, top1: r.top1 ?? null, bpw: m.bits_per_weight, mib: typeof m.total_bytes === 'number' ? m.total_bytes / 2 ** 20 : null,
  };
}

const ROWS = [
  ['perplexity', 'ppl', 3], ['KL to the loaded model', 'kl', 5], ['top-1 agreement', 'top1', 4],
  ['bits per weight (linear layers)', 'bpw', 3], ['model memory (MiB)', 'mib', 2],
];

// Mean relative error ‖W − Ŵ‖²/‖W‖² of each layer's linears, from the run's layer map.
function layerErrors(rec) {
  const cells = rec?.layers?.cells;
  if (!Array.isArray(cells)) return null;
  const sum = new Map();
  for (const c of cells) {
    const s = sum.get(c.layer) ?? [0, 0];
    sum.set(c.layer, [s[0] + c.rel_error, s[1] + 1]);
  }
  return [...sum.entries()].sort((x, y) => x[0] - y[0]).map(([layer, [t, n]]) => ({ layer, err: t / n }));
}

function cell(tag, text, cls) {
  const c = document.createElement(tag);
  c.textContent = text;
  if (cls) c.className = cls;
  return c;
}

// `mine`'s tokens as spans (one per token, its id in data-token), those whose id differs from
// `other`'s token at the same position (or that `other` does not reach) marked. Compared by id,
// not by text: a text without spaces (a tiny model's) still shows where the two parted.
function marked(mine, other) {
  if (!mine) return [];
  return mine.pieces.map((p, i) => {
    const same = other && mine.ids[i] === other.ids[i];
    const s = cell('span', p, same ? '' : 'ab-diff');
    s.dataset.token = String(mine.ids[i]);
    if (!same) s.dataset.diff = '1';
    return s;
  });
}

function render() {
  if (!el['ab-table']) return;
  el['ab-clear'].disabled = !a;
  el['ab-pin'].disabled = !b;
  if (!a || !b) {
    el['ab-table'].replaceChildren();
    el['ab-layers'].replaceChildren();
    el['ab-text-a'].replaceChildren();
    el['ab-text-b'].replaceChildren();
    el['ab-note'].textContent = b ? 'Pin the run on screen as A, then change the configuration: the new run is B.' : '';
    return;
  }
  el['ab-note'].textContent = `A: run #${a.rec.id} (${a.rec.label}); B: run #${b.id} (${b.label}).`;
  const ma = metrics(a.rec);
  const mb = metrics(b);
  const head = document.createElement('tr');
  head.append(cell('th', ''), cell('th', 'A'), cell('th', 'B'), cell('th', 'B − A'));
  const rows = ROWS.map(([name, key, d]) => {
    const tr = document.createElement('tr');
    tr.dataset.key = key;
    const diff = typeof ma[key] === 'number' && typeof mb[key] === 'number' ? mb[key] - ma[key] : null;
    tr.append(cell('th', name), cell('td', num(ma[key], d)), cell('td', num(mb[key], d)), cell('td', diff == null ? '—' : `${diff >= 0 ? '+' : ''}${diff.toFixed(d)}`));
    tr.dataset.a = String(ma[key]);
    tr.dataset.b = String(mb[key]);
    return tr;
  });
  el['ab-table'].replaceChildren(head, ...rows);
  const la = layerErrors(a.rec);
  const lb = layerErrors(b);
  if (la && lb && la.length === lb.length) {
    const lh = document.createElement('tr');
    lh.append(cell('th', 'layer'), cell('th', 'A error'), cell('th', 'B error'), cell('th', 'B − A'));
    el['ab-layers'].replaceChildren(lh, ...la.map((x, i) => {
      const tr = document.createElement('tr');
      const d = lb[i].err - x.err;
      tr.dataset.layer = String(x.layer);
      tr.dataset.diff = String(d);
      tr.append(cell('td', String(x.layer)), cell('td', x.err.toExponential(2)), cell('td', lb[i].err.toExponential(2)),
        cell('td', `${d >= 0 ? '+' : ''}${d.toExponential(2)}`, d > 0 ? 'ab-worse' : d < 0 ? 'ab-better' : ''));
      return tr;
    }));
  } else {
    el['ab-layers'].replaceChildren(cell('caption', 'The per-layer errors appear when both runs have their layer map.'));
  }
  const gb = genTokens();
  el['ab-text-a'].replaceChildren(...marked(a.gen, gb));
  el['ab-text-b'].replaceChildren(...marked(gb, a.gen));
}
