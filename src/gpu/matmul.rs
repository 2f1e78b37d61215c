//! Recording a matrix product: the kernel variant, split-K (`pipelines::split_len`) and its
//! reduction. See shaders/matmul.wgsl and docs/gpu-perf.md for why products are split.

use crate::format::GpuDecoder;
use crate::gpu::backend::{Act, Gpu, Mat};
use crate::gpu::buffers::{self, PooledBuffer};
use crate::gpu::pipelines::{split_len, MatmulGen, MatmulVariant, Precision};
use crate::gpu::record::{u, Params4, WeightParams};
use crate::gpu::shaders::H16_STAGED_BYTES;
use crate::model::backend::Backend;
use crate::Result;

/// An f16 copy of activation rows made by `record_h16` (`Gpu::h16_x`): which rows of which
/// buffer, the copy, and `Gpu::ops` just after the last operation that may use it.
pub(crate) struct H16Copy {
    x: wgpu::Buffer,
    x_row0: usize,
    m: usize,
    k: usize,
    copy: PooledBuffer,
    ops: u64,
}

/// The parameters of a pass over all of `w` itself (no activations): its shape and format.
fn whole_weight(w: &Mat) -> WeightParams {
    let f = &w.fmt;
    WeightParams {
        m: 0,
        n: u(w.rows),
        k: u(w.cols),
        has_bias: 0,
        x_row0: 0,
        bits: f.bits,
        group: f.group,
        sym: f.sym,
        scale_off: f.scale_off,
        zero_off: f.zero_off,
        k_split: 0,
        pad: 0,
    }
}

/// Rows of activations above which a CMPQ product decodes its weight first: one 64-row tile
/// of the tiled product decodes each weight once, as the decode pass would.
const DECODE_FIRST_MIN_ROWS: usize = 64;

impl Gpu {
    /// Record `out (m × w.rows) = x[x_row0 .. x_row0+m] Wᵀ + b` (with the weight's add-ons;
    /// for BinaryMoS, each token's own weight: binarymos.rs).
    pub(crate) fn record_matmul(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        out: &wgpu::Buffer,
    ) {
        if !w.parts.is_empty() {
            return self.record_split_matmul(x, x_row0, m, w, out);
        }
        if let Some(mos) = &w.mos {
            return self.record_mos(x, x_row0, m, w, mos, out);
        }
        // Products through the weight's f16 copy took its outliers from there (`h16_weight`).
        let outliers_taken = self.record_product(x, x_row0, m, w, w.bias.as_ref(), out);
        self.record_addons(x, x_row0, m, w, out, !outliers_taken);
    }

