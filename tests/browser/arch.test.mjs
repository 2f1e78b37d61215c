// OPT and GPT-2 in the page (issue "architectures as data"): the Hub ids facebook/opt-125m and
// openai-community/gpt2, typed into the model box, resolve through the local Hub mock
// (fixture.mjs; nothing leaves 127.0.0.1), which serves the tiny checkpoints transformers saved
// (tests/fixtures/tiny, made by make_tiny.py) in the layout of the real repositories: the OPT one
// without tokenizer.json (vocab.json + merges.txt + tokenizer_config.json, as facebook/opt-* has),
// GPT-2's with it. Each loads, evaluates, and the page's per-architecture views (histogram
// tensors, layer map) follow its topology. Then, in a Playground of the page's own thread on
// WebGPU (SwiftShader), every tiny model's per-token NLL against transformers' float64 values.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, RUN_TIMEOUT_MS, openPage, waitForResult } from './harness.mjs';
import { startFixtureServer } from './fixture.mjs';

const TINY = path.join(ROOT, 'tests/fixtures/tiny');
// Per-token NLL against transformers (float64): |ours − ref| ≤ tol · max(ref, 1), the bound of
// tests/arch_reference.rs (NLL_REL_TOL).
const NLL_REL_TOL = 1e-4;

const files = (dir, skip = []) => Object.fromEntries(readdirSync(path.join(TINY, dir))
  .filter((n) => !skip.includes(n) && !n.endsWith('.gguf') && !n.endsWith('reference.json'))
  .map((n) => [n, readFileSync(path.join(TINY, dir, n))]));
// facebook/opt-* has no tokenizer.json: vocab.json and merges.txt as GPT-2's slow tokenizer
// writes them (taken here from the fixture's tokenizer.json) and a tokenizer_config.json whose
// add_bos_token adds </s>, as OPT's does.
function optLayout(dir) {
  const f = files(dir, ['tokenizer.json', 'tokenizer_config.json']);
  const model = JSON.parse(readFileSync(path.join(TINY, dir, 'tokenizer.json'), 'utf8')).model;
  f['vocab.json'] = Buffer.from(JSON.stringify(model.vocab));
  const merges = model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  f['merges.txt'] = Buffer.from(`#version: 0.2\n${merges.join('\n')}\n`);
  f['tokenizer_config.json'] = Buffer.from(JSON.stringify({
    add_bos_token: true, bos_token: '</s>', eos_token: '</s>', unk_token: '</s>', pad_token: '<pad>',
    tokenizer_class: 'GPT2Tokenizer',
  }));
  return f;
}
const REPOS = {
  'facebook/opt-125m': optLayout('opt-pre'),
  'openai-community/gpt2': files('gpt2'),
  'test-org/opt-350m-tiny': optLayout('opt-post'),
};

let page;
let close;
let server;

before(async () => {
  server = await startFixtureServer({ repos: REPOS });
  ({ page, close } = await openPage(`?backend=cpu&hub=${encodeURIComponent(server.url)}#ql=1&ctx=64&win=1`));
  await waitForResult(page, '0');
});

after(async () => {
  await close?.();
  await server?.close();
});

async function loadHub(id) {
  const loads = Number(await page.getAttribute('#model-status', 'data-loads'));
  await page.fill('#model-url', id);
  await page.click('#model-url-load');
  await page.waitForFunction((n) => {
    const s = document.getElementById('model-status');
    return Number(s.dataset.loads) > n || s.dataset.failed === 'true';
  }, loads, { timeout: RUN_TIMEOUT_MS, polling: 100 });
  assert.notEqual(await page.getAttribute('#model-status', 'data-failed'), 'true', await page.textContent('#error'));
}

async function evaluate() {
  const prev = await page.getAttribute('#result', 'data-run');
  await page.click('#evaluate');
  return waitForResult(page, prev, '"method":"none"');
}

