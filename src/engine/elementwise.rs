//! Elementwise passes of the fused training ops on f32 CPU values, shared out over the kernel
//! pool in chunks that stay in cache.
//!
//! Composed from candle's ops, SwiGLU's backward took eleven passes over `(tokens, 1536)`
//! tensors for a SmolLM2 layer, each allocating and zeroing its result, on one thread and with
//! libm's `exp` one value at a time; here the forward is one pass and the backward one, on both
//! cores, with [`exp_rows`]' eight-lane exponentials.

use super::exp_rows;
use super::pool;
use std::sync::Mutex;

/// Values a task takes: 32 KB of each operand.
const CHUNK: usize = 8192;

/// `silu(g) * u`, with `silu(g) = g sigmoid(g)`.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    assert_eq!(g.len(), u.len(), "silu_mul: operands of different sizes");
    let mut out = vec![0f32; g.len()];
    let parts = chunks(&mut out);
    pool::global().run(parts.len(), &|task, _| {
        let mut out = parts[task].lock().unwrap_or_else(|e| e.into_inner());
        let at = task * CHUNK;
        let (g, u) = (&g[at..][..out.len()], &u[at..][..out.len()]);
        neg_exp(g, &mut out);
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g * u / (1.0 + *o);
        }
    });
    drop(parts);
    out
}

/// The gradients `(dg, du)` of `silu(g) * u` for an output gradient `dy`: with
/// `s = sigmoid(g)`, `dg = dy u s (1 + g (1 - s))` and `du = dy g s`.
pub fn silu_mul_backward(g: &[f32], u: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(
        g.len() == u.len() && g.len() == dy.len(),
        "silu_mul_backward: operands of different sizes"
    );
    let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
    let (dg_parts, du_parts) = (chunks(&mut dg), chunks(&mut du));
    pool::global().run(dg_parts.len(), &|task, _| {
        let mut dg = dg_parts[task].lock().unwrap_or_else(|e| e.into_inner());
        let mut du = du_parts[task].lock().unwrap_or_else(|e| e.into_inner());
        let at = task * CHUNK;
        let n = dg.len();
        let (g, u, dy) = (&g[at..][..n], &u[at..][..n], &dy[at..][..n]);
        neg_exp(g, &mut dg);
        for i in 0..n {
            let s = 1.0 / (1.0 + dg[i]);
            dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            du[i] = dy[i] * g[i] * s;
        }
    });
    drop((dg_parts, du_parts));
    (dg, du)
}

/// `out[i] = exp(-g[i])`.
fn neg_exp(g: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(g).for_each(|(o, &g)| *o = -g);
    exp_rows::exp_shifted(out, 0.0);
}

fn chunks(data: &mut [f32]) -> Vec<Mutex<&mut [f32]>> {
    data.chunks_mut(CHUNK).map(Mutex::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn silu_product_and_its_gradients_match_f64_formulas() {
        // More than one chunk, a ragged last one, and gates far out on both sides.
        let n = 2 * CHUNK + 37;
        let val = |i: usize, m: usize| ((i * m) % 1000) as f32 / 50.0 - 10.0;
        let mut g: Vec<f32> = (0..n).map(|i| val(i, 7919)).collect();
        g[..4].copy_from_slice(&[95.0, -95.0, 0.0, -0.0]);
        let u: Vec<f32> = (0..n).map(|i| val(i, 104_729) / 4.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| val(i, 15_485_863) / 7.0).collect();
        let y = silu_mul(&g, &u);
        let (dg, du) = silu_mul_backward(&g, &u, &dy);
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-5 * (1.0 + b.abs());
        for i in 0..n {
            let (gi, ui, di) = (f64::from(g[i]), f64::from(u[i]), f64::from(dy[i]));
            let s = sigmoid(gi);
            assert!(close(y[i], gi * s * ui), "y[{i}] = {} at g {gi}", y[i]);
            let want_dg = di * ui * s * (1.0 + gi * (1.0 - s));
            assert!(close(dg[i], want_dg), "dg[{i}] = {} vs {want_dg}", dg[i]);
            assert!(close(du[i], di * gi * s), "du[{i}] = {}", du[i]);
        }
    }
}
