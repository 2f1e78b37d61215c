// Adds the `splits` row-range partials of gram.wgsl into the resident accumulator ACC (same
// layout: d·d Gram values, d sums of |x|, d maxima): Gram entries on or above the diagonal and
// the sums are added, the maxima kept. Entries below the diagonal stay untouched (never
// written: the host mirrors the upper triangle when it reads the accumulator back).
// 2-D dispatch like elementwise.wgsl.

struct Params {
    d: u32,
    splits: u32,
    // d·d + 2·d: values per slice.
    n: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> ACC: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 256u;
    let dd = P.d * P.d;
    if (idx >= P.n) {
        return;
    }
    if (idx < dd && idx / P.d > idx % P.d) {
        return;
    }
    if (idx < dd + P.d) {
        var s = 0.0;
        for (var z = 0u; z < P.splits; z++) {
            s += PART[z * P.n + idx];
        }
        ACC[idx] += s;
    } else {
        var m = ACC[idx];
        for (var z = 0u; z < P.splits; z++) {
            m = max(m, PART[z * P.n + idx]);
        }
        ACC[idx] = m;
    }
}
