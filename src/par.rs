//! Data parallelism in one place: rayon natively, plain loops on wasm32 (no threads there). This
//! is the only module that chooses between the two; everything else calls these helpers.
//!
//! Results never depend on the thread count: `map` keeps the input order, and every chunk or row
//! block is computed by exactly one call.

#[cfg(not(target_arch = "wasm32"))]
use rayon::prelude::*;

/// Worker threads the helpers use: rayon's current pool natively, 1 on wasm32.
pub fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    return 1;
}

/// `f(item)` for every item (a `Vec`, a range `0..n`, a zip of slices...), in parallel natively;
/// the results keep the input order.
pub fn map<I, T, F>(items: impl IntoIterator<Item = I>, f: F) -> Vec<T>
where
    I: Send,
    T: Send,
    F: Fn(I) -> T + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    return items
        .into_iter()
        .collect::<Vec<I>>()
        .into_par_iter()
        .map(f)
        .collect();
    #[cfg(target_arch = "wasm32")]
    return items.into_iter().map(f).collect();
}

/// `f(i, chunk)` for the `i`-th `len`-long chunk of `data` (the last may be shorter), in
/// parallel natively.
pub fn for_each_chunk_mut<T, F>(data: &mut [T], len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    data.par_chunks_mut(len)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    #[cfg(target_arch = "wasm32")]
    data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
}

/// `f(first_row, block)` over blocks of whole rows of the row-major `out` (`cols` wide): one
/// block per thread, each at least `min_rows` rows (so one block on wasm32).
pub fn for_each_row_block<T, F>(out: &mut [T], cols: usize, min_rows: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let rows = out.len() / cols.max(1);
    let per = rows.div_ceil(threads()).max(min_rows);
    for_each_chunk_mut(out, (per * cols).max(1), |i, c| f(i * per, c));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_order() {
        assert_eq!(
            map(0..1000, |i| i * 2),
            (0..1000).map(|i| i * 2).collect::<Vec<_>>()
        );
        let mut a = vec![1, 2, 3];
        let r = map(a.iter_mut().zip(&[10, 20, 30]), |(x, y)| {
            *x += y;
            *x
        });
        assert_eq!((r, a), (vec![11, 22, 33], vec![11, 22, 33]));
    }

    #[test]
    fn row_blocks_cover_every_row_once() {
        for (rows, cols, min) in [(0, 3, 16), (1, 3, 16), (100, 3, 1), (37, 5, 4), (5, 0, 1)] {
            let mut out = vec![0usize; rows * cols];
            for_each_row_block(&mut out, cols, min, |r0, block| {
                assert_eq!(block.len() % cols.max(1), 0);
                for (i, v) in block.iter_mut().enumerate() {
                    *v += r0 * cols + i + 1;
                }
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == i + 1));
        }
    }
}
