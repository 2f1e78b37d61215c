//! The GGUF reader on hostile input (architecture principle 7). Every file is built in code by
//! the small writer below; each case must fail with an error naming the file and the field, must
//! not panic, and must not allocate in proportion to a count the file merely claims (a counting
//! allocator checks the largest single allocation made while parsing).

use quantlab::io::gguf::Gguf;
use quantlab::model::weights::ModelWeights;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------------------------------------
// Largest single allocation per thread (tests run on parallel threads).

struct MaxAlloc;
thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}
unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(l.size())));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new)));
        unsafe { System.realloc(p, l, new) }
    }
}
#[global_allocator]
static ALLOC: MaxAlloc = MaxAlloc;

/// Parsing may allocate a small multiple of the file's size (typed vectors, maps), never more.
fn alloc_limit(file_len: usize) -> usize {
    16 * file_len + (64 << 10)
}

const LABEL: &str = "test.gguf";

/// Parse `bytes`, expect an error, check it names the file and every `needles` entry, and that
/// no single allocation exceeded `alloc_limit`.
fn expect_err(bytes: &[u8], needles: &[&str]) -> String {
    LARGEST.with(|m| m.set(0));
    let r = Gguf::parse(LABEL, bytes);
    let largest = LARGEST.with(|m| m.get());
    let msg = match r {
        Ok(_) => panic!("parse accepted a malformed file (expected {needles:?})"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(LABEL), "error does not name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "error does not mention {n:?}: {msg}");
    }
    assert!(
        largest <= alloc_limit(bytes.len()),
        "largest allocation {largest} bytes for a {}-byte file: {msg}",
        bytes.len()
    );
    msg
}

// ---------------------------------------------------------------------------------------------
// A minimal GGUF writer (spec: ggml docs/gguf.md).

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;

const G_F32: u32 = 0;
const G_Q4_0: u32 = 2;
const G_Q4_1: u32 = 3;
const G_Q8_0: u32 = 8;

fn gstr(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut v = gstr(key.as_bytes());
    v.extend(ty.to_le_bytes());
    v.extend_from_slice(value);
    v
}
fn kv_u32(key: &str, x: u32) -> Vec<u8> {
    kv(key, T_U32, &x.to_le_bytes())
}
fn kv_f32(key: &str, x: f32) -> Vec<u8> {
    kv(key, T_F32, &x.to_le_bytes())
}
fn kv_str(key: &str, s: &str) -> Vec<u8> {
    kv(key, T_STR, &gstr(s.as_bytes()))
}
/// Array value bytes: element type, count, then the raw elements.
fn arr(elem: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = elem.to_le_bytes().to_vec();
    v.extend(count.to_le_bytes());
    v.extend_from_slice(elems);
    v
}
fn kv_str_arr(key: &str, items: &[String]) -> Vec<u8> {
    let elems: Vec<u8> = items.iter().flat_map(|s| gstr(s.as_bytes())).collect();
    kv(key, T_ARR, &arr(T_STR, items.len() as u64, &elems))
}

struct Tensor {
    name: String,
    /// GGUF order: innermost first.
    ne: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// A GGUF file in pieces, so that cases can break any one of them.
struct File {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<Tensor>,
    /// Replaces the computed data offset of tensor i.
    offsets: Vec<(usize, u64)>,
    /// Replaces the info bytes of tensor i entirely.
    raw_infos: Vec<(usize, Vec<u8>)>,
}

/// Section boundaries of a built file.
struct Layout2 {
    kv_start: usize,
    infos_start: usize,
    infos_end: usize,
    data_start: usize,
}

const ALIGN: usize = 32;

fn info(name: &str, ne: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut v = gstr(name.as_bytes());
    v.extend((ne.len() as u32).to_le_bytes());
    for d in ne {
        v.extend(d.to_le_bytes());
    }
    v.extend(ty.to_le_bytes());
    v.extend(offset.to_le_bytes());
    v
}

impl File {
    fn build(&self) -> (Vec<u8>, Layout2) {
        let mut b = self.magic.to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(
            self.n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend(self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        let kv_start = b.len();
        for k in &self.kvs {
            b.extend_from_slice(k);
        }
        let infos_start = b.len();
        let mut data = Vec::new();
        for (i, t) in self.tensors.iter().enumerate() {
            data.resize(data.len().div_ceil(ALIGN) * ALIGN, 0);
            let mut off = data.len() as u64;
            if let Some((_, o)) = self.offsets.iter().find(|(j, _)| *j == i) {
                off = *o;
            }
            match self.raw_infos.iter().find(|(j, _)| *j == i) {
                Some((_, raw)) => b.extend_from_slice(raw),
                None => b.extend(info(&t.name, &t.ne, t.ty, off)),
            }
            data.extend_from_slice(&t.data);
        }
        let infos_end = b.len();
        b.resize(b.len().div_ceil(ALIGN) * ALIGN, 0);
        let data_start = b.len();
        b.extend(data);
        (
            b,
            Layout2 {
                kv_start,
                infos_start,
                infos_end,
                data_start,
            },
        )
    }
    fn bytes(&self) -> Vec<u8> {
        self.build().0
    }
}

/// Deterministic filler bytes.
fn filler(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Tensor of f32 values (GGUF dims innermost first).
fn f32_tensor(name: &str, ne: &[u64]) -> Tensor {
    let n: u64 = ne.iter().product();
    let data = (0..n)
        .flat_map(|i| (((i % 17) as f32 - 8.0) / 64.0).to_le_bytes())
        .collect();
    Tensor {
        name: name.into(),
        ne: ne.to_vec(),
        ty: G_F32,
        data,
    }
}

/// Tensor in a 32-weight block format with `type_size`-byte blocks (Q8_0 or Q4_1: f16 scale `d`
/// first, then for Q4_1 the f16 `m`). The filler's scales are made finite (high byte & 0x3b keeps
/// the f16 exponent below 31), as the loader refuses NaN and infinite scales.
fn block_tensor(name: &str, ne: &[u64], ty: u32, type_size: usize) -> Tensor {
    let n: u64 = ne.iter().product();
    let mut data = filler(n as usize / 32 * type_size, ty);
    for block in data.chunks_exact_mut(type_size) {
        block[1] &= 0x3b;
        if ty == G_Q4_1 {
            block[3] &= 0x3b;
        }
    }
    Tensor {
        name: name.into(),
        ne: ne.to_vec(),
        ty,
        data,
    }
}

/// A small valid llama: d 32, FFN 64, 4 heads / 2 KV heads, vocab 16, one layer, tied.
fn valid_with_dim(embedding_length: u32) -> File {
    let tokens: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    let kvs = vec![
        kv_str("general.architecture", "llama"),
        kv_u32("llama.block_count", 1),
        kv_u32("llama.context_length", 128),
        kv_u32("llama.embedding_length", embedding_length),
        kv_u32("llama.feed_forward_length", 64),
        kv_u32("llama.attention.head_count", 4),
        kv_u32("llama.attention.head_count_kv", 2),
        kv_f32("llama.rope.freq_base", 10000.0),
        kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        kv_str("tokenizer.ggml.model", "gpt2"),
        kv_str_arr("tokenizer.ggml.tokens", &tokens),
        kv("tokenizer.ggml.add_bos_token", T_BOOL, &[1]),
        kv_u32("general.alignment", ALIGN as u32),
    ];
    let tensors = vec![
        f32_tensor("token_embd.weight", &[32, 16]),
        f32_tensor("blk.0.attn_norm.weight", &[32]),
        f32_tensor("blk.0.ffn_norm.weight", &[32]),
        block_tensor("blk.0.attn_q.weight", &[32, 32], G_Q8_0, 34),
        block_tensor("blk.0.attn_k.weight", &[32, 16], G_Q8_0, 34),
        block_tensor("blk.0.attn_v.weight", &[32, 16], G_Q8_0, 34),
        block_tensor("blk.0.attn_output.weight", &[32, 32], G_Q4_1, 20),
        block_tensor("blk.0.ffn_gate.weight", &[32, 64], G_Q4_1, 20),
        block_tensor("blk.0.ffn_up.weight", &[32, 64], G_Q4_1, 20),
        block_tensor("blk.0.ffn_down.weight", &[64, 32], G_Q4_1, 20),
        f32_tensor("output_norm.weight", &[32]),
    ];
    File {
        magic: *b"GGUF",
        version: 3,
        n_tensors: None,
        n_kv: None,
        kvs,
        tensors,
        offsets: vec![],
        raw_infos: vec![],
    }
}

fn valid() -> File {
    valid_with_dim(32)
}

// ---------------------------------------------------------------------------------------------
// The positive control: the writer's file is accepted, so each failure below is the one change.

#[test]
fn small_valid_file_loads() {
    for version in [2, 3] {
        let mut f = valid();
        f.version = version;
        let bytes = f.bytes();
        LARGEST.with(|m| m.set(0));
        let g = Gguf::parse(LABEL, &bytes).expect("valid file");
        // The allocation probe sees the parser's allocations (the 16 token strings, maps).
        assert!(LARGEST.with(|m| m.get()) > 0);
        assert_eq!(g.version(), version);
        assert_eq!(g.tensors().len(), 11);
        let c = g.model_config().expect("config");
        assert_eq!((c.dim, c.head_dim, c.vocab, c.n_kv_head), (32, 8, 16, 2));
        let w = ModelWeights::from_source(c, &g).expect("weights");
        assert_eq!(w.layers.len(), 1);
        let t = g.tokenizer_meta().expect("tokenizer");
        assert_eq!(t.tokens.len(), 16);
        assert_eq!(t.add_bos, Some(true));
    }
}

/// The GGUF fuzz target's seeds (fuzz/fuzz_targets/gguf.rs): the valid file, v2 and v3. With
/// `QUANTLAB_WRITE_SEEDS=1` (fuzz/make_seeds.sh) written; otherwise the committed ones must be
/// exactly these.
#[test]
fn fuzz_seeds_match_the_committed_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gguf");
    std::fs::create_dir_all(&dir).expect("seed dir");
    for version in [2, 3] {
        let mut f = valid();
        f.version = version;
        let path = dir.join(format!("llama-v{version}.gguf"));
        if std::env::var_os("QUANTLAB_WRITE_SEEDS").is_some() {
            std::fs::write(&path, f.bytes()).expect("write");
        } else {
            let committed = std::fs::read(&path).expect("run fuzz/make_seeds.sh");
            assert!(committed == f.bytes(), "{} is stale", path.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header.

#[test]
fn wrong_magic() {
    let mut f = valid();
    f.magic = *b"GGML";
    expect_err(&f.bytes(), &["magic"]);
}

#[test]
fn unsupported_version() {
    for v in [0u32, 1, 4, 0x0300_0000] {
        let mut f = valid();
        f.version = v;
        expect_err(&f.bytes(), &["version"]);
    }
}

#[test]
fn absurd_tensor_count() {
    for n in [u64::MAX, 1 << 17] {
        let mut f = valid();
        f.n_tensors = Some(n);
        expect_err(&f.bytes(), &["tensor_count", "65536"]);
    }
    // Under the limit but more than the bytes left could hold.
    let mut f = valid();
    f.n_tensors = Some(60_000);
    expect_err(&f.bytes(), &["tensor_count", "60000"]);
}

#[test]
fn absurd_kv_count() {
    for n in [u64::MAX, 1 << 17] {
        let mut f = valid();
        f.n_kv = Some(n);
        expect_err(&f.bytes(), &["kv_count", "65536"]);
    }
    let mut f = valid();
    f.n_kv = Some(60_000);
    expect_err(&f.bytes(), &["kv_count", "60000"]);
}

// ---------------------------------------------------------------------------------------------
// Truncation.

#[test]
fn truncated_in_header() {
    let bytes = valid().bytes();
    expect_err(&bytes[..0], &["magic", "truncated"]);
    expect_err(&bytes[..2], &["magic", "truncated"]);
    expect_err(&bytes[..6], &["version", "truncated"]);
    expect_err(&bytes[..12], &["tensor_count", "truncated"]);
    expect_err(&bytes[..20], &["kv_count", "truncated"]);
}

#[test]
fn truncated_in_metadata() {
    let (bytes, l) = valid().build();
    // So early that the 13 claimed pairs cannot fit in what is left.
    expect_err(&bytes[..l.kv_start + 10], &["kv_count", "cannot fit"]);
    // Inside the key of the last pair (general.alignment: 8 + 17 key bytes, 4 type, 4 value).
    let last_kv = l.infos_start - (8 + 17 + 4 + 4);
    expect_err(&bytes[..last_kv + 12], &["metadata key #12", "truncated"]);
    // Inside the last value (general.alignment's u32).
    expect_err(
        &bytes[..l.infos_start - 2],
        &["general.alignment", "truncated"],
    );
}

#[test]
fn truncated_in_tensor_infos() {
    let (bytes, l) = valid().build();
    // Inside the last info's offset field.
    expect_err(
        &bytes[..l.infos_end - 3],
        &["output_norm.weight", "truncated"],
    );
    // Inside the last info's name (8 + 18 name bytes, 4 n_dims, 8 dim, 4 type, 8 offset).
    let last_info = l.infos_end - (8 + 18 + 4 + 8 + 4 + 8);
    expect_err(&bytes[..last_info + 12], &["tensor #10 name", "truncated"]);
    // So early that the 11 claimed infos cannot fit.
    expect_err(
        &bytes[..l.infos_start + 12],
        &["tensor_count", "cannot fit"],
    );
}

#[test]
fn truncated_in_data() {
    let (bytes, l) = valid().build();
    // The last tensor (output_norm, 128 bytes) loses its tail.
    expect_err(
        &bytes[..bytes.len() - 10],
        &["output_norm.weight", "past the end"],
    );
    // Cut inside the alignment padding: the data section is missing altogether.
    assert!(
        l.data_start > l.infos_end + 1,
        "the test file needs padding"
    );
    expect_err(&bytes[..l.data_start - 1], &["data section"]);
}

#[test]
fn every_truncation_point_fails_cleanly() {
    let bytes = valid().bytes();
    for cut in 0..bytes.len() {
        let r = std::panic::catch_unwind(|| Gguf::parse(LABEL, &bytes[..cut]).map(|_| ()));
        match r {
            Err(_) => panic!("panic at cut {cut}"),
            Ok(Ok(())) => panic!("truncated file accepted at cut {cut} of {}", bytes.len()),
            Ok(Err(e)) => assert!(e.to_string().contains(LABEL), "cut {cut}: {e}"),
        }
    }
}

#[test]
fn every_corrupted_header_byte_fails_cleanly() {
    // Overwrite each byte before the data section with a few values: the parser and everything
    // built on it may accept or refuse the result, but must never panic or over-allocate.
    let (bytes, l) = valid().build();
    let mut accepted = 0;
    for pos in 0..l.data_start {
        for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
            if bytes[pos] == v {
                continue;
            }
            let mut b = bytes.clone();
            b[pos] = v;
            LARGEST.with(|m| m.set(0));
            let r = std::panic::catch_unwind(|| {
                let Ok(g) = Gguf::parse(LABEL, &b) else {
                    return false;
                };
                let _ = g.tokenizer_meta();
                if let Ok(c) = g.model_config() {
                    let _ = ModelWeights::from_source(c, &g);
                }
                true
            });
            match r {
                Err(_) => panic!("panic with byte {pos} set to {v:#x}"),
                Ok(ok) => accepted += ok as usize,
            }
            let largest = LARGEST.with(|m| m.get());
            // from_source copies tensors (a few KiB here); parsing stays within the file's size.
            assert!(
                largest <= alloc_limit(b.len()),
                "byte {pos} = {v:#x}: allocation of {largest} bytes"
            );
        }
    }
    // Some corruptions (inside names or float values) are still well-formed files.
    assert!(accepted > 0);
}

// ---------------------------------------------------------------------------------------------
// Metadata.

#[test]
fn absurd_string_length() {
    let mut f = valid();
    let mut v = u64::MAX.to_le_bytes().to_vec();
    v.extend(b"llama");
    f.kvs[0] = kv("general.architecture", T_STR, &v);
    expect_err(&f.bytes(), &["general.architecture", "string length"]);
    // Over the 1 MiB string limit, whatever the file size.
    let mut f = valid();
    let mut v = ((1u64 << 20) + 1).to_le_bytes().to_vec();
    v.extend(b"llama");
    f.kvs[0] = kv("general.architecture", T_STR, &v);
    expect_err(&f.bytes(), &["general.architecture", "1048576"]);
    // An absurd key length.
    let mut f = valid();
    let mut k = u64::MAX.to_le_bytes().to_vec();
    k.extend(b"general.architecture");
    f.kvs[0] = k;
    expect_err(&f.bytes(), &["metadata key #0", "string length"]);
}

#[test]
fn absurd_array_length() {
    // Past the 2^24 element limit.
    let mut f = valid();
    f.kvs
        .push(kv("test.ids", T_ARR, &arr(T_U32, 1 << 40, &[0; 8])));
    expect_err(&f.bytes(), &["test.ids", "16777216"]);
    // Within the limit but more than the bytes left.
    let mut f = valid();
    f.kvs
        .push(kv("test.ids", T_ARR, &arr(T_U32, 1 << 20, &[0; 8])));
    expect_err(&f.bytes(), &["test.ids", "cannot fit"]);
    // Strings: each at least 8 bytes, so 2^21 of them cannot fit in a small file.
    let mut f = valid();
    f.kvs
        .push(kv("test.strs", T_ARR, &arr(T_STR, 1 << 21, &[0; 8])));
    expect_err(&f.bytes(), &["test.strs", "cannot fit"]);
}

#[test]
fn arrays_nested_too_deep() {
    let mut inner = arr(T_U8, 0, &[]);
    for _ in 0..8 {
        inner = arr(T_ARR, 1, &inner);
    }
    let mut f = valid();
    f.kvs.push(kv("test.nested", T_ARR, &inner));
    expect_err(&f.bytes(), &["test.nested", "nested"]);
}

#[test]
fn nested_arrays_within_limit_are_read() {
    let pair = arr(T_U8, 2, &[7, 9]);
    let mut elems = pair.clone();
    elems.extend(&pair);
    let mut f = valid();
    f.kvs.push(kv("test.nested", T_ARR, &arr(T_ARR, 2, &elems)));
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("nested arrays");
    let v = g.get("test.nested").expect("key");
    assert_eq!(v.to_string(), "[array; 2]");
}

#[test]
fn unknown_metadata_value_type() {
    let mut f = valid();
    f.kvs.push(kv("test.odd", 13, &[0; 8]));
    expect_err(&f.bytes(), &["test.odd", "value type 13"]);
    let mut f = valid();
    f.kvs
        .push(kv("test.odd_array", T_ARR, &arr(77, 1, &[0; 8])));
    expect_err(&f.bytes(), &["test.odd_array", "value type 77"]);
}

#[test]
fn non_utf8_metadata_string() {
    let mut f = valid();
    f.kvs[0] = kv("general.architecture", T_STR, &gstr(&[b'l', 0xff, 0xfe]));
    expect_err(&f.bytes(), &["general.architecture", "UTF-8"]);
    // Inside a string array.
    let mut f = valid();
    let mut elems = gstr(b"ok");
    elems.extend(gstr(&[0xc3, 0x28]));
    f.kvs
        .push(kv("tokenizer.ggml.merges", T_ARR, &arr(T_STR, 2, &elems)));
    expect_err(&f.bytes(), &["tokenizer.ggml.merges", "UTF-8"]);
    // A key.
    let mut f = valid();
    f.kvs.push(kv_u32("x", 1));
    let last = f.kvs.len() - 1;
    f.kvs[last] = {
        let mut v = gstr(&[0xff]);
        v.extend(T_U32.to_le_bytes());
        v.extend(1u32.to_le_bytes());
        v
    };
    expect_err(&f.bytes(), &[&format!("metadata key #{last}"), "UTF-8"]);
}

#[test]
fn bad_bool_and_duplicate_key() {
    let mut f = valid();
    f.kvs.push(kv("test.flag", T_BOOL, &[2]));
    expect_err(&f.bytes(), &["test.flag", "bool"]);
    let mut f = valid();
    f.kvs.push(kv_u32("llama.block_count", 2));
    expect_err(&f.bytes(), &["llama.block_count", "twice"]);
}

#[test]
fn bad_alignment_value() {
    for a in [0u32, 3, 1 << 20] {
        let mut f = valid();
        let i = f.kvs.len() - 1;
        f.kvs[i] = kv_u32("general.alignment", a);
        expect_err(&f.bytes(), &["general.alignment", "power of two"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor infos and data.

#[test]
fn absurd_n_dims() {
    for n_dims in [0u32, 5, u32::MAX] {
        let mut f = valid();
        let mut raw = gstr(b"blk.0.attn_norm.weight");
        raw.extend(n_dims.to_le_bytes());
        raw.extend(32u64.to_le_bytes());
        raw.extend(G_F32.to_le_bytes());
        raw.extend(0u64.to_le_bytes());
        f.raw_infos.push((1, raw));
        expect_err(&f.bytes(), &["blk.0.attn_norm.weight", "n_dims"]);
    }
}

#[test]
fn absurd_dims() {
    let cases: [&[u64]; 4] = [
        &[0, 32],
        &[32, 0],
        &[1 << 20, 1 << 20],
        &[u64::MAX, u64::MAX, 2, 2],
    ];
    for ne in cases {
        let mut f = valid();
        f.raw_infos
            .push((0, info("token_embd.weight", ne, G_F32, 0)));
        expect_err(&f.bytes(), &["token_embd.weight", "17179869184"]);
    }
}

#[test]
fn tensor_offset_past_the_end() {
    let mut f = valid();
    f.offsets.push((3, 1 << 40));
    expect_err(&f.bytes(), &["blk.0.attn_q.weight", "past the end"]);
    let mut f = valid();
    f.offsets.push((3, u64::MAX - 31));
    expect_err(&f.bytes(), &["blk.0.attn_q.weight", "past the end"]);
}

#[test]
fn tensor_data_overrunning_the_file() {
    // Claim 32 × 64 f32 (8 KiB) for the last tensor, which has 128 bytes before the end.
    let mut f = valid();
    let last = f.tensors.len() - 1;
    f.tensors[last].ne = vec![32, 64];
    expect_err(&f.bytes(), &["output_norm.weight", "past the end"]);
}

#[test]
fn misaligned_offset() {
    let mut f = valid();
    f.offsets.push((1, 4));
    expect_err(&f.bytes(), &["blk.0.attn_norm.weight", "alignment"]);
}

#[test]
fn overlapping_tensors() {
    let mut f = valid();
    // token_embd occupies [0, 2048); put ffn_norm inside it.
    f.offsets.push((2, 1024));
    expect_err(
        &f.bytes(),
        &["blk.0.ffn_norm.weight", "overlaps", "token_embd.weight"],
    );
}

#[test]
fn duplicate_tensor_name() {
    let mut f = valid();
    f.tensors[2].name = "blk.0.attn_norm.weight".into();
    expect_err(&f.bytes(), &["blk.0.attn_norm.weight", "twice"]);
}

#[test]
fn unknown_ggml_type() {
    for id in [99u32, 16, 4] {
        let mut f = valid();
        f.tensors[3].ty = id;
        expect_err(
            &f.bytes(),
            &["blk.0.attn_q.weight", &format!("type id {id}")],
        );
    }
}

#[test]
fn block_type_with_ragged_rows() {
    // Q8_0 rows must be multiples of 32 weights.
    let mut f = valid();
    f.raw_infos
        .push((3, info("blk.0.attn_q.weight", &[48, 32], G_Q8_0, 0)));
    expect_err(&f.bytes(), &["blk.0.attn_q.weight", "block size 32"]);
}

#[test]
fn overlong_tensor_name() {
    let mut f = valid();
    f.tensors[0].name = "x".repeat(300);
    expect_err(&f.bytes(), &["tensor #0 name", "256"]);
}

// ---------------------------------------------------------------------------------------------
// Config against weights.

#[test]
fn mismatched_config_and_weights() {
    // The metadata says d = 64, the tensors are 32 wide.
    let bytes = valid_with_dim(64).bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("the file itself is well formed");
    let cfg = g.model_config().expect("config is self-consistent");
    let e = ModelWeights::from_source(cfg, &g)
        .expect_err("shape mismatch must fail")
        .to_string();
    assert!(e.contains("token_embd.weight") && e.contains(LABEL), "{e}");
    assert!(e.contains("[16, 32]") && e.contains("[16, 64]"), "{e}");
}

#[test]
fn unsupported_architecture_and_missing_keys() {
    let mut f = valid();
    f.kvs[0] = kv_str("general.architecture", "falcon");
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.model_config().unwrap_err().to_string();
    assert!(
        e.contains("general.architecture") && e.contains("falcon"),
        "{e}"
    );

    let mut f = valid();
    f.kvs.remove(1); // llama.block_count
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.model_config().unwrap_err().to_string();
    assert!(
        e.contains("llama.block_count") && e.contains("missing"),
        "{e}"
    );

    // A key of the wrong type.
    let mut f = valid();
    f.kvs[3] = kv_str("llama.embedding_length", "32");
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.model_config().unwrap_err().to_string();
    assert!(e.contains("llama.embedding_length"), "{e}");

    // Heads that do not divide the width (and no key_length).
    let mut f = valid();
    f.kvs[5] = kv_u32("llama.attention.head_count", 5);
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.model_config().unwrap_err().to_string();
    assert!(e.contains("llama.attention.head_count"), "{e}");
}

#[test]
fn tokenizer_ids_outside_the_vocabulary() {
    let mut f = valid();
    f.kvs.push(kv_u32("tokenizer.ggml.eos_token_id", 16));
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.tokenizer_meta().unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.ggml.eos_token_id") && e.contains("16"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Non-finite weights are refused when the weights load, naming the tensor.

#[test]
fn nan_and_infinite_weights_are_refused_naming_the_tensor() {
    // An f32 norm with a NaN.
    let mut f = valid();
    let t = f
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.ffn_norm.weight")
        .expect("tensor");
    t.data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("the file itself is well formed");
    let e = ModelWeights::from_source(g.model_config().expect("config"), &g)
        .expect_err("NaN weights")
        .to_string();
    assert!(
        e.contains(LABEL) && e.contains("blk.0.ffn_norm.weight") && e.contains("value 2 is NaN"),
        "{e}"
    );

    // A Q8_0 block whose f16 scale is +infinity (0x7c00).
    let mut f = valid();
    let t = f
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .expect("tensor");
    t.data[34..36].copy_from_slice(&0x7c00u16.to_le_bytes());
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = ModelWeights::from_source(g.model_config().expect("config"), &g)
        .expect_err("infinite scale")
        .to_string();
    assert!(
        e.contains("blk.0.attn_k.weight") && e.contains("Q8_0 block scale of block 1 is inf"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metadata against tensors.

#[test]
fn block_count_smaller_than_the_blocks_present_is_refused() {
    // Two blocks of tensors, block_count 1: block 1 would be silently unused.
    let mut f = valid();
    let extra: Vec<Tensor> = f
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.0."))
        .map(|t| Tensor {
            name: t.name.replace("blk.0.", "blk.1."),
            ne: t.ne.clone(),
            ty: t.ty,
            data: t.data.clone(),
        })
        .collect();
    f.tensors.extend(extra);
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.model_config().unwrap_err().to_string();
    assert!(
        e.contains(LABEL) && e.contains("llama.block_count") && e.contains("block 1"),
        "{e}"
    );
    // With block_count 2 the same file is consistent.
    f.kvs[1] = kv_u32("llama.block_count", 2);
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let c = g.model_config().expect("consistent");
    assert_eq!(c.n_layer, 2);
    ModelWeights::from_source(c, &g).expect("loads both blocks");
}

#[test]
fn rope_dimension_count_must_equal_the_head_size() {
    // Heads of 8 (d 32 / 4 heads).
    let mut f = valid();
    f.kvs.push(kv_u32("llama.rope.dimension_count", 4));
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let e = g.model_config().unwrap_err().to_string();
    assert!(
        e.contains("llama.rope.dimension_count") && e.contains("4") && e.contains("heads of 8"),
        "{e}"
    );
    let mut f = valid();
    f.kvs.push(kv_u32("llama.rope.dimension_count", 8));
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    g.model_config().expect("equal to the head size");
}

/// A file whose header declares more tensor bytes than the target can hold is refused from the
/// header, before anything of that size is allocated (in the page: wasm32's 4 GiB memory), with
/// the file, the size and the limit in the message.
#[test]
fn declared_tensor_bytes_over_the_limit_are_refused_by_name_size_and_limit() {
    use quantlab::io::gguf::{check_declared_size, MAX_TENSOR_BYTES};
    let sizes = [3u64 << 30, 1 << 30];
    assert!(check_declared_size("big.gguf", sizes.into_iter(), 4 << 30).is_ok());
    let e = check_declared_size("big.gguf", sizes.into_iter(), 2 << 30)
        .expect_err("4 GiB declared against 2 GiB")
        .to_string();
    for needle in [
        "big.gguf",
        "tensors",
        "4294967296 bytes (4.00 GiB)",
        "2.00 GiB",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from {e:?}");
    }
    // Sizes that overflow u64 saturate rather than wrap to a small total.
    assert!(check_declared_size("x", [u64::MAX, 2].into_iter(), MAX_TENSOR_BYTES).is_err());
}

#[test]
fn a_norm_relabelled_to_a_block_format_is_refused() {
    // blk.0.attn_norm.weight (32 floats) re-declared as Q8_0: one 34-byte block, which the
    // file's bytes can hold, so only the type rule catches it.
    let mut f = valid();
    let t = f
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_norm.weight")
        .expect("tensor");
    *t = block_tensor("blk.0.attn_norm.weight", &[32], G_Q8_0, 34);
    let bytes = f.bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("the file itself is well formed");
    let e = ModelWeights::from_source(g.model_config().expect("config"), &g)
        .expect_err("a quantized norm")
        .to_string();
    assert!(
        e.contains(LABEL) && e.contains("blk.0.attn_norm.weight") && e.contains("Q8_0"),
        "{e}"
    );
}

#[test]
fn a_tensor_relabelled_to_a_smaller_type_is_refused_by_the_layout() {
    // (tensor, new type id, its name, bytes it needs as that type, bytes its slot holds). The
    // data stays as written, so each tensor's declared size shrinks and leaves an unused gap
    // before the next tensor (or, for the last one, the end of the data section) that is more
    // than padding. The values these would decode to are finite: only the layout shows it.
    let cases = [
        // 32×16 F32 (2048 bytes) as Q8_0: 16 blocks of 34 bytes.
        ("token_embd.weight", G_Q8_0, "Q8_0", 544, 2048),
        // 32×64 Q4_1 (64 blocks of 20 bytes) as Q4_0 (18 bytes a block).
        ("blk.0.ffn_gate.weight", G_Q4_0, "Q4_0", 1152, 1280),
        // 32×32 Q4_1 as Q4_0: a gap of 64 bytes, two alignments.
        ("blk.0.attn_output.weight", G_Q4_0, "Q4_0", 576, 640),
        // The last tensor: 32 F32 as Q8_0, against the end of the data section.
        ("output_norm.weight", G_Q8_0, "Q8_0", 34, 128),
    ];
    for (name, ty, ty_name, needs, room) in cases {
        let mut f = valid();
        let t = f
            .tensors
            .iter_mut()
            .find(|t| t.name == name)
            .expect("tensor");
        t.ty = ty;
        let e = expect_err(
            &f.bytes(),
            &[
                name,
                ty_name,
                &format!("needs {needs} bytes"),
                &format!("gives it {room}"),
                "general.alignment",
            ],
        );
        assert!(!e.contains("overlaps"), "{e}");
    }
}
