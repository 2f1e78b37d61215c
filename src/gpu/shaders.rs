//! THE table of WGSL sources (architecture principle 6): every `shaders/*.wgsl` file, compiled
//! into the binary with `include_str!` so the browser build needs no file access. The format
//! fragments (`fmt_*.wgsl`, one per decoder) are listed by their format's module
//! (`crate::format::fragments`), the kernels here. Kernels that read a packed weight are
//! assembled from four files (see shaders/README.md): the shared declarations, the byte readers
//! every decoder shares, one format fragment defining `w_at`, and the kernel body.

use crate::format;

/// `(file stem, source)` for every file in `shaders/` except the format fragments.
pub const SHADERS: &[(&str, &str)] = &[
    (
        "weight_common",
        include_str!("../../shaders/weight_common.wgsl"),
    ),
    ("fmt_common", include_str!("../../shaders/fmt_common.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_common",
        include_str!("../../shaders/matmul_common.wgsl"),
    ),
    (
        "matmul_coop",
        include_str!("../../shaders/matmul_coop.wgsl"),
    ),
    ("matmul_f16", include_str!("../../shaders/matmul_f16.wgsl")),
    ("matmul_v1", include_str!("../../shaders/matmul_v1.wgsl")),
    (
        "matmul_wide",
        include_str!("../../shaders/matmul_wide.wgsl"),
    ),
    (
        "matmul_wide2",
        include_str!("../../shaders/matmul_wide2.wgsl"),
    ),
    (
        "matmul_coop_common",
        include_str!("../../shaders/matmul_coop_common.wgsl"),
    ),
    (
        "matmul_coop_wide",
        include_str!("../../shaders/matmul_coop_wide.wgsl"),
    ),
    ("matmul_int", include_str!("../../shaders/matmul_int.wgsl")),
    (
        "intdot_native",
        include_str!("../../shaders/intdot_native.wgsl"),
    ),
    (
        "intdot_emul",
        include_str!("../../shaders/intdot_emul.wgsl"),
    ),
    ("splitk", include_str!("../../shaders/splitk.wgsl")),
    ("decode_f16", include_str!("../../shaders/decode_f16.wgsl")),
    ("to_f16", include_str!("../../shaders/to_f16.wgsl")),
    (
        "matmul_h16_common",
        include_str!("../../shaders/matmul_h16_common.wgsl"),
    ),
    ("matmul_h16", include_str!("../../shaders/matmul_h16.wgsl")),
    (
        "matmul_h16_staged",
        include_str!("../../shaders/matmul_h16_staged.wgsl"),
    ),
    (
        "h16_tiles_flat",
        include_str!("../../shaders/h16_tiles_flat.wgsl"),
    ),
    (
        "h16_tiles_nested",
        include_str!("../../shaders/h16_tiles_nested.wgsl"),
    ),
    (
        "attention_coop",
        include_str!("../../shaders/attention_coop.wgsl"),
    ),
    (
        "attention_coop1",
        include_str!("../../shaders/attention_coop1.wgsl"),
    ),
    ("embed", include_str!("../../shaders/embed.wgsl")),
    ("rmsnorm", include_str!("../../shaders/rmsnorm.wgsl")),
    (
        "add_rmsnorm",
        include_str!("../../shaders/add_rmsnorm.wgsl"),
    ),
    ("layernorm", include_str!("../../shaders/layernorm.wgsl")),
    ("rope", include_str!("../../shaders/rope.wgsl")),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("activation", include_str!("../../shaders/activation.wgsl")),
    ("slice_cols", include_str!("../../shaders/slice_cols.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    (
        "attention_tiled",
        include_str!("../../shaders/attention_tiled.wgsl"),
    ),
    ("score", include_str!("../../shaders/score.wgsl")),
    ("rtn", include_str!("../../shaders/rtn.wgsl")),
    ("outliers", include_str!("../../shaders/outliers.wgsl")),
    (
        "outliers_f16",
        include_str!("../../shaders/outliers_f16.wgsl"),
    ),
    ("lowrank", include_str!("../../shaders/lowrank.wgsl")),
    ("binarymos", include_str!("../../shaders/binarymos.wgsl")),
    (
        "mos_train_mm",
        include_str!("../../shaders/mos_train_mm.wgsl"),
    ),
    (
        "mos_train_common",
        include_str!("../../shaders/mos_train_common.wgsl"),
    ),
    (
        "mos_train_gates",
        include_str!("../../shaders/mos_train_gates.wgsl"),
    ),
    (
        "mos_train_err",
        include_str!("../../shaders/mos_train_err.wgsl"),
    ),
    (
        "mos_train_small",
        include_str!("../../shaders/mos_train_small.wgsl"),
    ),
    (
        "mos_train_adam",
        include_str!("../../shaders/mos_train_adam.wgsl"),
    ),
    ("actquant", include_str!("../../shaders/actquant.wgsl")),
    ("place", include_str!("../../shaders/place.wgsl")),
    ("gram", include_str!("../../shaders/gram.wgsl")),
    (
        "tender_stats",
        include_str!("../../shaders/tender_stats.wgsl"),
    ),
    (
        "tender_chunk",
        include_str!("../../shaders/tender_chunk.wgsl"),
    ),
    (
        "tender_quant",
        include_str!("../../shaders/tender_quant.wgsl"),
    ),
    (
        "tender_matmul",
        include_str!("../../shaders/tender_matmul.wgsl"),
    ),
    (
        "gram_reduce",
        include_str!("../../shaders/gram_reduce.wgsl"),
    ),
    ("train_gemm", include_str!("../../shaders/train_gemm.wgsl")),
];

/// Kernels that read a packed weight through a format fragment.
pub const WEIGHT_KERNELS: &[&str] = &[
    "matmul",
    "matmul_wide",
    "matmul_wide2",
    "matmul_wide2u",
    "embed",
    "matmul_v1",
    "rtn",
    "outliers",
    "outliers_f16",
    "decode_f16",
];

/// Kernels that stand alone, with their entry points.
pub const PLAIN_KERNELS: &[(&str, &[&str])] = &[
    ("rmsnorm", &["main"]),
    ("add_rmsnorm", &["main", "main_h16"]),
    ("layernorm", &["main"]),
    ("splitk", &["main"]),
    ("rope", &["main"]),
    ("elementwise", &["silu_mul", "silu_mul_h16", "add"]),
    ("activation", &["gelu", "relu"]),
    ("slice_cols", &["main"]),
    ("score", &["main"]),
    ("lowrank", &["vx", "uy"]),
    ("binarymos", &["gates", "scale"]),
    ("mos_train_mm", &["main"]),
    ("mos_train_gates", &["main"]),
    ("mos_train_err", &["main"]),
    ("mos_train_small", &["mul", "softmax_back", "loss"]),
    ("mos_train_adam", &["main"]),
    ("actquant", &["absmax_rows", "absmax_all", "quant"]),
    ("place", &["cols", "rows"]),
    ("gram", &["main"]),
    ("gram_reduce", &["main"]),
    ("tender_stats", &["chunk_range", "pos_range"]),
    ("tender_chunk", &["main"]),
    ("tender_quant", &["main"]),
    ("train_gemm", &["main"]),
    ("to_f16", &["main"]),
    ("matmul_h16", &["main"]),
    ("matmul_h16_staged", &["main"]),
    ("matmul_h16_staged2", &["main"]),
    ("attention_coop", &["main"]),
    ("attention_coop1", &["main"]),
];

/// Keys per tile of `attention.wgsl` for head dimension `hd`: as many as keep its workgroup
/// memory under WebGPU's guaranteed 16 KiB.
fn attention_tile_keys(hd: usize) -> usize {
    match hd {
        0..=32 => 32,
        33..=64 => 16,
        _ => 4,
    }
}

/// Invocations per query (key splits) `attention.wgsl` may use at head dimension `hd`: 4, 8
/// or 16, at most the tile's keys (large heads: 4 only, for workgroup memory).
pub fn attention_splits_ok(hd: usize, ns: usize) -> bool {
    matches!(ns, 4 | 8 | 16) && ns <= attention_tile_keys(hd)
}

/// The constants header that specialises `attention.wgsl` to one head dimension and split.
pub fn attention_header(hd: usize, ns: usize) -> String {
    let kps = (attention_tile_keys(hd) / ns).max(1);
    format!("const HD: u32 = {hd}u;\nconst NS: u32 = {ns}u;\nconst KPS: u32 = {kps}u;\n")
}

/// Head dimension `attention_tiled.wgsl` is written for (its output block is HD / 8 = two vec4
/// per query); other head dimensions use `attention.wgsl`.
pub const ATTENTION_TILED_HEAD_DIM: usize = 64;

/// Queries per workgroup `attention_tiled.wgsl` may be specialised to.
pub const ATTENTION_TILED_QUERIES: [usize; 2] = [32, 64];

/// Workgroup memory `attention_tiled.wgsl` declares at head dimension 64 and `bq` queries per
/// workgroup, in bytes (Q tile + V tile + K/P tile + row exchange; see the shader).
pub fn attention_tiled_bytes(bq: usize) -> usize {
    let (hd, kg) = (ATTENTION_TILED_HEAD_DIM, 8);
    16 * (hd * bq / 4 + 4 * kg * hd / 4 + hd * (kg + 1) + kg * bq / 4)
}

/// The constants header that specialises `attention_tiled.wgsl`.
pub fn attention_tiled_header(bq: usize) -> String {
    format!("const HD: u32 = {ATTENTION_TILED_HEAD_DIM}u;\nconst BQ: u32 = {bq}u;\n")
}

/// Head dimensions `cargo test` validates the attention module at.
pub const ATTENTION_HEAD_DIMS: &[usize] = &[16, 32, 64, 96, 128];

/// Stand-alone kernels that read a format's bytes themselves (LoRC factors after any base,
/// BinaryMoS's scale tables and router) and so get `fmt_common.wgsl`'s byte readers prepended;
/// they declare their own `W`.
const PLAIN_WITH_READERS: &[&str] = &["lowrank", "binarymos"];

/// Stand-alone kernels that share the declarations of other files, prepended: BinaryMoS
/// training's parameter block and workgroup sum; the all-f16 products' bindings and store, and
/// the staged products' tiles (flat for `MatmulGen::V8`–`V11`, nested for `V12`).
const PLAIN_WITH_PRELUDE: &[(&str, &[&str])] = &[
    ("matmul_h16", &["matmul_h16_common"]),
    (
        "matmul_h16_staged",
        &["matmul_h16_common", "h16_tiles_flat"],
    ),
    (
        "matmul_h16_staged2",
        &["matmul_h16_common", "h16_tiles_nested"],
    ),
    ("mos_train_gates", &["mos_train_common"]),
    ("mos_train_err", &["mos_train_common"]),
    ("mos_train_small", &["mos_train_common"]),
];

/// Stand-alone kernels whose body is another kernel's file (with other preludes).
const PLAIN_BODY: &[(&str, &str)] = &[("matmul_h16_staged2", "matmul_h16_staged")];

/// The source of `shaders/{stem}.wgsl`, if it is in the table or is a format fragment; a
/// replacement set by `set_overrides` comes first.
pub fn source(stem: &str) -> Option<&'static str> {
    if let Some((_, s)) = OVERRIDES
        .get()
        .and_then(|o| o.iter().find(|(n, _)| n == stem))
    {
        return Some(s);
    }
    built_in(stem)
}

fn built_in(stem: &str) -> Option<&'static str> {
    SHADERS
        .iter()
        .find(|(n, _)| *n == stem)
        .map(|(_, s)| *s)
        .or_else(|| format::fragment_source(stem))
}

