// The weight products' precision (issue 17 item 3): a choice that appears only where the engine
// can run f16 — WebGPU with the `shader-f16` feature (shaders/matmul_f16.wgsl) — and stays f32,
// the exact reference, until the user picks f16. The worker says what it accepts ('precisions',
// after the engine is chosen, and again after a lost device is recovered, when the new device
// starts at f32) and confirms each choice ('precision'). Plain DOM; the worker's words are only
// set as textContent.

const LABELS = { f32: 'f32 (exact reference)', f16: 'f16 (shader-f16: half the memory traffic, f32 sums)' };

// The engine note gets `data-precisions` (e.g. "f32" or "f32 f16") so that tests and styles see
// what was offered; the choice itself is a <select id="precision"> after the note, present only
// when there is more than f32. `send(value)` posts the choice to the worker.
export function showPrecisions(note, list, send) {
  const offered = Array.isArray(list) ? list.filter((p) => p in LABELS) : ['f32'];
  note.dataset.precisions = offered.join(' ');
  document.getElementById('precision-choice')?.remove();
  if (!offered.includes('f16')) return;
  const p = document.createElement('p');
  p.id = 'precision-choice';
  p.className = 'note';
  const label = document.createElement('label');
  label.textContent = 'Weight products in ';
  const select = document.createElement('select');
  select.id = 'precision';
  select.dataset.testid = 'precision';
  for (const v of offered) {
    const o = document.createElement('option');
    o.value = v;
    o.textContent = LABELS[v];
    select.append(o);
  }
  select.value = 'f32';
  select.dataset.state = 'f32';
  select.addEventListener('change', () => {
    select.dataset.state = 'pending';
    send(select.value);
  });
  const status = document.createElement('span');
  status.id = 'precision-status';
  label.append(select);
  p.append(label, ' ', status);
  note.after(p);
}

// The worker's answer to a choice: the precision now in use, or why it was refused (the select
// goes back to f32, which is then what runs).
export function precisionSet(msg) {
  const select = document.getElementById('precision');
  const status = document.getElementById('precision-status');
  if (!select || !status) return;
  if (msg.error) {
    select.value = 'f32';
    select.dataset.state = 'f32';
    status.textContent = `f16 refused: ${msg.error}`;
    return;
  }
  select.dataset.state = msg.value;
  status.textContent = msg.value === 'f16' ? 'Later runs multiply in f16 (sums in f32).' : '';
}
