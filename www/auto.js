// Automatic per-layer allocation on the page (docs/auto.md): what the worker's `auto` report
// says after a run — the formats chosen per linear and each linear's measured sensitivity — and
// the comparison preset against CMPQ and uniform RTN at equal effective bits. The budget itself
// is the bits slider (a "budget" field of the schema), as for CMPQ; the session caches the
// measurement, so moving the slider only solves the knapsack again and re-quantizes.
//
// Everything shown comes from the report as text (textContent only).

const $ = (id) => document.getElementById(id);

// A short label of an auto config, for the history and the Pareto chart.
export function autoLabel(o) {
  const kind = o.error === 'relative' ? ', relative error' : '';
  const verify = o.verify > 0 ? `, verified on ${o.verify}` : '';
  return `Auto ${Number(o.budget).toFixed(2)} bits [${o.candidates}]${kind}${verify}`;
}

function cell(row, text, title) {
  const td = document.createElement('td');
  td.textContent = text;
  if (title) td.title = title;
  row.append(td);
  return td;
}

// The knapsack's choice against the uniform candidates on the calibration text (the report's
// `verification`, src/quant/auto/verify.rs): which one was kept, and every contender's NLL.
function showVerification(v) {
  const p = $('auto-verify');
  if (!p) return;
  p.hidden = !v;
  if (!v) return;
  const kept = v.contenders[v.winner];
  const scores = v.contenders.map((c) => `${c.name} (${c.bits_per_weight.toFixed(3)} bits) `
    + `${c.nll === null ? 'not finite' : c.nll.toFixed(4)}`).join('; ');
  p.textContent = `Kept ${kept.name}: lowest mean NLL on ${v.tokens} calibration tokens `
    + `(${v.sequences} sequences, ${v.seconds.toFixed(2)} s). ${scores}.`;
  p.dataset.kept = kept.name;
}

// Show the report of the current run, or hide the panel (report null: not an auto config).
export function showAuto(report) {
  const box = $('auto-box');
  if (!box) return;
  box.hidden = !report;
  if (!report) return;
  const counts = new Map();
  for (const l of report.layers) counts.set(l.format, (counts.get(l.format) ?? 0) + 1);
  const mix = [...counts].map(([f, n]) => `${f} ×${n}`).join(', ');
  const summary = $('auto-summary');
  summary.textContent = `${report.bits_per_weight.toFixed(4)} effective bits for a budget of ${report.budget} `
    + `(${report.min_bits.toFixed(2)}–${report.max_bits.toFixed(2)} possible): ${mix}. `
    + `Predicted ${report.error_kind} error ${report.predicted_error.toExponential(3)}`
    + `${report.optimal ? ' (optimal choice)' : ` (search stopped at its node limit; none is below ${report.lower_bound.toExponential(3)})`}; `
    + `measurement ${report.measure_seconds.toFixed(2)} s${report.measure_cached ? ' (cached)' : ''}, `
    + `choice ${(1000 * report.choose_seconds).toFixed(1)} ms.`;
  summary.dataset.bits = String(report.bits_per_weight);
  summary.dataset.cached = String(report.measure_cached);
  showVerification(report.verification);
  // One row per linear: its chosen format, then the predicted error of every candidate, the
  // chosen one marked. Errors span decades, so they are written in exponent form.
  const head = $('auto-head');
  head.replaceChildren();
  const hr = document.createElement('tr');
  for (const h of ['tensor', 'format', 'bits', ...report.candidates]) {
    const th = document.createElement('th');
    th.textContent = h;
    hr.append(th);
  }
  head.append(hr);
  const body = $('auto-table');
  body.replaceChildren();
  for (const l of report.layers) {
    const tr = document.createElement('tr');
    tr.dataset.format = l.format;
    cell(tr, l.name);
    cell(tr, l.format);
    cell(tr, l.bits_per_weight.toFixed(3));
    l.sensitivity.forEach((s, i) => {
      const td = cell(tr, s == null ? '—' : s.toExponential(2), s == null ? 'does not fit this tensor' : undefined);
      if (report.candidates[i] === l.format) td.className = 'chosen';
    });
    body.append(tr);
  }
}

// The comparison preset: auto at 2.5, 3.0, 3.5 and 4.25 bits, CMPQ at the budgets its slider
// has (2.5, 3.0, 3.5), and uniform RTN formats of the same effective bits (int2 g32 = 2.5,
// int2 g16 = 3.0, int3 g32 = 3.5, int4 g64 = 4.25; symmetric, an f16 scale per group). Each run
// lands in the Pareto chart in its method's series; calibration is computed once and reused.
export const AUTO_CURVE_BUDGETS = [2.5, 3.0, 3.5, 4.25];
const CMPQ_BUDGETS = [2.5, 3.0, 3.5];
const UNIFORM = [[2, 'g32'], [2, 'g16'], [3, 'g32'], [4, 'g64']];

// `page` gives what the steps set: {schema, el, syncMethodControls}.
export function autoCurveConfigs(page) {
  const { schema, el, syncMethodControls } = page;
  const auto = schema?.methods.find((m) => m.id === 'auto');
  const cmpq = schema?.methods.find((m) => m.id === 'cmpq');
  if (!auto) return [];
  const steps = AUTO_CURVE_BUDGETS.map((budget) => ({
    apply: () => {
      el.method.value = 'auto';
      syncMethodControls({ ...auto.defaults, budget });
    },
  }));
  if (cmpq) {
    for (const budget of CMPQ_BUDGETS) {
      steps.push({
        apply: () => {
          el.method.value = 'cmpq';
          syncMethodControls({ ...cmpq.defaults, budget });
        },
      });
    }
  }
  const has = (g) => [...el.gran.options].some((o) => o.value === g);
  for (const [bits, gran] of UNIFORM.filter(([, g]) => has(g))) {
    steps.push({
      apply: () => {
        el.method.value = 'rtn';
        syncMethodControls();
        el.bits.value = String(bits);
        el.gran.value = gran;
        el.sym.checked = true;
        el.clip.checked = false;
        syncMethodControls();
      },
    });
  }
  return steps;
}