/// Files of `shaders/` replaced for the rest of the process (`QUANTLAB_SHADER_DIR`, which the
/// CLI reads before it compiles a kernel). For kernel work on a GPU machine, where device time
/// is short and a machine has no compiler: one call can run many versions of a kernel with the
/// same binary (docs/gpu-perf.md, session 20, found a fault that way). Every module built from a
/// replaced file uses the replacement, and kernels are compiled on first use, so this must be
/// set before the first.
static OVERRIDES: std::sync::OnceLock<Vec<(String, &'static str)>> = std::sync::OnceLock::new();

/// Largest replacement file `overrides_from_env` reads (the largest file of shaders/ is under
/// 40 KB).
#[cfg(not(target_arch = "wasm32"))]
const MAX_OVERRIDE_BYTES: u64 = 1 << 20;

/// `QUANTLAB_SHADER_DIR=dir` (native; the CLI and gpu_bench): each `dir/NAME.wgsl` replaces
/// `shaders/NAME.wgsl` (`set_overrides`; other files in `dir` are left alone), and stderr
/// names them, so that a log says what ran. Unset: nothing.
#[cfg(not(target_arch = "wasm32"))]
pub fn overrides_from_env() -> crate::Result<()> {
    use crate::Error;
    // Once per process: a second device of the same run keeps the first one's kernels.
    let Ok(dir) = std::env::var("QUANTLAB_SHADER_DIR") else {
        return Ok(());
    };
    if OVERRIDES.get().is_some() {
        return Ok(());
    }
    let dir = std::path::Path::new(&dir);
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir.display(), e))?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if let (Some("wgsl"), Some(stem)) = (ext, path.file_stem().and_then(|s| s.to_str())) {
            let text = crate::io::file::read_text(&path, "shader", MAX_OVERRIDE_BYTES)?;
            files.push((stem.to_string(), text));
        }
    }
    if files.is_empty() {
        return Err(Error::config(
            "QUANTLAB_SHADER_DIR",
            format!("{} holds no .wgsl file", dir.display()),
        ));
    }
    files.sort();
    let names: Vec<String> = files.iter().map(|(s, _)| format!("{s}.wgsl")).collect();
    set_overrides(files)?;
    eprintln!(
        "QUANTLAB_SHADER_DIR: shaders/ {} replaced from {}",
        names.join(", "),
        dir.display()
    );
    Ok(())
}

