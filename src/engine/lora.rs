//! LoRA adapters: low-rank updates `W + (alpha / r) * B A` on chosen projections, kept apart from
//! the frozen base model so that a fresh adapter per self-edit needs no reload.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A projection of a transformer block that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[serde(rename = "q_proj")]
    Q,
    #[serde(rename = "k_proj")]
    K,
    #[serde(rename = "v_proj")]
    V,
    #[serde(rename = "o_proj")]
    O,
    #[serde(rename = "gate_proj")]
    Gate,
    #[serde(rename = "up_proj")]
    Up,
    #[serde(rename = "down_proj")]
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The module's name in Hugging Face and PEFT checkpoints.
    pub fn module_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// Dotted path of the module inside a block: `self_attn.q_proj`, `mlp.up_proj`, ...
    pub fn block_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// Accepts `q`, `q_proj`, `gate`, `gate_proj`, ...
    pub fn parse(name: &str) -> Option<Target> {
        let name = name.trim();
        Target::ALL.into_iter().find(|t| {
            let m = t.module_name();
            name == m || Some(name) == m.strip_suffix("_proj")
        })
    }

    /// Parses a comma-separated list such as `q,k,v,o`.
    pub fn parse_list(list: &str) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for part in list.split(',').filter(|p| !p.trim().is_empty()) {
            match Target::parse(part) {
                Some(t) if !out.contains(&t) => out.push(t),
                Some(_) => {}
                None => {
                    bail!("unknown LoRA target {part:?}; choose from q, k, v, o, gate, up, down")
                }
            }
        }
        if out.is_empty() {
            bail!("no LoRA targets given");
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        // SEAL's inner-loop setting for knowledge incorporation.
        LoraConfig {
            rank: 32,
            alpha: 64.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V],
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            bail!("lora.rank = 0: the LoRA rank must be at least 1");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("lora.alpha = {}: must be positive", self.alpha);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora.dropout = {}: must be in [0, 1)", self.dropout);
        }
        if self.targets.is_empty() {
            bail!("lora.targets is empty: LoRA needs at least one target module");
        }
        Ok(())
    }
}

/// One adapted projection: `a` is `(r, in)`, `b` is `(out, r)`.
#[derive(Clone, Debug)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
}

/// A set of low-rank updates keyed by (layer, projection).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pub modules: BTreeMap<(usize, Target), LoraPair>,
}

impl LoraAdapter {
    /// A fresh adapter: A drawn like PyTorch's `kaiming_uniform_(a=sqrt(5))` (bound 1/sqrt(in)),
    /// B zero, so the adapted model starts equal to the base. Returns the adapter and its
    /// trainable variables (A and B of each module, in a stable order).
    pub fn init(
        config: &LoraConfig,
        shapes: &[(usize, Target, usize, usize)],
        seed: u64,
        device: &Device,
    ) -> Result<(LoraAdapter, Vec<Var>)> {
        Self::init_with(config, shapes, seed, device, DType::F32, 0.0)
    }

