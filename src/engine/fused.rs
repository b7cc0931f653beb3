//! Fused training ops, each one autograd node with a hand-written backward, on any device.
//!
//! candle's backward pass allocates a zero tensor and adds into it for every node of the graph,
//! views included, so a transformer layer written from small ops (~80 nodes in training) spends
//! more time in that bookkeeping than in its matrix multiplies, and keeps every intermediate
//! alive until the backward: composed attention holds several sequence x sequence tensors per
//! layer (~150 GB for a 7B model at 2048 tokens). These ops instead run their forward with
//! candle's own kernels on detached inputs (so on the CPU or a GPU alike), hand the result to
//! candle as the node's output, and keep only their inputs for the backward, which recomputes
//! what it needs from the formulas below. Half-precision inputs are computed in f32 where sums
//! or exponentials are taken (norms, softmax, the loss) and their gradients are returned in the
//! inputs' precision. `tests/engine_train.rs` checks every op against finite differences and
//! against the composed formulation.

use super::elementwise;
use super::exp_rows;
use super::gemm;
use super::lora_cpu;
use super::ops::Mode;
use super::ops::{frozen_input_grad, frozen_matmul, rope};
use super::train_attention::{self, Wanted};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, MetalStorage, Result,
    Shape, Storage, Tensor, D,
};
use std::sync::Mutex;

/// Whether the fused ops run on tensors of this device and dtype: the CPU or a CUDA GPU in any
/// float type. (Metal keeps the composed path: nothing here has run on one.) On the CPU, f32
/// takes the kernels of its own where there are some; f64 and half precision take candle's
/// ops, which is what a GPU runs, so the GPU's bf16 formulation is checked here too.
pub fn supported(t: &Tensor) -> bool {
    match t.device() {
        candle_core::Device::Cpu | candle_core::Device::Cuda(_) => t.dtype().is_float(),
        candle_core::Device::Metal(_) => false,
    }
}

/// The precision sums and exponentials are taken in: f32 for half-precision inputs.
fn wide(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        d => d,
    }
}

/// A node's output, computed before the node is made; the device backends hand it over.
struct Output(Mutex<Option<Tensor>>);

impl Output {
    fn new(t: Tensor) -> Result<Output> {
        // The storage is handed over whole, so it must hold exactly this tensor.
        let t = if t.is_contiguous() && t.layout().start_offset() == 0 {
            t
        } else {
            t.copy()?
        };
        Ok(Output(Mutex::new(Some(t))))
    }

    fn take(&self) -> Result<Tensor> {
        let mut slot = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused op: poisoned output".into()))?;
        slot.take()
            .ok_or_else(|| candle_core::Error::Msg("fused op: forward run twice".into()))
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("fused op: output is not on the CPU"),
        }
    }

    fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("fused op: output is not on the CUDA device"),
        }
    }

    fn metal(&self) -> Result<(MetalStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Metal(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("fused op: output is not on the Metal device"),
        }
    }
}

/// The device entry points of a node whose output was computed beforehand.
macro_rules! forward_from_output {
    (1) => {
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            self.out.cpu()
        }
        fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
            self.out.cuda()
        }
        fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
            self.out.metal()
        }
    };
    (2) => {
        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            self.out.cpu()
        }
        fn cuda_fwd(
            &self,
            _: &CudaStorage,
            _: &Layout,
            _: &CudaStorage,
            _: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            self.out.cuda()
        }
        fn metal_fwd(
            &self,
            _: &MetalStorage,
            _: &Layout,
            _: &MetalStorage,
            _: &Layout,
        ) -> Result<(MetalStorage, Shape)> {
            self.out.metal()
        }
    };
    (3) => {
        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            self.out.cpu()
        }
        fn cuda_fwd(
            &self,
            _: &CudaStorage,
            _: &Layout,
            _: &CudaStorage,
            _: &Layout,
            _: &CudaStorage,
            _: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            self.out.cuda()
        }
        fn metal_fwd(
            &self,
            _: &MetalStorage,
            _: &Layout,
            _: &MetalStorage,
            _: &Layout,
            _: &MetalStorage,
            _: &Layout,
        ) -> Result<(MetalStorage, Shape)> {
            self.out.metal()
        }
    };
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x * r * w with r = (mean(x^2) + eps)^(-1/2), over the last dimension.
// dx = r * g - x * r^3 * mean(g * x), where g = dy * w.

