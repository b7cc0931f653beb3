//! The run configuration: a TOML file, validated with messages that name the field, and pinned
//! into every session so a resume runs exactly what was started.

use crate::engine::sample::SamplingParams;
use crate::engine::train::{LossOn, TrainConfig};
use crate::engine::{LoraConfig, Target};
use crate::tasks::arc::ttt::TttSettings;
use crate::tasks::knowledge::Grader;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A GGUF file or Hugging Face folder; empty for the default model (fetched if missing).
    pub path: String,
    /// auto, cpu, cuda, cuda:N or metal.
    pub device: String,
    /// f32, bf16 or f16; empty picks per device.
    pub dtype: String,
    /// auto, off or q8: a quantized copy of the weights for sampling.
    pub quantize: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: String::new(),
            device: "auto".into(),
            dtype: String::new(),
            quantize: "auto".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    Knowledge,
    Arc,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSection {
    pub domain: DomainKind,
    /// Knowledge: passages (SQuAD or SEAL format). ARC: arc1.json or a single-task file.
    pub data: String,
    /// ARC: which tasks (a preset such as seal-eval, or comma-separated ids).
    pub tasks: String,
    /// Contexts (passages or tasks) per round.
    pub contexts_per_round: usize,
    /// Draw each round's contexts in a seeded random order rather than file order.
    pub shuffle: bool,
}

