// Model downloads for the worker: resumable, cached, and Hugging Face Hub repositories resolved to
// their files. No DOM; progress goes to a callback.
//
// Cache Storage ('quantlab-models-v1'):
//   URL                         the whole file once complete (a model fetched once works offline)
//   URL?quantlab-part=I         the I-th piece of an unfinished download, in arrival order
//   URL?quantlab-parts          JSON manifest of the pieces: {total, validator, parts, bytes}
// A download that breaks resumes with an HTTP Range request from the bytes it has (in memory
// during the same load, from the stored pieces in a later one, e.g. after a reload). A server
// that answers a Range request with the whole file (200) or for another file (a changed ETag /
// Last-Modified or size) restarts it from zero. The pieces are deleted once the file is whole.

export const MODEL_CACHE = 'quantlab-models-v1';
// The page's WebAssembly memory (wasm32) holds 4 GiB at most, and a model's file is copied into
// it and read into weights there, both at once: files larger than half of it in all are refused
// before anything is allocated for them (from the file's size or the server's Content-Length).
// Rust checks the tensor sizes a GGUF header declares against the same bound (io::gguf).
export const WASM_MEMORY_BYTES = 2 ** 32;
export const MAX_MODEL_BYTES = WASM_MEMORY_BYTES / 2;
const gib = (bytes) => (bytes / 2 ** 30).toFixed(2);
// The message for a model of `bytes` (`atLeast`: so far) that cannot fit.
export function tooLarge(label, bytes, atLeast = false) {
  return `${label} is ${atLeast ? 'more than ' : ''}${gib(bytes)} GiB, more than the ${gib(MAX_MODEL_BYTES)} GiB a model may take `
    + `in this page (its WebAssembly memory holds at most ${gib(WASM_MEMORY_BYTES)} GiB, the file and the weights read from it together)`;
}
// Pieces are written to the cache every this many bytes, so a broken download loses at most
// this much (besides what arrived since, which is written when the error is caught).
const PART_BYTES = 8 * 2 ** 20;
// Attempts per file within one load before the error reaches the page.
export const MAX_ATTEMPTS = 3;
// Shards of one Hub checkpoint.
const MAX_SHARDS = 256;
const RETRY_DELAY_MS = 500;

const partKey = (url, i) => `${url}${url.includes('?') ? '&' : '?'}quantlab-part=${i}`;
const manifestKey = (url) => `${url}${url.includes('?') ? '&' : '?'}quantlab-parts`;

async function openCache() {
  try {
    return await caches.open(MODEL_CACHE);
  } catch {
    return null; // no Cache Storage (e.g. an opaque origin): download without keeping anything
  }
}

// What identifies the file's version on the server, to refuse resuming into another file.
const validatorOf = (r) => r.headers.get('ETag') || r.headers.get('Last-Modified') || '';

// Read the stored pieces of an unfinished download of `url`: {chunks, bytes, total, validator,
// parts} or null.
async function storedParts(cache, url) {
  if (!cache) return null;
  try {
    const m = await cache.match(manifestKey(url));
    if (!m) return null;
    const manifest = await m.json();
    const chunks = [];
    let bytes = 0;
    for (let i = 0; i < manifest.parts; i += 1) {
      const p = await cache.match(partKey(url, i));
      if (!p) return null;
      const b = new Uint8Array(await p.arrayBuffer());
      chunks.push(b);
      bytes += b.length;
    }
    if (bytes !== manifest.bytes) return null;
    return { chunks, bytes, total: manifest.total, validator: manifest.validator, parts: manifest.parts };
  } catch {
    return null;
  }
}

async function dropParts(cache, url, parts) {
  if (!cache) return;
  try {
    await cache.delete(manifestKey(url));
    for (let i = 0; i < parts; i += 1) await cache.delete(partKey(url, i));
  } catch {
    // Nothing to clean, or no quota: harmless.
  }
}

// The whole files still being written to the cache (and their pieces deleted): `download`
// returns a file's bytes as soon as they arrived, so the write (about 0.6 s for the default model
// on a 2-core machine) runs beside the parse; the worker awaits `cachesWritten()` before it says
// the model is loaded, so "loaded" still means "kept for offline use" as before (issue 17).
const writing = new Set();
export async function cachesWritten() {
  while (writing.size) await Promise.all([...writing]);
}