/// Replace the sources of `files` (file stem, WGSL text) for the rest of the process. Each
/// stem must name a file of `shaders/`; at most once per process.
pub fn set_overrides(files: Vec<(String, String)>) -> crate::Result<()> {
    if let Some((stem, _)) = files.iter().find(|(stem, _)| built_in(stem).is_none()) {
        return Err(crate::Error::config(
            "QUANTLAB_SHADER_DIR",
            format!("{stem}.wgsl replaces no file of shaders/"),
        ));
    }
    // Leaked once: a handful of kernel texts that live as long as the process, as the
    // built-in ones do.
    let leaked = files
        .into_iter()
        .map(|(stem, text)| (stem, &*Box::leak(text.into_boxed_str())))
        .collect();
    OVERRIDES.set(leaked).map_err(|_| {
        crate::Error::config("QUANTLAB_SHADER_DIR", "shader replacements are already set")
    })
}

/// The module of a stand-alone kernel (with the byte readers where it needs them).
pub fn plain_kernel(kernel: &str) -> Option<String> {
    let body = PLAIN_BODY
        .iter()
        .find(|(k, _)| *k == kernel)
        .map_or(kernel, |(_, b)| *b);
    let src = source(body)?;
    if PLAIN_WITH_READERS.contains(&kernel) {
        return Some(format!("{}\n{src}", source("fmt_common")?));
    }
    if let Some((_, preludes)) = PLAIN_WITH_PRELUDE.iter().find(|(k, _)| *k == kernel) {
        let mut out = String::new();
        for p in preludes.iter() {
            out += source(p)?;
            out.push('\n');
        }
        return Some(out + src);
    }
    Some(src.to_string())
}

