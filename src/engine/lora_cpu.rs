//! LoRA's low-rank products on f32 CPU values, through gemm's kernel on the kernel pool.
//!
//! An adapted projection adds six small products to a training step (`x Aᵀ` and its product
//! with `Bᵀ` forward; `dy B`, its products with `A` and `x`, and `dyᵀ (x Aᵀ)` backward): about
//! 5M multiply-adds each for SmolLM2 at 256 tokens and rank 32. candle's matmul ran them on the
//! calling thread with rayon's threads beside ours, while the pool's second thread waited; here
//! they share the pool like the frozen products. The scale is applied to the rank-sized factor
//! (`m x r` values) rather than to the products.

use super::gemm;
use super::train_attention::transpose;

/// Sizes of one adapted projection: `m` rows of input, `k` input and `n` output features, rank
/// `r`; `A` is `(r, k)` and `B` is `(n, r)`, as PEFT stores them.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub r: usize,
}

/// `y (m, n) += scale (x Aᵀ) Bᵀ`.
pub fn add_forward(x: &[f32], a: &[f32], b: &[f32], d: Dims, scale: f32, y: &mut [f32]) {
    let Dims { m, k, n, r } = d;
    let mut xa = gemm::forward_new(x, a, m, r, k);
    xa.iter_mut().for_each(|v| *v *= scale);
    gemm::forward_add(&xa, b, m, n, r, y);
}

/// The adapter's part of the backward for an output gradient `dy (m, n)`: adds
/// `scale (dy B) A` to `dx (m, k)` and returns `(dA, dB)` = `(scale (dy B)ᵀ x, scale dyᵀ (x Aᵀ))`.
pub fn backward(
    x: &[f32],
    a: &[f32],
    b: &[f32],
    dy: &[f32],
    d: Dims,
    scale: f32,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let Dims { m, k, n, r } = d;
    let mut h = gemm::backward_new(dy, b, m, n, r);
    h.iter_mut().for_each(|v| *v *= scale);
    gemm::backward_add(&h, a, m, r, k, dx);
    let da = gemm::backward_new(&transpose(&h, m, r), x, r, m, k);
    let mut xa = gemm::forward_new(x, a, m, r, k);
    xa.iter_mut().for_each(|v| *v *= scale);
    let db = gemm::backward_new(&transpose(dy, m, n), &xa, n, m, r);
    (da, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(rows, inner) x (inner, cols)` in f64, from row-major f32 operands read through index
    /// functions.
    fn product(
        rows: usize,
        inner: usize,
        cols: usize,
        p: impl Fn(usize, usize) -> f32,
        q: impl Fn(usize, usize) -> f32,
    ) -> Vec<f64> {
        let mut out = vec![0f64; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                out[i * cols + j] = (0..inner)
                    .map(|l| f64::from(p(i, l)) * f64::from(q(l, j)))
                    .sum();
            }
        }
        out
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: size");
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-5 * scale,
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn low_rank_products_match_f64_formulas() {
        // Sizes off the kernel's 6 x 16 tiles, large enough to run on the pool.
        let d = Dims {
            m: 70,
            k: 97,
            n: 83,
            r: 5,
        };
        let Dims { m, k, n, r } = d;
        let val = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i + 1) * seed) % 1009) as f32 / 1009.0 - 0.5)
                .collect()
        };
        let (x, a, b, dy) = (
            val(m * k, 7919),
            val(r * k, 104_729),
            val(n * r, 31),
            val(m * n, 613),
        );
        let scale = 1.75f32;
        let s = f64::from(scale);

        let y0 = val(m * n, 389);
        let mut y = y0.clone();
        add_forward(&x, &a, &b, d, scale, &mut y);
        let xa = product(m, k, r, |i, l| x[i * k + l], |l, j| a[j * k + l]);
        let low = product(m, r, n, |i, l| xa[i * r + l] as f32, |l, j| b[j * r + l]);
        // base + s * product, elementwise.
        let plus = |base: &[f32], p: &[f64]| -> Vec<f64> {
            base.iter()
                .zip(p)
                .map(|(&b, v)| f64::from(b) + s * v)
                .collect()
        };
        assert_close("y", &y, &plus(&y0, &low));

        let dx0 = val(m * k, 211);
        let mut dx = dx0.clone();
        let (da, db) = backward(&x, &a, &b, &dy, d, scale, &mut dx);
        let h = product(m, n, r, |i, l| dy[i * n + l], |l, j| b[l * r + j]);
        let ha = product(m, r, k, |i, l| h[i * r + l] as f32, |l, j| a[l * k + j]);
        assert_close("dx", &dx, &plus(&dx0, &ha));
        let zeros = |len: usize| vec![0f32; len];
        let want_da = product(r, m, k, |i, l| h[l * r + i] as f32, |l, j| x[l * k + j]);
        assert_close("dA", &da, &plus(&zeros(r * k), &want_da));
        let want_db = product(n, m, r, |i, l| dy[l * n + i], |l, j| xa[l * r + j] as f32);
        assert_close("dB", &db, &plus(&zeros(n * r), &want_db));
    }
}