// Fetch `url` whole, resuming with Range requests after a broken connection. `progress({loaded,
// total, cached, resumed})` reports as bytes arrive. Returns a Uint8Array.
export async function download(url, label, progress = () => {}) {
  const cache = await openCache();
  if (cache) {
    try {
      const hit = await cache.match(url);
      if (hit) {
        const bytes = new Uint8Array(await hit.arrayBuffer());
        progress({ loaded: bytes.length, total: bytes.length, cached: true });
        return bytes;
      }
    } catch {
      // An unreadable entry: download again.
    }
  }
  // State of this file's download: what arrived (`chunks`), what of it is stored (`stored`
  // pieces holding `storedBytes`), and the server's answers.
  const prior = await storedParts(cache, url);
  const st = {
    chunks: prior ? prior.chunks : [],
    loaded: prior ? prior.bytes : 0,
    stored: prior ? prior.parts : 0,
    storedBytes: prior ? prior.bytes : 0,
    total: prior ? prior.total : 0,
    validator: prior ? prior.validator : null,
  };
  if (prior) progress({ loaded: st.loaded, total: st.total, resumed: true });
  let lastError = null;
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
    try {
      await fetchInto(url, label, st, cache, progress);
      const bytes = concat(st.chunks, st.loaded);
      if (cache) {
        const stored = st.stored;
        const write = (async () => {
          try {
            await cache.put(url, new Response(bytes, { headers: { 'Content-Type': 'application/octet-stream' } }));
          } catch {
            // Out of quota: the model still loads, it just is not kept.
          }
          await dropParts(cache, url, stored);
        })().catch(() => {}).finally(() => writing.delete(write));
        writing.add(write);
      }
      return bytes;
    } catch (e) {
      if (e.fatal) throw e;
      lastError = e;
      await storePending(cache, url, st);
      if (attempt < MAX_ATTEMPTS) await new Promise((r) => setTimeout(r, RETRY_DELAY_MS * attempt));
    }
  }
  const kept = st.storedBytes > 0 ? ` (${(st.storedBytes / 1e6).toFixed(1)} MB kept: loading it again resumes)` : '';
  throw new Error(`${label}: the download broke off after ${MAX_ATTEMPTS} attempts: ${lastError?.message ?? 'unknown error'}${kept}`);
}

function fatal(message) {
  const e = new Error(message);
  e.fatal = true;
  return e;
}

// One request: from byte st.loaded (Range) or from zero, appending to st.chunks.
async function fetchInto(url, label, st, cache, progress) {
  const headers = {};
  if (st.loaded > 0) headers.Range = `bytes=${st.loaded}-`;
  let response;
  try {
    // no-store: the browser's own HTTP cache would otherwise rewrite Range requests from the
    // partial responses it kept; Cache Storage above is the one cache.
    response = await fetch(url, { headers, cache: 'no-store' });
  } catch (e) {
    throw new Error(`${label}: could not reach the server (${e.message})`);
  }
  if (response.status === 416 && st.loaded > 0 && st.loaded === st.total) return; // already whole
  if (!response.ok) {
    const e = fatal(`${label}: the server answered HTTP ${response.status}${url.includes('/models/') ? ' (run ./scripts/serve.sh, which fetches the default model)' : ''}`);
    // 5xx may pass; anything else will not.
    e.fatal = response.status < 500;
    throw e;
  }
  const validator = validatorOf(response);
  if (response.status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers.get('Content-Range') ?? '');
    const sameFile = m && Number(m[1]) === st.loaded && Number(m[3]) === st.total
      && (st.validator === null || st.validator === '' || validator === '' || validator === st.validator);
    if (!sameFile) {
      // Not the continuation of what we hold: start over.
      await restart(cache, url, st);
      throw new Error(`${label}: the server's file changed; downloading it again`);
    }
  } else {
    // 200: the whole file, from zero (a server without Range support, or a first request).
    if (st.loaded > 0) await restart(cache, url, st);
    st.total = Number(response.headers.get('Content-Length')) || 0;
    st.validator = validator;
  }
  if (st.total > MAX_MODEL_BYTES) throw fatal(tooLarge(label, st.total));
  const reader = response.body.getReader();
  let lastPost = 0;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      throw new Error(`${label}: the connection broke at ${(st.loaded / 1e6).toFixed(1)} MB (${e.message})`);
    }
    if (chunk.done) break;
    st.chunks.push(chunk.value);
    st.loaded += chunk.value.length;
    if (st.loaded > MAX_MODEL_BYTES) throw fatal(tooLarge(label, st.loaded, true));
    if (st.loaded - st.storedBytes >= PART_BYTES) await storePending(cache, url, st);
    const now = performance.now();
    if (now - lastPost > 100) {
      lastPost = now;
      progress({ loaded: st.loaded, total: st.total });
    }
  }
  if (st.total && st.loaded !== st.total) {
    throw new Error(`${label}: the connection closed at ${st.loaded} of ${st.total} bytes`);
  }
}

async function restart(cache, url, st) {
  await dropParts(cache, url, st.stored);
  Object.assign(st, { chunks: [], loaded: 0, stored: 0, storedBytes: 0, total: 0, validator: null });
}

// Write the bytes that arrived since the last stored piece as the next piece, then the manifest.
async function storePending(cache, url, st) {
  if (!cache || st.loaded === st.storedBytes || !st.total) return;
  try {
    const fresh = concat(chunksAfter(st.chunks, st.storedBytes), st.loaded - st.storedBytes);
    await cache.put(partKey(url, st.stored), new Response(fresh));
    st.stored += 1;
    st.storedBytes = st.loaded;
    const manifest = { total: st.total, validator: st.validator ?? '', parts: st.stored, bytes: st.storedBytes };
    await cache.put(manifestKey(url), new Response(JSON.stringify(manifest), { headers: { 'Content-Type': 'application/json' } }));
  } catch {
    // No quota for pieces: the download still completes, it just cannot resume after a reload.
  }
}