    /// Like [`LoraAdapter::init`], in another dtype, optionally with B drawn uniformly in
    /// `[-b_scale, b_scale]` instead of zero (gradient checks need a non-zero B).
    pub fn init_with(
        config: &LoraConfig,
        shapes: &[(usize, Target, usize, usize)],
        seed: u64,
        device: &Device,
        dtype: DType,
        b_scale: f64,
    ) -> Result<(LoraAdapter, Vec<Var>)> {
        config.validate()?;
        let mut rng = crate::engine::rng::SplitMix64::new(seed);
        let mut modules = BTreeMap::new();
        let mut vars = Vec::new();
        for &(layer, target, out_dim, in_dim) in shapes {
            if !config.targets.contains(&target) {
                continue;
            }
            let bound = 1.0 / (in_dim as f64).sqrt();
            let a: Vec<f32> = (0..config.rank * in_dim)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect();
            let a = Tensor::from_vec(a, (config.rank, in_dim), device)?.to_dtype(dtype)?;
            let a = Var::from_tensor(&a)?;
            let b: Vec<f32> = (0..out_dim * config.rank)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * b_scale) as f32)
                .collect();
            let b = Tensor::from_vec(b, (out_dim, config.rank), device)?.to_dtype(dtype)?;
            let b = Var::from_tensor(&b)?;
            modules.insert(
                (layer, target),
                LoraPair {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                },
            );
            vars.push(a);
            vars.push(b);
        }
        Ok((
            LoraAdapter {
                config: config.clone(),
                modules,
            },
            vars,
        ))
    }

    pub fn scale(&self) -> f64 {
        self.config.scale()
    }

    /// The same adapter cut loose from any autograd graph, for sampling and saving.
    pub fn detached(&self) -> LoraAdapter {
        LoraAdapter {
            config: self.config.clone(),
            modules: self
                .modules
                .iter()
                .map(|(k, p)| {
                    (
                        *k,
                        LoraPair {
                            a: p.a.detach(),
                            b: p.b.detach(),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.modules.get(&(layer, target))
    }

    pub fn num_parameters(&self) -> usize {
        self.modules
            .values()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }

    /// The low-rank delta `scale * B A` of one module, shaped like its weight.
    pub fn delta(&self, pair: &LoraPair) -> Result<Tensor> {
        Ok((pair.b.matmul(&pair.a)? * self.scale())?)
    }

    /// One adapter equal to applying these in turn: `sum_i s_i B_i A_i` is `[s_1 B_1 ...]
    /// [A_1; ...]`, a LoRA whose rank is the sum of theirs and whose scale is 1. A module one
    /// of them lacks gets zeros in its place. Serving the stack over the base model serves the
    /// base with every adapter merged in, where a server takes one adapter per request.
    pub fn stacked(adapters: &[LoraAdapter]) -> Result<LoraAdapter> {
        if adapters.is_empty() {
            bail!("nothing to stack");
        }
        let rank: usize = adapters.iter().map(|a| a.config.rank).sum();
        let mut keys: Vec<(usize, Target)> = adapters
            .iter()
            .flat_map(|a| a.modules.keys().copied())
            .collect();
        keys.sort();
        keys.dedup();
        let mut modules = BTreeMap::new();
        for key in keys {
            // Some adapter has it: its shapes give the zeros of those that do not.
            let Some(first) = adapters.iter().find_map(|a| a.modules.get(&key)) else {
                continue;
            };
            let (out_dim, in_dim) = (first.b.dim(0)?, first.a.dim(1)?);
            let device = first.a.device().clone();
            let mut a_parts = Vec::new();
            let mut b_parts = Vec::new();
            for adapter in adapters {
                let r = adapter.config.rank;
                match adapter.modules.get(&key) {
                    Some(p) => {
                        a_parts.push(p.a.to_dtype(DType::F32)?);
                        b_parts.push((p.b.to_dtype(DType::F32)? * adapter.scale())?);
                    }
                    None => {
                        a_parts.push(Tensor::zeros((r, in_dim), DType::F32, &device)?);
                        b_parts.push(Tensor::zeros((out_dim, r), DType::F32, &device)?);
                    }
                }
            }
            modules.insert(
                key,
                LoraPair {
                    a: Tensor::cat(&a_parts, 0)?,
                    b: Tensor::cat(&b_parts, 1)?,
                },
            );
        }
        let mut targets: Vec<Target> = modules.keys().map(|(_, t)| *t).collect();
        targets.sort();
        targets.dedup();
        Ok(LoraAdapter {
            config: LoraConfig {
                rank,
                alpha: rank as f64,
                dropout: 0.0,
                targets,
            },
            modules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_applies_its_adapters_together() {
        let shapes = [(0, Target::Q, 6, 8), (0, Target::V, 6, 8)];
        let make = |rank, alpha, targets: Vec<Target>, seed| {
            let cfg = LoraConfig {
                rank,
                alpha,
                dropout: 0.0,
                targets,
            };
            LoraAdapter::init_with(&cfg, &shapes, seed, &Device::Cpu, DType::F32, 0.5)
                .unwrap()
                .0
        };
        let one = make(2, 4.0, vec![Target::Q, Target::V], 1);
        let two = make(3, 1.5, vec![Target::Q], 2);
        let stack = LoraAdapter::stacked(&[one.clone(), two.clone()]).unwrap();
        assert_eq!(stack.config.rank, 5);
        assert_eq!(stack.scale(), 1.0);
        for target in [Target::Q, Target::V] {
            let mut want = one.delta(one.get(0, target).unwrap()).unwrap();
            if let Some(p) = two.get(0, target) {
                want = (want + two.delta(p).unwrap()).unwrap();
            }
            let got = stack.delta(stack.get(0, target).unwrap()).unwrap();
            let diff: f32 = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < 1e-5, "{target:?}: {diff}");
        }
        assert!(LoraAdapter::stacked(&[]).is_err());
    }

    #[test]
    fn targets_parse_in_short_and_long_form() {
        assert_eq!(
            Target::parse_list("q,k_proj, gate").unwrap(),
            vec![Target::Q, Target::K, Target::Gate]
        );
        let err = Target::parse_list("q,z").unwrap_err().to_string();
        assert!(err.contains("\"z\""), "{err}");
    }

    #[test]
    fn fresh_adapter_has_zero_b_and_bounded_a() {
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec![Target::Q],
        };
        let (adapter, vars) = LoraAdapter::init(
            &cfg,
            &[(0, Target::Q, 6, 16), (0, Target::V, 6, 16)],
            1,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(adapter.modules.len(), 1);
        assert_eq!(vars.len(), 2);
        let pair = adapter.get(0, Target::Q).unwrap();
        assert_eq!(pair.a.dims(), &[4, 16]);
        assert_eq!(pair.b.dims(), &[6, 4]);
        let b_abs: f32 = pair
            .b
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(b_abs, 0.0);
        let a_max: f32 = pair
            .a
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(a_max <= 0.25 && a_max > 0.0);
    }
}
