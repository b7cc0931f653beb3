//! Attention over a whole sequence on the CPU in f32, on the kernel pool: the fused training
//! node's forward (`P = softmax(q kᵀ scale + bias)`, `o = P v`) and backward (`dP = dO vᵀ`,
//! `dS = P ∘ (dP - rowsum(dP ∘ P))`, `dq = dS k scale`, `dk = dSᵀ q scale`, `dv = Pᵀ dO`), and
//! the same forward for a prompt's prefill ([`prefill`]); decoding has [`super::attend`].
//!
//! candle ran these as single-threaded matrix products (and its softmax), while the frozen
//! projections around them ran on both cores: a tenth of a SEAL training step's arithmetic
//! left the second core idle. Each product here is one of [`super::gemm`]'s, which shares its
//! tiles out over the pool; the row-wise softmax and `dS` are shared out by rows. Products with
//! `Pᵀ` or `dSᵀ` are taken transposed (`dvᵀ = dOᵀ P`, `dkᵀ = qᵀ dS`), so only the small
//! `(rows, d)` operands and results are ever transposed, never a `rows x keys` matrix. Every
//! product is taken as [`gemm::backward`] (`k` and `v` transposed for `q kᵀ` and `dO vᵀ`):
//! its tiles store whole rows, where the forward's store one value at a time, which costs as
//! much as the sum when the sum is only a head's 64 values long.
//!
//! A causal mask makes half of every `t x t` matrix zero, and no product here reads that half:
//! a block of query rows multiplies only the keys it sees, a block of keys (for `dv` and `dk`)
//! only the query rows that see it. When the training node does not keep P for its backward
//! (a long sequence), its forward never writes P, and the backward's recomputation of P skips
//! the product with `v`.
//!
//! It runs whatever the thread count, although on one thread candle's products are ~8% faster
//! at a head's shapes: every sum here is taken in the same order on any number of threads, so
//! a SLURM task's one thread and a workstation's two give the same losses to the last bit
//! (`tests/slurm.rs` compares them).
//!
//! Shapes follow [`super::model`]'s grouped-query stacking: `q (b, kv_heads, rows, d)` where
//! the query heads that share a key/value head are stacked along `rows` (row `r` is position
//! `r % t`), `k` and `v` `(b, kv_heads, t, d)`, `bias (b or 1, t, t)`.

use super::attend::dot;
use super::exp_rows;
use super::gemm;
use super::pool;
use candle_core::{DType, Result, Tensor};
use std::mem::MaybeUninit;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub kv_heads: usize,
    /// Query rows per key/value head: (query heads per key/value head) x t.
    pub rows: usize,
    /// Positions, keys included (no cache in training).
    pub t: usize,
    pub d: usize,
}

impl Dims {
    fn heads(&self) -> usize {
        self.b * self.kv_heads
    }
}

/// An additive bias `(batches, t, t)`: one for every batch row, or one shared (`batches == 1`).
#[derive(Clone, Copy)]
pub struct Bias<'a> {
    pub values: &'a [f32],
    pub batches: usize,
}

/// `softmax(q kᵀ scale + bias) v` for a prompt with nothing cached before it (a prefill):
/// `q (b, kv_heads, rows, d)`, `k` and `v` `(b, kv_heads, t, d)` (a cache's views are copied),
/// `bias (b or 1, 1, t, t)`, all f32 on the CPU. `None` where this does not apply (another
/// device or type, keys cached before), for candle's ops.
pub fn prefill(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f32,
) -> Result<Option<Tensor>> {
    if dims_of(q, k, v, bias)?.is_none() {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let bias = bias.map(Tensor::contiguous).transpose()?;
    let done = forward_tensors(&q, &k, &v, bias.as_ref(), scale, Wanted::Output)?;
    Ok(done.and_then(|(o, _)| o))
}

/// What a forward over a whole sequence hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The output alone: a prefill, or a training forward whose backward recomputes P.
    Output,
    /// The output and the probabilities, kept for the backward.
    OutputAndProbs,
    /// The probabilities alone: a backward recomputing what its forward did not keep.
    Probs,
}

impl Wanted {
    fn output(self) -> bool {
        self != Wanted::Probs
    }

    fn probs(self) -> bool {
        self != Wanted::Output
    }
}

