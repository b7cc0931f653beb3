//! Attention of a few new positions (decoding) against the key/value cache, f32 on the CPU.
//!
//! candle's matmul packs the cached keys and values into its own layout on every call: for one
//! query row per head that packing cost more than the products, a tenth of a decoded token.
//! Here each query row reads the cache's rows where they lie. A prefill (and training) takes
//! [`super::train_attention`], whose products are worth their packing.

use super::pool;
use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use std::sync::Mutex;

/// Query positions at most for which attention runs here.
pub const MAX_POSITIONS: usize = 8;

/// Multiply-adds below which one thread does it all (waking the pool costs more).
const PARALLEL_MIN: usize = 1 << 16;

/// `softmax(q kᵀ scale + bias) v` for `q (b, kv_heads, rows, d)` (the query heads that share a
/// key/value head stacked along `rows`, so row `r` is query position `r % positions`), `k` and
/// `v` `(b, kv_heads, keys, d)` with each key's `d` values contiguous (the cache's views), and
/// an additive `bias (b or 1, 1, positions, keys)`. The result is `(b, kv_heads, rows, d)`, or
/// `None` where this path does not apply (not f32 on the CPU, other strides, too many
/// positions), for the caller's general path.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: usize,
    bias: Option<&Tensor>,
    scale: f32,
) -> Result<Option<Tensor>> {
    let (b, heads, rows, d) = q.dims4()?;
    let keys = k.dim(2)?;
    if !q.device().is_cpu()
        || q.dtype() != candle_core::DType::F32
        || positions == 0
        || positions > MAX_POSITIONS
        || !rows.is_multiple_of(positions)
        || k.dims() != [b, heads, keys, d]
        || v.dims() != [b, heads, keys, d]
        || keys == 0
    {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let bias = match bias {
        Some(bias) => match bias.dims() {
            [bb, 1, p, kk] if (*bb == 1 || *bb == b) && *p == positions && *kk == keys => {
                Some(bias.contiguous()?)
            }
            _ => return Ok(None),
        },
        None => None,
    };
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let bias_guard = bias.as_ref().map(|t| t.storage_and_layout());
    let (Some(qv), Some(kv), Some(vv)) = (
        contiguous_f32(&qs, ql),
        Rows::of(&ks, kl, d),
        Rows::of(&vs, vl, d),
    ) else {
        return Ok(None);
    };
    let bias_values = match &bias_guard {
        Some((s, l)) => match contiguous_f32(s, l) {
            Some(values) => Some(values),
            None => return Ok(None),
        },
        None => None,
    };
    // A bias of one row serves every row of the batch.
    let bias_batch = bias.as_ref().map_or(1, |t| t.dims()[0]);
    let mut out = vec![0f32; b * heads * rows * d];
    // One task per query row (of one batch row and key/value head), so that two threads share
    // three heads' rows evenly.
    let tasks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(d).map(Mutex::new).collect();
    let task = |task: usize, _thread: usize| {
        let (pair, r) = (task / rows, task % rows);
        let (bi, hi) = (pair / heads, pair % heads);
        let mut out = tasks[task].lock().unwrap_or_else(|e| e.into_inner());
        let query = &qv[task * d..(task + 1) * d];
        let bias_row = bias_values.map(|values| {
            let row = (bi % bias_batch) * positions + r % positions;
            &values[row * keys..(row + 1) * keys]
        });
        let mut weights = vec![0f32; keys];
        let mut max = f32::NEG_INFINITY;
        for (j, w) in weights.iter_mut().enumerate() {
            *w = dot(query, kv.row(bi, hi, j)) * scale + bias_row.map_or(0.0, |b| b[j]);
            max = max.max(*w);
        }
        let mut sum = 0f32;
        for w in weights.iter_mut() {
            *w = (*w - max).exp();
            sum += *w;
        }
        out.fill(0.0);
        for (j, &w) in weights.iter().enumerate() {
            let p = w / sum;
            for (o, &x) in out.iter_mut().zip(vv.row(bi, hi, j)) {
                *o += p * x;
            }
        }
    };
    let count = tasks.len();
    if count * keys * d < PARALLEL_MIN || count > pool::MAX_TASKS {
        (0..count).for_each(|t| task(t, 0));
    } else {
        pool::global().run(count, &task);
    }
    drop(tasks);
    Ok(Some(Tensor::from_vec(
        out,
        (b, heads, rows, d),
        q.device(),
    )?))
}

/// A contiguous f32 CPU buffer's values.
fn contiguous_f32<'a>(s: &'a Storage, l: &Layout) -> Option<&'a [f32]> {
    match s {
        Storage::Cpu(s) => super::ops::f32_values(s, l),
        _ => None,
    }
}

