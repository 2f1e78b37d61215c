//! CMPQ outlier extraction B (Chen et al., arXiv 2410.13056, as restated in docs/methods.md §3,
//! step 5) without ranking every weight: the `k` code-column weights with the largest
//! activation-weighted error `|W − Q(W)| · a_j` are found by a threshold over per-column lists
//! of errors sorted in descending order.
//!
//! The order is exactly the one a full sort would give: errors compare as `f32::total_cmp`
//! does (an integer key with the same order, `order_key`), larger first, and equal errors go to
//! the lower flat index `r · cols + j`. A column's list only depends on its fit and on `a_j`,
//! so between budget steps only the columns whose width changed need a new list; the threshold
//! is one selection over the entries the lists hold (a few per column), not a sort of
//! `rows · cols`.
//!
//! A list keeps only its largest entries (a prefix) unless the threshold shows that the unseen
//! rest could matter; then it is completed and the selection runs again (`select` says which).

use crate::quant::cmpq_fit::Fit;

/// An integer with the order of `f32::total_cmp` (the standard library's own mapping: flip the
/// magnitude bits of negative values), so `-0.0 < +0.0` and ties are exactly the equal keys.
#[inline]
pub(crate) fn order_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ ((((b >> 31) as u32) >> 1) as i32)
}

/// The largest activation-weighted errors of one column's plain fit, as `(order_key, row)`,
/// largest first, equal keys by ascending row.
#[derive(Clone, Debug, Default)]
pub(crate) struct ErrList {
    top: Vec<(i32, u32)>,
    /// Whether `top` holds every row (else the rows not held have keys ≤ the last one's).
    complete: bool,
}

