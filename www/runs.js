// The runs measured since the page opened, keyed by everything their numbers depend on: the
// model, the text, the protocol, the context, the windows and the full configuration (per-layer
// overrides and, when the configuration calibrates, the calibration size). A configuration
// already measured under the same key is recalled, not recomputed. Plain data: no DOM.

// A short, stable fingerprint of a text the user typed or uploaded (FNV-1a, 32 bits, with the
// length): two different texts of one length colliding would only merge their runs' rows.
export function textId(name, body) {
  if (name !== 'custom') return name;
  let h = 0x811c9dc5;
  for (let i = 0; i < body.length; i += 1) {
    h ^= body.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return `custom-${body.length}-${h.toString(16)}`;
}

// The key of a run: JSON of its identity. `calib` only counts when the configuration uses it.
export function runKey({ model, text, protocol, ctx, windows, quant, calib }) {
  return JSON.stringify([model, text, protocol, ctx, windows, quant, calib ?? null]);
}

// What runs must share to be drawn on one chart: the model, the text and the evaluation.
export const contextKey = (r) => JSON.stringify([r.model, r.text, r.protocol, r.ctx, r.windows]);

export class RunStore {
  constructor() {
    this.byKey = new Map(); // key -> record
    this.order = []; // keys, oldest first
  }

  get(key) {
    return this.byKey.get(key) ?? null;
  }

  // Store a finished run (a newer measurement of the same key replaces the older one).
  put(record) {
    if (!this.byKey.has(record.key)) this.order.push(record.key);
    this.byKey.set(record.key, record);
    return record;
  }

  all() {
    return this.order.map((k) => this.byKey.get(k));
  }

  // Finished runs comparable with `like` (same model, text and evaluation), oldest first.
  comparable(like) {
    const c = contextKey(like);
    return this.all().filter((r) => r.state === 'done' && contextKey(r) === c);
  }
}

// Per-layer overrides in words: "blk.3.*: 8-bit, blk.4.*: kept as loaded".
export function overridesText(overrides) {
  if (!Array.isArray(overrides) || overrides.length === 0) return '';
  return overrides.map((o) => `${o.pattern}: ${o.quant ? `${o.quant.bits}-bit` : 'kept as loaded'}`).join(', ');
}