    /// Record `out = x[x_row0 .. x_row0+m] Ŵᵀ (+ bias)` with `Ŵ` what `w.fmt` decodes: the
    /// tiled kernel, split-K where it has too few tiles. True where the product read the
    /// weight's f16 copy, whose sparse outliers are written in (`h16_weight`); no other add-on
    /// is recorded here.
    pub(crate) fn record_product(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        bias: Option<&wgpu::Buffer>,
        out: &wgpu::Buffer,
    ) -> bool {
        let (n, k) = (w.rows, w.cols);
        if self.h16(m, w) {
            self.record_h16(x, x_row0, m, w, bias, out);
            return true;
        }
        if self.decode_first(m, w) {
            self.record_decoded(x, x_row0, m, w, bias, out);
            return true;
        }
        let forced = self.matmul_variant.get();
        let precision = self.precision.get();
        // f16 without tensor cores (or forced) runs the packed-f16 kernel, which has only the
        // 64×64 tiling: a wide variant runs as its 64×64 counterpart there.
        let packed = precision == Precision::F16 && (!self.ctx.coop || self.packed_f16.get());
        let gen = self.matmul_gen.get();
        let f32_wide2 = !packed && precision == Precision::F32 && gen.f32_wide2(n);
        let variant = forced.unwrap_or_else(|| {
            // Where this generation has 128×128 f32 tiles, the LM head's chunk of one window
            // (255 rows by a vocabulary of rows) has plenty of them too, as in `h16`.
            if f32_wide2 && m.div_ceil(128) * n.div_ceil(128) >= 256 {
                MatmulVariant::WideSplitK
            } else {
                gen.variant(m)
            }
        });
        let variant = if packed { variant.narrow() } else { variant };
        // 128×128 tiles (shaders/matmul_wide2.wgsl) for the generation's wide f32 products.
        let wide2 = f32_wide2 && variant.wide();
        let tile = if wide2 {
            (128, 128)
        } else {
            variant.tile(precision)
        };
        let k_split = match variant.splits() {
            true => split_len(m, n, k, tile, forced.is_some()),
            false => 0,
        };
        let variant = if k_split == 0 {
            variant.whole()
        } else {
            variant
        };
        let kernel = match variant {
            MatmulVariant::V1 => "matmul_v1",
            _ if packed => "matmul_f16",
            _ if wide2 => gen.f32_wide2_kernel(),
            _ => variant.kernel(precision),
        };
        let pipe = match self.pipes.weight(kernel, w.fmt.fragment) {
            Ok(p) => p,
            Err(e) => {
                self.fail("linear", e.to_string());
                return false;
            }
        };
        let p = WeightParams {
            m: u(m),
            n: u(n),
            k: u(k),
            has_bias: bias.is_some() as u32,
            x_row0: u(x_row0),
            bits: w.fmt.bits,
            group: w.fmt.group,
            sym: w.fmt.sym,
            scale_off: w.fmt.scale_off,
            zero_off: w.fmt.zero_off,
            k_split: u(k_split),
            pad: 0,
        };
        let params = self.uniform(&p);
        let has_bias = bias.is_some();
        let bias = bias.unwrap_or(&self.dummy_ro);
        let tiles = (u(n.div_ceil(tile.1)), u(m.div_ceil(tile.0)));
        let label = || {
            let s = if k_split > 0 { k.div_ceil(k_split) } else { 1 };
            format!(
                "{kernel} {}×{s} {} {m}×{k}→{n}",
                variant.name(),
                w.fmt.fragment
            )
        };
        if k_split == 0 {
            self.dispatch(&pipe, &[&params, &w.w, x, bias, out], tiles, &label);
            return false;
        }
        // Partial tiles per k range, then their sum (with the bias).
        let splits = k.div_ceil(k_split);
        let part = self.pool.get(splits * m * n * 4);
        if let Err(e) =
            buffers::check_size(&self.ctx.limits, "split-K partials", splits * m * n * 4)
        {
            self.fail("linear", e.to_string());
            return false;
        }
        self.dispatch_3d(
            &pipe,
            &[&params, &w.w, x, &self.dummy_ro, &part],
            (tiles.0, tiles.1, u(splits)),
            &label,
        );
        let sum = match self.pipes.plain("splitk", "main") {
            Ok(p) => p,
            Err(e) => {
                self.fail("linear", e.to_string());
                return false;
            }
        };
        let sp = self.uniform(&Params4([u(m * n), u(n), u(splits), has_bias as u32]));
        self.dispatch(
            &sum,
            &[&sp, &part, bias, out],
            self.groups_1d(m * n, 256),
            &|| format!("splitk sum ×{splits} {m}×{n}"),
        );
        false
    }

    /// Whether this product decodes its weight to f16 first (shaders/decode_f16.wgsl): where the
    /// format says so (`GpuDecoder::decode_first`: CMPQ, whose every value is an f16, so the
    /// product is the same to the bit, and whose decoder otherwise runs once per tile of
    /// rows) — but not for one tile of
    /// rows, where the tiled product decodes each weight once anyway. Rows of a multiple of 4
    /// (the kernel decodes four weights at a time; CMPQ's shapes here are 576 and 1536).
    fn decode_first(&self, m: usize, w: &Mat) -> bool {
        self.decode_first.get()
            && w.fmt.decode_first
            && m > DECODE_FIRST_MIN_ROWS
            && w.cols.is_multiple_of(4)
    }

    /// Whether this product runs all in f16 from storage (`MatmulGen::V7`, shaders/matmul_h16.wgsl):
    /// an unforced product at `Precision::F16` on tensor cores with `k` a multiple of 16 (the
    /// kernel's step), large enough for its 128×128 tiles: a batch of windows
    /// (`WIDE_MIN_ROWS` tokens), or at least 256 tiles (the LM head's chunk of one window).
    fn h16(&self, m: usize, w: &Mat) -> bool {
        let tiles = m.div_ceil(128) * w.rows.div_ceil(128);
        self.h16_on()
            && (m >= crate::gpu::pipelines::WIDE_MIN_ROWS || tiles >= 256)
            && w.cols.is_multiple_of(16)
    }

    /// Whether unforced products of enough rows run all in f16 (`h16`'s settings part).
    fn h16_on(&self) -> bool {
        self.matmul_gen.get().h16_kernel().is_some()
            && self.precision.get() == Precision::F16
            && self.ctx.coop
            && !self.packed_f16.get()
            && self.matmul_variant.get().is_none()
    }

