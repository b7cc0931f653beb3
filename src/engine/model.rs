//! The project's own Llama / Qwen2 forward pass, written so that LoRA adapters can be trained
//! through it: in [`Mode::Train`] every op on the path has a backward, and the frozen base weights
//! never receive a gradient (see [`ops::frozen_matmul`]).

use super::attend;
use super::config::ModelConfig;
use super::fused;
use super::lora::{LoraAdapter, Target};
use super::ops::{self, Mode};
use super::qweight::{self, QWeight};
use super::train_attention;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;
use std::sync::Arc;

/// A frozen projection: dense weight `(out, in)`, optional bias, and optionally a quantized copy
/// of the weight used for inference on CPU, where decoding is bound by memory bandwidth.
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    quantized: Option<Arc<QWeight>>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear {
            weight,
            bias,
            quantized: None,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn is_quantized(&self) -> bool {
        self.quantized.is_some()
    }

    /// The quantized copy's block format, if there is one.
    pub fn quantized_format(&self) -> Option<qweight::BlockFormat> {
        self.quantized.as_ref().map(|q| q.format())
    }

    /// A Q8_0 copy of the dense weight. Rows that do not fill whole blocks stay dense.
    fn quantize_q8(&mut self) -> Result<()> {
        let (rows, cols) = self.weight.dims2()?;
        let w = self
            .weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.quantized = QWeight::quantize_q8_0(&w, rows, cols).map(Arc::new);
        Ok(())
    }

    /// Uses `blocks` (a GGUF file's own, exactly this weight) as the quantized copy.
    fn use_blocks(&mut self, blocks: QWeight) -> Result<()> {
        let (rows, cols) = self.weight.dims2()?;
        if (blocks.rows(), blocks.cols()) != (rows, cols) {
            bail!(
                "quantized blocks are {}x{}, the weight is {rows}x{cols}",
                blocks.rows(),
                blocks.cols()
            );
        }
        self.quantized = Some(Arc::new(blocks));
        Ok(())
    }

    /// The quantized copy, if this product should use it: inference on CPU in f32 with few
    /// rows. Quantized weights win when few rows share each weight read (decoding); with many
    /// rows the multiply is compute-bound and the dense GEMM kernel is faster.
    fn quantized_for(&self, x: &Tensor, mode: Mode) -> Option<&Arc<QWeight>> {
        let rows = x.elem_count() / self.in_dim().max(1);
        match (&self.quantized, mode) {
            (Some(q), Mode::Infer)
                if rows <= qweight::MAX_ROWS && x.device().is_cpu() && x.dtype() == DType::F32 =>
            {
                Some(q)
            }
            _ => None,
        }
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self.quantized_for(x, mode) {
            Some(q) => Self::quantized_forward(&[self], &[q], x)?
                .pop()
                .context("one projection gives one result"),
            None => self.add_bias(ops::frozen_matmul(x, &self.weight)?),
        }
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// [`Linear::forward`] of several projections of the same input; when every one reads its
    /// quantized copy, in one pass of the kernel pool.
    pub fn forward_group(linears: &[&Linear], x: &Tensor, mode: Mode) -> Result<Vec<Tensor>> {
        let quantized: Option<Vec<&QWeight>> = linears
            .iter()
            .map(|l| l.quantized_for(x, mode).map(|q| q.as_ref()))
            .collect();
        match quantized {
            Some(ws) => Self::quantized_forward(linears, &ws, x),
            None => linears.iter().map(|l| l.forward(x, mode)).collect(),
        }
    }

    /// `x (.., in)` through each of `linears` by its quantized copy `ws`, in one pass of the
    /// kernel pool, biases added.
    fn quantized_forward(linears: &[&Linear], ws: &[&QWeight], x: &Tensor) -> Result<Vec<Tensor>> {
        let dims = x.dims().to_vec();
        let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let m = xs.len() / linears[0].in_dim().max(1);
        let outs = qweight::matmul_group(ws, &xs, m);
        linears
            .iter()
            .zip(outs)
            .map(|(l, y)| {
                let mut shape = dims.clone();
                if let Some(last) = shape.last_mut() {
                    *last = l.out_dim();
                }
                l.add_bias(Tensor::from_vec(y, shape, x.device())?)
            })
            .collect()
    }
}

#[derive(Clone)]
pub struct Block {
    pub input_norm: Tensor,
    pub post_attention_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Block {
    pub fn linear(&self, target: Target) -> &Linear {
        match target {
            Target::Q => &self.q,
            Target::K => &self.k,
            Target::V => &self.v,
            Target::O => &self.o,
            Target::Gate => &self.gate,
            Target::Up => &self.up,
            Target::Down => &self.down,
        }
    }

    fn linear_mut(&mut self, target: Target) -> &mut Linear {
        match target {
            Target::Q => &mut self.q,
            Target::K => &mut self.k,
            Target::V => &mut self.v,
            Target::O => &mut self.o,
            Target::Gate => &mut self.gate,
            Target::Up => &mut self.up,
            Target::Down => &mut self.down,
        }
    }
}

/// Where each query token sits in its sequence.
#[derive(Clone, Debug)]
pub enum Positions {
    /// Every row starts at the same position.
    From(usize),
    /// A position per row and token, `(b, t)`, for left-padded batches.
    PerRow(Vec<Vec<u32>>),
}

/// Key/value cache of every layer, preallocated along the time axis so that a decode step writes
/// in place instead of copying the whole history.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, capacity: usize) -> KvCache {
        KvCache {
            layers: vec![None; num_layers],
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, t, d) = k.dims4()?;
        let needed = self.len + t;
        let slot = &mut self.layers[layer];
        let grow = match slot {
            None => true,
            Some((ck, _)) => ck.dim(2)? < needed,
        };
        if grow {
            let cap = needed
                .max(self.capacity)
                .max(self.capacity * 2 * slot.is_some() as usize);
            let nk = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            let nv = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
            if let Some((ok, ov)) = slot.as_ref() {
                nk.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                nv.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            *slot = Some((nk, nv));
        }
        let (ck, cv) = slot.as_ref().expect("cache slot was just filled");
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((ck.narrow(2, 0, needed)?, cv.narrow(2, 0, needed)?))
    }

    fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps only the given batch rows (in that order), dropping the others' history.
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        let Some(device) = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
        else {
            return Ok(());
        };
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::new(idx.as_slice(), &device)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// Repeats a batch-1 cache `b` times along the batch axis, so that prompts sharing a prefix
    /// can be prefilled once and then continue separately.
    pub fn expand_batch(&mut self, b: usize) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            if k.dim(0)? != 1 {
                bail!("only a batch-1 cache can be expanded");
            }
            *k = k.repeat((b, 1, 1, 1))?;
            *v = v.repeat((b, 1, 1, 1))?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Transformer {
    pub config: ModelConfig,
    pub device: Device,
    pub dtype: DType,
    pub embed: Tensor,
    pub layers: Vec<Block>,
    pub norm: Tensor,
    pub lm_head: Linear,
    inv_freq: Tensor,
    /// Train with the fused CPU ops of [`super::fused`] where they apply (on by default; the
    /// composed formulation stays as the reference they are tested against).
    pub fused_training: bool,
    /// With the fused ops, recompute each layer in the backward instead of keeping its
    /// intermediates (gradient checkpointing; off by default: it costs a second forward).
    pub checkpoint_layers: bool,
}

impl Transformer {
    /// Builds the model from tensors named as in Hugging Face checkpoints
    /// (`model.layers.0.self_attn.q_proj.weight`, ...), already in the target dtype and device.
    /// Errors name a tensor as `name_in_file` spells it, so a GGUF's reader sees GGUF names.
    pub fn from_tensors(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        source: &str,
        name_in_file: &dyn Fn(&str) -> String,
    ) -> Result<Transformer> {
        config
            .validate()
            .with_context(|| format!("{source}: bad model shape"))?;
        let c = &config;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .remove(name)
                .with_context(|| format!("{source}: tensor `{}` is missing", name_in_file(name)))?;
            if t.dims() != shape {
                bail!(
                    "{source}: tensor `{}` has shape {:?}, expected {:?}",
                    name_in_file(name),
                    t.dims(),
                    shape
                );
            }
            Ok(t)
        };
        let (h, hd) = (c.hidden_size, c.head_dim);
        let q_out = c.num_heads * hd;
        let kv_out = c.num_kv_heads * hd;
        let embed = take("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |target: Target, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let name = format!("{p}.{}", target.block_path());
                let w = take(&format!("{name}.weight"), &[out, inp])?;
                let b = if bias {
                    Some(take(&format!("{name}.bias"), &[out])?)
                } else {
                    None
                };
                Ok(Linear::new(w, b))
            };
            let qkv_bias = c.arch.has_qkv_bias();
            let q = lin(Target::Q, q_out, h, qkv_bias)?;
            let k = lin(Target::K, kv_out, h, qkv_bias)?;
            let v = lin(Target::V, kv_out, h, qkv_bias)?;
            let o = lin(Target::O, h, q_out, false)?;
            let gate = lin(Target::Gate, c.intermediate_size, h, false)?;
            let up = lin(Target::Up, c.intermediate_size, h, false)?;
            let down = lin(Target::Down, h, c.intermediate_size, false)?;
            layers.push(Block {
                input_norm: take(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_attention_norm: take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
            });
        }
        let norm = take("model.norm.weight", &[h])?;
        let lm_head = match tensors.remove("lm_head.weight") {
            Some(w) if !c.tie_word_embeddings => {
                if w.dims() != [c.vocab_size, h] {
                    bail!(
                        "{source}: tensor `{}` has shape {:?}, expected {:?}",
                        name_in_file("lm_head.weight"),
                        w.dims(),
                        [c.vocab_size, h]
                    );
                }
                Linear::new(w, None)
            }
            _ if c.tie_word_embeddings => Linear::new(embed.clone(), None),
            _ => bail!(
                "{source}: tensor `{}` is missing and embeddings are not tied",
                name_in_file("lm_head.weight")
            ),
        };
        let inv_freq = Tensor::new(c.rope_inv_freqs(), device)?;
        Ok(Transformer {
            config,
            device: device.clone(),
            dtype,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            fused_training: true,
            checkpoint_layers: false,
        })
    }

    /// Keeps a quantized copy of every block projection for inference: the file's own blocks
    /// where `exact` has them (under Hugging Face names; they are then exactly the weights), a
    /// Q8_0 quantization of the dense weight otherwise. The output head is quantized only with
    /// exact blocks: its errors land directly on the logits, and a Q8 copy of a dense head
    /// flipped greedy choices that the blocks' own quantization did not.
    pub fn quantize_for_inference(&mut self, exact: &mut HashMap<String, QWeight>) -> Result<()> {
        for (i, block) in self.layers.iter_mut().enumerate() {
            for target in Target::ALL {
                let name = format!("model.layers.{i}.{}.weight", target.block_path());
                let lin = block.linear_mut(target);
                match exact.remove(&name) {
                    Some(blocks) => lin.use_blocks(blocks).with_context(|| name.clone())?,
                    None => lin.quantize_q8()?,
                }
            }
        }
        let head = match self.config.tie_word_embeddings {
            true => "model.embed_tokens.weight",
            false => "lm_head.weight",
        };
        if let Some(blocks) = exact.remove(head) {
            self.lm_head.use_blocks(blocks).context(head)?;
        }
        Ok(())
    }

    pub fn is_quantized(&self) -> bool {
        self.layers.first().is_some_and(|b| b.q.is_quantized())
    }

    /// The formats inference reads, e.g. `q4_1 x210, head q8_0` (empty when dense).
    pub fn inference_formats(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for block in &self.layers {
            for target in Target::ALL {
                if let Some(f) = block.linear(target).quantized_format() {
                    match counts.iter_mut().find(|(n, _)| *n == f.name()) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((f.name(), 1)),
                    }
                }
            }
        }
        let mut parts: Vec<String> = counts.iter().map(|(n, c)| format!("{n} x{c}")).collect();
        if !parts.is_empty() {
            parts.push(match self.lm_head.quantized_format() {
                Some(f) => format!("head {}", f.name()),
                None => "head f32".to_string(),
            });
        }
        parts.join(", ")
    }

    /// (layer, target, out, in) of every projection, for sizing adapters.
    pub fn projection_shapes(&self) -> Vec<(usize, Target, usize, usize)> {
        let mut out = Vec::new();
        for (i, block) in self.layers.iter().enumerate() {
            for target in Target::ALL {
                let l = block.linear(target);
                out.push((i, target, l.out_dim(), l.in_dim()));
            }
        }
        out
    }

    /// A copy of this model with the adapter folded into its weights: `W += scale * B A`.
    /// Unchanged tensors are shared, not copied.
    pub fn merged(&self, adapter: &LoraAdapter) -> Result<Transformer> {
        let mut out = self.clone();
        let requantize = self.is_quantized();
        for (&(layer, target), pair) in &adapter.modules {
            let block = out
                .layers
                .get_mut(layer)
                .with_context(|| format!("adapter names layer {layer}, model has fewer"))?;
            let lin = block.linear_mut(target);
            let delta = adapter.delta(pair)?.to_dtype(lin.weight.dtype())?;
            if delta.dims() != lin.weight.dims() {
                bail!(
                    "adapter for layer {layer} {} has shape {:?}, weight has {:?}",
                    target.module_name(),
                    delta.dims(),
                    lin.weight.dims()
                );
            }
            lin.weight = (&lin.weight + delta)?;
            lin.quantized = None;
            // The merged weight is no longer the file's blocks: Q8_0 keeps it closest.
            if requantize {
                lin.quantize_q8()?;
            }
        }
        Ok(out)
    }

    /// Every weight under its Hugging Face name, for saving.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, block) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                block.input_norm.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                block.post_attention_norm.clone(),
            ));
            for target in Target::ALL {
                let l = block.linear(target);
                out.push((
                    format!("{p}.{}.weight", target.block_path()),
                    l.weight.clone(),
                ));
                if let Some(b) = &l.bias {
                    out.push((format!("{p}.{}.bias", target.block_path()), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if !self.config.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.weight.clone()));
        }
        out
    }

    pub fn num_parameters(&self) -> usize {
        self.named_tensors()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    fn rope_tables(&self, positions: &Positions, t: usize) -> Result<(Tensor, Tensor)> {
        let pos = match positions {
            Positions::From(start) => {
                let p: Vec<f32> = (0..t).map(|i| (start + i) as f32).collect();
                Tensor::from_vec(p, (t, 1), &self.device)?
            }
            Positions::PerRow(rows) => {
                let b = rows.len();
                let p: Vec<f32> = rows
                    .iter()
                    .flat_map(|r| r.iter().map(|&x| x as f32))
                    .collect();
                Tensor::from_vec(p, (b, t, 1), &self.device)?
            }
        };
        let freqs = pos.broadcast_mul(&self.inv_freq)?;
        Ok((
            freqs.cos()?.to_dtype(self.dtype)?,
            freqs.sin()?.to_dtype(self.dtype)?,
        ))
    }

    /// Runs the blocks over `ids` `(b, t)` and returns the final hidden states `(b, t, hidden)`.
    ///
    /// `bias` is an additive attention bias `(b or 1, 1, t, keys)`; when it is `None` the usual
    /// causal mask is used. With a cache, keys include every cached position.
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        positions: &Positions,
        bias: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        adapter: Option<&LoraAdapter>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let c = &self.config;
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, c.hidden_size))?;
        let (cos, sin) = self.rope_tables(positions, t)?;
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let causal;
        let bias = match bias {
            Some(bias) => Some(bias),
            None if t > 1 => {
                let valid = vec![vec![1u8; past + t]];
                causal = ops::attention_bias(&valid, t, past, self.dtype, &self.device)?;
                Some(&causal)
            }
            None => None,
        };
        let dropout = if mode == Mode::Train {
            adapter.map(|a| a.config.dropout).unwrap_or(0.0)
        } else {
            0.0
        };
        if mode == Mode::Train
            && self.fused_training
            && cache.is_none()
            && dropout == 0.0
            && fused::supported(&x)
        {
            return self.forward_train_fused(x, &cos, &sin, bias, adapter);
        }
        for (i, block) in self.layers.iter().enumerate() {
            // `base` is the frozen projection of `x`; the adapter's part is added here.
            let adapt = |target: Target, x: &Tensor, base: Tensor| -> Result<Tensor> {
                match adapter.and_then(|a| a.get(i, target).map(|p| (a, p))) {
                    None => Ok(base),
                    Some((a, pair)) => {
                        // The adapter keeps its own precision (f32 under a bf16 base on GPU).
                        let xf = x.to_dtype(pair.a.dtype())?;
                        let xf = if dropout > 0.0 {
                            candle_nn::ops::dropout(&xf, dropout as f32)?
                        } else {
                            xf
                        };
                        let low = xf.broadcast_matmul(&pair.a.t()?)?;
                        let delta = (low.broadcast_matmul(&pair.b.t()?)? * a.scale())?;
                        Ok((base + delta.to_dtype(x.dtype())?)?)
                    }
                }
            };
            let proj = |target: Target, x: &Tensor| -> Result<Tensor> {
                adapt(target, x, block.linear(target).forward(x, mode)?)
            };
            // Projections of one input, computed together (one pass of the kernel pool when
            // they read quantized weights).
            let projs = |targets: &[Target], x: &Tensor| -> Result<Vec<Tensor>> {
                let linears: Vec<&Linear> = targets.iter().map(|&t| block.linear(t)).collect();
                let bases = Linear::forward_group(&linears, x, mode)?;
                targets
                    .iter()
                    .zip(bases)
                    .map(|(&target, base)| adapt(target, x, base))
                    .collect()
            };
            let residual = &x;
            let hnorm = ops::rms_norm(&x, &block.input_norm, c.rms_norm_eps, mode)?;
            let [q, k, v]: [Tensor; 3] = projs(&[Target::Q, Target::K, Target::V], &hnorm)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("three projections give three results"))?;
            let q = q
                .reshape((b, t, c.num_heads, c.head_dim))?
                .transpose(1, 2)?;
            let k = k
                .reshape((b, t, c.num_kv_heads, c.head_dim))?
                .transpose(1, 2)?;
            let v = v
                .reshape((b, t, c.num_kv_heads, c.head_dim))?
                .transpose(1, 2)?;
            let q = ops::rope(&q, &cos, &sin, mode)?;
            let k = ops::rope(&k, &cos, &sin, mode)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => cache.append(i, &k, &v)?,
                None => (k, v.contiguous()?),
            };
            let attn = self.attention(&q, &k, &v, bias, mode)?;
            let attn = proj(Target::O, &attn)?;
            let x1 = (residual + attn)?;
            let hnorm = ops::rms_norm(&x1, &block.post_attention_norm, c.rms_norm_eps, mode)?;
            let [gate, up]: [Tensor; 2] = projs(&[Target::Gate, Target::Up], &hnorm)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("two projections give two results"))?;
            let mlp = proj(Target::Down, &ops::silu_mul(&gate, &up, mode)?)?;
            x = (x1 + mlp)?;
        }
        if let Some(cache) = cache {
            cache.advance(t);
        }
        Ok(ops::rms_norm(&x, &self.norm, c.rms_norm_eps, mode)?)
    }

    /// The training forward on the fused ops: one autograd node per norm, projection,
    /// attention and MLP product; with `checkpoint_layers`, one node per layer that keeps only
    /// its input and recomputes the rest in the backward.
    fn forward_train_fused(
        &self,
        mut x: Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: Option<&Tensor>,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let scale = adapter.map(|a| a.scale()).unwrap_or(1.0);
        for (i, block) in self.layers.iter().enumerate() {
            let pairs: Vec<(Target, Tensor, Tensor)> = adapter
                .map(|a| {
                    a.modules
                        .range((i, Target::Q)..=(i, Target::Down))
                        .map(|(&(_, t), p)| (t, p.a.clone(), p.b.clone()))
                        .collect()
                })
                .unwrap_or_default();
            x = if self.checkpoint_layers {
                self.checkpointed_layer(block, &x, cos, sin, bias, pairs, scale)?
            } else {
                fused_layer(block, c, &x, cos, sin, bias, &pairs, scale)?
            };
        }
        Ok(fused::rms_norm(&x, &self.norm, c.rms_norm_eps)?)
    }

    /// One layer under [`fused::checkpoint`], its adapter's A and B packed into one tensor.
    #[allow(clippy::too_many_arguments)]
    fn checkpointed_layer(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: Option<&Tensor>,
        pairs: Vec<(Target, Tensor, Tensor)>,
        scale: f64,
    ) -> Result<Tensor> {
        let shapes: Vec<(Target, Vec<usize>, Vec<usize>)> = pairs
            .iter()
            .map(|(t, a, b)| (*t, a.dims().to_vec(), b.dims().to_vec()))
            .collect();
        let params = if pairs.is_empty() {
            Tensor::zeros(1, DType::F32, &self.device)?
        } else {
            let flat = pairs
                .iter()
                .flat_map(|(_, a, b)| [a.flatten_all(), b.flatten_all()])
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&flat, 0)?
        };
        let (block, config) = (block.clone(), self.config.clone());
        let (cos, sin, bias) = (cos.clone(), sin.clone(), bias.cloned());
        let layer: fused::LayerFn = Arc::new(move |x: &Tensor, params: &Tensor| {
            let mut at = 0;
            let mut pairs = Vec::with_capacity(shapes.len());
            for (t, a_dims, b_dims) in &shapes {
                let (na, nb) = (a_dims.iter().product(), b_dims.iter().product::<usize>());
                let a = params.narrow(0, at, na)?.reshape(a_dims.as_slice())?;
                let b = params.narrow(0, at + na, nb)?.reshape(b_dims.as_slice())?;
                at += na + nb;
                pairs.push((*t, a, b));
            }
            fused_layer(&block, &config, x, &cos, &sin, bias.as_ref(), &pairs, scale)
                .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
        });
        Ok(fused::checkpoint(x, &params, layer)?)
    }

    /// Grouped-query attention without materialising repeated key/value heads: the query heads
    /// that share a key/value head are stacked along the time axis instead.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, _, t, hd) = q.dims4()?;
        let groups = c.kv_groups();
        let q = q
            .contiguous()?
            .reshape((b, c.num_kv_heads, groups * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let decoded = match mode {
            Mode::Infer => match attend::attend(&q, k, v, t, bias, scale as f32)? {
                Some(out) => Some(out),
                None if k.dim(2)? == t => train_attention::prefill(&q, k, v, bias, scale as f32)?,
                None => None,
            },
            Mode::Train => None,
        };
        let out = match decoded {
            Some(out) => out,
            None => self.attention_scores(&q, k, v, bias, mode, scale)?,
        };
        Ok(out
            .reshape((b, c.num_heads, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, c.num_heads * hd))?)
    }

    /// `softmax(q kᵀ scale + bias) v` by candle's ops, `q` as [`Model::attention`] stacks it.
    fn attention_scores(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        mode: Mode,
        scale: f64,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, _, rows, _) = q.dims4()?;
        let groups = c.kv_groups();
        let t = rows / groups;
        let t_k = k.dim(2)?;
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(bias) = bias {
            scores = scores
                .reshape((b, c.num_kv_heads, groups, t, t_k))?
                .broadcast_add(&bias.unsqueeze(2)?)?
                .reshape((b, c.num_kv_heads, groups * t, t_k))?;
        }
        let probs = match scores.dtype() {
            DType::BF16 | DType::F16 => {
                ops::softmax_last(&scores.to_dtype(DType::F32)?, mode)?.to_dtype(q.dtype())?
            }
            _ => ops::softmax_last(&scores, mode)?,
        };
        Ok(probs.matmul(v)?)
    }

    /// Logits `(.., vocab)` for hidden states `(.., hidden)`, in f32 (f64 for an f64 model).
    pub fn logits(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        let logits = self.lm_head.forward(hidden, mode)?;
        Ok(match logits.dtype() {
            DType::F64 => logits,
            _ => logits.to_dtype(DType::F32)?,
        })
    }

    /// Convenience: logits of the last position of each row.
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let t = hidden.dim(1)?;
        self.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?, Mode::Infer)
    }

    /// Log-probabilities of `targets` given the hidden states before them: for every
    /// `(row, position)` in `picks`, the log-probability of token `targets[k]`.
    pub fn token_logprobs(
        &self,
        hidden: &Tensor,
        picks: &[(usize, usize)],
        targets: &[u32],
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let flat: Vec<u32> = picks.iter().map(|&(r, p)| (r * t + p) as u32).collect();
        let idx = Tensor::new(flat, &self.device)?;
        let picked = hidden.reshape((b * t, h))?.index_select(&idx, 0)?;
        if mode == Mode::Train
            && self.fused_training
            && self.lm_head.bias.is_none()
            && fused::supported(&picked)
        {
            return Ok(fused::token_nll(&picked, &self.lm_head.weight, targets)?.neg()?);
        }
        let logits = self.logits(&picked, mode)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let tgt = Tensor::new(targets, &self.device)?.unsqueeze(1)?;
        Ok(logp.gather(&tgt, 1)?.squeeze(1)?)
    }
}