/// Kernels made from another file by `unroll` (name, file, trip count): V11's f32 product.
const UNROLLED: &[(&str, &str, usize)] = &[("matmul_wide2u", "matmul_wide2", 8)];

/// `src` with its loop `for (var kk = 0u; kk < TK; kk++) { … }` (the first line after the
/// comment line `// unroll kk…`) written out as `n` blocks `{ let kk = Iu; … }`: the body
/// sees the same names, with `kk` a constant in each copy. None where the marker or the loop
/// is missing, or the loop's braces do not close on a line of their own at its indent.
pub fn unroll(src: &str, n: usize) -> Option<String> {
    let lines: Vec<&str> = src.lines().collect();
    let mark = lines
        .iter()
        .position(|l| l.trim_start().starts_with("// unroll kk"))?;
    let head =
        (mark..lines.len()).find(|&i| lines[i].trim_start().starts_with("for (var kk = 0u;"))?;
    let indent = &lines[head][..lines[head].len() - lines[head].trim_start().len()];
    let close = format!("{indent}}}");
    let end = (head + 1..lines.len()).find(|&i| lines[i] == close)?;
    let body = lines[head + 1..end].join("\n");
    let copies: Vec<String> = (0..n)
        .map(|i| format!("{indent}{{\n{indent}    let kk = {i}u;\n{body}\n{indent}}}"))
        .collect();
    let mut out: Vec<String> = lines[..head].iter().map(|l| l.to_string()).collect();
    out.extend(copies);
    out.extend(lines[end + 1..].iter().map(|l| l.to_string()));
    Some(out.join("\n") + "\n")
}