/// [`forward`] on tensors: the output and the probabilities, each where `wanted`. `None` where
/// the tensors are not contiguous f32 on the CPU in the shapes [`prefill`] names.
pub fn forward_tensors(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f32,
    wanted: Wanted,
) -> Result<Option<(Option<Tensor>, Option<Tensor>)>> {
    let Some((dims, batches)) = dims_of(q, k, v, bias)? else {
        return Ok(None);
    };
    let done = super::ops::with_cpu_f32(&[Some(q), Some(k), Some(v), bias], |xs| {
        let bias = xs[3].map(|values| Bias { values, batches });
        Some(forward(xs[0]?, xs[1]?, xs[2]?, bias, scale, dims, wanted))
    });
    let Some((o, p)) = done else {
        return Ok(None);
    };
    let Dims {
        b,
        kv_heads,
        rows,
        t,
        d,
    } = dims;
    let device = q.device();
    let p = p
        .map(|p| Tensor::from_vec(p, (b, kv_heads, rows, t), device))
        .transpose()?;
    let o = wanted
        .output()
        .then(|| Tensor::from_vec(o, (b, kv_heads, rows, d), device))
        .transpose()?;
    Ok(Some((o, p)))
}

/// [`backward`] on tensors as [`forward_tensors`] took them, with its probabilities `p` and
/// the output gradient `d_o` (stacked as `q`): `(dq, dk, dv)`, `None` where it does not apply.
pub fn backward_tensors(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &Tensor,
    d_o: &Tensor,
    scale: f32,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let Some((dims, _)) = dims_of(q, k, v, None)? else {
        return Ok(None);
    };
    let d_o = d_o.contiguous()?;
    let done = super::ops::with_cpu_f32(&[Some(q), Some(k), Some(v), Some(p), Some(&d_o)], |xs| {
        Some(backward(
            xs[0]?, xs[1]?, xs[2]?, xs[3]?, xs[4]?, scale, dims,
        ))
    });
    let Some((dq, dk, dv)) = done else {
        return Ok(None);
    };
    let Dims {
        b,
        kv_heads,
        rows,
        t,
        d,
    } = dims;
    let device = q.device();
    Ok(Some((
        Tensor::from_vec(dq, (b, kv_heads, rows, d), device)?,
        Tensor::from_vec(dk, (b, kv_heads, t, d), device)?,
        Tensor::from_vec(dv, (b, kv_heads, t, d), device)?,
    )))
}