/// A `(b, heads, keys, d)` view whose keys are rows of `d` contiguous values (a narrowed
/// cache: batch and head strides span its whole capacity).
#[derive(Clone, Copy)]
struct Rows<'a> {
    values: &'a [f32],
    start: usize,
    batch: usize,
    head: usize,
    d: usize,
}

impl<'a> Rows<'a> {
    fn of(s: &'a Storage, l: &Layout, d: usize) -> Option<Rows<'a>> {
        let (Storage::Cpu(CpuStorage::F32(values)), [batch, head, key, 1]) = (s, l.stride()) else {
            return None;
        };
        if *key != d {
            return None;
        }
        let dims = l.dims();
        let last = l.start_offset()
            + (dims[0] - 1) * batch
            + (dims[1] - 1) * head
            + (dims[2] - 1) * key
            + d;
        (last <= values.len()).then_some(Rows {
            values,
            start: l.start_offset(),
            batch: *batch,
            head: *head,
            d,
        })
    }

    fn row(&self, b: usize, h: usize, j: usize) -> &'a [f32] {
        let at = self.start + b * self.batch + h * self.head + j * self.d;
        &self.values[at..at + self.d]
    }
}

/// In sixteen lanes, which the compiler keeps in vector registers (a sum taken value by value
/// cannot be reordered, so it would not vectorise); the order is fixed, whatever the thread
/// count. Training attention's dS rows use it too.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let whole = a.len() / 16 * 16;
    for (x, y) in a[..whole].chunks_exact(16).zip(b[..whole].chunks_exact(16)) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_diff, rand};
    use super::*;
    use candle_core::{Device, D};

    /// candle's formulation, as `Model::attention` computes it for prefill.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, t: usize, bias: Option<&Tensor>) -> Tensor {
        let (b, h, rows, d) = q.dims4().unwrap();
        let keys = k.dim(2).unwrap();
        let mut scores = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (d as f64).sqrt())).unwrap();
        if let Some(bias) = bias {
            scores = scores
                .reshape((b, h, rows / t, t, keys))
                .unwrap()
                .broadcast_add(&bias.unsqueeze(2).unwrap())
                .unwrap()
                .reshape((b, h, rows, keys))
                .unwrap();
        }
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        probs.matmul(&v.contiguous().unwrap()).unwrap()
    }

    #[test]
    fn matches_candles_attention_on_a_narrowed_cache_with_and_without_bias() {
        // (batch, kv heads, query heads per kv head, positions, keys, capacity, d)
        for (i, &(b, h, g, t, keys, cap, d)) in [
            (1, 3, 3, 1, 40, 64, 64),
            (2, 2, 7, 1, 5, 8, 20),
            (3, 1, 2, 4, 33, 40, 64),
            (1, 2, 1, 8, 9, 9, 17),
            // Enough work to run on the pool.
            (2, 3, 3, 1, 500, 512, 64),
        ]
        .iter()
        .enumerate()
        {
            let seed = 10 * i as u64;
            let q = rand(&[b, h, g * t, d], seed);
            let kc = rand(&[b, h, cap, d], seed + 1);
            let vc = rand(&[b, h, cap, d], seed + 2);
            let (k, v) = (
                kc.narrow(2, 0, keys).unwrap(),
                vc.narrow(2, 0, keys).unwrap(),
            );
            // Padding in one row of the batch, a causal mask over the new positions.
            let valid: Vec<Vec<u8>> = (0..b)
                .map(|r| (0..keys).map(|j| u8::from(j >= r)).collect())
                .collect();
            let bias = super::super::ops::attention_bias(
                &valid,
                t,
                keys - t,
                candle_core::DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            let scale = 1.0 / (d as f32).sqrt();
            for bias in [None, Some(&bias)] {
                let got = attend(&q, &k, &v, t, bias, scale)
                    .unwrap()
                    .expect("applies");
                let want = reference(&q, &k, &v, t, bias);
                let err = max_diff(&got, &want);
                assert!(err < 1e-5, "case {i} bias {}: {err}", bias.is_some());
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        let q = rand(&[1, 2, 9, 8], 1);
        let k = rand(&[1, 2, 5, 8], 2);
        // Nine positions: more than it takes.
        assert!(attend(&q, &k, &k, 9, None, 1.0).unwrap().is_none());
        // Keys whose values are not contiguous rows.
        let kt = rand(&[1, 2, 8, 5], 3).transpose(2, 3).unwrap();
        assert!(attend(&q, &kt, &kt, 1, None, 1.0).unwrap().is_none());
        // Another type.
        let qh = q.to_dtype(candle_core::DType::F16).unwrap();
        let kh = k.to_dtype(candle_core::DType::F16).unwrap();
        assert!(attend(&qh, &kh, &kh, 1, None, 1.0).unwrap().is_none());
    }
}
