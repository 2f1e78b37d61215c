// Test material for the loading tests, made here (nothing is fetched from the internet):
//  - a tiny Llama checkpoint in the Hugging Face layout (config.json, a byte-level BPE
//    tokenizer.json over the 256 bytes, two safetensors shards and model.safetensors.index.json),
//    seeded random weights;
//  - a local HTTP server on 127.0.0.1 that plays the Hugging Face Hub (GET /api/models/ORG/NAME,
//    /ORG/NAME/resolve/main/FILE) and serves files with HTTP Range support, CORS, and a switch
//    that breaks the next N responses of a file part way (to test resumable downloads).

import http from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

// ---------------------------------------------------------------------------- tiny checkpoint
export const TINY = { dim: 64, ffn: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 256, ctx: 256 };

// GPT-2's byte ↔ printable-character table, which byte-level BPE vocabularies are written in.
function byteChars() {
  const bs = [];
  for (let b = 33; b <= 126; b += 1) bs.push(b);
  for (let b = 161; b <= 172; b += 1) bs.push(b);
  for (let b = 174; b <= 255; b += 1) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b += 1) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n += 1;
    }
  }
  const chars = new Array(256);
  bs.forEach((b, i) => { chars[b] = String.fromCodePoint(cs[i]); });
  return chars;
}

function tokenizerJson() {
  const vocab = {};
  byteChars().forEach((c, b) => { vocab[c] = b; });
  return JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [],
    },
  });
}

function configJson(TINY) {
  return JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu',
    hidden_size: TINY.dim, intermediate_size: TINY.ffn, num_hidden_layers: TINY.layers,
    num_attention_heads: TINY.heads, num_key_value_heads: TINY.kvHeads, vocab_size: TINY.vocab,
    max_position_embeddings: TINY.ctx, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: true, torch_dtype: 'float32',
  });
}

// mulberry32: a small seeded generator, so the fixture is the same on every run.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// One safetensors file: 8-byte little-endian header length, JSON header (padded with spaces to
// 8 bytes), then the f32 data.
function safetensors(tensors) {
  const header = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.data.length * 4;
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  out.write(json, 8, 'latin1');
  let at = 8 + json.length;
  for (const t of tensors) {
    for (const v of t.data) {
      out.writeFloatLE(v, at);
      at += 4;
    }
  }
  return out;
}

// {files: {name: Buffer}, shards: [names]}. `dims` overrides TINY's sizes (e.g. {dim: 256,
// ffn: 512} where a method's per-tensor overheads would swamp 64-wide rows).
export function tinyCheckpoint(seed = 7, dims = {}) {
  const sizes = { ...TINY, ...dims };
  const rand = rng(seed);
  const mat = (name, rows, cols, scale) => ({
    name, shape: [rows, cols], data: Float32Array.from({ length: rows * cols }, () => (rand() * 2 - 1) * scale),
  });
  const ones = (name, n) => ({ name, shape: [n], data: new Float32Array(n).fill(1) });
  const { dim, ffn, heads, kvHeads, vocab } = sizes;
  const hd = dim / heads;
  const layer = (l) => {
    const p = `model.layers.${l}`;
    return [
      ones(`${p}.input_layernorm.weight`, dim),
      mat(`${p}.self_attn.q_proj.weight`, heads * hd, dim, 0.15),
      mat(`${p}.self_attn.k_proj.weight`, kvHeads * hd, dim, 0.15),
      mat(`${p}.self_attn.v_proj.weight`, kvHeads * hd, dim, 0.15),
      mat(`${p}.self_attn.o_proj.weight`, dim, heads * hd, 0.15),
      ones(`${p}.post_attention_layernorm.weight`, dim),
      mat(`${p}.mlp.gate_proj.weight`, ffn, dim, 0.15),
      mat(`${p}.mlp.up_proj.weight`, ffn, dim, 0.15),
      mat(`${p}.mlp.down_proj.weight`, dim, ffn, 0.1),
    ];
  };
  const shards = {
    'model-00001-of-00002.safetensors': [mat('model.embed_tokens.weight', vocab, dim, 0.05), ...layer(0)],
    'model-00002-of-00002.safetensors': [...layer(1), ones('model.norm.weight', dim)],
  };
  const files = { 'config.json': Buffer.from(configJson(sizes)), 'tokenizer.json': Buffer.from(tokenizerJson()) };
  const weightMap = {};
  let total = 0;
  for (const [name, ts] of Object.entries(shards)) {
    files[name] = safetensors(ts);
    for (const t of ts) {
      weightMap[t.name] = name;
      total += t.data.length * 4;
    }
  }
  files['model.safetensors.index.json'] = Buffer.from(JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }));
  return { files, shards: Object.keys(shards) };
}