// The chunks holding bytes from `offset` on (chunk boundaries fall on stored-piece boundaries,
// since pieces are cut from whole chunks).
function chunksAfter(chunks, offset) {
  let at = 0;
  const out = [];
  for (const c of chunks) {
    if (at >= offset) out.push(c);
    at += c.length;
  }
  return out;
}

function concat(chunks, length) {
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return bytes;
}

// The files to fetch for a Hub id: {base, tokenizer, shards: [names]} (a safetensors checkpoint;
// `tokenizer` lists tokenizer.json, or for repositories without one such as facebook/opt-*
// vocab.json and merges.txt, with tokenizer_config.json when present) or {base, gguf: name};
// names are relative to `base`. The id is org/name, or
// org/name/sub/dir for a checkpoint kept in a folder of the repository; `rev` is a branch, tag or
// commit (default main). Asks the Hub's model API for the file list (its "siblings" name every file
// by its path in the repository); a sharded checkpoint's shards come from
// model.safetensors.index.json in the same folder. Without the API (offline mirrors), tries the
// index, then model.safetensors.
export async function resolveHub(endpoint, id, fetchBytes, rev = 'main') {
  const segs = id.split('/');
  const repo = segs.slice(0, 2).join('/');
  const folder = segs.slice(2).join('/');
  const inRepo = (n) => (folder ? `${folder}/${n}` : n); // a file's path in the repository
  const base = `${endpoint}/${repo}/resolve/${encodeURIComponent(rev)}/${folder ? `${folder}/` : ''}`;
  let files = null; // names directly in the folder, or null without the API
  try {
    const api = rev === 'main' ? `${endpoint}/api/models/${repo}` : `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(rev)}`;
    const r = await fetch(api);
    if (r.status === 404 || r.status === 401) {
      throw fatal(`${repo}: the Hub has no public model of that name${rev === 'main' ? '' : ` at revision ${rev}`} (HTTP ${r.status})`);
    }
    if (r.ok) {
      const meta = await r.json();
      if (Array.isArray(meta.siblings)) {
        const all = meta.siblings.map((x) => x && x.rfilename).filter((n) => typeof n === 'string');
        const prefix = folder ? `${folder}/` : '';
        const inside = all.filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length));
        if (folder && inside.length === 0) throw fatal(`${repo}: the repository has no folder ${folder}`);
        files = inside.filter((n) => !n.includes('/'));
      }
    }
  } catch (e) {
    if (e.fatal) throw e;
    files = null;
  }
  const has = (n) => files === null || files.includes(n);
  let shards = null;
  if (has('model.safetensors.index.json')) {
    try {
      const index = JSON.parse(new TextDecoder().decode(await fetchBytes(`${base}model.safetensors.index.json`, `${id}/model.safetensors.index.json`)));
      shards = shardNames(index, id);
    } catch (e) {
      if (files !== null) throw e;
    }
  }
  if (!shards && files !== null) {
    const here = files.filter((n) => n.endsWith('.safetensors'));
    if (here.length) shards = here.sort();
  }
  if (!shards && files === null) shards = ['model.safetensors'];
  const where = folder ? `its folder ${folder}` : 'its top level';
  if (!shards) {
    const gguf = files.filter((n) => n.endsWith('.gguf'));
    if (gguf.length) return { base, gguf: gguf.find((n) => /q4_1|q4_0/i.test(n)) ?? gguf[0] };
    throw fatal(`${repo}: the repository has no .safetensors or .gguf weights at ${where}`);
  }
  // Without the API every name "exists": tokenizer.json is then tried first.
  let tokenizer = ['tokenizer.json'];
  if (files !== null && !files.includes('tokenizer.json') && has('vocab.json') && has('merges.txt')) {
    tokenizer = ['vocab.json', 'merges.txt', ...(has('tokenizer_config.json') ? ['tokenizer_config.json'] : [])];
  }
  for (const need of ['config.json', ...tokenizer, ...shards]) {
    if (!has(need)) throw fatal(`${repo}: the repository has no ${inRepo(need)}, which QuantLab needs${need.endsWith('.safetensors') ? ' (model.safetensors.index.json names it)' : need === 'tokenizer.json' ? ' beside the weights (or vocab.json + merges.txt)' : ' beside the weights'}`);
  }
  return { base, tokenizer, shards };
}

// The shard file names of a model.safetensors.index.json, validated.
function shardNames(index, id) {
  const map = index && index.weight_map;
  if (!map || typeof map !== 'object') throw fatal(`${id}/model.safetensors.index.json: no "weight_map" object`);
  const names = [...new Set(Object.values(map))];
  if (names.length === 0 || names.length > MAX_SHARDS) throw fatal(`${id}/model.safetensors.index.json: ${names.length} shards (1..${MAX_SHARDS} accepted)`);
  for (const n of names) {
    if (typeof n !== 'string' || !/^[A-Za-z0-9_.-]+\.safetensors$/.test(n)) throw fatal(`${id}/model.safetensors.index.json: shard name ${JSON.stringify(n)} is not a plain .safetensors file name`);
  }
  return names.sort();
}