/// The shapes of attention over one whole sequence in f32 on the CPU, and how many bias rows
/// there are (0 without a bias); `None` for anything else.
fn dims_of(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Option<(Dims, usize)>> {
    let (b, kv_heads, rows, d) = q.dims4()?;
    let t = k.dim(2)?;
    let f32_cpu = |x: &Tensor| x.device().is_cpu() && x.dtype() == DType::F32;
    if ![q, k, v].into_iter().all(f32_cpu)
        || bias.is_some_and(|b| !f32_cpu(b))
        || t == 0
        || !rows.is_multiple_of(t)
        || k.dims() != [b, kv_heads, t, d]
        || v.dims() != [b, kv_heads, t, d]
    {
        return Ok(None);
    }
    let batches = match bias.map(|b| b.dims()) {
        None => 0,
        Some(&[bb, 1, bt, bk]) if (bb == 1 || bb == b) && bt == t && bk == t => bb,
        Some(_) => return Ok(None),
    };
    Ok(Some((
        Dims {
            b,
            kv_heads,
            rows,
            t,
            d,
        },
        batches,
    )))
}

/// Query rows a task takes: a multiple of the product tile's 6 rows, small enough that the
/// tasks of a short sequence still keep both threads busy.
const ROW_BLOCK: usize = 48;

/// `(o, p)`: the output `(b, kv_heads, rows, d)` (empty when only P is `wanted`) and, when
/// wanted, the probabilities `(b, kv_heads, rows, t)`. One region of the pool: each task takes
/// a block of one head's query rows through the scores, the softmax and the product with `v`.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<Bias<'_>>,
    scale: f32,
    dims: Dims,
    wanted: Wanted,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let Dims { rows, t, d, .. } = dims;
    check(q, k, v, bias, dims);
    let keep = wanted.probs();
    // P is written whole by the tasks, each row's visible keys and then zeros: a buffer of
    // t x t per head zeroed beforehand, then overwritten, was a tenth of a step at 1,024 tokens.
    let p_len = if keep { dims.heads() * rows * t } else { 0 };
    let mut p: Vec<f32> = Vec::with_capacity(p_len);
    let o_len = if wanted.output() {
        dims.heads() * rows * d
    } else {
        0
    };
    let mut o = vec![0f32; o_len];
    // Each head's keys transposed once, `(d, t)`: a block of rows reads the first `keys`
    // columns in place (transposing them per block was a twentieth of a step at 1,024 tokens).
    let k_t = transpose_heads(k, dims.heads(), t, d, 1.0);
    // Per bias row and position, how many keys it can see: a causal bias hides the keys after
    // a position, so a block of early positions needs only the first keys' products.
    let seen: Vec<Vec<usize>> = match bias {
        None => vec![vec![t; t]],
        Some(b) => b
            .values
            .chunks_exact(t * t)
            .map(|m| {
                m.chunks_exact(t)
                    .map(|row| row.iter().rposition(|x| x.is_finite()).map_or(0, |j| j + 1))
                    .collect()
            })
            .collect(),
    };
    let blocks = row_blocks(dims);
    let outs = wanted.output().then(|| split(&mut o, d, &blocks));
    let probs = keep.then(|| split(&mut p.spare_capacity_mut()[..p_len], t, &blocks));
    pool::global().run(blocks.len(), &|task, _| {
        let (h, r0, n) = blocks[task];
        let mut pb = probs
            .as_ref()
            .map(|p| p[task].lock().unwrap_or_else(|e| e.into_inner()));
        let batch = match bias {
            Some(b) if b.batches > 1 => h / dims.kv_heads,
            _ => 0,
        };
        let keys = (r0..r0 + n)
            .map(|r| seen[batch][r % t])
            .max()
            .unwrap_or(t)
            .max(1);
        let vh = &v[h * t * d..][..keys * d];
        // Scores of the visible keys, (n, keys), then their softmax, then into P's rows.
        gemm::scratch(&BLOCK_SCORES, n * keys, |scores| {
            gemm::backward_here_strided(
                &q[(h * rows + r0) * d..][..n * d],
                &k_t[h * d * t..][..d * t],
                t,
                n,
                d,
                keys,
                scores,
            );
            let bias_rows = bias.map(|b| &b.values[batch * t * t..][..t * t]);
            for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
                let r = (r0 + i) % t;
                softmax_row(row, scale, bias_rows.map(|b| &b[r * t..][..keys]));
                if let Some(pb) = pb.as_deref_mut() {
                    write_row(&mut pb[i * t..][..t], row);
                }
            }
            if let Some(outs) = &outs {
                let mut ob = outs[task].lock().unwrap_or_else(|e| e.into_inner());
                gemm::backward_here(scores, vh, n, keys, d, &mut ob);
            }
        });
    });
    drop((outs, probs));
    // Safety: the blocks cover P's rows, and each task wrote every value of each of its rows.
    unsafe { p.set_len(p_len) };
    (o, keep.then_some(p))
}