    /// An f16 copy of `rows × cols` activations to be written by the kernel that produces them
    /// (`add_rmsnorm`, `silu_mul`), where the all-f16 products that read them next would
    /// otherwise convert them (`record_h16`): a batch of windows, `cols` a multiple of 16.
    /// Hand it to `keep_h16_copy` right after that kernel is recorded.
    pub(crate) fn h16_copy_for(&self, rows: usize, cols: usize) -> Option<PooledBuffer> {
        let bytes = 2 * rows.next_multiple_of(128) * cols;
        let ok = self.h16_on()
            && rows >= crate::gpu::pipelines::WIDE_MIN_ROWS
            && cols.is_multiple_of(16)
            && buffers::check_size(&self.ctx.limits, "f16 activations", bytes).is_ok();
        ok.then(|| self.pool.get(bytes))
    }

    /// `copy` holds the f16 values of all of `x` (`rows × cols`), as written by the kernel just
    /// recorded: the next all-f16 product of those rows uses it while nothing else is recorded.
    pub(crate) fn keep_h16_copy(
        &self,
        x: &wgpu::Buffer,
        rows: usize,
        cols: usize,
        copy: PooledBuffer,
    ) {
        *self.h16_x.borrow_mut() = Some(H16Copy {
            x: x.clone(),
            x_row0: 0,
            m: rows,
            k: cols,
            copy,
            ops: self.ops.get(),
        });
    }

    /// `record_product` as three passes: the activations to f16 (`to_f16.wgsl`), the weight
    /// decoded to f16 (`decode_f16.wgsl`), both into pooled scratch of whole 128-row tiles, and
    /// the tensor-core product on them (`matmul_h16.wgsl`).
    fn record_h16(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        bias: Option<&wgpu::Buffer>,
        out: &wgpu::Buffer,
    ) {
        const TILE: usize = 128;
        let (n, k) = (w.rows, w.cols);
        let (xb, wb) = (
            2 * m.next_multiple_of(TILE) * k,
            2 * n.next_multiple_of(TILE) * k,
        );
        let pipes = buffers::check_size(&self.ctx.limits, "f16 activations", xb).and_then(|_| {
            Ok((
                self.pipes.plain("to_f16", "main")?,
                self.pipes.plain(self.h16_kernel(k), "main")?,
            ))
        });
        let (conv, product) = match pipes {
            Ok(p) => p,
            Err(e) => return self.fail("linear", e.to_string()),
        };
        // The rows' f16 copy: the previous product's when it converted the same rows and
        // nothing has been recorded since (no kernel can have written them), else a new one.
        let memo = self.h16_x.borrow_mut().take().filter(|c| {
            c.ops == self.ops.get() && c.x == *x && (c.x_row0, c.m, c.k) == (x_row0, m, k)
        });
        let xh = match memo {
            Some(c) => c.copy,
            None => {
                let xh = self.pool.get(xb);
                let cp = self.uniform(&Params4([u(m), u(k), u(x_row0), 0]));
                self.dispatch(
                    &conv,
                    &[&cp, x, &xh],
                    self.groups_1d(m * k / 4, 256),
                    &|| format!("to_f16 {m}×{k}"),
                );
                self.h16_converted.set(self.h16_converted.get() + 1);
                xh
            }
        };
        let f = &w.fmt;
        let Some(wh) = self.h16_weight(w, wb) else {
            return;
        };
        let pp = self.uniform(&Params4([u(m), u(n), u(k), bias.is_some() as u32]));
        self.dispatch(
            &product,
            &[&pp, &xh, &wh, bias.unwrap_or(&self.dummy_ro), out],
            (u(n.div_ceil(TILE)), u(m.div_ceil(TILE))),
            &|| format!("{} {} {m}×{k}→{n}", self.h16_kernel(k), f.fragment),
        );
        self.h16_products.set(self.h16_products.get() + 1);
        // Only this product ran since the copy was made, and it wrote `out`, not `x` (a
        // product's output is never its input), so the copy stays good for the next one.
        if out != x {
            *self.h16_x.borrow_mut() = Some(H16Copy {
                x: x.clone(),
                x_row0,
                m,
                k,
                copy: xh,
                ops: self.ops.get(),
            });
        }
    }

