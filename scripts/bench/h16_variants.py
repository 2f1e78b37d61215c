#!/usr/bin/env python3
"""Versions of shaders/matmul_h16_staged.wgsl for timing on the GPU machine (docs/gpu-perf.md,
session 21): ablations that each drop one part of the staged tensor-core product (their results
are wrong; only their time says what that part costs), a reordered loop, two shapes with
256 invocations, and (session 24, not yet timed) `f16-storage`: the same kernel with its inputs
read from storage as f16 pieces, so that staging a stage only moves halves instead of unpacking
each to f32 and rounding it back (with shaders/h16_tiles_nested.wgsl changed to match; same
values, so the same results). Each goes into OUT/<name>/, for QUANTLAB_SHADER_DIR:

    python3 scripts/bench/h16_variants.py .variants
    for d in .variants/*/; do
      QUANTLAB_SHADER_DIR=$d gpu_bench --precision f16 --skip-kernels --batch 32 --iters 5
    done
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(HERE, '../../shaders/matmul_h16_staged.wgsl')).read()
LOADS = """            let a0 = load_a(a);
            let a1 = load_a(a + f16r);
            let a2 = load_a(a + 2u * f16r);
            let a3 = load_a(a + 3u * f16r);
            let b0 = load_b(b);
            let b1 = load_b(b + f16r);
            let b2 = load_b(b + 2u * f16r);
            let b3 = load_b(b + 3u * f16r);
"""
assert LOADS in src
PREF_START = "        if (more) {\n            let o = (s + 1u) * 4u;"
assert PREF_START in src
PUT = """        if (more) {
            put_stage(BUF - cur + sl, x0, x1, x2, x3, w0, w1, w2, w3);
        }
        workgroupBarrier();
    }"""
assert PUT in src
LOOP_HDR = "    let stages = P.k / 32u;\n"
assert LOOP_HDR in src
V = {}
V['base'] = src
# frags loaded once before the loop (buffer 0, step 0): MMA + staging + barriers, no fragment loads
s = src.replace(LOADS, "")
s = s.replace(LOOP_HDR, LOOP_HDR + LOADS.replace("            ", "    ").replace("(a", "(fa").replace("(b", "(fb").replace("fa + f16r", "fa + f16r").replace("(fb)", "(fb)"))
V['abl-fragonce'] = s
# no staging in the loop (only the first stage): fragment loads + MMA + barriers
s = src.replace(PREF_START, "        if (false) {\n            let o = (s + 1u) * 4u;")
s = s.replace(PUT, PUT.replace("if (more) {", "if (false) {"))
V['abl-nostage'] = s
# pure MMA: frags once, no staging, no barrier
s = V['abl-fragonce'].replace(PREF_START, "        if (false) {\n            let o = (s + 1u) * 4u;")
s = s.replace(PUT, PUT.replace("if (more) {", "if (false) {").replace("        workgroupBarrier();\n    }", "    }"))
V['abl-mma'] = s
# everything but the barrier in the loop
s = src.replace(PUT, PUT.replace("        workgroupBarrier();\n    }", "    }"))
V['abl-nobar'] = s
# lower register pressure: B fragments first, then one A fragment at a time with its 4 products
MMAS = re.search(r"(            c00 = coopMultiplyAdd.*?c33 = coopMultiplyAdd\(a3, b3, c33\);\n)", src, re.S).group(1)
new = """            let b0 = load_b(b);
            let b1 = load_b(b + f16r);
            let b2 = load_b(b + 2u * f16r);
            let b3 = load_b(b + 3u * f16r);
"""
for i in range(4):
    off = "a" if i == 0 else f"a + {i}u * f16r" if i > 1 else "a + f16r"
    new += f"            let a{i} = load_a({off});\n"
    for j in range(4):
        new += f"            c{i}{j} = coopMultiplyAdd(a{i}, b{j}, c{i}{j});\n"
s = src.replace(LOADS + MMAS, new)
assert s != src
V['opt-order'] = s


def w256(RA, RB):
    """256 invocations, the same 128×128 tile and dispatch: 8 subgroups of RA×RB accumulators."""
    assert RA * RB == 8
    sub_rows = RA * 16   # rows of A per subgroup
    sub_cols = RB * 16
    na = 128 // sub_rows  # subgroups along rows
    nb = 128 // sub_cols
    assert na * nb == 8
    L = []
    L.append("""// variant: 256 invocations, 8 subgroups of %dx%d
@group(0) @binding(1) var<storage, read> XH: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> WH: array<vec4<u32>>;
const SCALE: u32 = 8u;
const PITCH: u32 = 5u;
const BUF: u32 = 640u;
var<workgroup> cs2: array<f32, 1024>; // the second half of the staging (subgroups 4..7)

