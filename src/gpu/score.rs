//! Scoring several evaluation windows with one product of the LM head (`Backend::score_windows`).
//!
//! Why: the llama.cpp protocol scores 255 rows of each 512-token window. One window's product
//! of the head (255 rows by a vocabulary of 49152) ran at about two thirds of the rate of the
//! block products of a batch (docs/gpu-perf.md), and the head is the model's largest product.
//! Here the scored rows of several windows of a batch are copied next to each other, the head
//! multiplies them in one product, one `score.wgsl` pass scores them all, and each window gets
//! its own `Pending` (a copy of its rows' scores), so the caller reads them as before.

use crate::gpu::backend::{Act, Gpu, Mat, Pending};
use crate::gpu::buffers;
use crate::gpu::record::{u, Params8};
use crate::model::backend::Backend;
use crate::{Error, Result};

/// Logits of one product of the head over several windows at most (256 MiB: five 255-row
/// windows at a vocabulary of 49152). Where fewer than two windows fit (a small binding limit,
/// as in browsers), each window is scored alone (`Backend::score`).
const SCORE_BATCH_BYTES: usize = 256 << 20;

/// `score`'s checks of the scored rows `from..from+targets.len()` of `x` and their targets.
pub(crate) fn check_scored_rows(x: &Act, head: &Mat, from: usize, targets: &[u32]) -> Result<()> {
    let (n, vocab) = (targets.len(), head.rows);
    if from + n > x.rows || x.cols != head.cols {
        return Err(Error::config(
            "score",
            format!(
                "rows {from}+{n} of a {}×{} window against a {}×{} head",
                x.rows, x.cols, head.rows, head.cols
            ),
        ));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::config(
            "target",
            format!("token {t} ≥ vocab {vocab}"),
        ));
    }
    Ok(())
}

impl Gpu {
    /// `Backend::score_windows`: consecutive windows in groups whose logits fit
    /// `SCORE_BATCH_BYTES` (and half the binding limit), each group one product of the head.
    pub(crate) fn score_batched(
        &self,
        x: &Act,
        head: &Mat,
        windows: &[(usize, &[u32])],
    ) -> Result<Vec<Pending>> {
        let row_bytes = head.rows.max(1) * 4;
        let binding = self.ctx.limits.max_storage_buffer_binding_size as usize / 2;
        let cap = SCORE_BATCH_BYTES.min(binding) / row_bytes;
        let mut out = Vec::with_capacity(windows.len());
        let mut i = 0;
        while i < windows.len() {
            let (mut j, mut rows) = (i, 0);
            while j < windows.len() && rows + windows[j].1.len() <= cap {
                rows += windows[j].1.len();
                j += 1;
            }
            if j - i < 2 || rows == 0 {
                let (from, targets) = windows[i];
                out.push(self.score(x, head, from, targets, None, false)?.0);
                i += 1;
                continue;
            }
            out.extend(self.score_group(x, head, &windows[i..j], rows)?);
            i = j;
        }
        Ok(out)
    }

    /// One group: the windows' scored rows gathered (`rows` in all), one product of the head,
    /// one scoring pass, a copy of each window's scores.
    fn score_group(
        &self,
        x: &Act,
        head: &Mat,
        windows: &[(usize, &[u32])],
        rows: usize,
    ) -> Result<Vec<Pending>> {
        for &(from, targets) in windows {
            check_scored_rows(x, head, from, targets)?;
        }
        let (vocab, cols) = (head.rows, head.cols);
        let lim = &self.ctx.limits;
        buffers::check_size(lim, "logits of several windows", rows * vocab * 4)?;
        let pipe = self.pipes.plain("score", "main")?;
        let targets: Vec<u32> = windows.iter().flat_map(|w| w.1.iter().copied()).collect();
        let tgt = buffers::upload(
            &self.ctx.device,
            lim,
            "targets",
            bytemuck::cast_slice(&targets),
        )?;
        let gathered = self.pool.get(rows * cols * 4);
        self.with_encoder(|enc| {
            let mut at = 0;
            for &(from, t) in windows {
                let (src, len) = ((from * cols * 4) as u64, (t.len() * cols * 4) as u64);
                enc.copy_buffer_to_buffer(&x.buf, src, &gathered, at, len);
                at += len;
            }
        });
        let logits = self.pool.get(rows * vocab * 4);
        self.record_matmul(&gathered, 0, rows, head, &logits);
        let scores = self.pool.get(rows * 16);
        let params = self.uniform(&Params8([u(vocab), u(rows), 0, 0, 0, 0, 0, 0]));
        self.dispatch(
            &pipe,
            &[
                &params,
                &logits,
                &tgt,
                &self.dummy_ro,
                &scores,
                &self.dummy_rw,
            ],
            (u(rows), 1),
            &|| format!("score {rows}×{vocab}"),
        );
        let mut at = 0;
        let stagings: Vec<(usize, wgpu::Buffer)> = windows
            .iter()
            .map(|w| {
                let n = w.1.len();
                let staging = self.stage_from(&scores, at * 16, n * 16);
                at += n;
                (n, staging)
            })
            .collect();
        let submission = self.submit();
        Ok(stagings
            .into_iter()
            .map(|(n, staging)| Pending {
                n,
                has_ref: false,
                staging,
                submission: submission.clone(),
            })
            .collect())
    }
}
