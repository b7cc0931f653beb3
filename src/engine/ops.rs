//! Tensor operations of the transformer, in two flavours.
//!
//! Inference uses candle's fused kernels (fast, no backward). Training must use formulations whose
//! every op has a backward: candle's fused `rope`, `softmax_last_dim` and `rms_norm` return no
//! gradient, so a model built from them silently trains nothing. [`Mode`] picks the flavour.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, D};

/// Whether a forward pass may be differentiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Infer,
    Train,
}

/// `x @ w^T` for a frozen weight `w` of shape `(out, in)`.
///
/// candle's own matmul backward always computes the weight's gradient, even for a tensor that is
/// not a variable: for a frozen base model that is half the backward's work and a weight-sized
/// buffer per layer for nothing. This op's backward returns the input gradient only.
struct FrozenMatmul {
    weight: Tensor,
}

/// What a [`FrozenMatmul`] computes: candle's `(b, m, n, k)` for the product, the input seen as
/// its `(m, k)` rows, and the output's shape (the input's leading dimensions, then `n`).
struct Plan {
    bmnk: (usize, usize, usize, usize),
    x2: Layout,
    out: Shape,
}

impl FrozenMatmul {
    /// The input may have any leading dimensions (it must be contiguous): taking them inside the
    /// op, rather than reshaping around it, spares the backward two nodes per projection, each
    /// of which candle gives a zeroed gradient buffer and an addition.
    fn plan(&self, x: &Layout, w: &Layout) -> Result<Plan> {
        let (k, lead) = match x.dims().split_last() {
            Some((k, lead)) => (*k, lead),
            None => candle_core::bail!("frozen matmul expects features, got a scalar"),
        };
        if !x.is_contiguous() {
            candle_core::bail!("frozen matmul expects a contiguous input");
        }
        let m = lead.iter().product();
        let (n, wk) = match w.dims() {
            [n, wk] => (*n, *wk),
            dims => candle_core::bail!("frozen matmul expects a 2D weight, got {dims:?}"),
        };
        if k != wk {
            candle_core::bail!("frozen matmul: input has {k} features, weight expects {wk}");
        }
        let mut out = lead.to_vec();
        out.push(n);
        Ok(Plan {
            bmnk: (1, m, n, k),
            x2: Layout::contiguous_with_offset((m, k), x.start_offset()),
            out: Shape::from(out),
        })
    }
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let plan = self.plan(xl, wl)?;
        let (_, m, n, k) = plan.bmnk;
        if let (Some(x), Some(w)) = (f32_values(xs, xl), f32_values(ws, wl)) {
            let y = super::gemm::forward_new(x, w, m, n, k);
            return Ok((CpuStorage::F32(y), plan.out));
        }
        let out = xs.matmul(ws, plan.bmnk, &plan.x2, &wl.transpose(0, 1)?)?;
        Ok((out, plan.out))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let plan = self.plan(xl, wl)?;
        let out = xs.matmul(ws, plan.bmnk, &plan.x2, &wl.transpose(0, 1)?)?;
        Ok((out, plan.out))
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        xs: &candle_core::MetalStorage,
        xl: &Layout,
        ws: &candle_core::MetalStorage,
        wl: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        let plan = self.plan(xl, wl)?;
        let out = xs.matmul(ws, plan.bmnk, &plan.x2, &wl.transpose(0, 1)?)?;
        Ok((out, plan.out))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = self.weight.dim(0)?;
        let dy = grad.reshape((grad.elem_count() / n.max(1), n))?;
        let dx = frozen_input_grad(&dy, &self.weight)?.reshape(x.dims())?;
        Ok((Some(dx), None))
    }
}

/// A contiguous f32 CPU buffer's values; `None` for another type or a strided layout.
pub(super) fn f32_values<'a>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Some(&v[start..end]),
        _ => None,
    }
}