/// The body of a weight kernel: its file, or the unrolled form of another (`UNROLLED`).
fn weight_body(kernel: &str) -> Option<String> {
    match UNROLLED.iter().find(|(k, _, _)| *k == kernel) {
        Some((_, file, n)) => unroll(source(file)?, *n),
        None => source(kernel).map(str::to_string),
    }
}

/// The module of a weight kernel for one format: shared declarations, byte readers, fragment
/// and body. WGSL module-scope declarations are order independent, so plain concatenation is
/// enough.
pub fn weight_kernel(kernel: &str, fragment: &str) -> Option<String> {
    // The tiled products (f32, packed f16 and tensor-core; 64×64 and wide) share their
    // bindings, loads and store; the f16 ones need their extensions enabled before any
    // declaration.
    let (enable, common) = match kernel {
        "matmul" | "matmul_wide" | "matmul_wide2" | "matmul_wide2u" => {
            ("", source("matmul_common")?.to_string())
        }
        "matmul_f16" => (F16_ENABLE, source("matmul_common")?.to_string()),
        "matmul_coop" | "matmul_coop_wide" => (
            COOP_ENABLE,
            format!(
                "{}\n{}",
                source("matmul_common")?,
                source("matmul_coop_common")?
            ),
        ),
        _ => ("", String::new()),
    };
    Some(format!(
        "{enable}{}\n{}\n{}\n{common}\n{}",
        source("weight_common")?,
        source("fmt_common")?,
        format::fragment_source(fragment)?,
        weight_body(kernel)?
    ))
}

/// The directives `matmul_coop.wgsl` needs (f16 values and wgpu's cooperative matrices).
const COOP_ENABLE: &str = "enable f16;\nenable wgpu_cooperative_matrix;\n";

/// The directive `matmul_f16.wgsl` needs (f16 values: WebGPU's `shader-f16`).
const F16_ENABLE: &str = "enable f16;\n";

/// The packed-f16 product, compiled only where the device was created with SHADER_F16
/// (`GpuContext::f16`); validated with f16 values allowed.
pub const F16_KERNELS: &[&str] = &["matmul_f16"];

/// The tensor-core product, compiled only where the device has what it needs
/// (`GpuContext::coop`); validated separately with those capabilities.
pub const COOP_KERNELS: &[&str] = &["matmul_coop", "matmul_coop_wide"];

/// Stand-alone kernels that also need f16 values and cooperative matrices (compiled only where
/// `GpuContext::coop`): the all-f16 products of `MatmulGen::V7`, `V8` and `V12`, tensor-core
/// attention.
pub const COOP_PLAIN_KERNELS: &[&str] = &[
    "matmul_h16",
    "matmul_h16_staged",
    "matmul_h16_staged2",
    "attention_coop",
    "attention_coop1",
];

/// Workgroup memory `matmul_h16_staged.wgsl` declares, in bytes (either tiles file): two
/// buffers of 128 activation rows and 128 weight rows of 5 vec4 each, and the 4 KiB edge
/// staging of matmul_h16_common.wgsl. `MatmulGen::V8` and `V12` run it only where the device
/// allows that much.
pub const H16_STAGED_BYTES: usize = 2 * 2 * 128 * 5 * 16 + 4096;

/// Workgroup memory `attention_coop.wgsl` declares, in bytes (Q tile 8 KiB, K and V tiles
/// 4 KiB each, S staging 8 KiB, P 4 KiB, row maxima and sums 512 bytes).
pub const ATTENTION_COOP_BYTES: usize = 8192 + 4096 + 4096 + 8192 + 4096 + 512;