impl Default for TaskSection {
    fn default() -> Self {
        TaskSection {
            domain: DomainKind::Knowledge,
            data: "assets/passages.json".into(),
            tasks: "seal-eval".into(),
            contexts_per_round: 2,
            shuffle: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeSection {
    /// Self-edit strategy: a template name in `prompts_dir` or a path to a .toml file.
    pub template: String,
    pub prompts_dir: String,
    pub grader: Grader,
    /// judge-local: the judge model (empty: the run's model, unadapted).
    pub judge_model: String,
}

impl Default for KnowledgeSection {
    fn default() -> Self {
        KnowledgeSection {
            template: "implications".into(),
            prompts_dir: "prompts".into(),
            grader: Grader::F1 { threshold: 0.5 },
            judge_model: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfEditSection {
    /// Self-edits sampled per context.
    pub k: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
}

impl Default for SelfEditSection {
    fn default() -> Self {
        SelfEditSection {
            k: 2,
            temperature: 1.0,
            top_p: 0.95,
            max_tokens: 384,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    /// Finetune-and-evaluate repeats per self-edit; the reward is their mean.
    pub repeats: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { repeats: 1 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    #[default]
    Auto,
    Step,
    Paused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SaveAdapters {
    None,
    #[default]
    Kept,
    All,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OuterSection {
    pub rounds: usize,
    /// A context's best self-edit is kept only if its gain over the unadapted model is at least
    /// this much.
    pub min_gain: f64,
    /// Wait for a human decision on every self-edit before it is trained on or reinforced.
    pub approval_required: bool,
    /// How a run opened in the workbench starts.
    pub start_mode: StartMode,
    pub save_adapters: SaveAdapters,
}

impl Default for OuterSection {
    fn default() -> Self {
        OuterSection {
            rounds: 2,
            min_gain: 0.01,
            approval_required: false,
            start_mode: StartMode::Auto,
            save_adapters: SaveAdapters::Kept,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// Finetune of the policy on (self-edit prompt -> kept self-edit), merged after each round.
    pub train: TrainConfig,
    /// Also save the merged policy weights each round (large: the whole model).
    pub save_merged: bool,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            train: TrainConfig {
                lora: LoraConfig {
                    rank: 16,
                    alpha: 32.0,
                    dropout: 0.0,
                    targets: vec![Target::Q, Target::K, Target::V, Target::O],
                },
                learning_rate: 3e-4,
                epochs: 2,
                loss: LossOn::Completion,
                ..TrainConfig::default()
            },
            save_merged: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub task: TaskSection,
    pub knowledge: KnowledgeSection,
    /// ARC: the test-time-training budget, data cap and answer views.
    pub arc: TttSettings,
    pub self_edit: SelfEditSection,
    /// The inner loop: the LoRA finetune that applies one self-edit.
    pub inner: TrainConfig,
    pub eval: EvalSection,
    pub outer: OuterSection,
    pub policy: PolicySection,
    pub seed: u64,
}

impl RunConfig {
    pub fn from_toml(text: &str, origin: &str) -> Result<RunConfig> {
        let cfg: RunConfig =
            toml::from_str(text).with_context(|| format!("{origin}: invalid run configuration"))?;
        cfg.validate()
            .with_context(|| format!("{origin}: invalid run configuration"))?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if self.task.contexts_per_round == 0 {
            bail!("task.contexts_per_round must be at least 1");
        }
        if self.self_edit.k == 0 {
            bail!("self_edit.k must be at least 1");
        }
        if self.eval.repeats == 0 {
            bail!("eval.repeats must be at least 1");
        }
        if self.outer.rounds == 0 {
            bail!("outer.rounds must be at least 1");
        }
        if !self.outer.min_gain.is_finite() {
            bail!("outer.min_gain must be a number");
        }
        self.sampling(0).validate().context("self_edit")?;
        self.inner.validate().context("inner")?;
        self.policy.train.validate().context("policy.train")?;
        self.arc.validate().context("arc")?;
        if let Grader::F1 { threshold } = self.knowledge.grader {
            if !(0.0..=1.0).contains(&threshold) {
                bail!("knowledge.grader: the F1 threshold must be between 0 and 1");
            }
        }
        Ok(())
    }

    /// Sampling settings of the self-edit generator, with a seed for one sample.
    pub fn sampling(&self, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.self_edit.temperature,
            top_p: self.self_edit.top_p,
            max_tokens: self.self_edit.max_tokens,
            seed,
            stop: Vec::new(),
        }
    }

    /// The model path, or `None` for the default model.
    pub fn model_path(&self) -> Option<PathBuf> {
        (!self.model.path.trim().is_empty()).then(|| PathBuf::from(self.model.path.trim()))
    }
}

/// A seed for one piece of work, mixed from the run's seed and the work's coordinates so that a
/// resumed run redoes a phase with the same randomness.
pub fn derive_seed(base: u64, parts: &[u64]) -> u64 {
    let mut rng = crate::engine::rng::SplitMix64::new(base);
    let mut seed = rng.next_u64();
    for &p in parts {
        seed = crate::engine::rng::SplitMix64::new(seed ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .next_u64();
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = RunConfig::default();
        cfg.validate().unwrap();
        let text = cfg.to_toml();
        assert_eq!(RunConfig::from_toml(&text, "t").unwrap(), cfg);
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/seal.toml");
        RunConfig::load(&path).unwrap();
    }

    #[test]
    fn the_arc_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/arc.toml");
        let cfg = RunConfig::load(&path).unwrap();
        assert_eq!(cfg.task.domain, DomainKind::Arc);
        let err = format!(
            "{:#}",
            RunConfig::from_toml("[arc]\nviews = 0\n", "x.toml").unwrap_err()
        );
        assert!(err.contains("arc") && err.contains("views"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = format!(
            "{:#}",
            RunConfig::from_toml("[self_edit]\nk = 0\n", "x.toml").unwrap_err()
        );
        assert!(
            err.contains("x.toml") && err.contains("self_edit.k"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            RunConfig::from_toml("[outer]\nrunds = 2\n", "x.toml").unwrap_err()
        );
        assert!(err.contains("runds"), "{err}");
        let err = format!(
            "{:#}",
            RunConfig::from_toml("[inner]\nlearning_rate = -1.0\n", "x.toml").unwrap_err()
        );
        assert!(
            err.contains("inner") && err.contains("learning_rate"),
            "{err}"
        );
    }

    #[test]
    fn seeds_differ_by_coordinate_and_repeat_exactly() {
        assert_eq!(derive_seed(1, &[0, 1, 2]), derive_seed(1, &[0, 1, 2]));
        assert_ne!(derive_seed(1, &[0, 1, 2]), derive_seed(1, &[0, 2, 1]));
        assert_ne!(derive_seed(1, &[0]), derive_seed(2, &[0]));
    }
}
