// The page tells the truth at every moment (issue 20), the parts that live outside main.js:
//  - a page going away stops its worker, so a WebGPU run does not keep the browser's GPU process
//    busy for the next tab (work already submitted is at most a few paced pieces, gpu/pace.rs);
//  - a finished run's seconds split into parts that add up to the total said beside them;
//  - a stopped generation keeps each pane's text so far, labelled as stopped.

// Terminate `worker` when the page is hidden for good (closed, reloaded, navigated away).
// A page kept in the back/forward cache comes back with its worker gone: reload it then.
export function stopWorkerOnLeave(worker) {
  addEventListener('pagehide', () => {
    worker.terminate();
    self.quantlabWorkerStopped = true;
  });
  addEventListener('pageshow', (e) => {
    if (e.persisted) location.reload();
  });
}

// The parts of a run's `total` seconds: [label, seconds] for calibration, quantization and
// evaluation as the worker measured them, and what is left (loading, queueing, messages) as
// "other", so that the parts said on screen add up to the total said beside them.
export function runParts(total, { calib = null, quant = null, evaluation }) {
  const parts = [['calibration', calib], ['quantization', quant], ['evaluation', evaluation]]
    .filter(([, s]) => typeof s === 'number');
  const rest = total - parts.reduce((a, [, s]) => a + s, 0);
  // Shown to 0.1 s: a remainder that rounds to 0.0 would only add noise.
  if (rest >= 0.05) parts.push(['other', rest]);
  return parts;
}

// Stop pressed while generating: each pane keeps what it had, its heading says whether it
// finished (a 'gen-done' set data-tokens) or stopped part way, and the status says it too.
export function markGenerationStopped(panes, status) {
  const said = [];
  for (const { pane, head, name } of panes) {
    const finished = pane.dataset.tokens !== undefined;
    const started = pane.textContent.length > 0;
    pane.dataset.stopped = String(!finished);
    if (!finished) {
      head.dataset.base ??= head.textContent;
      head.textContent = `${head.dataset.base} — stopped${started ? ' part way (text so far)' : ' before it began'}`;
    }
    said.push(`${name} ${finished ? 'finished' : started ? 'stopped part way (its text so far is kept)' : 'had not begun'}`);
  }
  status.textContent = `Stopped: ${said.join('; ')}.`;
}

// A number control's value at its schema step's precision (src/playground/schema.rs `Field`):
// damping 0.01 with step 0.001 reads "0.010", never 0.009999999776 (an f32 seen as f64) or
// 0.0099999 typed by hand. The page reads the control back, so what it shows is what it sends.
export function atStep(value, step) {
  if (value === '' || value == null) return '';
  const places = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const v = Number(value);
  return Number.isFinite(v) ? v.toFixed(places) : String(value);
}
