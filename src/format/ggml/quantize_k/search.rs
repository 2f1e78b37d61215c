//! The scale searches of ggml's K-quant reference quantizers (`make_qkx2_quants`,
//! `make_q3_quants`, `make_qx_quants`) and its rounding (`nearest_int`), as the parent module's
//! comment describes them: the same f32 operations in the same order, so that the codes and scales
//! they return are ggml's bit for bit.

/// Below this largest |w| a symmetric sub-block (or Q6_K super-block) counts as zero (ggml's
/// `GROUP_MAX_EPS`).
pub(in crate::format::ggml) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round to nearest, ties to even, through the f32 adder (module comment).
#[inline(always)]
pub(in crate::format::ggml) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The search of `make_qkx2_quants` for an affine sub-block (module comment, step 1): fills `l`
/// with codes `0..=nmax` and returns `(scale, min)`, `min` ≥ 0 meaning `w ≈ scale·l − min`.
pub(in crate::format::ggml) struct Qkx2 {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Absolute instead of squared error.
    pub mad: bool,
}

impl Qkx2 {
    pub fn fit(&self, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
        let n = x.len();
        let err = |d: f32| if self.mad { d.abs() } else { d * d };
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            sum_w += weights[i];
            sum_x += weights[i] * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            l.fill(0);
            return (0.0, -min);
        }
        let nmax = self.nmax as f32;
        let iscale = nmax / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0f32;
        for i in 0..n {
            l[i] = nearest_int(iscale * (x[i] - min)).clamp(0, self.nmax) as u8;
            best_error += weights[i] * err(scale * l[i] as f32 + min - x[i]);
        }
        let mut aux = [0u8; 32];
        for is in 0..=self.nstep {
            let iscale = (self.rmin + self.rdelta * is as f32 + nmax) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for i in 0..n {
                let q = nearest_int(iscale * (x[i] - min)).clamp(0, self.nmax);
                aux[i] = q as u8;
                let (w, q) = (weights[i], q as f32);
                sum_l += w * q;
                sum_l2 += w * q * q;
                sum_xl += w * q * x[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0f32;
                for i in 0..n {
                    cur_error += weights[i] * err(this_scale * aux[i] as f32 + this_min - x[i]);
                }
                if cur_error < best_error {
                    l.copy_from_slice(&aux[..n]);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }
}

/// The signed value of largest magnitude (the first on ties) and that magnitude; 0, 0 for an
/// all-zero slice.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// `make_q3_quants` with its least-squares refinement (the only way Q3_K calls it), for
/// `nmax = 4`: fills `l` with codes `0..=7` (offset 4) and returns the scale.
pub(super) fn q3_fit(x: &[f32], l: &mut [i8]) -> f32 {
    const NMAX: i32 = 4;
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let q = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
        l[i] = q as i8;
        let (w, q) = (x[i] * x[i], q as f32);
        sumlx += w * x[i] * q;
        suml2 += w * q * q;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let w = x[i] * x[i];
            let old = l[i] as f32;
            let mut slx = sumlx - w * x[i] * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new = nearest_int(x[i] * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new != l[i] as i32 {
                    let q = new as f32;
                    slx += w * x[i] * q;
                    sl2 += w * q * q;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for v in l.iter_mut() {
        *v += NMAX as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// `make_qx_quants` as Q6_K calls it (`nmax = 32`, weights `w²`, the 18-neighbour search): fills
/// `l` with codes `0..=63` (offset 32) and returns the scale.
pub(super) fn q6_fit(x: &[f32], l: &mut [i8]) -> f32 {
    const NMAX: i32 = 32;
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    // Σ w·x·l and Σ w·l² for the codes `iscale` gives (without storing them).
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let codes = |iscale: f32, l: &mut [i8]| {
        for (l, &v) in l.iter_mut().zip(x) {
            *l = (NMAX + nearest_int(iscale * v).clamp(-NMAX, NMAX - 1)) as i8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    codes(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&k| k != 0) {
        let iscale = -(NMAX as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            codes(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ties go to the even integer (not away from zero as `roundf` would); in range it is
    /// `round_ties_even`.
    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, want) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (3.49, 3),
            (-7.51, -8),
            (0.0, 0),
            (-0.0, 0),
            (4_194_303.0, 4_194_303),
            (-4_194_303.0, -4_194_303),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
        let mut r = crate::testkit::Rng(9);
        for _ in 0..10_000 {
            let v = r.normal() * 1000.0;
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
    }
}
