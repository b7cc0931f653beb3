//! Fused training ops for the CPU, each one autograd node with a hand-written backward.
//!
//! candle's backward pass allocates a zero tensor and adds into it for every node of the graph,
//! views included, so a transformer layer written from small ops (~80 nodes in training) spends
//! more time in that bookkeeping than in its matrix multiplies. These ops run their forward with
//! candle's own fused kernels on a detached copy of their inputs, and compute exact gradients
//! from the formulas below. `tests/engine_train.rs` checks them against finite differences and
//! against the composed formulation.

use super::ops::rope;
use super::ops::Mode;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};

/// A detached tensor holding a copy of a contiguous CPU storage view.
fn to_tensor(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("fused op: input is not contiguous");
    };
    let shape = l.shape().clone();
    let dev = candle_core::Device::Cpu;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], shape, &dev),
        CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], shape, &dev),
        _ => candle_core::bail!("fused op: only f32 and f64 are supported"),
    }
}

fn to_storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let shape = t.shape().clone();
    let flat = t.flatten_all()?;
    let storage = match t.dtype() {
        candle_core::DType::F32 => CpuStorage::F32(flat.to_vec1()?),
        candle_core::DType::F64 => CpuStorage::F64(flat.to_vec1()?),
        d => candle_core::bail!("fused op: unsupported dtype {d:?}"),
    };
    Ok((storage, shape))
}

/// Whether the fused ops can run on tensors of this device and dtype.
pub fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x * r * w with r = (mean(x^2) + eps)^(-1/2), over the last dimension.
// dx = r * g - x * r^3 * mean(g * x), where g = dy * w.

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = to_tensor(s, l)?;
        let y = match x.dtype() {
            // candle's kernel accumulates in f32; keep f64 exact (gradient checks rely on it).
            candle_core::DType::F64 => {
                super::ops::rms_norm(&x, &self.weight, self.eps, Mode::Train)?
            }
            _ => candle_nn::ops::rms_norm(&x, &self.weight, self.eps as f32)?,
        };
        to_storage(&y)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let x = x.detach();
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let g = dy.broadcast_mul(&self.weight)?;
        let gx = (&g * &x)?.mean_keepdim(D::Minus1)?;
        let r3 = r.powf(3.0)?;
        let dx = (g.broadcast_mul(&r)? - x.broadcast_mul(&(r3 * gx)?)?)?;
        Ok(Some(dx))
    }
}

pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op1(RmsNorm {
        weight: weight.clone(),
        eps,
    })
}

// ---------------------------------------------------------------------------------------------
// SwiGLU's product: y = silu(g) * u.
// dg = dy * u * s * (1 + g * (1 - s)) with s = sigmoid(g); du = dy * silu(g).

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = to_tensor(s1, l1)?;
        let u = to_tensor(s2, l2)?;
        to_storage(&(g.silu()? * u)?)
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, u) = (g.detach(), u.detach());
        let s = candle_nn::ops::sigmoid(&g)?;
        let silu = (&g * &s)?;
        let dsilu = (&s * ((&g * (1.0 - &s)?)? + 1.0)?)?;
        let dg = ((dy * &u)? * dsilu)?;
        let du = (dy * silu)?;
        Ok((Some(dg), Some(du)))
    }
}

pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

// ---------------------------------------------------------------------------------------------
// A frozen projection with a LoRA update: y = x W^T (+ bias) + s (x A^T) B^T.
// With h = dy B: dx = dy W + s h A, dA = s h^T x, dB = s dy^T (x A^T).

struct LoraLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    scale: f64,
}

impl LoraLinear {
    fn rows(x: &Tensor) -> Result<Tensor> {
        let k = x.dim(D::Minus1)?;
        x.reshape((x.elem_count() / k, k))
    }

    fn out_shape(&self, x: &Tensor) -> Result<Vec<usize>> {
        let mut dims = x.dims().to_vec();
        let last = dims.len() - 1;
        dims[last] = self.weight.dim(0)?;
        Ok(dims)
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = to_tensor(sx, lx)?;
        let a = to_tensor(sa, la)?;
        let b = to_tensor(sb, lb)?;
        let x2 = Self::rows(&x)?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        let low = x2.matmul(&a.t()?)?.matmul(&b.t()?)?;
        let y = (y + (low * self.scale)?)?;
        to_storage(&y.reshape(self.out_shape(&x)?)?)
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let x2 = Self::rows(&x)?;
        let dy2 = Self::rows(dy)?;
        let h = dy2.matmul(&b)?;
        let dx = (dy2.matmul(&self.weight)? + (h.matmul(&a)? * self.scale)?)?;
        let da = (h.t()?.matmul(&x2)? * self.scale)?;
        let db = (dy2.t()?.matmul(&x2.matmul(&a.t()?)?)? * self.scale)?;
        Ok((Some(dx.reshape(x.dims())?), Some(da), Some(db)))
    }
}

pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        a,
        b,
        LoraLinear {
            weight: weight.clone(),
            bias: bias.cloned(),
            scale,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Attention with rotary embeddings and grouped key/value heads, from the projections
// `(b, t, heads * d)` to the output `(b, t, heads * d)`.
//
// Forward: q, k rotated; P = softmax(q k^T / sqrt(d) + bias); o = P v. The query heads that share
// a key/value head are stacked along time, so k and v are never repeated.
// Backward: dV = P^T dO; dP = dO V^T; dS = P (dP - rowsum(dP P)); dQ = dS K / sqrt(d);
// dK = dS^T Q / sqrt(d); rotary embedding is a rotation, so its backward rotates by -angle.

struct Attention {
    cos: Tensor,
    sin: Tensor,
    neg_sin: Tensor,
    bias: Option<Tensor>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct AttnParts {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
}

impl Attention {
    fn split(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `(b, heads, t, d)` back to `(b, t, heads * d)`.
    fn merge(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, t, d) = x.dims4()?;
        x.transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, self.heads * d))
    }

    /// Rotated, grouped q `(b, kv, g*t, d)`, rotated k and v `(b, kv, t, d)`, probabilities.
    fn parts(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<AttnParts> {
        let (b, t, _) = q.dims3()?;
        let groups = self.heads / self.kv_heads;
        let q = rope(
            &self.split(q, self.heads)?,
            &self.cos,
            &self.sin,
            Mode::Infer,
        )?
        .reshape((b, self.kv_heads, groups * t, self.head_dim))?;
        let k = rope(
            &self.split(k, self.kv_heads)?,
            &self.cos,
            &self.sin,
            Mode::Infer,
        )?;
        let v = self.split(v, self.kv_heads)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(bias) = &self.bias {
            let t_k = k.dim(2)?;
            scores = scores
                .reshape((b, self.kv_heads, groups, t, t_k))?
                .broadcast_add(&bias.unsqueeze(2)?)?
                .reshape((b, self.kv_heads, groups * t, t_k))?;
        }
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(AttnParts { q, k, v, p })
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = to_tensor(sq, lq)?;
        let (b, t, _) = q.dims3()?;
        let parts = self.parts(&q, &to_tensor(sk, lk)?, &to_tensor(sv, lv)?)?;
        let o = parts
            .p
            .matmul(&parts.v)?
            .reshape((b, self.heads, t, self.head_dim))?;
        to_storage(&self.merge(&o)?)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, _) = q.dims3()?;
        let groups = self.heads / self.kv_heads;
        let parts = self.parts(&q.detach(), &k.detach(), &v.detach())?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let d_o =
            self.split(dout, self.heads)?
                .reshape((b, self.kv_heads, groups * t, self.head_dim))?;
        let dv = parts.p.t()?.matmul(&d_o)?;
        let dp = d_o.matmul(&parts.v.t()?)?;
        let row = (&dp * &parts.p)?.sum_keepdim(D::Minus1)?;
        let ds = (&parts.p * dp.broadcast_sub(&row)?)?;
        let dq = (ds.matmul(&parts.k)? * scale)?.reshape((b, self.heads, t, self.head_dim))?;
        let dk = (ds.t()?.matmul(&parts.q)? * scale)?;
        let dq = rope(&dq, &self.cos, &self.neg_sin, Mode::Infer)?;
        let dk = rope(&dk, &self.cos, &self.neg_sin, Mode::Infer)?;
        Ok((
            Some(self.merge(&dq)?),
            Some(dk.transpose(1, 2)?.contiguous()?.reshape(k.dims())?),
            Some(dv.transpose(1, 2)?.contiguous()?.reshape(v.dims())?),
        ))
    }
}

/// Attention from the q, k, v projections `(b, t, heads * d)`, for a training pass without a
/// cache. `cos`/`sin` are `(t, d/2)` or `(b, t, d/2)`; `bias` is `(b or 1, 1, t, t)`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    let op = Attention {
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        neg_sin: sin.neg()?.contiguous()?,
        bias: bias.cloned(),
        heads,
        kv_heads,
        head_dim,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