/// Workgroup memory `attention_coop1.wgsl` declares, in bytes (K and V two buffers of 32 rows
/// of 9 pieces each, S staging 4 × 16 rows of 9 pieces, P 4 × 16 rows of 5 pieces, the half
/// rows' maxima 512 bytes, the flag padded to 16 bytes; a piece is 16 bytes).
pub const ATTENTION_COOP1_BYTES: usize = 2 * 576 * 16 + 576 * 16 + 320 * 16 + 512 + 16;

/// The integer W4A8 product `matmul_int.wgsl` with its `dot4`/`pack4`: the
/// `dot4I8Packed` builtins (`native`, where the device offers the WGSL language feature
/// `packed_4x8_integer_dot_product`) or their exact emulation.
pub fn int_matmul_kernel(native: bool) -> Option<String> {
    let dot = if native {
        "intdot_native"
    } else {
        "intdot_emul"
    };
    Some(format!("{}\n{}", source(dot)?, source("matmul_int")?))
}

/// Tender's integer product `tender_matmul.wgsl` (arXiv 2406.12930) with the same `dot4` /
/// `pack4` fragments as `int_matmul_kernel`.
pub fn tender_matmul_kernel(native: bool) -> Option<String> {
    let dot = if native {
        "intdot_native"
    } else {
        "intdot_emul"
    };
    Some(format!("{}\n{}", source(dot)?, source("tender_matmul")?))
}

