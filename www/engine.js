// The page's side of issue 17, items 4 and 5: the engine's choice as the worker made it, the
// first perplexity as soon as one window is scored (labelled with how many windows and tokens it
// covers, refined as the others finish), and the start-up timings behind the "first experience"
// number (tests/browser/first-experience.mjs prints them; docs/playground.md has the table).
// Plain DOM and data; text from the worker is only set as textContent.

// Start-up moments in ms since the page's navigation (performance.now() of this page): the
// worker's marks ('wasm-ready', 'engine-chosen', 'model-fetched', the load's steps
// 'parse-container', 'parse-tokenizer', 'parse-weights', 'parse-engine' and 'model-hashed',
// then 'model-parsed', 'eval-start', 'first-report', 'first-window') and the page's own ('first-number', 'first-result'). The first
// of each name is kept: later runs do not move them.
self.quantlabTimings = self.quantlabTimings ?? {};

export function markTiming(name, at = performance.now()) {
  if (!(name in self.quantlabTimings)) self.quantlabTimings[name] = at;
}

// A 'timing' message from the worker: its wall-clock ms, made relative to this page.
export function onTiming(msg) {
  if (typeof msg.name === 'string' && Number.isFinite(msg.at)) markTiming(msg.name, msg.at - performance.timeOrigin);
}

// The 'engine' message: how the choice was made ('asked', 'unavailable', 'software', 'probe'),
// kept on the note for tests and styles; the note's words are the worker's.
export function showEngineChoice(note, msg) {
  if (msg.how) note.dataset.how = msg.how;
  else delete note.dataset.how;
}

// The 'loaded' message's model card: its identity (file name, kind, bytes and SHA-256, which the
// worker had crypto.subtle compute beside the parse) kept for the tests.
export function noteLoaded(info) {
  self.quantlabModelIdentity = info?.identity ?? null;
}

const fmt = (v) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(3) : '—');

// A progress report of run `run` ({id}): once a window is scored (in_flight 0), its perplexity so
// far goes on the result panel with what it covers. Never passed off as the final number: the
// line names the windows and tokens, and the big number waits for the whole run.
export function showSoFar(line, run, p) {
  if (!run || p.in_flight !== 0 || !(p.window >= 1) || p.window >= p.windows) return;
  line.hidden = false;
  delete line.dataset.preview;
  line.dataset.value = String(p.ppl);
  line.dataset.windows = String(p.window);
  line.dataset.of = String(p.windows);
  line.dataset.run = String(run.id);
  line.dataset.final = 'false';
  line.textContent = `Run #${run.id} so far: perplexity ${fmt(p.ppl)} ± ${fmt(p.ppl_err)} after ${p.window} of ${p.windows} windows `
    + `(${p.tokens_scored} tokens scored); refined as the other windows finish.`;
  noteNumber({ ppl: p.ppl, ctx: run.options?.ctx ?? null, window: p.window, windows: p.windows, tokens_scored: p.tokens_scored });
}

// Every number the line showed, in order, and the first of them (`quantlabFirstNumber`), for the
// tests and first-experience.mjs: what it covered ({ppl, ctx, window, windows, tokens_scored,
// preview}), and when the first came.
self.quantlabNumbers = self.quantlabNumbers ?? [];
function noteNumber(n) {
  self.quantlabNumbers.push(n);
  if (!self.quantlabFirstNumber) self.quantlabFirstNumber = n;
  markTiming('first-number');
}

// The worker's first look at run `run` (worker.js, PREVIEW_CTX): the result `r` of one short
// window before the run's own, labelled with its context and the command that computes the same
// number, and replaced by the run's first window.
export function showPreview(line, run, r) {
  line.hidden = false;
  line.dataset.value = String(r.ppl);
  line.dataset.windows = '0';
  line.dataset.of = String(run.options?.max_windows ?? '');
  line.dataset.run = String(run.id);
  line.dataset.final = 'false';
  line.dataset.preview = String(r.ctx);
  const proto = run.options?.protocol && run.options.protocol !== 'llamacpp' ? ` --protocol ${run.options.protocol}` : '';
  line.textContent = `Run #${run.id}, first look: perplexity ${fmt(r.ppl)} ± ${fmt(r.ppl_err)} with a context of ${r.ctx} tokens `
    + `(the text's first window of ${r.ctx}, ${r.tokens_scored} tokens scored: quantlab eval${proto} --ctx ${r.ctx} --windows 1); `
    + `the run's windows of ${run.options?.ctx} tokens follow and replace it.`;
  noteNumber({ ppl: r.ppl, ctx: r.ctx, window: 1, windows: 1, tokens_scored: r.tokens_scored, preview: true });
}

// Run `run` was stopped or failed: its "so far" line goes (the panel says what was kept).
export function endSoFar(line, run) {
  if (line.dataset.run === String(run.id) && line.dataset.final !== 'true') line.hidden = true;
}

// Run `run`'s whole result arrived: the line says the big number is final (or hides, when the
// run had one window and nothing was shown before it).
export function showFinal(line, run, result) {
  if (!self.quantlabFirstNumber) {
    noteNumber({ ppl: result.ppl, ctx: result.ctx, window: result.windows, windows: result.windows, tokens_scored: result.tokens_scored });
  }
  markTiming('first-result');
  if (line.hidden || line.dataset.run !== String(run.id)) {
    line.hidden = true;
    return;
  }
  line.dataset.final = 'true';
  line.textContent = `Run #${run.id}: all ${result.windows} windows scored (${result.tokens_scored} tokens); the perplexity above is final.`;
}