fn put2(c: coop_mat16x16<f32, C>, direct: bool, sg: u32, lane: u32, r0: u32, c0: u32) {
    let n = P.n;
    let at = r0 * n + c0;
    if (direct) {
        coopStoreT(c, &Y[at], n);
        return;
    }
    // edge tiles: subgroups 0..3 through cs, 4..7 through cs2, one after another
    let s4 = sg %% 4u;
    if (sg < 4u) {
        coopStoreT(c, &cs[s4 * 256u], 16u);
    } else {
        coopStoreT(c, &cs2[s4 * 256u], 16u);
    }
    workgroupBarrier();
    for (var h = 0u; h < 8u; h++) {
        let j = lane * 8u + h;
        let r = r0 + j / 16u;
        let col = c0 + j %% 16u;
        if (r < P.m && col < P.n) {
            let v = select(cs2[s4 * 256u + j], cs[s4 * 256u + j], sg < 4u);
            Y[r * P.n + col] = v + select(0.0, BIAS[col], P.has_bias != 0u);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let sg = li / SG;
    let lane = li %% SG;
    let t0 = wg.y * 128u;
    let u0 = wg.x * 128u;
    let kv = P.k / 8u;
    let q = li %% 4u;
    let rr = li / 4u;
    let xg = (t0 + rr) * kv + q;
    let wgl = (u0 + rr) * kv + q;
    let r64 = 64u * kv;
    let sl = rr * PITCH + q;
    var x0 = XH[xg];
    var x1 = XH[xg + r64];
    var w0 = WH[wgl];
    var w1 = WH[wgl + r64];
    put_a(sl, x0);
    put_a(sl + 64u * PITCH, x1);
    put_b(sl, w0);
    put_b(sl + 64u * PITCH, w1);
    workgroupBarrier();
    let fa = (sg / %du) * %du * PITCH;
    let fb = (sg %% %du) * %du * PITCH;
    let f16r = 16u * PITCH;
""" % (sub_rows, sub_cols, nb, sub_rows, nb, sub_cols))
    for i in range(RA):
        for j in range(RB):
            L.append(f"    var c{i}{j} = coop_mat16x16<f32, C>();\n")
    L.append("""    let stages = P.k / 32u;
    for (var s = 0u; s < stages; s++) {
        let cur = (s & 1u) * BUF;
        let more = s + 1u < stages;
        if (more) {
            let o = (s + 1u) * 4u;
            x0 = XH[xg + o];
            x1 = XH[xg + r64 + o];
            w0 = WH[wgl + o];
            w1 = WH[wgl + r64 + o];
        }
        for (var h = 0u; h < 4u; h += 2u) {
            let a = cur + fa + h;
            let b = cur + fb + h;
""")
    for j in range(RB):
        L.append(f"            let b{j} = load_b(b + {j}u * f16r);\n")
    for i in range(RA):
        L.append(f"            let a{i} = load_a(a + {i}u * f16r);\n")
        for j in range(RB):
            L.append(f"            c{i}{j} = coopMultiplyAdd(a{i}, b{j}, c{i}{j});\n")
    L.append("""        }
        if (more) {
            let nb = BUF - cur + sl;
            put_a(nb, x0);
            put_a(nb + 64u * PITCH, x1);
            put_b(nb, w0);
            put_b(nb + 64u * PITCH, w1);
        }
        workgroupBarrier();
    }
""")
    L.append(f"    let r0 = t0 + (sg / {nb}u) * {sub_rows}u;\n    let c0 = u0 + (sg % {nb}u) * {sub_cols}u;\n")
    L.append("    let direct = t0 + 128u <= P.m && u0 + 128u <= P.n && P.has_bias == 0u;\n")
    for i in range(RA):
        for j in range(RB):
            L.append(f"    put2(c{i}{j}, direct, sg, lane, r0 + {16*i}u, c0 + {16*j}u);\n")
    L.append("}\n")
    return "".join(L)


# Inputs as 16-byte pieces of eight f16 (two vec4<f16>) instead of vec4<u32>: naga's bitcast
# cannot turn a u32 into vec2<f16>, so the kernel unpacks to f32 and rounds back, two conversions
# per half, 64 per invocation per stage.
TILES = open(os.path.join(HERE, '../../shaders/h16_tiles_nested.wgsl')).read()
HALVES = re.search(r"fn halves\(v: vec4<u32>\) -> array<f16, 8> \{.*?\n\}\n", TILES, re.S).group(0)
F16_TILES = TILES.replace(HALVES, """alias P16 = array<vec4<f16>, 2>;

fn halves(v: P16) -> array<f16, 8> {
    return array<f16, 8>(v[0].x, v[0].y, v[0].z, v[0].w, v[1].x, v[1].y, v[1].z, v[1].w);
}
""").replace("v: vec4<u32>) {", "v: P16) {")
assert F16_TILES.count("v: P16) {") == 2
F16_STAGED = (src.replace("array<vec4<u32>>;", "array<array<vec4<f16>, 2>>;")
              .replace("x0: vec4<u32>, x1: vec4<u32>, x2: vec4<u32>, x3: vec4<u32>,",
                       "x0: P16, x1: P16, x2: P16, x3: P16,")
              .replace("w0: vec4<u32>, w1: vec4<u32>, w2: vec4<u32>, w3: vec4<u32>)",
                       "w0: P16, w1: P16, w2: P16, w3: P16)"))
assert F16_STAGED.count("array<array<vec4<f16>, 2>>;") == 2 and "vec4<u32>" not in F16_STAGED


def main():
    out = sys.argv[1]
    os.makedirs(f"{out}/f16-storage", exist_ok=True)
    with open(f"{out}/f16-storage/h16_tiles_nested.wgsl", "w") as f:
        f.write(F16_TILES)
    with open(f"{out}/f16-storage/matmul_h16_staged.wgsl", "w") as f:
        f.write(F16_STAGED)
    for ra, rb in [(2, 4), (4, 2)]:
        V[f"w256-{ra}x{rb}"] = w256(ra, rb)
    for name, text in V.items():
        os.makedirs(f"{out}/{name}", exist_ok=True)
        with open(f"{out}/{name}/matmul_h16_staged.wgsl", "w") as f:
            f.write(text)
    print(" ".join(V), "f16-storage")


if __name__ == "__main__":
    main()