/// `(dq, dk, dv)` for the output gradient `d_o (b, kv_heads, rows, d)`, from the forward's
/// inputs and probabilities. Two regions of the pool: blocks of query rows (`dP`, `dS`, `dq`),
/// then blocks of `dvᵀ`'s and `dkᵀ`'s rows, which sum over every query row.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    d_o: &[f32],
    scale: f32,
    dims: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { rows, t, d, .. } = dims;
    let heads = dims.heads();
    check(q, k, v, None, dims);
    assert!(p.len() == heads * rows * t && d_o.len() == q.len());
    let pool = pool::global();
    let mut dq = vec![0f32; q.len()];
    // Written whole by the tasks, as P is in the forward.
    let mut ds: Vec<f32> = Vec::with_capacity(heads * rows * t);
    // Per query row, the keys up to its last nonzero probability (its dS is zero past them).
    let mut seen = vec![0usize; heads * rows];
    let v_t = transpose_heads(v, heads, t, d, 1.0);
    {
        let blocks = row_blocks(dims);
        let spare = &mut ds.spare_capacity_mut()[..heads * rows * t];
        let (dss, dqs) = (split(spare, t, &blocks), split(&mut dq, d, &blocks));
        let seens = split(&mut seen, 1, &blocks);
        pool.run(blocks.len(), &|task, _| {
            let (h, r0, n) = blocks[task];
            let mut sb = dss[task].lock().unwrap_or_else(|e| e.into_inner());
            let mut qb = dqs[task].lock().unwrap_or_else(|e| e.into_inner());
            let mut seen_b = seens[task].lock().unwrap_or_else(|e| e.into_inner());
            let pb = &p[(h * rows + r0) * t..][..n * t];
            for (s, row) in seen_b.iter_mut().zip(pb.chunks_exact(t)) {
                *s = nonzero_extent(row);
            }
            // Keys past the block's last nonzero probability have dS = 0: leave them out.
            let keys = seen_b.iter().copied().max().unwrap_or(0).max(1);
            let kh = &k[h * t * d..][..keys * d];
            // dP = dO vᵀ, then dS = P ∘ (dP - rowsum(dP ∘ P)) in its place, (n, keys).
            let dob = &d_o[(h * rows + r0) * d..][..n * d];
            gemm::scratch(&BLOCK_SCORES, n * keys, |dsb| {
                let v_th = &v_t[h * d * t..][..d * t];
                gemm::backward_here_strided(dob, v_th, t, n, d, keys, dsb);
                for ((row, pr), out) in dsb
                    .chunks_exact_mut(keys)
                    .zip(pb.chunks_exact(t))
                    .zip(sb.chunks_exact_mut(t))
                {
                    let pr = &pr[..keys];
                    let dot = dot(row, pr);
                    for (x, &pv) in row.iter_mut().zip(pr) {
                        *x = pv * (*x - dot);
                    }
                    write_row(out, row);
                }
                gemm::backward_here(dsb, kh, n, keys, d, &mut qb);
            });
            qb.iter_mut().for_each(|x| *x *= scale);
        });
    }
    // Safety: the blocks cover dS's rows, and each task wrote every value of each of its rows.
    unsafe { ds.set_len(heads * rows * t) };
    // dvᵀ = dOᵀ P and dkᵀ = qᵀ dS, a block of keys a task: `(d, keys of the block)`, summed
    // over the query rows that see any of them (under a causal mask, the block's own positions
    // and after: half the products of summing over every row), then transposed into dv's and
    // dk's rows for those keys.
    let do_t = transpose_heads(d_o, heads, rows, d, 1.0);
    let q_t = transpose_heads(q, heads, rows, d, 1.0);
    let mut dv = vec![0f32; heads * t * d];
    let mut dk = vec![0f32; heads * t * d];
    {
        let groups = rows / t;
        let mut tasks = Vec::new();
        for (h, (vh, kh)) in dv.chunks_mut(t * d).zip(dk.chunks_mut(t * d)).enumerate() {
            for (blk, (vb, kb)) in vh
                .chunks_mut(KEY_BLOCK * d)
                .zip(kh.chunks_mut(KEY_BLOCK * d))
                .enumerate()
            {
                tasks.push((h, blk * KEY_BLOCK, Mutex::new((vb, kb))));
            }
        }
        pool.run(tasks.len(), &|task, _| {
            let (h, j0, parts) = &tasks[task];
            let (h, j0) = (*h, *j0);
            let mut parts = parts.lock().unwrap_or_else(|e| e.into_inner());
            let (vb, kb) = &mut *parts;
            let w = vb.len() / d;
            gemm::scratch(&KEY_BLOCK_GRADS, 2 * d * w, |sums| {
                let (dv_t, dk_t) = sums.split_at_mut(d * w);
                let mut any = false;
                for g in 0..groups {
                    let first_row = h * rows + g * t;
                    // Rows before the first that sees past key j0 add nothing.
                    let Some(from) = seen[first_row..][..t].iter().position(|&s| s > j0) else {
                        continue;
                    };
                    let (r0, n) = (g * t + from, t - from);
                    let at = (h * rows + r0) * t + j0;
                    for (m, right, out) in [(&do_t, p, &mut *dv_t), (&q_t, &ds[..], &mut *dk_t)] {
                        let operands = gemm::Strided {
                            a: &m[h * d * rows + r0..],
                            lda: rows,
                            b: &right[at..],
                            ldb: t,
                        };
                        gemm::product_here(operands, d, n, w, out, w, any);
                    }
                    any = true;
                }
                if !any {
                    dv_t.fill(0.0);
                    dk_t.fill(0.0);
                }
                transpose_into(dv_t, d, w, vb, 1.0);
                transpose_into(dk_t, d, w, kb, scale);
            });
        });
    }
    (dq, dk, dv)
}