impl ErrList {
    /// The `keep` largest errors of a column (its weights `col`, row by row) against `fit`;
    /// rows past the end of `col` count as 0.
    pub(crate) fn new(col: &[f32], a_j: f32, fit: &Fit, keep: usize) -> Self {
        let rows = fit.codes.len();
        let mut top: Vec<(i32, u32)> = (0..rows)
            .map(|r| {
                let q = fit
                    .levels
                    .get(fit.codes[r] as usize)
                    .copied()
                    .unwrap_or(0.0);
                let x = col.get(r).copied().unwrap_or(0.0);
                // The very expression of a full ranking: `|w − q| · a_j` in f32.
                (order_key((x - q).abs() * a_j), r as u32)
            })
            .collect();
        let better = |x: &(i32, u32), y: &(i32, u32)| y.0.cmp(&x.0).then(x.1.cmp(&y.1));
        let complete = keep >= rows;
        if !complete {
            top.select_nth_unstable_by(keep, better);
            top.truncate(keep);
        }
        top.sort_unstable_by(better);
        ErrList { top, complete }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Entries held with key ≥ `t` (a prefix: the list is sorted by descending key).
    fn count_ge(&self, t: i64) -> usize {
        self.top.partition_point(|e| e.0 as i64 >= t)
    }

    /// May rows not held have a key ≥ `t`?
    fn hides_at_least(&self, t: i64) -> bool {
        !self.complete && self.top.last().is_none_or(|e| e.0 as i64 >= t)
    }
}

/// Outcome of one threshold search.
pub(crate) enum Selection {
    /// Sorted flat indices `r · cols + j` of the `k` largest errors.
    Done(Vec<usize>),
    /// These positions in the `lists` slice must be completed first (their unseen rows could
    /// reach the threshold).
    Complete(Vec<usize>),
}

/// The `k` largest errors over `lists` (`(column, list)` pairs of one `rows × cols` tensor),
/// with ties to the lower flat index: the largest key `t` with at least `k` entries ≥ `t` (the
/// `k`-th largest key held), then every entry above `t` and the lowest-index entries at `t`.
pub(crate) fn select(lists: &[(usize, &ErrList)], k: usize, cols: usize) -> Selection {
    if k == 0 {
        return Selection::Done(Vec::new());
    }
    let mut held: Vec<i32> = lists
        .iter()
        .flat_map(|(_, l)| l.top.iter().map(|e| e.0))
        .collect();
    if held.len() < k {
        // Fewer entries held than wanted: every partial list has to be completed.
        let need: Vec<usize> = (0..lists.len())
            .filter(|&i| !lists[i].1.is_complete())
            .collect();
        return Selection::Complete(need);
    }
    // One selection over the held keys rather than a binary search over every key value,
    // which counted each list ~32 times; a budget step runs this for every tensor.
    let t = *held.select_nth_unstable_by(k - 1, |x, y| y.cmp(x)).1 as i64;
    let need: Vec<usize> = (0..lists.len())
        .filter(|&i| lists[i].1.hides_at_least(t))
        .collect();
    if !need.is_empty() {
        return Selection::Complete(need);
    }
    let mut pos = Vec::with_capacity(k);
    let mut ties = Vec::new();
    for &(j, l) in lists {
        for &(key, r) in &l.top[..l.count_ge(t)] {
            let flat = r as usize * cols + j;
            if key as i64 > t {
                pos.push(flat);
            } else {
                ties.push(flat);
            }
        }
    }
    ties.sort_unstable();
    ties.truncate(k.saturating_sub(pos.len()));
    pos.extend(ties);
    pos.sort_unstable();
    Selection::Done(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testutil::lcg;

    /// What a full ranking does: every error, sorted by `total_cmp` descending, ties to the
    /// lower flat index, the first `k`.
    fn by_sort(w: &[f32], cols: usize, a: &[f32], fits: &[(usize, Fit)], k: usize) -> Vec<usize> {
        let mut err = Vec::new();
        for (j, f) in fits {
            for (r, &c) in f.codes.iter().enumerate() {
                let e = (w[r * cols + j] - f.levels[c as usize]).abs() * a[*j];
                err.push((e, r * cols + j));
            }
        }
        err.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut pos: Vec<usize> = err[..k].iter().map(|e| e.1).collect();
        pos.sort_unstable();
        pos
    }

    /// A fit of 4 levels on a coarse grid, so many errors are exactly equal.
    fn grid_fit(w: &[f32], rows: usize, cols: usize, j: usize) -> Fit {
        let levels = vec![-0.25f32, -0.125, 0.0, 0.125];
        let codes = (0..rows)
            .map(|r| crate::quant::cmpq::nearest(&levels, w[r * cols + j]))
            .collect();
        Fit { levels, codes }
    }

    /// Column `j` of the row-major `w`.
    fn col(w: &[f32], cols: usize, j: usize) -> Vec<f32> {
        w.iter().skip(j).step_by(cols).copied().collect()
    }

    fn run(w: &[f32], cols: usize, a: &[f32], fits: &[(usize, Fit)], k: usize, keep: usize) {
        let mut lists: Vec<(usize, ErrList)> = fits
            .iter()
            .map(|(j, f)| (*j, ErrList::new(&col(w, cols, *j), a[*j], f, keep)))
            .collect();
        let mut rounds = 0;
        let got = loop {
            let view: Vec<(usize, &ErrList)> = lists.iter().map(|(j, l)| (*j, l)).collect();
            match select(&view, k, cols) {
                Selection::Done(p) => break p,
                Selection::Complete(need) => {
                    assert!(!need.is_empty());
                    for i in need {
                        let (j, f) = &fits[i];
                        lists[i].1 = ErrList::new(&col(w, cols, *j), a[*j], f, usize::MAX);
                    }
                }
            }
            rounds += 1;
            assert!(rounds <= fits.len() + 1, "the search does not converge");
        };
        assert_eq!(got, by_sort(w, cols, a, fits, k), "k {k} keep {keep}");
    }

    #[test]
    fn threshold_search_equals_a_full_ranking_with_ties() {
        let (rows, cols) = (40, 24);
        // Weights on a grid of 1/64: errors against the 1/8 grid take few distinct values.
        let w: Vec<f32> = lcg(3, rows * cols)
            .iter()
            .map(|x| (x * 32.0).round() / 64.0)
            .collect();
        // Equal magnitudes (more ties), a zero and a negative zero, and one huge column.
        let mut a: Vec<f32> = (0..cols).map(|j| [1.0, 2.0, 1.0, 0.5][j % 4]).collect();
        a[5] = 0.0;
        a[6] = -0.0;
        a[7] = 1e30;
        let fits: Vec<(usize, Fit)> = (0..cols)
            .filter(|j| j % 9 != 4) // some columns are not code columns (f16)
            .map(|j| (j, grid_fit(&w, rows, cols, j)))
            .collect();
        let n = fits.len() * rows;
        for k in [0, 1, 2, 7, 40, 41, 100, 333, n - 1, n] {
            for keep in [0, 1, 3, 16, rows] {
                run(&w, cols, &a, &fits, k, keep);
            }
        }
    }

    #[test]
    fn threshold_search_equals_a_full_ranking_on_kmeans_fits() {
        let (rows, cols) = (96, 50);
        let w: Vec<f32> = lcg(11, rows * cols).iter().map(|x| x * 0.1).collect();
        let a: Vec<f32> = lcg(12, cols).iter().map(|x| x.abs() * 3.0).collect();
        let fits: Vec<(usize, Fit)> = (0..cols)
            .map(|j| {
                let col: Vec<f32> = (0..rows).map(|r| w[r * cols + j]).collect();
                let levels = crate::quant::cmpq::fit_levels(&col, 2 + (j % 2) as u8, true);
                let codes = col
                    .iter()
                    .map(|&x| crate::quant::cmpq::nearest(&levels, x))
                    .collect();
                (j, Fit { levels, codes })
            })
            .collect();
        for k in [1, 12, 120, 1000] {
            for keep in [2, 16] {
                run(&w, cols, &a, &fits, k, keep);
            }
        }
    }

    #[test]
    fn order_key_orders_like_total_cmp() {
        let xs = [
            f32::NEG_INFINITY,
            -1.5,
            -0.0,
            0.0,
            1e-40,
            1.0,
            3.3e38,
            f32::INFINITY,
        ];
        for x in xs {
            for y in xs {
                assert_eq!(order_key(x).cmp(&order_key(y)), x.total_cmp(&y), "{x} {y}");
            }
        }
    }
}