    /// The all-f16 kernel of the current generation for a product of inner length `k`: V8's
    /// staged kernel needs k a multiple of its 32-wide stage and `H16_STAGED_BYTES` of
    /// workgroup memory, and runs as V7's where either is missing.
    fn h16_kernel(&self, k: usize) -> &'static str {
        let kernel = self.matmul_gen.get().h16_kernel().unwrap_or("matmul_h16");
        let room = self.ctx.limits.max_compute_workgroup_storage_size as usize;
        if kernel != "matmul_h16" && (!k.is_multiple_of(32) || room < H16_STAGED_BYTES) {
            return "matmul_h16";
        }
        kernel
    }

    /// `w` in f16 in a buffer of `bytes` (at least 2 · rows · cols) for an all-f16 product, its
    /// sparse outliers written in (`outliers_f16.wgsl`; the product then needs no outlier
    /// pass): its kept copy (`Mat::h16`), made now where there is room for it
    /// (`Gpu::hold_h16`), else decoded into scratch; None with the failure recorded.
    fn h16_weight(&self, w: &Mat, bytes: usize) -> Option<wgpu::Buffer> {
        if let Some((buf, _)) = w.h16.borrow().as_ref() {
            return Some(buf.clone());
        }
        let Some(held) = self.hold_h16(bytes) else {
            let scratch = self.record_decode_f16(w, bytes)?;
            return self
                .record_outliers_f16(w, &scratch)
                .then(|| (*scratch).clone());
        };
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("f16 weight"),
            size: buffers::padded_len(bytes) as u64,
            usage: buffers::STORAGE,
            mapped_at_creation: false,
        });
        if !self.record_decode_f16_into(w, bytes, &buf) || !self.record_outliers_f16(w, &buf) {
            return None;
        }
        self.h16_decoded.set(self.h16_decoded.get() + 1);
        *w.h16.borrow_mut() = Some((buf.clone(), held));
        Some(buf)
    }

    /// Record `w`'s sparse outliers written into its decoded f16 copy `decoded`
    /// (shaders/outliers_f16.wgsl); true where it has none, false with the failure recorded.
    fn record_outliers_f16(&self, w: &Mat, decoded: &wgpu::Buffer) -> bool {
        let Some(a) = w.addons.filter(|a| a.outliers > 0) else {
            return true;
        };
        let f = &w.fmt;
        let pipe = match self.pipes.weight("outliers_f16", f.fragment) {
            Ok(p) => p,
            Err(e) => {
                self.fail("outliers", e.to_string());
                return false;
            }
        };
        let params = self.uniform(&whole_weight(w));
        let ap = self.uniform(&Params4([a.outliers, a.idx_off, a.val_off, 0]));
        self.dispatch(
            &pipe,
            &[&params, &w.w, &ap, decoded],
            self.groups_1d(a.outliers as usize, 256),
            &|| format!("outliers_f16 {} ×{}", f.fragment, a.outliers),
        );
        true
    }

    /// Record `w` decoded to f16 (shaders/decode_f16.wgsl) into a pooled buffer of `bytes`
    /// (at least its 2 · rows · cols), or record the failure and give None.
    fn record_decode_f16(&self, w: &Mat, bytes: usize) -> Option<PooledBuffer> {
        let decoded = self.pool.get(bytes);
        self.record_decode_f16_into(w, bytes, &decoded)
            .then_some(decoded)
    }

    /// Record `w` decoded to f16 into `decoded` (`bytes` long); false with the failure recorded.
    fn record_decode_f16_into(&self, w: &Mat, bytes: usize, decoded: &wgpu::Buffer) -> bool {
        let (n, k, f) = (w.rows, w.cols, &w.fmt);
        let pipe = buffers::check_size(&self.ctx.limits, "decoded weight", bytes)
            .and_then(|_| self.pipes.weight("decode_f16", f.fragment));
        let pipe = match pipe {
            Ok(p) => p,
            Err(e) => {
                self.fail("linear", e.to_string());
                return false;
            }
        };
        let params = self.uniform(&whole_weight(w));
        self.dispatch(
            &pipe,
            &[&params, &w.w, decoded],
            self.groups_1d(n * k / 4, 256),
            &|| format!("decode_f16 {} {n}×{k}", f.fragment),
        );
        true
    }

    /// `record_product` through `w`'s f16 copy (`h16_weight`: kept with the weight where there
    /// is room, sparse outliers written in; the same size as the all-f16 products', so either
    /// precision can use the copy the other made).
    fn record_decoded(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        bias: Option<&wgpu::Buffer>,
        out: &wgpu::Buffer,
    ) {
        let (n, k) = (w.rows, w.cols);
        let Some(decoded) = self.h16_weight(w, 2 * n.next_multiple_of(128) * k) else {
            return;
        };
        self.decoded_first.set(self.decoded_first.get() + 1);
        let plain = Mat {
            rows: n,
            cols: k,
            bytes: 2 * n * k,
            w: decoded,
            bias: None,
            fmt: GpuDecoder::plain("fmt_f16"),
            addons: None,
            mos: None,
            parts: Vec::new(),
            _held: None,
            h16: Default::default(),
        };
        self.record_product(x, x_row0, m, &plain, bias, out);
    }

    /// A weight split into row parts: each part's product (with its bias and add-ons) into a
    /// scratch buffer, placed at its columns of `out` (`shaders/place.wgsl`).
    fn record_split_matmul(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        out: &wgpu::Buffer,
    ) {
        let pipe = match self.pipes.plain("place", "cols") {
            Ok(p) => p,
            Err(e) => return self.fail("linear", e.to_string()),
        };
        let mut row0 = 0;
        for part in &w.parts {
            let tmp = self.pool.get(m * part.rows * 4);
            self.record_matmul(x, x_row0, m, part, &tmp);
            let p = self.uniform(&Params4([u(m), u(part.rows), u(w.rows), u(row0)]));
            self.dispatch(
                &pipe,
                &[&p, &tmp, out],
                self.groups_1d(m * part.rows, 256),
                &|| format!("place cols {m}×{} at {row0}", part.rows),
            );
            row0 += part.rows;
        }
    }

    /// The embedding gather from a table split into row parts: each part gathers the tokens
    /// it holds (ids made relative to its first row), placed at those tokens' output rows.
    pub(crate) fn embed_split(&self, table: &Mat, tokens: &[u32]) -> Result<Act> {
        let out = self.new_act(tokens.len(), table.cols);
        let pipe = self.pipes.plain("place", "rows")?;
        let mut row0 = 0;
        for part in &table.parts {
            let (lo, hi) = (row0 as u32, (row0 + part.rows) as u32);
            row0 += part.rows;
            let (at, local): (Vec<u32>, Vec<u32>) = tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| (lo..hi).contains(*t))
                .map(|(i, t)| (u(i), t - lo))
                .unzip();
            if at.is_empty() {
                continue;
            }
            let rows = self.embed(part, &local)?;
            let idx = buffers::upload(
                &self.ctx.device,
                &self.ctx.limits,
                "token rows",
                bytemuck::cast_slice(&at),
            )?;
            let p = self.uniform(&Params4([u(at.len()), u(table.cols), 0, 0]));
            self.dispatch(
                &pipe,
                &[&p, &rows.buf, &out.buf, &idx],
                self.groups_1d(at.len() * table.cols, 256),
                &|| format!("place rows {}×{}", at.len(), table.cols),
            );
        }
        Ok(out)
    }

    /// Use one matmul kernel for every product (tests, benchmarks), or None for the default
    /// (split-K where a product has too few tiles, `split_len`).
    pub fn force_matmul(&self, v: Option<MatmulVariant>) {
        self.matmul_variant.set(v);
    }

    /// Decode CMPQ weights to f16 before large products (the default) or not (tests compare).
    pub fn set_decode_first(&self, on: bool) {
        self.decode_first.set(on);
    }

    /// Compile kernels from now on with `checks` (timing; `ShaderChecks` says what each drops).
    pub fn set_shader_checks(&self, checks: crate::gpu::ShaderChecks) {
        self.pipes.set_checks(checks);
    }

    /// Products so far that ran all in f16 from storage (`MatmulGen::V7`).
    pub fn h16_products(&self) -> usize {
        self.h16_products.get()
    }

    /// Weights decoded into a kept f16 copy so far (`Mat::h16`; tests).
    pub fn h16_decoded(&self) -> usize {
        self.h16_decoded.get()
    }

    /// Activation rows converted to f16 by the all-f16 products themselves so far: rows whose
    /// producer wrote their f16 copy (`add_rmsnorm`, `silu_mul`) are not counted.
    pub fn h16_converted(&self) -> usize {
        self.h16_converted.get()
    }

    /// Products so far that decoded their weight first.
    pub fn decoded_first(&self) -> usize {
        self.decoded_first.get()
    }

    /// Run `Precision::F16` on the packed-f16 kernel (`shaders/matmul_f16.wgsl`) even where
    /// the tensor-core one could run (tests, benchmarks); refused where the device has no f16
    /// shader values.
    pub fn force_packed_f16(&self, on: bool) -> Result<()> {
        if on && !self.ctx.f16 {
            return Err(crate::Error::unsupported(
                "gpu",
                "packed f16",
                format!(
                    "{} offers no f16 shader values (SHADER_F16)",
                    self.ctx.describe()
                ),
            ));
        }
        self.packed_f16.set(on);
        Ok(())
    }

    /// Which generation of kernels unforced products use (`MatmulGen`; benchmarks time both).
    pub fn set_matmul_gen(&self, g: MatmulGen) {
        self.matmul_gen.set(g);
    }

    pub fn matmul_gen(&self) -> MatmulGen {
        self.matmul_gen.get()
    }
}