/// Keys per task of the backward's `dv` and `dk`: a multiple of the product's 16 columns,
/// small enough that a causal mask's zeros are left out finely and both threads stay busy.
const KEY_BLOCK: usize = 64;

thread_local! {
    /// A block's scores (or their gradient), `(rows of the block, keys it sees)`, reused by
    /// every block a thread takes: no allocation, nor zeroing, per block.
    static BLOCK_SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A block of keys' `dvᵀ` and `dkᵀ`, `(d, keys of the block)` each, before their transpose.
    static KEY_BLOCK_GRADS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Each head's `(rows, cols)` block of `src` transposed and times `factor`, a head a task of
/// the pool.
fn transpose_heads(src: &[f32], heads: usize, rows: usize, cols: usize, factor: f32) -> Vec<f32> {
    let size = rows * cols;
    assert_eq!(src.len(), heads * size);
    let mut out = vec![0f32; src.len()];
    let parts: Vec<Mutex<&mut [f32]>> = out.chunks_mut(size.max(1)).map(Mutex::new).collect();
    pool::global().run(parts.len(), &|h, _| {
        let mut dst = parts[h].lock().unwrap_or_else(|e| e.into_inner());
        transpose_into(&src[h * size..][..size], rows, cols, &mut dst, factor);
    });
    drop(parts);
    out
}

/// Blocks of query rows, a task each: `(head, first row, rows)`, in memory order. Blocks stay
/// inside one query head's `t` positions, so a block of early positions sees only the first
/// keys under a causal bias.
fn row_blocks(dims: Dims) -> Vec<(usize, usize, usize)> {
    let Dims { rows, t, .. } = dims;
    let mut blocks = Vec::new();
    for h in 0..dims.heads() {
        for g0 in (0..rows).step_by(t) {
            for r0 in (g0..g0 + t).step_by(ROW_BLOCK) {
                blocks.push((h, r0, ROW_BLOCK.min(g0 + t - r0)));
            }
        }
    }
    blocks
}

/// `data`, `width` values a row, cut into the blocks' rows, each for one task to write.
fn split<'a, T>(
    mut data: &'a mut [T],
    width: usize,
    blocks: &[(usize, usize, usize)],
) -> Vec<Mutex<&'a mut [T]>> {
    blocks
        .iter()
        .map(|&(_, _, n)| {
            let (block, rest) = std::mem::take(&mut data).split_at_mut(n * width);
            data = rest;
            Mutex::new(block)
        })
        .collect()
}

/// One past the last nonzero value of `row` (0 when all are zero): the keys a row of P
/// reaches. Whole runs of zeros are skipped sixteen at a time (a causal row of P is mostly
/// zeros past its position).
fn nonzero_extent(row: &[f32]) -> usize {
    // A fold rather than `all`, which stops early and so does not vectorise.
    const RUN: usize = 16;
    let zeros = |run: &[f32]| !run.iter().fold(false, |any, &x| any | (x != 0.0));
    let mut end = row.len();
    while end >= RUN && zeros(&row[end - RUN..end]) {
        end -= RUN;
    }
    row[..end]
        .iter()
        .rposition(|&x| x != 0.0)
        .map_or(0, |j| j + 1)
}

/// `dst = values` followed by zeros (the keys a row does not see), every value written.
fn write_row(dst: &mut [MaybeUninit<f32>], values: &[f32]) {
    let (seen, rest) = dst.split_at_mut(values.len());
    for (d, &v) in seen.iter_mut().zip(values) {
        d.write(v);
    }
    for d in rest {
        d.write(0.0);
    }
}

fn check(q: &[f32], k: &[f32], v: &[f32], bias: Option<Bias<'_>>, dims: Dims) {
    let Dims { rows, t, d, .. } = dims;
    assert!(
        t > 0
            && rows.is_multiple_of(t)
            && q.len() == dims.heads() * rows * d
            && k.len() == dims.heads() * t * d
            && v.len() == k.len()
            && bias.is_none_or(|b| {
                (b.batches == 1 || b.batches == dims.b) && b.values.len() == b.batches * t * t
            }),
        "shapes of training attention: {dims:?}"
    );
}