/// Every module the engine compiles, `(label, source)`: what `cargo test` validates with naga.
pub fn all_modules() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for k in WEIGHT_KERNELS.iter().chain(COOP_KERNELS).chain(F16_KERNELS) {
        for (f, _) in format::fragments() {
            if let Some(src) = weight_kernel(k, f) {
                out.push((format!("{k}+{f}"), src));
            }
        }
    }
    for &hd in ATTENTION_HEAD_DIMS {
        for ns in [4, 8, 16] {
            if let (Some(src), true) = (source("attention"), attention_splits_ok(hd, ns)) {
                out.push((
                    format!("attention hd{hd} ns{ns}"),
                    attention_header(hd, ns) + src,
                ));
            }
        }
    }
    for bq in ATTENTION_TILED_QUERIES {
        if let Some(src) = source("attention_tiled") {
            out.push((
                format!("attention_tiled bq{bq}"),
                attention_tiled_header(bq) + src,
            ));
        }
    }
    for native in [true, false] {
        if let Some(src) = int_matmul_kernel(native) {
            out.push((format!("matmul_int native={native}"), src));
        }
        if let Some(src) = tender_matmul_kernel(native) {
            out.push((format!("tender_matmul native={native}"), src));
        }
    }
    for (k, _) in PLAIN_KERNELS {
        if let Some(src) = plain_kernel(k) {
            out.push((k.to_string(), src));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module parses and validates with naga (no GPU needed), and every file in shaders/
    /// is in the table (or a format's fragment list) and used by some module.
    #[test]
    fn every_shader_validates_with_naga() {
        let mut failures = Vec::new();
        for (label, src) in all_modules() {
            let module = match naga::front::wgsl::parse_str(&src) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{label}: {}", e.emit_to_string(&src)));
                    continue;
                }
            };
            // `unpack2x16float` (f16 scales) needs SHADER_FLOAT16_IN_FLOAT32; every
            // WebGPU-compliant device has it (wgpu's downlevel flag SHADER_F16_IN_F32, checked in
            // `GpuContext::new`). The tensor-core kernels also need f16 values and cooperative
            // matrices (the packed-f16 one f16 values only), which the engine checks before compiling them.
            let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
            use naga::valid::Capabilities as C;
            let extra = [
                (COOP_KERNELS, C::SHADER_FLOAT16 | C::COOPERATIVE_MATRIX),
                (F16_KERNELS, C::SHADER_FLOAT16),
            ];
            for (kernels, more) in extra {
                if kernels.iter().any(|k| label.starts_with(&format!("{k}+"))) {
                    caps |= more;
                }
            }
            if COOP_PLAIN_KERNELS.contains(&label.as_str()) {
                caps |= C::SHADER_FLOAT16 | C::COOPERATIVE_MATRIX;
            }
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            if let Err(e) = v.validate(&module) {
                failures.push(format!("{label}: {}", e.emit_to_string(&src)));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(all_modules().len() >= WEIGHT_KERNELS.len() * format::fragments().len());
    }

    /// Every module also translates to SPIR-V, as wgpu does on Vulkan, with the capabilities
    /// the engine compiles it with: naga's writer can fail (panic) on a module its validator
    /// passed, and the tensor-core kernels run only on the GPU machine, so this is where such
    /// a failure shows without one.
    #[test]
    fn every_shader_translates_to_spirv() {
        use naga::valid::Capabilities as C;
        let mut failures = Vec::new();
        for (label, src) in all_modules() {
            let module = naga::front::wgsl::parse_str(&src).expect("parses (checked above)");
            let caps = C::all();
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            let info = match v.validate(&module) {
                Ok(i) => i,
                Err(e) => {
                    failures.push(format!("{label}: {}", e.emit_to_string(&src)));
                    continue;
                }
            };
            let opts = naga::back::spv::Options {
                lang_version: (1, 6),
                ..Default::default()
            };
            let out = std::panic::catch_unwind(|| {
                naga::back::spv::write_vec(&module, &info, &opts, None)
            });
            match out {
                Ok(Ok(words)) => assert!(!words.is_empty(), "{label}: empty SPIR-V"),
                Ok(Err(e)) => failures.push(format!("{label}: {e}")),
                Err(_) => failures.push(format!("{label}: naga's SPIR-V writer panicked")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// In every module with cooperative matrices, each workgroup variable's size is a multiple
    /// of 16 bytes. On the H100's Vulkan driver one 4-byte variable (a flag) was enough for the
    /// tensor-core loads of another array to read 4 bytes early, silently (shaders/
    /// attention_coop1.wgsl, docs/gpu-perf.md session 20); naga's layouter gives the sizes.
    /// The attention kernels' totals are the constants the engine checks the device against.
    #[test]
    fn every_coop_workgroup_variable_is_16_byte_sized() {
        let mut checked = 0;
        let mut bad = Vec::new();
        let mut totals = std::collections::HashMap::new();
        for (label, src) in all_modules() {
            if !src.contains("enable wgpu_cooperative_matrix;") {
                continue;
            }
            let module = naga::front::wgsl::parse_str(&src).expect("parses (checked above)");
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).expect("layout");
            for (_, var) in module.global_variables.iter() {
                if var.space != naga::AddressSpace::WorkGroup {
                    continue;
                }
                checked += 1;
                let size = layouter[var.ty].size;
                *totals.entry(label.clone()).or_insert(0) += size as usize;
                if size % 16 != 0 {
                    let name = var.name.as_deref().unwrap_or("?");
                    bad.push(format!("{label}: `{name}` is {size} bytes"));
                }
            }
        }
        assert!(
            checked >= 10,
            "only {checked} workgroup variables in coop modules"
        );
        assert!(bad.is_empty(), "{}", bad.join("\n"));
        assert_eq!(totals.get("attention_coop"), Some(&ATTENTION_COOP_BYTES));
        assert_eq!(totals.get("attention_coop1"), Some(&ATTENTION_COOP1_BYTES));
    }

    #[test]
    fn unroll_writes_the_loop_out() {
        let src = source("matmul_wide2").unwrap();
        let out = unroll(src, 8).unwrap();
        assert!(src.contains("for (var kk = 0u; kk < TK; kk++) {"));
        assert!(!out.contains("for (var kk"), "the loop is gone");
        for i in 0..8 {
            assert_eq!(
                out.matches(&format!("let kk = {i}u;")).count(),
                1,
                "copy {i}"
            );
        }
        let body = "a71 = fma(vec4<f32>(q.w), b1, a71);";
        assert_eq!(
            (src.matches(body).count(), out.matches(body).count()),
            (1, 8)
        );
        assert_eq!(unroll("no loop here", 8), None);
    }

    #[test]
    fn table_lists_every_file_in_shaders_dir() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("shaders/ exists")
            .filter_map(|e| {
                let p = e.ok()?.path();
                if p.extension()? != "wgsl" {
                    return None;
                }
                Some(p.file_stem()?.to_string_lossy().into_owned())
            })
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SHADERS
            .iter()
            .chain(&format::fragments())
            .map(|(n, _)| n.to_string())
            .collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }
}
