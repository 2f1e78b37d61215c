// Resuming a stopped BinaryMoS lite training (issue 15; docs/binarymos.md "In the page"). The
// session keeps every tensor a run finished training (src/playground/lite.rs, on the CPU and on
// WebGPU), so running the same configuration again trains only the rest and ends with exactly
// the model an uninterrupted run gives. After Stop, the worker's 'cancelled' carries what was
// kept (`liteKept`: {done, total, names}); this module says so in the training panel with a
// Resume button, which runs the same configuration again. The offer goes away when a run of
// another configuration starts or a run completes. Text via textContent only.

const $ = (id) => document.getElementById(id);
let box;
let text;
let button;
let offer = null; // {gen, key, kept}: the stopped run and what it kept
let stoppedGen = null; // the run the training panel's Stop stopped
let resumed = null; // names of the tensors the running resumed run takes from the cache

// `run()` starts a run of the page's current configuration (main.js's Evaluate).
export function initResume(run) {
  box = $('train-resume');
  text = $('train-resume-text');
  button = $('train-resume-button');
  button.addEventListener('click', () => {
    if (offer) run();
  });
}

// The training panel's Stop stopped run `gen`.
export function resumeStopped(gen) {
  stoppedGen = gen;
}

// The worker's 'cancelled' for run `msg.gen`: offer to resume when the panel's Stop stopped it
// and it kept some, not all, of its tensors (`msg.lite`, with the run's configuration `quant`).
export function resumeCancelled(msg) {
  const lite = msg.lite;
  if (msg.gen !== stoppedGen || !lite || !(lite.done >= 1) || lite.done >= lite.total) return;
  offer = { gen: msg.gen, key: JSON.stringify(lite.quant), kept: lite.names };
  text.textContent = `Stopped: ${lite.done} of ${lite.total} tensors trained.`;
  box.dataset.done = String(lite.done);
  box.dataset.total = String(lite.total);
  box.hidden = false;
}

// A run of `quant` starts: the offer goes; a run of the stopped configuration takes its kept
// tensors (which the trace then shows as already trained).
export function resumeOnRun(quant) {
  resumed = offer && offer.key === JSON.stringify(quant) ? new Set(offer.kept) : null;
  withdraw();
}

// Whether the running run took tensor `name` from the stopped run.
export function keptTensor(name) {
  return resumed !== null && resumed.has(name);
}

// The run completed: nothing is left to resume.
export function resumeDone() {
  resumed = null;
  withdraw();
}

function withdraw() {
  offer = null;
  if (box) box.hidden = true;
}
