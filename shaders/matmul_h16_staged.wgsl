// y = x Wᵀ + b on tensor cores from f16 in storage (`MatmulGen::V8`), both tiles staged through
// workgroup memory as most tensor-core GEMMs do: per stage of 32 of k, the workgroup copies its
// 128 activation rows and 128 weight rows (64 bytes of each) with 16-byte loads that run along
// the rows (each invocation 4 + 4 vec4), and the subgroups load their fragments from workgroup
// memory, where each fragment row is 16 aligned bytes. Two buffers: stage s+1 is read from
// storage into registers before stage s's multiply-adds and written to the other buffer after
// them, so one barrier per stage separates the writes from the reads (matmul_h16.wgsl, which
// loads fragments straight from storage, waits on every load in its loop). Rows are padded to
// 5 vec4 (80 bytes): the 8 rows of a fragment's 16-byte pieces then fall in distinct banks.
// The same fragments, products and sums as V7 (16-wide steps in order), so the same results.
//
// Prepended: matmul_h16_common.wgsl (parameters, output, `put_block`, the workgroup layout)
// and one declaration of the tiles `sa` (activations) and `sb` (weight rows) with their
// `put_a`/`put_b` (a 16-byte piece unpacked, exactly, into f16) and `load_a`/`load_b` (a
// fragment): h16_tiles_flat.wgsl (`MatmulGen::V8`–`V11`) or h16_tiles_nested.wgsl (`V12`).
// Indices below count vec4 pieces; SCALE halves make one. k is a multiple of 32 here (the
// host checks), and the device has 44 KiB of workgroup memory (2 × 20 KiB of tiles + `cs`;
// src/gpu/shaders.rs H16_STAGED_BYTES).

@group(0) @binding(1) var<storage, read> XH: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> WH: array<vec4<u32>>;

const SCALE: u32 = 8u; // halves per vec4 piece
const PITCH: u32 = 5u; // vec4 per tile row: 4 of data (32 halves) + 1 of padding
const BUF: u32 = 640u; // vec4 per buffer: 128 rows × PITCH; the tiles hold two

// This invocation's 4 + 4 pieces of a stage into the buffer at `at` (its first row's piece),
// rows 32 apart. Named values, not an indexed array: the NVIDIA compiler kept indexed private
// arrays in memory (docs/gpu-perf.md v2).
fn put_stage(at: u32, x0: vec4<u32>, x1: vec4<u32>, x2: vec4<u32>, x3: vec4<u32>,
             w0: vec4<u32>, w1: vec4<u32>, w2: vec4<u32>, w3: vec4<u32>) {
    let r = 32u * PITCH;
    put_a(at, x0);
    put_a(at + r, x1);
    put_a(at + 2u * r, x2);
    put_a(at + 3u * r, x3);
    put_b(at, w0);
    put_b(at + r, w1);
    put_b(at + 2u * r, w2);
    put_b(at + 3u * r, w3);
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let sg = li / SG;
    let lane = li % SG;
    let t0 = wg.y * 128u;
    let u0 = wg.x * 128u;
    // This invocation copies vec4 q of tile rows rr, rr + 32, rr + 64, rr + 96 of each stage.
    let kv = P.k / 8u;
    let q = li % 4u;
    let rr = li / 4u;
    let xg = (t0 + rr) * kv + q;
    let wgl = (u0 + rr) * kv + q;
    let r32 = 32u * kv;
    let sl = rr * PITCH + q;
    var x0 = XH[xg];
    var x1 = XH[xg + r32];
    var x2 = XH[xg + 2u * r32];
    var x3 = XH[xg + 3u * r32];
    var w0 = WH[wgl];
    var w1 = WH[wgl + r32];
    var w2 = WH[wgl + 2u * r32];
    var w3 = WH[wgl + 3u * r32];
    put_stage(sl, x0, x1, x2, x3, w0, w1, w2, w3);
    workgroupBarrier();
    // This subgroup's fragments: A rows (sg / 2)·64 .., B (weight) rows (sg % 2)·64 .. of the tile.
    let fa = (sg / 2u) * 64u * PITCH;
    let fb = (sg % 2u) * 64u * PITCH;
    let f16r = 16u * PITCH;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c22 = coop_mat16x16<f32, C>();
    var c23 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    var c32 = coop_mat16x16<f32, C>();
    var c33 = coop_mat16x16<f32, C>();
    let stages = P.k / 32u;
    for (var s = 0u; s < stages; s++) {
        let cur = (s & 1u) * BUF;
        let more = s + 1u < stages;
        if (more) {
            let o = (s + 1u) * 4u;
            x0 = XH[xg + o];
            x1 = XH[xg + r32 + o];
            x2 = XH[xg + 2u * r32 + o];
            x3 = XH[xg + 3u * r32 + o];
            w0 = WH[wgl + o];
            w1 = WH[wgl + r32 + o];
            w2 = WH[wgl + 2u * r32 + o];
            w3 = WH[wgl + 3u * r32 + o];
        }
        // Two steps of 16 of k: vec4 columns 0–1, then 2–3 of each row.
        for (var h = 0u; h < 4u; h += 2u) {
            let a = cur + fa + h;
            let b = cur + fb + h;
            let a0 = load_a(a);
            let a1 = load_a(a + f16r);
            let a2 = load_a(a + 2u * f16r);
            let a3 = load_a(a + 3u * f16r);
            let b0 = load_b(b);
            let b1 = load_b(b + f16r);
            let b2 = load_b(b + 2u * f16r);
            let b3 = load_b(b + 3u * f16r);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c22 = coopMultiplyAdd(a2, b2, c22);
            c23 = coopMultiplyAdd(a2, b3, c23);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
            c32 = coopMultiplyAdd(a3, b2, c32);
            c33 = coopMultiplyAdd(a3, b3, c33);
        }
        if (more) {
            put_stage(BUF - cur + sl, x0, x1, x2, x3, w0, w1, w2, w3);
        }
        workgroupBarrier();
    }
    let r0 = t0 + (sg / 2u) * 64u;
    let c0 = u0 + (sg % 2u) * 64u;
    let direct = t0 + 128u <= P.m && u0 + 128u <= P.n && P.has_bias == 0u;
    put_block(
        c00, c01, c02, c03, c10, c11, c12, c13,
        c20, c21, c22, c23, c30, c31, c32, c33,
        direct, sg, lane, r0, c0,
    );
}
