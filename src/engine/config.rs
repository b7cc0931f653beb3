//! The shape of a transformer, whichever file it came from.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The model families the engine runs. Both are decoder-only transformers with RMSNorm, rotary
/// embeddings, grouped-query attention and a SwiGLU MLP; Qwen2 adds biases to q, k and v.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn parse(name: &str) -> Option<Arch> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" => Some(Arch::Llama),
            "qwen2" | "qwen2forcausallm" => Some(Arch::Qwen2),
            _ => None,
        }
    }

    pub fn has_qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// The name Hugging Face's `config.json` uses.
    pub fn hf_model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    pub fn hf_architecture(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// Rotary-embedding frequency scaling as Llama 3.1+ configs specify it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Per-frequency divisors that some GGUF files store precomputed (`rope_freqs.weight`)
    /// instead of a `rope_scaling` description.
    #[serde(default)]
    pub rope_freq_factors: Option<Vec<f32>>,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Checks that the numbers describe a model we can build, so that a bad file fails here with
    /// a message rather than deep inside a matmul.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("{name} is 0");
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            bail!(
                "num_attention_heads = {} cannot be grouped over num_key_value_heads = {}",
                self.num_heads,
                self.num_kv_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!(
                "head_dim {} is odd; rotary embeddings need it even",
                self.head_dim
            );
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            bail!("rope_theta must be positive, got {}", self.rope_theta);
        }
        Ok(())
    }

    pub fn kv_groups(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let raw: HfConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid model config", path.display()))?;
        let arch_name = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.as_ref().and_then(|a| a.first().cloned()))
            .unwrap_or_default();
        let arch = Arch::parse(&arch_name).with_context(|| {
            format!(
                "{}: unknown architecture {arch_name:?}; seal-tui runs llama and qwen2 models",
                path.display()
            )
        })?;
        let need = |v: Option<usize>, name: &str| {
            v.with_context(|| format!("{}: field `{name}` is missing", path.display()))
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        // transformers 5 writes `rope_parameters` (with `rope_theta` inside, and
        // `rope_type: "default"` for plain RoPE); earlier versions `rope_theta` and
        // `rope_scaling`. Read either, so a folder saved by any version gets its real base.
        let parameters = raw.rope_parameters.filter(|v| !v.is_null());
        let rope_theta = raw
            .rope_theta
            .or_else(|| parameters.as_ref()?.get("rope_theta")?.as_f64());
        let scaling = raw
            .rope_scaling
            .filter(|v| !v.is_null())
            .or(parameters)
            .filter(|v| v.get("rope_type").and_then(|t| t.as_str()) != Some("default"));
        let rope_scaling = match scaling {
            Some(v) if v.get("rope_type").and_then(|t| t.as_str()) == Some("llama3") => {
                Some(serde_json::from_value(v).with_context(|| {
                    format!("{}: malformed llama3 rope scaling", path.display())
                })?)
            }
            // A description with nothing but the base is plain RoPE.
            Some(v)
                if v.as_object()
                    .is_some_and(|o| o.keys().all(|k| k == "rope_theta")) =>
            {
                None
            }
            Some(v) => {
                bail!(
                    "{}: unsupported rope scaling {v}; only llama3 scaling is implemented",
                    path.display()
                )
            }
            None => None,
        };
        let config = ModelConfig {
            arch,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim: raw.head_dim.unwrap_or(hidden_size / num_heads.max(1)),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            rope_freq_factors: None,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        config
            .validate()
            .with_context(|| format!("{}: inconsistent model config", path.display()))?;
        Ok(config)
    }

    /// The `config.json` a merged model is saved with.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.arch.hf_architecture()],
            "model_type": self.arch.hf_model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        if let Some(s) = &self.rope_scaling {
            v["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        v
    }

    /// Inverse frequencies of the rotary embedding, with Llama 3 scaling applied if configured.
    pub fn rope_inv_freqs(&self) -> Vec<f32> {
        let d = self.head_dim;
        let mut freqs: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d as f64))
            .collect();
        if let Some(s) = &self.rope_scaling {
            let old = s.original_max_position_embeddings as f64;
            let low_wavelen = old / s.low_freq_factor;
            let high_wavelen = old / s.high_freq_factor;
            for f in freqs.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                *f = if wavelen < high_wavelen {
                    *f
                } else if wavelen > low_wavelen {
                    *f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * *f / s.factor + smooth * *f
                };
            }
        }
        if let Some(factors) = &self.rope_freq_factors {
            for (f, factor) in freqs.iter_mut().zip(factors) {
                *f /= *factor as f64;
            }
        }
        freqs.into_iter().map(|f| f as f32).collect()
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"model_type": "gpt_neox", "hidden_size": 8, "num_attention_heads": 2}"#,
        )
        .unwrap();
        let err = format!("{:#}", ModelConfig::from_hf_json(&path).unwrap_err());
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("gpt_neox"), "{err}");
    }

    /// Configs as transformers 5 saves them: the RoPE base inside `rope_parameters`.
    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let base = r#""model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "num_hidden_layers": 2,
            "vocab_size": 300"#;
        std::fs::write(
            &path,
            format!(r#"{{{base}, "rope_parameters": {{"rope_theta": 1000000.0, "rope_type": "default"}}}}"#),
        )
        .unwrap();
        let c = ModelConfig::from_hf_json(&path).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.rope_scaling.is_none());
        std::fs::write(
            &path,
            format!(
                r#"{{{base}, "max_position_embeddings": 131072, "rope_parameters": {{"rope_theta": 500000.0, "rope_type": "llama3",
                "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}}}"#
            ),
        )
        .unwrap();
        let c = ModelConfig::from_hf_json(&path).unwrap();
        assert_eq!(c.rope_theta, 5e5);
        assert!(c.rope_scaling.is_some());
        // The older layout still reads.
        std::fs::write(&path, format!(r#"{{{base}, "rope_theta": 10000.0}}"#)).unwrap();
        assert_eq!(ModelConfig::from_hf_json(&path).unwrap().rope_theta, 1e4);
    }

    #[test]
    fn missing_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"model_type": "llama", "hidden_size": 8}"#).unwrap();
        let err = format!("{:#}", ModelConfig::from_hf_json(&path).unwrap_err());
        assert!(err.contains("num_attention_heads"), "{err}");
    }
}