/// Runs `f` on the values of contiguous f32 CPU tensors (`None` entries stay `None`); `None`
/// when a tensor is elsewhere, of another type or strided.
pub(super) fn with_cpu_f32<R>(
    tensors: &[Option<&Tensor>],
    f: impl FnOnce(&[Option<&[f32]>]) -> Option<R>,
) -> Option<R> {
    let guards: Vec<_> = tensors
        .iter()
        .map(|t| t.map(|t| t.storage_and_layout()))
        .collect();
    let mut values = Vec::with_capacity(guards.len());
    for guard in &guards {
        match guard {
            None => values.push(None),
            Some((storage, layout)) => match &**storage {
                Storage::Cpu(s) => values.push(Some(f32_values(s, layout)?)),
                _ => return None,
            },
        }
    }
    f(&values)
}

/// `dy (m, n) @ w` for a frozen `w (n, k)`: the input gradient of [`frozen_matmul`], by our
/// packing-free kernel for f32 on the CPU ([`super::gemm`]), by candle's matmul otherwise.
pub fn frozen_input_grad(dy: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, n) = dy.dims2()?;
    let (wn, k) = w.dims2()?;
    if n != wn {
        candle_core::bail!("frozen input gradient: {n} outputs, weight has {wn}");
    }
    let dy = dy.contiguous()?;
    let dx = {
        let (ds, dl) = dy.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        match (&*ds, &*ws) {
            (Storage::Cpu(ds), Storage::Cpu(ws)) => f32_values(ds, dl)
                .zip(f32_values(ws, wl))
                .map(|(dy, w)| super::gemm::backward_new(dy, w, m, n, k)),
            _ => None,
        }
    };
    match dx {
        Some(dx) => Tensor::from_vec(dx, (m, k), dy.device()),
        None => dy.matmul(w),
    }
}

/// `x @ w^T` over the last dimension of `x` (any leading dims), `w` frozen: our packing-free
/// kernel for f32 on the CPU, candle's matmul otherwise. On a detached `x` it records nothing
/// for the backward (the fused ops use it so).
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(w, FrozenMatmul { weight: w.clone() })
}

/// `silu(gate) * up`, SwiGLU's product. Inference on f32 CPU values takes one pass with
/// eight-lane exponentials ([`super::elementwise::silu_mul`]; candle's `silu` takes libm's `exp`
/// a value at a time, ~4% of a decoded token); training keeps candle's ops, which have a backward.
pub fn silu_mul(gate: &Tensor, up: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Infer && gate.shape() == up.shape() {
        let fast = with_cpu_f32(&[Some(gate), Some(up)], |v| {
            Some(super::elementwise::silu_mul(v[0]?, v[1]?))
        });
        if let Some(out) = fast {
            return Tensor::from_vec(out, gate.shape(), gate.device());
        }
    }
    gate.silu()? * up
}

/// RMSNorm over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32),
        Mode::Train => {
            // Half precision squares overflow; compute those in f32, keep f32/f64 as they are.
            let dtype = x.dtype();
            let xf = match dtype {
                DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?,
                _ => x.clone(),
            };
            let inv = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?
                .sqrt()?
                .recip()?;
            xf.broadcast_mul(&inv)?
                .to_dtype(dtype)?
                .broadcast_mul(weight)
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => candle_nn::ops::softmax_last_dim(x),
        Mode::Train => {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// Rotary position embedding, half-split layout (the Hugging Face layout: the first half of each
/// head's dimensions pairs with the second half). `x` is `(b, heads, t, d)`; `cos` and `sin` are
/// `(t, d/2)` or `(b, t, d/2)`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        Mode::Train => {
            let d = x.dim(D::Minus1)?;
            let x1 = x.narrow(D::Minus1, 0, d / 2)?;
            let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
            // cos/sin broadcast over the heads dimension.
            let (cos, sin) = if cos.rank() == 3 {
                (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
            } else {
                (cos, sin)
            };
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        }
    }
}