/// One transformer layer on the fused ops, its adapter given as (projection, A, B).
#[allow(clippy::too_many_arguments)]
fn fused_layer(
    block: &Block,
    c: &ModelConfig,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    bias: Option<&Tensor>,
    pairs: &[(Target, Tensor, Tensor)],
    scale: f64,
) -> Result<Tensor> {
    let proj = |target: Target, x: &Tensor| -> Result<Tensor> {
        let lin = block.linear(target);
        match pairs.iter().find(|(t, _, _)| *t == target) {
            Some((_, a, b)) => Ok(fused::lora_linear(
                x,
                &lin.weight,
                lin.bias.as_ref(),
                a,
                b,
                scale,
            )?),
            None => lin.forward(x, Mode::Train),
        }
    };
    let h = fused::rms_norm(x, &block.input_norm, c.rms_norm_eps)?;
    let q = proj(Target::Q, &h)?;
    let k = proj(Target::K, &h)?;
    let v = proj(Target::V, &h)?;
    let attn = fused::attention(
        &q,
        &k,
        &v,
        cos,
        sin,
        bias,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
    )?;
    let x1 = (x + proj(Target::O, &attn)?)?;
    let h = fused::rms_norm(&x1, &block.post_attention_norm, c.rms_norm_eps)?;
    let mlp = fused::silu_mul(&proj(Target::Gate, &h)?, &proj(Target::Up, &h)?)?;
    Ok((x1 + proj(Target::Down, &mlp)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantized_projection_keeps_leading_dimensions_and_tracks_the_dense_one() {
        let (rows, cols) = (6, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let mut lin = Linear::new(
            Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap(),
            None,
        );
        lin.quantize_q8().unwrap();
        let q = lin.quantized.clone().unwrap();
        let dense = Tensor::from_vec(q.dequantize(), (rows, cols), &Device::Cpu).unwrap();
        let xs: Vec<f32> = (0..2 * 3 * cols)
            .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
            .collect();
        let x = Tensor::from_vec(xs, (2, 3, cols), &Device::Cpu).unwrap();
        let got = lin.forward(&x, Mode::Infer).unwrap();
        assert_eq!(got.dims(), &[2, 3, rows]);
        let want = x.broadcast_matmul(&dense.t().unwrap()).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 5e-4, "{diff}");
    }
}