for (const [id, arch, qkv] of [
  ['facebook/opt-125m', 'opt', 'attn_q'],
  ['openai-community/gpt2', 'gpt2', 'attn_qkv'],
  ['test-org/opt-350m-tiny', 'opt', 'attn_q'],
]) {
  test(`${id} loads from the Hub by its id and evaluates`, { timeout: RUN_TIMEOUT_MS }, async () => {
    const from = server.log.length;
    await loadHub(id);
    const card = await page.textContent('#model-card');
    assert.match(card, new RegExp(id));
    assert.match(card, new RegExp(arch));
    const asked = server.log.slice(from).map((r) => r.path);
    const tok = REPOS[id]['tokenizer.json'] ? ['tokenizer.json'] : ['vocab.json', 'merges.txt', 'tokenizer_config.json'];
    for (const f of ['config.json', ...tok, 'model.safetensors']) {
      assert.ok(asked.includes(`/${id}/resolve/main/${f}`), `the page did not fetch ${f}: ${asked.join(', ')}`);
    }
    const r = await evaluate();
    assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `${id}: perplexity ${r.ppl}`);
    // The histogram's tensors are the architecture's linears.
    const options = await page.$$eval('#hist-tensor option', (os) => os.map((o) => o.value));
    assert.ok(options.includes(`blk.0.${qkv}.weight`), `${id}: ${options.slice(0, 8).join(', ')}`);
    assert.ok(!options.some((o) => o.includes(arch === 'gpt2' ? 'attn_q.' : 'ffn_gate')), `${id}: foreign tensor names`);
    mkdirSync(path.join(ROOT, 'out/screenshots'), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, `out/screenshots/arch-${id.replace('/', '_')}.png`), fullPage: true });
  });
}

test('per-token NLL on WebGPU equals transformers for OPT (pre- and post-LN) and GPT-2', { timeout: RUN_TIMEOUT_MS }, async () => {
  const cases = [['facebook/opt-125m', 'opt-pre'], ['test-org/opt-350m-tiny', 'opt-post'], ['openai-community/gpt2', 'gpt2']]
    .map(([id, dir]) => ({ id, ref: JSON.parse(readFileSync(path.join(TINY, dir, 'reference.json'), 'utf8')) }));
  const out = await page.evaluate(async ({ hub, cases }) => {
    const m = await import(new URL('www/pkg/quantlab.js', location.href).href);
    await m.default();
    const p = new m.Playground();
    await p.initGpu();
    const get = async (id, f) => {
      const r = await fetch(`${hub}/${id}/resolve/main/${f}`);
      return r.ok ? new Uint8Array(await r.arrayBuffer()) : undefined;
    };
    const res = [];
    for (const { id, ref } of cases) {
      const st = await get(id, 'model.safetensors');
      p.loadHf(id, await get(id, 'config.json'), await get(id, 'tokenizer.json'), await get(id, 'vocab.json'),
        await get(id, 'merges.txt'), await get(id, 'tokenizer_config.json'), ['model.safetensors'], [st]);
      const ids = Array.from(p.tokenize(ref.text));
      const nll = Array.from(await p.tokenNll(Uint32Array.from(ids)));
      res.push({ id, backend: p.engine().backend, ids, nll });
    }
    return res;
  }, { hub: server.url, cases });
  for (const [i, r] of out.entries()) {
    const ref = cases[i].ref;
    assert.equal(r.backend, 'gpu', `${r.id}: ran on ${r.backend}`);
    assert.deepEqual(r.ids, ref.token_ids, `${r.id}: token ids`);
    assert.equal(r.nll.length, ref.nll.length);
    let worst = 0;
    r.nll.forEach((v, k) => {
      const e = Math.abs(v - ref.nll[k]) / Math.max(Math.abs(ref.nll[k]), 1);
      worst = Math.max(worst, e);
      assert.ok(e <= NLL_REL_TOL, `${r.id}: token ${k}: ${v} vs transformers ${ref.nll[k]}`);
    });
    console.log(`# ${r.id}: ${r.nll.length} tokens on WebGPU, worst relative NLL error ${worst.toExponential(2)}`);
  }
});