/// Rotary position embedding in the interleaved layout (adjacent dimensions pair up), as the
/// rows of llama-architecture GGUF q/k weights are arranged. The model un-permutes those rows at
/// load time and runs [`rope`]; this exists so tests can prove the two agree.
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    candle_nn::rotary_emb::rope_i(&x.contiguous()?, cos, sin)
}

/// Undo llama.cpp's permutation of the rows of a llama-architecture q or k projection, turning
/// the interleaved rotary layout back into the half-split Hugging Face layout.
pub fn unpermute_qk_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if heads == 0 || rows % (heads * 2) != 0 {
        candle_core::bail!("cannot un-permute a ({rows}, {cols}) projection over {heads} heads");
    }
    let half = rows / heads / 2;
    w.reshape((heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Additive attention bias: 0 where a query may attend to a key, -inf elsewhere.
///
/// `key_valid` holds, per batch row, whether each key position is a real token (1) or padding
/// (0); `q_offset` is the key index of the first query (the cache length before this step).
pub fn attention_bias(
    key_valid: &[Vec<u8>],
    t_q: usize,
    q_offset: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let b = key_valid.len();
    let t_k = key_valid.first().map(|r| r.len()).unwrap_or(0);
    let mut data = Vec::with_capacity(b * t_q * t_k);
    for row in key_valid {
        for qi in 0..t_q {
            let q_pos = q_offset + qi;
            for (ki, &valid) in row.iter().enumerate() {
                // A padding query still sees itself: a row of nothing but -inf would turn into
                // NaN in softmax, and NaN times a zero weight is still NaN downstream.
                let ok = (valid != 0 && ki <= q_pos) || ki == q_pos;
                data.push(if ok { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(data, (b, 1, t_q, t_k), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_diff, rand};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_matmul_matches_matmul_and_gives_input_gradient_only() {
        let x = Var::from_tensor(&rand(&[2, 3, 8], 1)).unwrap();
        let w = rand(&[5, 8], 2);
        let y = frozen_matmul(x.as_tensor(), &w).unwrap();
        let reference = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        assert_eq!(y.dims(), &[2, 3, 5]);
        assert!(max_diff(&y, &reference) < 1e-5);

        let grads = y.sum_all().unwrap().backward().unwrap();
        let gx = grads.get(x.as_tensor()).expect("input gradient");
        // d(sum(x W^T))/dx = ones @ W: every row equals the column sums of W.
        let expected = Tensor::ones((2, 3, 5), DType::F32, &Device::Cpu)
            .unwrap()
            .broadcast_matmul(&w)
            .unwrap();
        assert!(max_diff(gx, &expected) < 1e-5);
        assert!(grads.get(&w).is_none(), "a frozen weight got a gradient");
    }

    #[test]
    fn frozen_matmul_takes_any_leading_dimensions_views_and_other_dtypes() {
        // f64 goes through candle's matmul with the input seen as rows; a narrowed input starts
        // inside its storage; a single vector has no leading dimension at all.
        for dtype in [DType::F32, DType::F64] {
            let base = rand(&[3, 4, 8], 7).to_dtype(dtype).unwrap();
            let w = rand(&[5, 8], 8).to_dtype(dtype).unwrap();
            let inputs = [
                base.clone(),
                base.narrow(0, 1, 2).unwrap(),
                base.get(2).unwrap().get(1).unwrap(),
            ];
            for x in inputs {
                let x = Var::from_tensor(&x).unwrap();
                let y = frozen_matmul(x.as_tensor(), &w).unwrap();
                let x2 = x.as_tensor().reshape(((), 8)).unwrap();
                let want = x2.matmul(&w.t().unwrap()).unwrap();
                let mut dims = x.dims().to_vec();
                *dims.last_mut().unwrap() = 5;
                assert_eq!(y.dims(), &dims[..], "{dtype:?}");
                let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
                assert!(max_diff(&f32(&y.reshape(((), 5)).unwrap()), &f32(&want)) < 1e-5);
                let gx = y.sum_all().unwrap().backward().unwrap();
                let gx = gx.get(x.as_tensor()).expect("input gradient");
                assert_eq!(gx.dims(), x.dims());
                let want = w.sum_keepdim(0).unwrap().broadcast_as(x2.shape()).unwrap();
                assert!(max_diff(&f32(&gx.reshape(((), 8)).unwrap()), &f32(&want)) < 1e-5);
            }
        }
    }

    #[test]
    fn train_and_infer_flavours_agree() {
        let x = rand(&[2, 3, 4, 8], 3);
        let w = (rand(&[8], 4) + 1.0).unwrap();
        let a = rms_norm(&x, &w, 1e-5, Mode::Infer).unwrap();
        let b = rms_norm(&x, &w, 1e-5, Mode::Train).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);

        let a = softmax_last(&x, Mode::Infer).unwrap();
        let b = softmax_last(&x, Mode::Train).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);

        let cos = rand(&[4, 4], 5);
        let sin = rand(&[4, 4], 6);
        let a = rope(&x, &cos, &sin, Mode::Infer).unwrap();
        let b = rope(&x, &cos, &sin, Mode::Train).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);

        let cos_b = Tensor::stack(&[&cos, &cos.affine(0.5, 0.1).unwrap()], 0).unwrap();
        let sin_b = Tensor::stack(&[&sin, &sin.affine(0.3, -0.2).unwrap()], 0).unwrap();
        let a = rope(&x, &cos_b, &sin_b, Mode::Infer).unwrap();
        let b = rope(&x, &cos_b, &sin_b, Mode::Train).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }

    #[test]
    fn unpermuted_weights_with_half_rope_equal_permuted_weights_with_interleaved_rope() {
        // llama.cpp's convert script permutes HF rows as
        // reshape(heads, 2, d/2, in).swapaxes(1, 2): do that here, then prove that un-permuting
        // and rotating the half-split way matches rotating the permuted rows the interleaved way
        // (up to the same permutation of the output dimensions).
        let (heads, d, cols, t) = (2usize, 8usize, 6usize, 3usize);
        let hf = rand(&[heads * d, cols], 7);
        let permuted = hf
            .reshape((heads, 2, d / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((heads * d, cols))
            .unwrap();
        let back = unpermute_qk_rows(&permuted, heads).unwrap();
        assert!(max_diff(&back, &hf) < 1e-7);

        let x = rand(&[t, cols], 8);
        let cos = rand(&[t, d / 2], 9);
        let sin = rand(&[t, d / 2], 10);
        let to_heads = |w: &Tensor| {
            x.matmul(&w.t().unwrap())
                .unwrap()
                .reshape((1, t, heads, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let half = rope(&to_heads(&hf), &cos, &sin, Mode::Infer).unwrap();
        let inter = rope_interleaved(&to_heads(&permuted), &cos, &sin).unwrap();
        // Interleaved output dims (2i, 2i+1) hold half-split dims (i, i + d/2).
        let inter_as_half = inter
            .reshape((1, heads, t, d / 2, 2))
            .unwrap()
            .transpose(3, 4)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((1, heads, t, d))
            .unwrap();
        assert!(max_diff(&half, &inter_as_half) < 1e-5);
    }

    #[test]
    fn attention_bias_masks_future_and_padding() {
        let bias = attention_bias(
            &[vec![0, 1, 1], vec![1, 1, 1]],
            2,
            1,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let v: Vec<f32> = bias.flatten_all().unwrap().to_vec1().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(v, vec![inf, 0., inf, inf, 0., 0., 0., 0., inf, 0., 0., 0.]);
        // The padding key is visible only to itself.
        let bias = attention_bias(&[vec![0, 1]], 2, 0, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<f32> = bias.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![0., inf, inf, 0.]);
    }
}