struct RmsNorm {
    weight: Tensor,
    eps: f64,
    out: Output,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    forward_from_output!(1);

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dtype = x.dtype();
        let w = wide(dtype);
        let x = x.detach().to_dtype(w)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let g = dy.to_dtype(w)?.broadcast_mul(&self.weight.to_dtype(w)?)?;
        let gx = (&g * &x)?.mean_keepdim(D::Minus1)?;
        let r3 = r.powf(3.0)?;
        let dx = (g.broadcast_mul(&r)? - x.broadcast_mul(&(r3 * gx)?)?)?;
        Ok(Some(dx.to_dtype(dtype)?))
    }
}

pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let out = match x.dtype() {
        // candle's kernel accumulates in f32; keep f64 exact (gradient checks rely on it).
        DType::F64 => super::ops::rms_norm(&x.detach(), weight, eps, Mode::Train)?,
        _ => candle_nn::ops::rms_norm(&x.detach(), weight, eps as f32)?,
    };
    x.apply_op1(RmsNorm {
        weight: weight.clone(),
        eps,
        out: Output::new(out)?,
    })
}

// ---------------------------------------------------------------------------------------------
// SwiGLU's product: y = silu(g) * u.
// dg = dy * u * s * (1 + g * (1 - s)) with s = sigmoid(g); du = dy * silu(g).

struct SiluMul {
    out: Output,
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    forward_from_output!(2);

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = &dy.contiguous()?;
        let fast = super::ops::with_cpu_f32(&[Some(g), Some(u), Some(dy)], |v| {
            Some(elementwise::silu_mul_backward(v[0]?, v[1]?, v[2]?))
        });
        if let Some((dg, du)) = fast {
            let shape = g.shape();
            return Ok((
                Some(Tensor::from_vec(dg, shape, g.device())?),
                Some(Tensor::from_vec(du, shape, g.device())?),
            ));
        }
        let dtype = g.dtype();
        let w = wide(dtype);
        let (g, u, dy) = (
            g.detach().to_dtype(w)?,
            u.detach().to_dtype(w)?,
            dy.to_dtype(w)?,
        );
        let s = candle_nn::ops::sigmoid(&g)?;
        let silu = (&g * &s)?;
        let dsilu = (&s * ((&g * (1.0 - &s)?)? + 1.0)?)?;
        let dg = ((&dy * &u)? * dsilu)?;
        let du = (dy * silu)?;
        Ok((Some(dg.to_dtype(dtype)?), Some(du.to_dtype(dtype)?)))
    }
}

pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let out = super::ops::silu_mul(&gate.detach(), &up.detach(), Mode::Infer)?;
    gate.apply_op2(
        &up,
        SiluMul {
            out: Output::new(out)?,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// A frozen projection with a LoRA update: y = x W^T (+ bias) + s (x A^T) B^T.
// With h = dy B: dx = dy W + s h A, dA = s h^T x, dB = s dy^T (x A^T).
// The adapter keeps its own precision (f32 under a bf16 base on a GPU); the frozen product runs
// in the base's.

struct LoraLinear {
    weight: Tensor,
    scale: f64,
    out: Output,
}

fn rows(x: &Tensor) -> Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    x.reshape((x.elem_count() / k, k))
}

/// The sizes of an adapted projection of `x2 (m, k)` by `weight (n, k)` with `a (r, k)`.
fn lora_dims(x2: &Tensor, a: &Tensor, weight: &Tensor) -> Result<lora_cpu::Dims> {
    let (m, k) = x2.dims2()?;
    let (r, n) = (a.dim(0)?, weight.dim(0)?);
    Ok(lora_cpu::Dims { m, k, n, r })
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
    }

    forward_from_output!(3);

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let lora = a.dtype();
        let x2 = rows(&x)?;
        let dy2 = rows(dy)?;
        let d = lora_dims(&x2, &a, &self.weight)?;
        let fast = super::ops::with_cpu_f32(
            &[
                Some(&x2),
                Some(&a),
                Some(&b),
                Some(&dy2),
                Some(&self.weight),
            ],
            |v| {
                let (x, a, b, dy, w) = (v[0]?, v[1]?, v[2]?, v[3]?, v[4]?);
                let mut dx = gemm::backward_new(dy, w, d.m, d.n, d.k);
                let (da, db) = lora_cpu::backward(x, a, b, dy, d, self.scale as f32, &mut dx);
                Some((dx, da, db))
            },
        );
        if let Some((dx, da, db)) = fast {
            let dev = x.device();
            return Ok((
                Some(Tensor::from_vec(dx, x.shape(), dev)?),
                Some(Tensor::from_vec(da, a.shape(), dev)?),
                Some(Tensor::from_vec(db, b.shape(), dev)?),
            ));
        }
        let (x2l, dy2l) = (x2.to_dtype(lora)?, dy2.to_dtype(lora)?);
        let h = dy2l.matmul(&b)?;
        let dx = (frozen_input_grad(&dy2.to_dtype(x.dtype())?, &self.weight)?
            + (h.matmul(&a)? * self.scale)?.to_dtype(x.dtype())?)?;
        let da = (h.t()?.matmul(&x2l)? * self.scale)?;
        let db = (dy2l.t()?.matmul(&x2l.matmul(&a.t()?)?)? * self.scale)?;
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
    let x = x.contiguous()?;
    let out = {
        let xd = x.detach();
        let x2 = rows(&xd)?;
        let d = lora_dims(&x2, a, weight)?;
        let fast = super::ops::with_cpu_f32(&[Some(&x2), Some(weight), Some(a), Some(b)], |v| {
            let mut y = gemm::forward_new(v[0]?, v[1]?, d.m, d.n, d.k);
            lora_cpu::add_forward(v[0]?, v[2]?, v[3]?, d, scale as f32, &mut y);
            Some(y)
        });
        let mut y = match fast {
            Some(y) => Tensor::from_vec(y, (d.m, d.n), x.device())?,
            None => {
                let y = frozen_matmul(&x2, weight)?;
                let xl = x2.to_dtype(a.dtype())?;
                let low = (xl.matmul(&a.detach().t()?)?.matmul(&b.detach().t()?)? * scale)?;
                let low = low.to_dtype(y.dtype())?;
                (y + low)?
            }
        };
        if let Some(bias) = bias {
            y = y.broadcast_add(bias)?;
        }
        let mut dims = x.dims().to_vec();
        let last = dims.len() - 1;
        dims[last] = weight.dim(0)?;
        y.reshape(dims)?
    };
    x.apply_op3(
        a,
        b,
        LoraLinear {
            weight: weight.clone(),
            scale,
            out: Output::new(out)?,
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
// Scores, probabilities and their gradients are f32 for half-precision inputs. The forward's
// rotated q, k, v and P are kept for the backward while P is small (a short SEAL sequence: the
// recomputation was a fifth of attention's time); a long sequence keeps only the inputs and
// recomputes P there, one layer at a time.

struct Attention {
    cos: Tensor,
    sin: Tensor,
    neg_sin: Tensor,
    bias: Option<Tensor>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    out: Output,
    /// The forward's parts, when P fits in [`KEEP_ATTENTION_BYTES`]; taken by the backward.
    kept: Mutex<Option<AttnParts>>,
}

/// The largest probability tensor (one layer's P) the forward keeps for the backward: 8 MB is
/// a 256-token sequence with up to 32 heads, and at most a few hundred MB over a model's layers.
const KEEP_ATTENTION_BYTES: usize = 8 * 1024 * 1024;

struct AttnParts {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
}

struct AttnShape {
    cos: Tensor,
    sin: Tensor,
    bias: Option<Tensor>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl AttnShape {
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

    /// Rotated, grouped q `(b, kv, g*t, d)`, rotated k and v `(b, kv, t, d)`, in the wide
    /// precision.
    fn rotated(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = q.dims3()?;
        let w = wide(q.dtype());
        let groups = self.heads / self.kv_heads;
        let q = rope(
            &self.split(q, self.heads)?,
            &self.cos,
            &self.sin,
            Mode::Infer,
        )?
        .reshape((b, self.kv_heads, groups * t, self.head_dim))?
        .to_dtype(w)?;
        let k = rope(
            &self.split(k, self.kv_heads)?,
            &self.cos,
            &self.sin,
            Mode::Infer,
        )?
        .to_dtype(w)?;
        let v = self.split(v, self.kv_heads)?.to_dtype(w)?;
        Ok((q, k, v))
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// The probabilities by candle's ops.
    fn probs(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        let (b, _, rows, _) = q.dims4()?;
        let groups = self.heads / self.kv_heads;
        let t = rows / groups;
        let mut scores = (q.matmul(&k.t()?)? * self.scale())?;
        if let Some(bias) = &self.bias {
            let t_k = k.dim(2)?;
            scores = scores
                .reshape((b, self.kv_heads, groups, t, t_k))?
                .broadcast_add(&bias.to_dtype(q.dtype())?.unsqueeze(2)?)?
                .reshape((b, self.kv_heads, groups * t, t_k))?;
        }
        candle_nn::ops::softmax_last_dim(&scores)
    }

    /// What [`train_attention`] hands back on the kernel pool for rotated f32 CPU tensors:
    /// the output `(b, kv, g*t, d)` and the probabilities, each where `wanted`; `None`
    /// elsewhere.
    fn on_cpu(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        wanted: Wanted,
    ) -> Result<Option<(Option<Tensor>, Option<Tensor>)>> {
        let bias = self.bias.as_ref().map(Tensor::contiguous).transpose()?;
        let scale = self.scale() as f32;
        train_attention::forward_tensors(q, k, v, bias.as_ref(), scale, wanted)
    }

    /// The probabilities and the rotated inputs they came from.
    fn parts(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<AttnParts> {
        let (q, k, v) = self.rotated(q, k, v)?;
        let p = match self.on_cpu(&q, &k, &v, Wanted::Probs)? {
            Some((_, Some(p))) => p,
            _ => self.probs(&q, &k)?,
        };
        Ok(AttnParts { q, k, v, p })
    }

    /// The output, and when `keep` the parts it was computed from. Not keeping them spares a
    /// long sequence's forward from writing P at all (108 MB a layer at 1,733 tokens with
    /// SmolLM2's 9 heads), which the backward then recomputes.
    fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        keep: bool,
    ) -> Result<(Tensor, Option<AttnParts>)> {
        let (b, t, _) = q.dims3()?;
        let dtype = q.dtype();
        let (q, k, v) = self.rotated(q, k, v)?;
        let wanted = if keep {
            Wanted::OutputAndProbs
        } else {
            Wanted::Output
        };
        let (o, p) = match self.on_cpu(&q, &k, &v, wanted)? {
            Some((Some(o), p)) => (o, p),
            _ => {
                let p = self.probs(&q, &k)?;
                (p.matmul(&v)?, Some(p))
            }
        };
        let o = o.reshape((b, self.heads, t, self.head_dim))?;
        let parts = p.filter(|_| keep).map(|p| AttnParts { q, k, v, p });
        Ok((self.merge(&o)?.to_dtype(dtype)?, parts))
    }
}

impl Attention {
    fn shape(&self) -> AttnShape {
        AttnShape {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            bias: self.bias.clone(),
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    forward_from_output!(3);

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = self.shape();
        let (b, t, _) = q.dims3()?;
        let dtype = q.dtype();
        let groups = self.heads / self.kv_heads;
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        let parts = match kept {
            Some(parts) => parts,
            None => shape.parts(&q.detach(), &k.detach(), &v.detach())?,
        };
        let scale = shape.scale();
        let d_o = shape
            .split(&dout.to_dtype(parts.p.dtype())?, self.heads)?
            .reshape((b, self.kv_heads, groups * t, self.head_dim))?;
        let on_cpu = train_attention::backward_tensors(
            &parts.q,
            &parts.k,
            &parts.v,
            &parts.p,
            &d_o,
            scale as f32,
        )?;
        let (dq, dk, dv) = match on_cpu {
            Some(grads) => grads,
            None => {
                let dv = parts.p.t()?.matmul(&d_o)?;
                let dp = d_o.matmul(&parts.v.t()?)?;
                let row = (&dp * &parts.p)?.sum_keepdim(D::Minus1)?;
                let ds = (&parts.p * dp.broadcast_sub(&row)?)?;
                drop(parts.p);
                let dq = (ds.matmul(&parts.k)? * scale)?;
                let dk = (ds.t()?.matmul(&parts.q)? * scale)?;
                (dq, dk, dv)
            }
        };
        let dq = dq
            .reshape((b, self.heads, t, self.head_dim))?
            .to_dtype(dtype)?;
        let dk = dk.to_dtype(dtype)?;
        let dq = rope(&dq, &self.cos, &self.neg_sin, Mode::Infer)?;
        let dk = rope(&dk, &self.cos, &self.neg_sin, Mode::Infer)?;
        Ok((
            Some(shape.merge(&dq)?),
            Some(dk.transpose(1, 2)?.contiguous()?.reshape(k.dims())?),
            Some(
                dv.to_dtype(dtype)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape(v.dims())?,
            ),
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
    attention_kept(
        q,
        k,
        v,
        cos,
        sin,
        bias,
        (heads, kv_heads, head_dim),
        KEEP_ATTENTION_BYTES,
    )
}

/// [`attention`], keeping the forward's parts when P takes at most `keep_bytes`.
#[allow(clippy::too_many_arguments)]
fn attention_kept(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    bias: Option<&Tensor>,
    (heads, kv_heads, head_dim): (usize, usize, usize),
    keep_bytes: usize,
) -> Result<Tensor> {
    let shape = AttnShape {
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        bias: bias.cloned(),
        heads,
        kv_heads,
        head_dim,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (b, t, _) = q.dims3()?;
    let p_bytes = b * heads * t * t * wide(q.dtype()).size_in_bytes();
    let keep = p_bytes <= keep_bytes;
    let (out, parts) = shape.forward(&q.detach(), &k.detach(), &v.detach(), keep)?;
    let op = Attention {
        kept: Mutex::new(parts),
        neg_sin: shape.sin.neg()?.contiguous()?,
        cos: shape.cos,
        sin: shape.sin,
        bias: shape.bias,
        heads,
        kv_heads,
        head_dim,
        out: Output::new(out)?,
    };
    q.apply_op3(&k, &v, op)
}

// ---------------------------------------------------------------------------------------------
// The loss's per-token negative log-likelihood through the output head, `(n, hidden)` hidden
// states to `(n,)`, taken a slice of rows at a time so the `n x vocab` logits never exist whole
// (Qwen's vocabulary is 152k: 2048 tokens of f32 logits are 1.2 GB, and the composed loss keeps
// several such tensors).
// nll = logsumexp(h W^T) - (h W^T)[target]; dh = (softmax(h W^T) - onehot(target)) dy W.

struct TokenNll {
    head: Tensor,
    targets: Tensor,
    step: usize,
    /// `softmax - onehot` of each slice, kept from the forward when it fits in [`KEEP_BYTES`],
    /// so the backward need not compute the logits again (a third of the head's work).
    kept: Option<Vec<Tensor>>,
    /// `0..vocab` as a `(1, vocab)` row, to compare targets against.
    ids: Tensor,
    out: Output,
}

/// The most memory the loss keeps between its forward and backward instead of recomputing.
const KEEP_BYTES: usize = 256 * 1024 * 1024;

/// Rows per slice: about 32M logits (128 MB in f32) at a time.
fn slice_rows(vocab: usize) -> usize {
    (32 * 1024 * 1024 / vocab.max(1)).max(1)
}

/// The logits of a slice of rows, in the wide precision.
fn slice_logits(h: &Tensor, head: &Tensor) -> Result<Tensor> {
    let w = wide(h.dtype());
    frozen_matmul(h, head)?.to_dtype(w)
}

impl CustomOp1 for TokenNll {
    fn name(&self) -> &'static str {
        "fused-token-nll"
    }

    forward_from_output!(1);

    fn bwd(&self, h: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let h = h.detach();
        let (n, _) = h.dims2()?;
        let step = self.step;
        let mut parts = Vec::with_capacity(n.div_ceil(step));
        for (i, start) in (0..n).step_by(step).enumerate() {
            let len = step.min(n - start);
            let g = match &self.kept {
                Some(kept) => kept[i].clone(),
                None => {
                    let h = h.narrow(0, start, len)?;
                    let targets = self.targets.narrow(0, start, len)?;
                    match slice_nll(&h, &self.head, &targets, &self.ids, true)?.1 {
                        Some(g) => g,
                        None => candle_core::bail!("token nll: no gradient of a slice"),
                    }
                }
            };
            // dy scales whole rows of dlogits, so it scales the rows of their product with the
            // head just as well: `hidden` values a row instead of `vocab`.
            let dh = frozen_input_grad(&g.to_dtype(h.dtype())?, &self.head)?;
            let w = g.dtype();
            let dy_s = dy.narrow(0, start, len)?.to_dtype(w)?.unsqueeze(1)?;
            parts.push(dh.to_dtype(w)?.broadcast_mul(&dy_s)?.to_dtype(h.dtype())?);
        }
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}

/// Per-token negative log-likelihood of `targets` after hidden states `h` `(n, hidden)`, through
/// the output head `(vocab, hidden)`: `(n,)`, in f32 (f64 for an f64 model).
pub fn token_nll(h: &Tensor, head: &Tensor, targets: &[u32]) -> Result<Tensor> {
    token_nll_sliced(h, head, targets, slice_rows(head.dim(0)?), KEEP_BYTES)
}

fn token_nll_sliced(
    h: &Tensor,
    head: &Tensor,
    targets: &[u32],
    step: usize,
    keep_bytes: usize,
) -> Result<Tensor> {
    let h = h.contiguous()?;
    let (n, _) = h.dims2()?;
    if targets.len() != n {
        candle_core::bail!("token nll: {n} rows but {} targets", targets.len());
    }
    let tgt = Tensor::new(targets, h.device())?;
    let hd = h.detach();
    let vocab = head.dim(0)?;
    let wide_bytes = wide(h.dtype()).size_in_bytes();
    let mut kept = (n * vocab * wide_bytes <= keep_bytes).then(Vec::new);
    let ids = Tensor::arange(0u32, vocab as u32, h.device())?.unsqueeze(0)?;
    let mut parts = Vec::with_capacity(n.div_ceil(step));
    for start in (0..n).step_by(step) {
        let len = step.min(n - start);
        let slice_tgt = tgt.narrow(0, start, len)?;
        let h = hd.narrow(0, start, len)?;
        let (nll, g) = slice_nll(&h, head, &slice_tgt, &ids, kept.is_some())?;
        parts.push(nll);
        if let (Some(kept), Some(g)) = (kept.as_mut(), g) {
            kept.push(g);
        }
    }
    let out = Tensor::cat(&parts, 0)?;
    h.apply_op1(TokenNll {
        head: head.clone(),
        targets: tgt,
        step,
        kept,
        ids,
        out: Output::new(out)?,
    })
}

/// A slice's per-token nll `(len,)` from its hidden states `h (len, hidden)` through the output
/// `head (vocab, hidden)`, and, when `grad`, `softmax - onehot(targets)` of its logits (in the
/// wide precision): the nll's gradient with respect to the logits, before the upstream
/// gradient. f32 on the CPU computes the logits into a buffer of its own and turns each row
/// into the gradient in place, rows shared out over the kernel pool; others go through candle's
/// ops.
fn slice_nll(
    h: &Tensor,
    head: &Tensor,
    targets: &Tensor,
    ids: &Tensor,
    grad: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (len, hidden) = h.dims2()?;
    let vocab = head.dim(0)?;
    let tgt = targets.to_vec1::<u32>()?;
    if vocab > 0 && tgt.iter().all(|&t| (t as usize) < vocab) {
        let h = h.contiguous()?;
        let fast = super::ops::with_cpu_f32(&[Some(&h), Some(head)], |v| {
            let mut logits = gemm::forward_new(v[0]?, v[1]?, len, vocab, hidden);
            let nll = nll_rows(&mut logits, vocab, &tgt, grad);
            Some((nll, grad.then_some(logits)))
        });
        if let Some((nll, g)) = fast {
            let dev = h.device();
            let g = g
                .map(|g| Tensor::from_vec(g, (len, vocab), dev))
                .transpose()?;
            return Ok((Tensor::from_vec(nll, len, dev)?, g));
        }
    }
    let logits = slice_logits(h, head)?;
    let max = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let lse = (sum.log()? + &max)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
    let nll = (lse - picked)?.squeeze(1)?;
    // The softmax from the exponentials just taken.
    let g = grad
        .then(|| minus_onehot(&e.broadcast_div(&sum)?, ids, targets))
        .transpose()?;
    Ok((nll, g))
}

/// Rows of logits a task of [`nll_rows`] takes (~1.5 MB of SmolLM2's, 600 KB of Qwen's).
const NLL_ROWS: usize = 8;

/// [`slice_nll`] on f32 logits `(targets.len(), vocab)`, rows shared out over the kernel pool:
/// each row is read once for its maximum, then (in cache) turned into its exponentials and,
/// when `grad`, into `softmax - onehot` in place. Returns the nll of each row.
fn nll_rows(logits: &mut [f32], vocab: usize, targets: &[u32], grad: bool) -> Vec<f32> {
    let mut nll = vec![0f32; targets.len()];
    let nll_parts: Vec<Mutex<&mut [f32]>> = nll.chunks_mut(NLL_ROWS).map(Mutex::new).collect();
    let row_parts: Vec<Mutex<&mut [f32]>> = logits
        .chunks_mut(NLL_ROWS * vocab)
        .map(Mutex::new)
        .collect();
    super::pool::global().run(nll_parts.len(), &|task, _| {
        let first = task * NLL_ROWS;
        let mut nll = nll_parts[task].lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = row_parts[task].lock().unwrap_or_else(|e| e.into_inner());
        for (r, (out, row)) in nll.iter_mut().zip(rows.chunks_exact_mut(vocab)).enumerate() {
            let target = targets[first + r] as usize;
            let picked = row[target];
            let max = exp_rows::max(row);
            let sum = if grad {
                let sum = exp_rows::exp_shifted(row, max);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
                row[target] -= 1.0;
                sum
            } else {
                exp_rows::sum_exp_shifted(row, max)
            };
            *out = (sum.ln() + max) - picked;
        }
    });
    drop((nll_parts, row_parts));
    nll
}

/// `p - onehot(targets)` for a slice's softmax `p`: the loss's gradient with respect to the
/// slice's logits (before the upstream gradient); `ids` is `0..vocab` as a `(1, vocab)` row.
fn minus_onehot(p: &Tensor, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let onehot = ids
        .broadcast_eq(&targets.unsqueeze(1)?)?
        .to_dtype(p.dtype())?;
    p - onehot
}

// ---------------------------------------------------------------------------------------------
// Gradient checkpointing: a whole transformer layer as one node that keeps only its input.
// Its forward runs the layer on detached tensors and drops every intermediate; its backward runs
// the layer again with its input and parameters tracked, and takes the gradient of
// sum(y * dy), whose derivative with respect to y is dy. The layer's trainable tensors travel
// packed into one (`params`), so the node has two inputs whatever the number of adapted
// projections; candle's own backward of the packing splits the gradient back.

/// A layer's forward from its input `(b, t, hidden)` and packed parameters.
pub type LayerFn = std::sync::Arc<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

struct Checkpoint {
    layer: LayerFn,
    out: Output,
}

impl CustomOp2 for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpointed-layer"
    }

    forward_from_output!(2);

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let x = candle_core::Var::from_tensor(&x.detach())?;
        let params = candle_core::Var::from_tensor(&params.detach())?;
        let y = (self.layer)(x.as_tensor(), params.as_tensor())?;
        // Only the gradient of this sum is used, never its value, so its precision is moot.
        let grads = (y * dy.detach())?.sum_all()?.backward()?;
        Ok((
            grads.get(x.as_tensor()).cloned(),
            grads.get(params.as_tensor()).cloned(),
        ))
    }
}

/// `layer(x, params)` as one node that recomputes the layer in the backward instead of keeping
/// its intermediates: the activation memory of training drops to one hidden state per layer
/// plus one layer's worth, for a second forward of each layer. `layer` must be deterministic
/// (no dropout).
pub fn checkpoint(x: &Tensor, params: &Tensor, layer: LayerFn) -> Result<Tensor> {
    let x = x.contiguous()?;
    let params = params.contiguous()?;
    let out = layer(&x.detach(), &params.detach())?;
    x.apply_op2(
        &params,
        Checkpoint {
            layer,
            out: Output::new(out)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = super::super::rng::SplitMix64::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// The backward from the kept parts equals the one that recomputes them, by candle's ops
    /// (f64) and on the kernel pool (f32, where the forward that keeps nothing never writes P
    /// and the backward recomputes P alone).
    #[test]
    fn attention_gradients_are_the_same_kept_or_recomputed() {
        for dtype in [DType::F64, DType::F32] {
            attention_kept_or_recomputed(dtype);
        }
    }

    fn attention_kept_or_recomputed(dtype: DType) {
        let (t, heads, kv_heads, d) = (5, 4, 2, 8);
        let rand = |shape: &[usize], seed| rand(shape, seed).to_dtype(dtype).unwrap();
        let q = Var::from_tensor(&rand(&[1, t, heads * d], 1)).unwrap();
        let k = Var::from_tensor(&rand(&[1, t, kv_heads * d], 2)).unwrap();
        let v = Var::from_tensor(&rand(&[1, t, kv_heads * d], 3)).unwrap();
        let (cos, sin) = (rand(&[t, d / 2], 4), rand(&[t, d / 2], 5));
        let bias = rand(&[1, 1, t, t], 6);
        let weights = rand(&[1, t, heads * d], 7);
        let run = |keep: usize| {
            let out = attention_kept(
                &q,
                &k,
                &v,
                &cos,
                &sin,
                Some(&bias),
                (heads, kv_heads, d),
                keep,
            )
            .unwrap();
            let grads = (&out * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g = |x: &Var| grads.get(x.as_tensor()).unwrap().clone();
            (out, [g(&q), g(&k), g(&v)])
        };
        let (out_kept, kept) = run(usize::MAX);
        let (out_again, again) = run(0);
        assert!(max_diff(&out_kept, &out_again) < 1e-12);
        for (a, b) in kept.iter().zip(&again) {
            assert!(max_diff(a, b) < 1e-12, "{dtype:?}");
            assert!(max_diff(a, &a.zeros_like().unwrap()) > 0.0, "{dtype:?}");
        }
    }

    /// Sliced or not, the loss and its gradient equal the composed log-softmax's.
    #[test]
    fn token_nll_matches_log_softmax_in_any_slicing() {
        let h = Var::from_tensor(&rand(&[7, 5], 1)).unwrap();
        let head = rand(&[11, 5], 2);
        let targets = [0u32, 3, 10, 4, 4, 9, 1];
        let tgt = Tensor::new(&targets[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let logp =
            candle_nn::ops::log_softmax(&h.matmul(&head.t().unwrap()).unwrap(), D::Minus1).unwrap();
        let expected = logp
            .gather(&tgt, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        let weights = rand(&[7], 3);
        let g_expected = (&expected * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_expected = g_expected.get(h.as_tensor()).unwrap().clone();
        for (step, keep) in [
            (1, 0),
            (3, 0),
            (7, 0),
            (100, 0),
            (3, usize::MAX),
            (100, 1 << 20),
        ] {
            let nll = token_nll_sliced(h.as_tensor(), &head, &targets, step, keep).unwrap();
            assert!(max_diff(&nll, &expected) < 1e-12, "step {step}");
            let g = (&nll * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g = g.get(h.as_tensor()).unwrap();
            assert!(
                max_diff(g, &g_expected) < 1e-12,
                "step {step} keep {keep}: gradient"
            );
        }
    }
}