// ---------------------------------------------------------------------------- local server
// Start the server. `repos`: {'org/name': {file: Buffer}}; `paths`: {'/url/path': file path on
// disk}. Returns {url, log, addRoute(path, Buffer), claimRoute(path, size) (headers claiming
// `size` bytes, no body), breakNext(path, times, afterBytes), close}.
// `log` records each request as {method, path, range}.
export function startFixtureServer({ repos = {}, paths = {} } = {}) {
  const log = [];
  const breaks = new Map(); // path -> {times, after}
  const routes = new Map(); // path -> Buffer
  const claims = new Map(); // path -> a Content-Length claimed, the body never sent
  const server = http.createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    log.push({ method: req.method, path, range: req.headers.range ?? null });
    // The page is cross-origin isolated (COEP require-corp): CORS and CORP on every answer.
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'Range');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, ETag, Accept-Ranges');
    res.setHeader('Cross-Origin-Resource-Policy', 'cross-origin');
    if (req.method === 'OPTIONS') {
      res.writeHead(204);
      res.end();
      return;
    }
    if (claims.has(path)) {
      // A file too large to send: its headers, then the connection closes.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(claims.get(path)) });
      res.flushHeaders();
      setTimeout(() => res.socket?.destroy(), 2000);
      return;
    }
    if (routes.has(path)) {
      serveBytes(req, res, path, routes.get(path), breaks);
      return;
    }
    const api = /^\/api\/models\/([^/]+\/[^/]+)$/.exec(path);
    if (api) {
      const repo = repos[api[1]];
      if (!repo) return notFound(res);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ id: api[1], siblings: Object.keys(repo).map((rfilename) => ({ rfilename })) }));
      return;
    }
    const hub = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(path);
    let body = null;
    if (hub) body = repos[hub[1]]?.[hub[2]] ?? null;
    else if (paths[path]) body = readFileSync(paths[path]);
    if (!body) return notFound(res);
    serveBytes(req, res, path, body, breaks);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      resolve({
        url,
        log,
        addRoute: (p, body) => routes.set(p, body),
        claimRoute: (p, size) => claims.set(p, size),
        breakNext: (p, times, after) => breaks.set(p, { times, after }),
        close: () => new Promise((r) => {
          server.closeAllConnections();
          server.close(r);
        }),
      });
    });
  });
}

function notFound(res) {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found');
}

// 200 or 206 (a single "bytes=N-" or "bytes=N-M" range); a scheduled break sends `after` bytes
// of the body and then destroys the connection.
function serveBytes(req, res, path, body, breaks) {
  const etag = `"${body.length.toString(16)}-fixture"`;
  let start = 0;
  let end = body.length - 1;
  const range = req.headers.range;
  const headers = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', ETag: etag };
  let status = 200;
  if (range) {
    const m = /^bytes=(\d+)-(\d*)$/.exec(range);
    if (!m || Number(m[1]) >= body.length) {
      res.writeHead(416, { 'Content-Range': `bytes */${body.length}` });
      res.end();
      return;
    }
    start = Number(m[1]);
    if (m[2] !== '') end = Math.min(end, Number(m[2]));
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${end}/${body.length}`;
  }
  headers['Content-Length'] = String(end - start + 1);
  res.writeHead(status, headers);
  const slice = body.subarray(start, end + 1);
  const b = breaks.get(path);
  if (b && b.times > 0) {
    b.times -= 1;
    res.write(slice.subarray(0, Math.min(b.after, slice.length)), () => {
      // Give the bytes time to reach the browser, then cut the connection mid-body.
      setTimeout(() => res.socket?.destroy(), 200);
    });
    return;
  }
  res.end(slice);
}

export const fileSize = (p) => statSync(p).size;

// ---------------------------------------------------------------------------- tiny Llama, served
export const TINY_REPO = 'test-org/tiny-llama';

// The tiny checkpoint (sizes `dims` over TINY's) served by a local Hub as TINY_REPO and written to
// `modelDir` for the CLI, under a temporary `root` a test may put more files in. `page` is the
// query and hash that open it ('?hub=…', '#ql=1&model=…'). `close()` ends the server and removes
// the files.
export async function servedTinyLlama(dims = {}) {
  const { files } = tinyCheckpoint(7, dims);
  const root = mkdtempSync(path.join(tmpdir(), 'quantlab-tiny-'));
  const modelDir = path.join(root, 'model');
  mkdirSync(modelDir);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(path.join(modelDir, name), bytes);
  const server = await startFixtureServer({ repos: { [TINY_REPO]: files } });
  return {
    server,
    root,
    modelDir,
    hub: `hub=${encodeURIComponent(server.url)}`,
    model: `model=${encodeURIComponent(TINY_REPO)}`,
    close: async () => {
      await server.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
