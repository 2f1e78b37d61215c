// Shared by the two tiled products, matmul.wgsl (f32) and matmul_coop.wgsl (f16 tensor cores):
// their bindings after the weight, the bounds-checked loads of four consecutive k, and the
// bounds-checked store of four consecutive outputs (with the bias).

@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> BIAS: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

// The k range [x, y) of split-K slice z (the whole row without a split).
fn k_range(z: u32) -> vec2<u32> {
    if (P.k_split == 0u) {
        return vec2<u32>(0u, P.k);
    }
    let kb = z * P.k_split;
    return vec2<u32>(kb, min(kb + P.k_split, P.k));
}

// Activations k..k+3 of token `row`, zeros at or past `ke` (the end of this k range).
fn load_x(row: u32, k: u32, ke: u32) -> vec4<f32> {
    if (row >= P.m || k >= ke) {
        return vec4<f32>(0.0);
    }
    let b = (P.x_row0 + row) * P.k + k;
    if (k + 3u < ke) {
        return vec4<f32>(X[b], X[b + 1u], X[b + 2u], X[b + 3u]);
    }
    // Reads past the row are clamped by the bounds-checked access and then discarded.
    return vec4<f32>(
        X[b],
        select(0.0, X[b + 1u], k + 1u < ke),
        select(0.0, X[b + 2u], k + 2u < ke),
        select(0.0, X[b + 3u], k + 3u < ke),
    );
}

// Weights k..k+3 of weight row `row`, zeros at or past `ke`.
fn load_w(row: u32, k: u32, ke: u32) -> vec4<f32> {
    if (row >= P.n || k >= ke) {
        return vec4<f32>(0.0);
    }
    if ((P.k & 3u) == 0u && k + 3u < ke) {
        return w_load4(row, k);
    }
    let last = ke - 1u;
    return vec4<f32>(
        w_at(row, k),
        select(0.0, w_at(row, min(k + 1u, last)), k + 1u < ke),
        select(0.0, w_at(row, min(k + 2u, last)), k + 2u < ke),
        select(0.0, w_at(row, min(k + 3u, last)), k + 3u < ke),
    );
}

fn store_row(r: u32, c: u32, base: u32, acc: vec4<f32>, bias: bool) {
    if (r >= P.m) {
        return;
    }
    var v = acc;
    let o = base + r * P.n + c;
    if (c + 3u < P.n) {
        if (bias) {
            v += vec4<f32>(BIAS[c], BIAS[c + 1u], BIAS[c + 2u], BIAS[c + 3u]);
        }
        Y[o] = v.x;
        Y[o + 1u] = v.y;
        Y[o + 2u] = v.z;
        Y[o + 3u] = v.w;
        return;
    }
    if (c < P.n) {
        Y[o] = v.x + select(0.0, BIAS[c], bias);
    }
    if (c + 1u < P.n) {
        Y[o + 1u] = v.y + select(0.0, BIAS[c + 1u], bias);
    }
    if (c + 2u < P.n) {
        Y[o + 2u] = v.z + select(0.0, BIAS[c + 2u], bias);
    }
}