/// `row = softmax(row scale + bias)`; a row whose every key is masked becomes zeros (it
/// attends to nothing, and passes no gradient).
fn softmax_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>) {
    match bias {
        Some(b) => row
            .iter_mut()
            .zip(b)
            .for_each(|(x, &bv)| *x = *x * scale + bv),
        None => row.iter_mut().for_each(|x| *x *= scale),
    }
    let max = exp_rows::max(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let inv = 1.0 / exp_rows::exp_shifted(row, max);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `src (rows, cols)` transposed.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    transpose_into(src, rows, cols, &mut out, 1.0);
    out
}

/// `dst (cols, rows) = src (rows, cols)ᵀ times factor`, in tiles that stay in cache.
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], factor: f32) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c] * factor;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        super::super::testing::rand(&[n], seed)
            .to_vec1::<f32>()
            .unwrap()
    }

    /// Plain loops in f64: the formulas of the module's comment.
    #[allow(clippy::type_complexity)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: Option<Bias<'_>>,
        d_o: &[f32],
        scale: f32,
        dims: Dims,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let Dims { rows, t, d, .. } = dims;
        let (mut o, mut p) = (vec![0f64; q.len()], vec![0f64; dims.heads() * rows * t]);
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; q.len()],
            vec![0f64; k.len()],
            vec![0f64; v.len()],
        );
        for h in 0..dims.heads() {
            let batch = h / dims.kv_heads;
            let (qo, ko, po) = (h * rows * d, h * t * d, h * rows * t);
            for r in 0..rows {
                let mut s: Vec<f64> = (0..t)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|c| q[qo + r * d + c] as f64 * k[ko + j * d + c] as f64)
                            .sum();
                        let b = bias.map_or(0.0, |b| {
                            let bb = if b.batches == 1 { 0 } else { batch };
                            b.values[bb * t * t + (r % t) * t + j] as f64
                        });
                        dot * scale as f64 + b
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum: f64 = s.iter().sum();
                for j in 0..t {
                    p[po + r * t + j] = s[j] / sum;
                    for c in 0..d {
                        o[qo + r * d + c] += p[po + r * t + j] * v[ko + j * d + c] as f64;
                    }
                }
                let dp: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|c| d_o[qo + r * d + c] as f64 * v[ko + j * d + c] as f64)
                            .sum()
                    })
                    .collect();
                let dot: f64 = (0..t).map(|j| dp[j] * p[po + r * t + j]).sum();
                for j in 0..t {
                    let pj = p[po + r * t + j];
                    let ds = pj * (dp[j] - dot);
                    for c in 0..d {
                        dq[qo + r * d + c] += ds * k[ko + j * d + c] as f64 * scale as f64;
                        dk[ko + j * d + c] += ds * q[qo + r * d + c] as f64 * scale as f64;
                        dv[ko + j * d + c] += pj * d_o[qo + r * d + c] as f64;
                    }
                }
            }
        }
        (o, p, dq, dk, dv)
    }

    /// A causal bias over `t` positions: -inf above the diagonal.
    fn causal(t: usize) -> Vec<f32> {
        let mut values = vec![0f32; t * t];
        for i in 0..t {
            values[i * t + i + 1..(i + 1) * t].fill(f32::NEG_INFINITY);
        }
        values
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn products_match_the_formulas_with_groups_batches_and_a_causal_bias() {
        // Two batch rows, two key/value heads of three query heads each; enough rows that the
        // softmax and dS rows are shared out on the pool, and keys in two blocks for dk and dv.
        let dims = Dims {
            b: 2,
            kv_heads: 2,
            rows: 3 * 70,
            t: 70,
            d: 16,
        };
        let q = rand(dims.heads() * dims.rows * dims.d, 1);
        let k = rand(dims.heads() * dims.t * dims.d, 2);
        let v = rand(dims.heads() * dims.t * dims.d, 3);
        let d_o = rand(q.len(), 4);
        // Causal, and the second batch row's first 5 positions padding.
        let t = dims.t;
        let mut values = vec![0f32; 2 * t * t];
        for b in 0..2 {
            for i in 0..t {
                for j in 0..t {
                    if j > i || (b == 1 && j < 5) {
                        values[b * t * t + i * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        // Rows 0-4 of batch row 1 mask every key: the reference would divide by zero there.
        for i in 0..5 {
            values[t * t + i * t + i] = 0.0;
        }
        let bias = Some(Bias {
            values: &values,
            batches: 2,
        });
        let scale = 0.25;
        let (o, p) = forward(&q, &k, &v, bias, scale, dims, Wanted::OutputAndProbs);
        let p = p.unwrap();
        let (dq, dk, dv) = backward(&q, &k, &v, &p, &d_o, scale, dims);
        let (ro, rp, rdq, rdk, rdv) = reference(&q, &k, &v, bias, &d_o, scale, dims);
        close(&p, &rp, "p");
        close(&o, &ro, "o");
        close(&dq, &rdq, "dq");
        close(&dk, &rdk, "dk");
        close(&dv, &rdv, "dv");
        // A shared bias and none at all.
        for bias in [
            Some(Bias {
                values: &values[..t * t],
                batches: 1,
            }),
            None,
        ] {
            let (o, p) = forward(&q, &k, &v, bias, scale, dims, Wanted::OutputAndProbs);
            let p = p.unwrap();
            let (ro, rp, ..) = reference(&q, &k, &v, bias, &d_o, scale, dims);
            close(&p, &rp, "p");
            close(&o, &ro, "o");
        }
    }

    #[test]
    fn row_helpers_match_their_plain_definitions() {
        let row = rand(77, 11);
        for len in [0, 1, 15, 16, 17, 40, 77] {
            let want: f64 = row[..len]
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum();
            let got = dot(&row[..len], &row[..len]);
            assert!((f64::from(got) - want).abs() < 1e-5, "dot of {len}");
        }
        for last in [None, Some(0), Some(15), Some(16), Some(40), Some(76)] {
            let mut p = vec![0f32; 77];
            if let Some(j) = last {
                p[j] = 0.25;
                p[j / 2] = 1.0;
            }
            assert_eq!(nonzero_extent(&p), last.map_or(0, |j| j + 1), "{last:?}");
        }
        // A negative zero is a zero.
        assert_eq!(nonzero_extent(&[1.0, -0.0, 0.0]), 1);
    }

    #[test]
    fn early_blocks_of_a_causal_sequence_take_only_the_keys_they_see() {
        // One head, 100 positions: the first block of 48 rows sees 48 keys, the second 96.
        let dims = Dims {
            b: 1,
            kv_heads: 1,
            rows: 100,
            t: 100,
            d: 8,
        };
        let t = dims.t;
        let q = rand(t * dims.d, 5);
        let k = rand(t * dims.d, 6);
        let v = rand(t * dims.d, 7);
        let d_o = rand(q.len(), 8);
        let values = causal(t);
        let bias = Some(Bias {
            values: &values,
            batches: 1,
        });
        let (o, p) = forward(&q, &k, &v, bias, 0.5, dims, Wanted::OutputAndProbs);
        let p = p.unwrap();
        let (dq, dk, dv) = backward(&q, &k, &v, &p, &d_o, 0.5, dims);
        let (ro, rp, rdq, rdk, rdv) = reference(&q, &k, &v, bias, &d_o, 0.5, dims);
        close(&p, &rp, "p");
        close(&o, &ro, "o");
        close(&dq, &rdq, "dq");
        close(&dk, &rdk, "dk");
        close(&dv, &rdv, "dv");
    }

    #[test]
    fn a_prefill_reads_cache_views_and_matches_candles_ops() {
        use candle_core::{Device, D};
        let (b, kv, g, t, d) = (2, 2, 3, 12, 8);
        let dev = Device::Cpu;
        let tensor = |n: usize, shape: (usize, usize, usize, usize), seed| {
            Tensor::from_vec(rand(n, seed), shape, &dev).unwrap()
        };
        let q = tensor(b * kv * g * t * d, (b, kv, g * t, d), 1);
        // The cache holds room for 20 positions; the prompt fills the first 12.
        let k = tensor(b * kv * 20 * d, (b, kv, 20, d), 2)
            .narrow(2, 0, t)
            .unwrap();
        let v = tensor(b * kv * 20 * d, (b, kv, 20, d), 3)
            .narrow(2, 0, t)
            .unwrap();
        assert!(!k.is_contiguous());
        // The second row left-padded by 4 positions, as batched answering pads it.
        let valid = vec![vec![1u8; t], [vec![0u8; 4], vec![1u8; t - 4]].concat()];
        let bias = super::super::ops::attention_bias(&valid, t, 0, DType::F32, &dev).unwrap();
        let scale = 0.3f32;
        let got = prefill(&q, &k, &v, Some(&bias), scale).unwrap().unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale as f64)
            .unwrap()
            .reshape((b, kv, g, t, t))
            .unwrap()
            .broadcast_add(&bias.unsqueeze(2).unwrap())
            .unwrap()
            .reshape((b, kv, g * t, t))
            .unwrap();
        let p = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let want = p.matmul(&v.contiguous().unwrap()).unwrap();
        let diff = super::super::testing::max_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
        // Keys cached before the prompt are not this path's.
        let longer = tensor(b * kv * 20 * d, (b, kv, 20, d), 4);
        assert!(prefill(&q, &longer, &longer, None, scale)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_row_that_sees_no_key_attends_to_nothing() {
        let mut row = vec![1.0, 2.0, 3.0];
        softmax_row(&mut row, 1.0, Some(&[f32::NEG_INFINITY; 3]));
        assert_eq!(row, vec![0.0; 3]);
    }

    /// Wall time of one layer's attention forward and backward at SmolLM2's shapes (9 query
    /// heads on 3 key/value heads, d 64, a 256-token causal sequence) here and by candle's ops
    /// as the fused node ran them before, alternated so that other work on the machine slows
    /// both alike; `RAYON_NUM_THREADS=2 cargo test --release --lib attention_speed -- --ignored
    /// --nocapture`. A measurement, not a check.
    #[test]
    #[ignore]
    fn attention_speed() {
        use candle_core::{Device, Tensor, D};
        let dims = Dims {
            b: 1,
            kv_heads: 3,
            rows: 3 * 256,
            t: 256,
            d: 64,
        };
        let (rows, t, d) = (dims.rows, dims.t, dims.d);
        let q = rand(dims.heads() * rows * d, 1);
        let k = rand(dims.heads() * t * d, 2);
        let v = rand(dims.heads() * t * d, 3);
        let d_o = rand(q.len(), 4);
        let causal = causal(t);
        let bias = Some(Bias {
            values: &causal,
            batches: 1,
        });
        let scale = 0.125f32;
        let ours = || {
            let (_, p) = forward(&q, &k, &v, bias, scale, dims, Wanted::OutputAndProbs);
            let p = p.unwrap();
            backward(&q, &k, &v, &p, &d_o, scale, dims)
        };
        let dev = Device::Cpu;
        let tq = Tensor::from_slice(&q, (1, 3, rows, d), &dev).unwrap();
        let tk = Tensor::from_slice(&k, (1, 3, t, d), &dev).unwrap();
        let tv = Tensor::from_slice(&v, (1, 3, t, d), &dev).unwrap();
        let tdo = Tensor::from_slice(&d_o, (1, 3, rows, d), &dev).unwrap();
        let tb = Tensor::from_slice(&causal, (1, 1, 1, t, t), &dev).unwrap();
        let candle = || -> candle_core::Result<()> {
            let s = (tq.matmul(&tk.t()?)? * scale as f64)?
                .reshape((1, 3, 3, t, t))?
                .broadcast_add(&tb)?
                .reshape((1, 3, rows, t))?;
            let p = candle_nn::ops::softmax_last_dim(&s)?;
            let _o = p.matmul(&tv)?;
            let dv = p.t()?.matmul(&tdo)?;
            let dp = tdo.matmul(&tv.t()?)?;
            let row = (&dp * &p)?.sum_keepdim(D::Minus1)?;
            let ds = (&p * dp.broadcast_sub(&row)?)?;
            let dq = (ds.matmul(&tk)? * scale as f64)?;
            let dk = (ds.t()?.matmul(&tq)? * scale as f64)?;
            std::hint::black_box((dq, dk, dv));
            Ok(())
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let start = std::time::Instant::now();
            std::hint::black_box(ours());
            a.push(start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            candle().unwrap();
            b.push(start.elapsed().as_secs_f64());
        }
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        eprintln!(
            "one layer's attention, forward and backward ({} threads): here {:.2} ms (min {:.2}), candle's ops {:.2} ms (min {:.2})",
            pool::global().threads(),
            a[15] * 1e3,
            a[0] * 1e3,
            b[15] * 1e3,
            b[0] * 1e3
        );
    }
}
