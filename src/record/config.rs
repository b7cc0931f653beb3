//! The run configuration: a TOML file, read into typed sections (a typo in an enum is an error
//! naming the field and the allowed values), pinned into every session's header so a resume
//! runs exactly what was started.
//!
//! These are plain data owned by the log's vocabulary; the engine's and the domains' own
//! settings types are built from them where they are used. Rules about training settings live
//! with the trainer (`engine::train`) and are checked before a session folder is made.

use super::events::{BaselineKind, QuestionSource, RunMode};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where candle runs: `auto`, `cpu`, `cuda`, `cuda:N` or `metal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// A GPU when the build has one and the machine offers one, else the CPU (said aloud).
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    Metal,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Metal => f.write_str("metal"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Device, String> {
        let spec = s.trim().to_ascii_lowercase();
        match spec.as_str() {
            "auto" | "" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            "metal" => Ok(Device::Metal),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!(
                    "unknown device {s:?}; use auto, cpu, cuda, cuda:N (N a GPU number) or metal"
                )),
            },
        }
    }
}

/// Serialised through the text form a person writes.
macro_rules! text_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_serde!(Device);

/// The weights' precision; none picks per device (f32 on CPU, bf16 on a GPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    Bf16,
    F16,
}

/// A quantized copy of the weights for sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// On CPU the file's own Q4_0/Q4_1/Q8_0 blocks as they are, Q8_0 copies of other weights;
    /// none on a GPU.
    #[default]
    Auto,
    /// Dense weights only.
    Off,
    /// Q8_0 copies of every projection (even where the file has 4-bit blocks), on CPU.
    Q8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A GGUF file or Hugging Face folder; none for the default model (fetched if missing).
    #[serde(with = "optional_path")]
    pub path: Option<PathBuf>,
    pub device: Device,
    #[serde(with = "optional_dtype")]
    pub dtype: Option<Dtype>,
    pub quantize: Quantize,
    /// Gradient checkpointing in every finetune: each layer is recomputed in the backward
    /// instead of keeping its intermediates (less memory for a second forward; same results).
    pub checkpoint_layers: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    Knowledge,
    Arc,
}

impl DomainKind {
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::Knowledge => "knowledge",
            DomainKind::Arc => "arc",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSection {
    pub domain: DomainKind,
    /// Knowledge: passages (SQuAD or SEAL format). ARC: arc1.json or a single-task file.
    pub data: PathBuf,
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
            data: PathBuf::from("assets/passages.json"),
            tasks: "seal-eval".into(),
            contexts_per_round: 2,
            shuffle: false,
        }
    }
}

/// How answers are graded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Grader {
    /// Exact match after SQuAD normalisation, against any gold answer.
    Em,
    /// Token F1 (best over gold answers); correct when it reaches `threshold`.
    F1 {
        #[serde(default = "default_f1_threshold")]
        threshold: f64,
    },
    /// An LLM judge running on our own engine.
    JudgeLocal,
    /// An LLM judge behind an OpenAI-compatible chat-completions endpoint.
    JudgeHttp(HttpJudge),
}

pub const DEFAULT_F1_THRESHOLD: f64 = 0.5;

fn default_f1_threshold() -> f64 {
    DEFAULT_F1_THRESHOLD
}

impl Default for Grader {
    fn default() -> Self {
        Grader::F1 {
            threshold: DEFAULT_F1_THRESHOLD,
        }
    }
}

impl Grader {
    /// A short name, recorded with every verdict.
    pub fn label(&self) -> String {
        match self {
            Grader::Em => "em".to_string(),
            Grader::F1 { threshold } => format!("f1>={threshold}"),
            Grader::JudgeLocal => "judge-local".to_string(),
            Grader::JudgeHttp(config) => format!("judge-http:{}", config.model),
        }
    }
}

/// Where and how to reach an HTTP judge. It holds the *name* of the variable with the API key,
/// never the key, so the config can be saved and logged freely.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJudge {
    /// The full chat-completions URL, e.g. `http://127.0.0.1:8000/v1/chat/completions`.
    pub url: String,
    pub model: String,
    /// Environment variable holding the API key, sent as a bearer token; none: no key sent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Limit for one request, reply included (at least 1 s).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Further attempts after a timeout, a failed connection, HTTP 429 or a 5xx.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

impl HttpJudge {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_JUDGE_TIMEOUT_SECS).contains(&self.timeout_secs) {
            bail!(
                "timeout_secs = {}: must be between 1 and {MAX_JUDGE_TIMEOUT_SECS}",
                self.timeout_secs
            );
        }
        if self.max_retries > MAX_JUDGE_RETRIES {
            bail!(
                "max_retries = {}: at most {MAX_JUDGE_RETRIES} (each retry may wait timeout_secs)",
                self.max_retries
            );
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!("url = {:?}: must be an http:// or https:// URL", self.url);
        }
        if self.model.trim().is_empty() {
            bail!("model is empty: name the model the endpoint serves");
        }
        if self
            .api_key_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            bail!("api_key_env is empty: name a variable, or leave it out");
        }
        Ok(())
    }
}

/// Bounds on an HTTP judge's patience, so one judgement cannot stall a run for long.
pub const MAX_JUDGE_TIMEOUT_SECS: u64 = 600;
pub const MAX_JUDGE_RETRIES: u32 = 10;

fn default_timeout_secs() -> u64 {
    60
}

fn default_max_retries() -> u32 {
    2
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeSection {
    /// Self-edit strategy: a template name in `prompts_dir` or a path to a .toml file.
    pub template: String,
    pub prompts_dir: PathBuf,
    pub grader: Grader,
    /// judge-local: the judge model (none: the run's model, unadapted).
    #[serde(with = "optional_path")]
    pub judge_model: Option<PathBuf>,
    /// Which questions are graded: the data's gold ones, ones the model writes about the
    /// passage before it is hidden (`self`; the only choice for unlabeled text), or both (the
    /// reward stays gold; the self-written ones are graded beside them).
    pub questions: QuestionSource,
    /// How many question/answer pairs the model is asked to write per passage.
    pub self_questions: usize,
}

/// Bounds on `knowledge.self_questions`: at least one pair, and few enough that one reply
/// can hold them.
pub const MAX_SELF_QUESTIONS: usize = 32;
pub const DEFAULT_SELF_QUESTIONS: usize = 8;

impl Default for KnowledgeSection {
    fn default() -> Self {
        KnowledgeSection {
            template: "implications".into(),
            prompts_dir: PathBuf::from("prompts"),
            grader: Grader::default(),
            judge_model: None,
            questions: QuestionSource::Gold,
            self_questions: DEFAULT_SELF_QUESTIONS,
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
    /// A context's best self-edit is kept only if its gain reaches this.
    pub min_gain: f64,
    /// Wait for a human decision on every self-edit before it is trained on or reinforced.
    pub approval_required: bool,
    /// How a run opened in the workbench starts.
    pub start_mode: RunMode,
    pub save_adapters: SaveAdapters,
    /// What a self-edit's gain is reckoned over (knowledge): the unadapted model, or the model
    /// trained on the passage alone, where restating the passage earns nothing.
    pub baseline: BaselineKind,
}

impl Default for OuterSection {
    fn default() -> Self {
        OuterSection {
            rounds: 2,
            min_gain: 0.01,
            approval_required: false,
            start_mode: RunMode::Auto,
            save_adapters: SaveAdapters::Kept,
            baseline: BaselineKind::Unadapted,
        }
    }
}

/// A projection of a transformer block that can carry an adapter (its Hugging Face name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LoraTarget {
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        // SEAL's inner-loop setting for knowledge incorporation.
        LoraSettings {
            rank: 32,
            alpha: 64.0,
            dropout: 0.0,
            targets: vec![LoraTarget::Q, LoraTarget::V],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Which tokens the loss is taken over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// Every token of the sequence (after the first).
    All,
    /// Only the completion's tokens, not the prompt's.
    Completion,
}

/// A LoRA finetune's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    pub lora: LoraSettings,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub loss: LossOn,
    pub seed: u64,
    /// Longer sequences are cut to this many tokens.
    pub max_seq_len: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        // SEAL's inner loop for knowledge incorporation: r=32, alpha=64 on q,v, lr 1e-3,
        // 10 epochs.
        TrainSettings {
            lora: LoraSettings::default(),
            learning_rate: 1e-3,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            epochs: 10,
            batch_size: 1,
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            loss: LossOn::All,
            seed: 0,
            max_seq_len: 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// Finetune of the policy on (self-edit prompt -> kept self-edit), merged after each round.
    pub train: TrainSettings,
    /// Also save the merged policy weights each round (large: the whole model).
    pub save_merged: bool,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            train: TrainSettings {
                lora: LoraSettings {
                    rank: 16,
                    alpha: 32.0,
                    dropout: 0.0,
                    targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O],
                },
                learning_rate: 3e-4,
                epochs: 2,
                loss: LossOn::Completion,
                ..TrainSettings::default()
            },
            save_merged: false,
        }
    }
}

/// Views an ARC test input can be answered under: as given and the square's 7 other symmetries.
pub const MAX_ARC_VIEWS: usize = 8;

/// ARC's test-time-training budget, data cap and answer views (the `[arc]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArcSection {
    /// Configs whose training would take more optimiser steps than this are refused.
    pub max_steps: usize,
    /// At most this many training pairs per config.
    pub max_examples: usize,
    /// Also hold out every pair of demonstrations (leave-one-out is always used).
    pub leave_two_out: bool,
    /// Views each test input is answered under (1 = as given; up to 8).
    pub views: usize,
    /// Extra samples an unusable self-edit gets before it is scored 0.
    pub max_resamples: usize,
    /// Sample configs under the config's grammar (only tokens that continue a valid config),
    /// so every sample is a config; `false` samples freely and parses afterwards.
    pub constrained: bool,
}

impl Default for ArcSection {
    fn default() -> Self {
        // SEAL's few-shot setting: a 375-step budget, leave-one-out and leave-two-out data
        // capped at 250 pairs, every symmetry voted on.
        ArcSection {
            max_steps: 375,
            max_examples: 250,
            leave_two_out: true,
            views: MAX_ARC_VIEWS,
            max_resamples: 2,
            constrained: true,
        }
    }
}

impl ArcSection {
    pub fn validate(&self) -> Result<()> {
        if self.max_steps == 0 {
            bail!("max_steps = 0: must be at least 1");
        }
        if self.max_examples == 0 {
            bail!("max_examples = 0: must be at least 1");
        }
        if !(1..=MAX_ARC_VIEWS).contains(&self.views) {
            bail!(
                "views = {}: must be between 1 and {MAX_ARC_VIEWS}",
                self.views
            );
        }
        Ok(())
    }
}

/// Contexts the policy never trains on, evaluated before round 1 and after every policy update
/// (the paper's Figure 4): the current policy writes self-edits for them, each is trained and
/// graded as in the inner loop. None by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeldoutSection {
    /// The held-out data, in the format of `task.data`; none: no held-out passes.
    #[serde(with = "optional_path")]
    pub data: Option<PathBuf>,
    /// How many contexts of it (from its start); 0: all.
    pub contexts: usize,
    /// Self-edits per held-out context (each trained and graded on its own).
    pub k: usize,
}

impl Default for HeldoutSection {
    fn default() -> Self {
        HeldoutSection {
            data: None,
            contexts: 0,
            k: 1,
        }
    }
}

/// Where the inner loops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClusterBackend {
    /// In this process, one after another.
    #[default]
    Local,
    /// As tasks of SLURM job arrays, one array per round (`seal-tui worker` runs each task).
    Slurm,
}

/// The `[cluster]` section: where inner loops run, and what a SLURM job asks for. Empty
/// strings and zeros leave a setting to the cluster's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    pub backend: ClusterBackend,
    /// `--partition`.
    pub partition: String,
    /// `--account`.
    pub account: String,
    /// `--qos`.
    pub qos: String,
    /// `--time`, per task: `MM`, `HH:MM:SS`, `D-HH:MM` ...
    pub time_limit: String,
    /// `--gres=gpu:N` per task.
    pub gpus_per_task: usize,
    /// A `--gres` of your own (`gpu:a100:1`); takes the place of `gpus_per_task`.
    pub gres: String,
    /// `--cpus-per-task`; the worker also uses this many threads.
    pub cpus_per_task: usize,
    /// `--mem` per task (`16G`).
    pub mem: String,
    /// At most this many tasks of an array at once (`--array=0-N%M`); 0: no limit.
    pub max_parallel: usize,
    /// Units of work each task runs one after another, loading the model once: 1 (the
    /// default) gives every unit a task of its own; 0 packs a phase's units into
    /// `max_parallel` tasks. The time limit is per task, so it must cover them all.
    pub units_per_task: usize,
    /// More `sbatch` options, one per entry (`"--constraint=a100"`).
    pub sbatch_args: Vec<String>,
    /// Shell lines run before the worker in each task (`module load cuda/12.4`).
    pub setup: String,
    /// Further attempts for a task that ends without a result, before it is recorded as failed.
    pub retries: u32,
    /// The seal-tui binary the tasks run; empty: the one running the loop. It must be reachable
    /// from the compute nodes, as must the session folder.
    #[serde(with = "optional_path")]
    pub worker: Option<PathBuf>,
    /// How often the runner asks SLURM and reads the tasks' files, in milliseconds.
    pub poll_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            backend: ClusterBackend::Local,
            partition: String::new(),
            account: String::new(),
            qos: String::new(),
            time_limit: String::new(),
            gpus_per_task: 0,
            gres: String::new(),
            cpus_per_task: 0,
            mem: String::new(),
            max_parallel: 0,
            units_per_task: 1,
            sbatch_args: Vec::new(),
            setup: String::new(),
            retries: 2,
            worker: None,
            poll_ms: 250,
        }
    }
}

impl HeldoutSection {
    pub fn enabled(&self) -> bool {
        self.data.is_some()
    }
}

impl ClusterSection {
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("gres", &self.gres),
            ("mem", &self.mem),
        ] {
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("{name} = {value:?}: no blanks or line breaks allowed");
            }
        }
        let time_ok = self
            .time_limit
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '-');
        if !time_ok {
            bail!(
                "time_limit = {:?}: use SLURM's form, e.g. 30, 02:00:00 or 1-00:00",
                self.time_limit
            );
        }
        let mem_ok = self.mem.is_empty()
            || (self.mem.chars().next().is_some_and(|c| c.is_ascii_digit())
                && self
                    .mem
                    .trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
                    .chars()
                    .all(|c| c.is_ascii_digit()));
        if !mem_ok {
            bail!("mem = {:?}: use a size such as 16G or 4000M", self.mem);
        }
        for arg in &self.sbatch_args {
            if !arg.starts_with('-') || arg.chars().any(|c| c == '\n' || c == '\r') {
                bail!(
                    "sbatch_args: {arg:?} is not one sbatch option (such as \"--constraint=a100\")"
                );
            }
        }
        if self.poll_ms == 0 {
            bail!("poll_ms must be at least 1");
        }
        if self.backend == ClusterBackend::Slurm
            && self.units_per_task == 0
            && self.max_parallel == 0
        {
            bail!(
                "units_per_task = 0 packs the units into max_parallel tasks; set max_parallel \
                 too (or units_per_task to a number)"
            );
        }
        Ok(())
    }

    /// Units per task for a phase of `units` units.
    pub fn per_task(&self, units: usize) -> usize {
        match self.units_per_task {
            0 => units.div_ceil(self.max_parallel.max(1)).max(1),
            n => n,
        }
    }
}

/// Where self-edits are sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InferenceBackend {
    /// The policy in this process.
    #[default]
    Engine,
    /// A served policy behind an OpenAI-compatible API (vLLM, llama.cpp's llama-server, ...).
    Openai,
}

/// Which OpenAI-compatible endpoint a served model is asked through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiApi {
    /// `/chat/completions`: the server applies its own chat template (any server, OpenAI's too).
    #[default]
    Chat,
    /// `/completions` with the prompt rendered here, exactly as the engine would see it.
    Completions,
}

/// The `[inference]` section: who samples the self-edits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceSection {
    pub backend: InferenceBackend,
    /// The server's OpenAI base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub url: String,
    /// The model name the server knows the policy by.
    pub model: String,
    /// Environment variable holding the API key, sent as a bearer token; none: no key sent.
    #[serde(with = "optional_string")]
    pub api_key_env: Option<String>,
    pub api: OpenAiApi,
    /// Limit for one request, the whole streamed reply included.
    pub timeout_secs: u64,
    /// Further attempts after a failed connection, HTTP 429 or a 5xx (before any text arrived).
    pub max_retries: u32,
    /// From round 2 on, serve the updated policy as a LoRA adapter loaded at run time
    /// (`/v1/load_lora_adapter`, vLLM with `--enable-lora`): the rounds' updates, stacked into
    /// one adapter, over the served base model.
    pub policy_lora: bool,
}

impl Default for InferenceSection {
    fn default() -> Self {
        InferenceSection {
            backend: InferenceBackend::Engine,
            url: String::new(),
            model: String::new(),
            api_key_env: None,
            api: OpenAiApi::Chat,
            timeout_secs: 300,
            max_retries: 2,
            policy_lora: false,
        }
    }
}

impl InferenceSection {
    pub fn validate(&self) -> Result<()> {
        if self.backend == InferenceBackend::Engine {
            return Ok(());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!(
                "url = {:?}: the openai backend needs the server's base URL, such as \
                 http://127.0.0.1:8000/v1",
                self.url
            );
        }
        if self.model.trim().is_empty() {
            bail!("model: the openai backend needs the name the server gives the policy");
        }
        if self.timeout_secs == 0 {
            bail!("timeout_secs must be at least 1");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub task: TaskSection,
    pub knowledge: KnowledgeSection,
    pub arc: ArcSection,
    pub self_edit: SelfEditSection,
    /// The inner loop: the LoRA finetune that applies one self-edit.
    pub inner: TrainSettings,
    pub eval: EvalSection,
    pub outer: OuterSection,
    pub policy: PolicySection,
    pub heldout: HeldoutSection,
    /// Where the inner loops run (this process, or SLURM job arrays).
    pub cluster: ClusterSection,
    /// Where self-edits are sampled (this process, or a served policy).
    pub inference: InferenceSection,
    pub seed: u64,
}

impl RunConfig {
    /// Parses and checks a configuration's text; relative paths stay as written.
    pub fn from_toml(text: &str, origin: &str) -> Result<RunConfig> {
        let cfg: RunConfig =
            toml::from_str(text).with_context(|| format!("{origin}: invalid run configuration"))?;
        cfg.validate()
            .with_context(|| format!("{origin}: invalid run configuration"))?;
        Ok(cfg)
    }

    /// Reads a configuration file; relative paths in it are resolved (see [`resolve_path`]).
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg = Self::from_toml(&text, &path.display().to_string())?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Makes every relative path absolute: see [`resolve_path`].
    pub fn resolve_paths(&mut self, config_dir: &Path) {
        let resolve = |p: &mut PathBuf| *p = resolve_path(p, config_dir);
        resolve(&mut self.task.data);
        resolve(&mut self.knowledge.prompts_dir);
        if let Some(p) = self.heldout.data.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.model.path.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.knowledge.judge_model.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.cluster.worker.as_mut() {
            resolve(p);
        }
        // A template given as a file: a worker on a cluster node starts in another folder.
        let template = Path::new(&self.knowledge.template);
        if template.is_relative() && template.extension().is_some_and(|e| e == "toml") {
            let found = resolve_path(template, config_dir);
            if found.exists() {
                self.knowledge.template = found.display().to_string();
            }
        }
    }

    /// The rules this vocabulary owns. Training and sampling settings are checked by the
    /// trainer's and the sampler's own rules when the run is prepared (`seal::settings::check`).
    pub fn validate(&self) -> Result<()> {
        if self.task.contexts_per_round == 0 {
            bail!("task.contexts_per_round = 0: must be at least 1");
        }
        if self.self_edit.k == 0 {
            bail!("self_edit.k = 0: sample at least 1 self-edit per context");
        }
        if self.eval.repeats == 0 {
            bail!("eval.repeats = 0: must be at least 1");
        }
        if self.outer.rounds == 0 {
            bail!("outer.rounds = 0: must be at least 1");
        }
        if self.heldout.enabled() && self.heldout.k == 0 {
            bail!("heldout.k = 0: must be at least 1");
        }
        if self.heldout.data.as_ref() == Some(&self.task.data) {
            bail!(
                "heldout.data is task.data ({}): held-out contexts must be ones the policy never trains on",
                self.task.data.display()
            );
        }
        if self.outer.baseline == BaselineKind::ContextOnly && self.task.domain == DomainKind::Arc {
            bail!(
                "outer.baseline = \"context-only\" is for knowledge runs: an ARC config's reward is \
                 whether it solves the task, not a gain over a baseline"
            );
        }
        if !self.outer.min_gain.is_finite() {
            bail!("outer.min_gain = {}: must be a number", self.outer.min_gain);
        }
        self.arc.validate().context("arc")?;
        self.cluster.validate().context("cluster")?;
        self.inference.validate().context("inference")?;
        if self.inference.backend == InferenceBackend::Openai
            && self.outer.rounds > 1
            && !self.inference.policy_lora
        {
            bail!(
                "inference: a served policy does not follow the policy updates of later rounds; \
                 set outer.rounds = 1, or inference.policy_lora = true with a server that loads \
                 LoRA adapters at run time (vLLM with --enable-lora)"
            );
        }
        if let Grader::F1 { threshold } = self.knowledge.grader {
            if !(0.0..=1.0).contains(&threshold) {
                bail!("knowledge.grader: the F1 threshold = {threshold}: must be between 0 and 1");
            }
        }
        if let Grader::JudgeHttp(j) = &self.knowledge.grader {
            j.validate().context("knowledge.grader")?;
        }
        self.check_questions()
    }

    /// Self-written questions: a sane count, and only where the loop supports them.
    fn check_questions(&self) -> Result<()> {
        let k = &self.knowledge;
        if !k.questions.writes_questions() || self.task.domain != DomainKind::Knowledge {
            return Ok(());
        }
        if !(1..=MAX_SELF_QUESTIONS).contains(&k.self_questions) {
            bail!(
                "knowledge.self_questions = {}: must be between 1 and {MAX_SELF_QUESTIONS}",
                k.self_questions
            );
        }
        // Not yet carried to the places below; refused rather than run with gold questions.
        if self.cluster.backend == ClusterBackend::Slurm {
            bail!(
                "knowledge.questions = \"{}\" is not supported with cluster.backend = \"slurm\" \
                 yet (a worker would not have the written questions); use the local backend",
                k.questions.name()
            );
        }
        if self.heldout.enabled() {
            bail!(
                "knowledge.questions = \"{}\" is not supported with held-out passes yet (they \
                 grade gold questions); remove [heldout]",
                k.questions.name()
            );
        }
        Ok(())
    }
}

/// Where a relative path in a configuration points: beside the configuration file if it exists
/// there, else under the current folder, else among the assets this build was made from
/// (`prompts/`, `assets/`); a path found nowhere is taken relative to the current folder, so
/// the error that follows names the place a person expects.
pub fn resolve_path(path: &Path, config_dir: &Path) -> PathBuf {
    if path.is_absolute() || path.as_os_str().is_empty() {
        return path.to_path_buf();
    }
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let candidates = [
        normalize(&cwd.join(config_dir).join(path)),
        normalize(&cwd.join(path)),
        normalize(&built_in.join(path)),
    ];
    candidates
        .iter()
        .find(|c| c.exists())
        .cloned()
        .unwrap_or_else(|| normalize(&cwd.join(path)))
}

/// `a/b/../c` as `a/c`, without touching the file system (the path may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// An optional path written as a string, where the empty string means none.
mod optional_path {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::path::PathBuf;

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let text = String::deserialize(d)?;
        Ok((!text.trim().is_empty()).then(|| PathBuf::from(text.trim())))
    }
}

/// An optional string where the empty string means none.
mod optional_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok((!text.trim().is_empty()).then(|| text.trim().to_string()))
    }
}

/// An optional dtype written as a string, where the empty string means "per device".
mod optional_dtype {
    use super::Dtype;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Dtype>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => d.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dtype>, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim() {
            "" => Ok(None),
            "f32" | "float32" => Ok(Some(Dtype::F32)),
            "bf16" | "bfloat16" => Ok(Some(Dtype::Bf16)),
            "f16" | "float16" => Ok(Some(Dtype::F16)),
            other => Err(serde::de::Error::custom(format!(
                "unknown dtype {other:?}; use f32, bf16, f16, or leave it empty (f32 on CPU, bf16 on a GPU)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", RunConfig::from_toml(text, "x.toml").unwrap_err())
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = RunConfig::default();
        cfg.validate().unwrap();
        let text = cfg.to_toml();
        assert_eq!(RunConfig::from_toml(&text, "t").unwrap(), cfg);
    }

    #[test]
    fn the_example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let cfg = RunConfig::load(&dir.join("seal.toml")).unwrap();
        assert!(cfg.task.data.is_absolute() && cfg.task.data.exists());
        let cfg = RunConfig::load(&dir.join("arc.toml")).unwrap();
        assert_eq!(cfg.task.domain, DomainKind::Arc);
        assert!(err("[arc]\nviews = 0\n").contains("views"));
    }

    #[test]
    fn a_context_only_baseline_is_for_knowledge_runs() {
        let cfg = RunConfig::from_toml("[outer]\nbaseline = \"context-only\"\n", "t").unwrap();
        assert_eq!(cfg.outer.baseline, BaselineKind::ContextOnly);
        let e = err("[task]\ndomain = \"arc\"\n[outer]\nbaseline = \"context-only\"\n");
        assert!(e.contains("outer.baseline") && e.contains("ARC"), "{e}");
        let e = err("[outer]\nbaseline = \"passage\"\n");
        assert!(e.contains("context-only"), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_the_choices() {
        let e = err("[self_edit]\nk = 0\n");
        assert!(e.contains("x.toml") && e.contains("self_edit.k"), "{e}");
        assert!(err("[outer]\nrunds = 2\n").contains("runds"));
        let e = err("[model]\ndevice = \"tpu\"\n");
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        let e = err("[model]\ndtype = \"f8\"\n");
        assert!(e.contains("f8") && e.contains("bf16"), "{e}");
        let e = err("[model]\nquantize = \"q4\"\n");
        assert!(e.contains("q4") && e.contains("q8"), "{e}");
        let e = err("[outer]\nstart_mode = \"fast\"\n");
        assert!(e.contains("fast") && e.contains("paused"), "{e}");
        let e = err("[knowledge]\ngrader = { kind = \"f2\" }\n");
        assert!(e.contains("f2"), "{e}");
    }

    #[test]
    fn typed_fields_read_their_text_forms() {
        let cfg = RunConfig::from_toml(
            "[model]\ndevice = \"cuda:1\"\ndtype = \"bf16\"\npath = \"m.gguf\"\n\
             [outer]\nstart_mode = \"paused\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(cfg.model.device, Device::Cuda(1));
        assert_eq!(cfg.model.dtype, Some(Dtype::Bf16));
        assert_eq!(cfg.model.path, Some(PathBuf::from("m.gguf")));
        assert_eq!(cfg.outer.start_mode, RunMode::Paused);
        let cfg = RunConfig::from_toml("[model]\ndtype = \"\"\npath = \"\"\n", "t").unwrap();
        assert_eq!((cfg.model.dtype, cfg.model.path), (None, None));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert!("cuda:x".parse::<Device>().is_err());
    }

    #[test]
    fn cluster_and_inference_sections_read_and_check() {
        let cfg = RunConfig::from_toml(
            "[cluster]\nbackend = \"slurm\"\npartition = \"gpu\"\ntime_limit = \"1-00:00\"\n\
             mem = \"16G\"\nsbatch_args = [\"--constraint=a100\"]\nsetup = \"module load x\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(cfg.cluster.backend, ClusterBackend::Slurm);
        assert_eq!(cfg.cluster.retries, 2);
        assert!(err("[cluster]\nbackend = \"pbs\"\n").contains("pbs"));
        assert!(err("[cluster]\npartition = \"a b\"\n").contains("partition"));
        assert!(err("[cluster]\ntime_limit = \"1 hour\"\n").contains("time_limit"));
        assert!(err("[cluster]\nmem = \"lots\"\n").contains("mem"));
        let e = err("[cluster]\nsbatch_args = [\"--x\\n#SBATCH --y\"]\n");
        assert!(e.contains("sbatch_args"), "{e}");
        // Packing needs a count of tasks to pack into.
        let e = err("[cluster]\nbackend = \"slurm\"\nunits_per_task = 0\n");
        assert!(e.contains("max_parallel"), "{e}");
        let packed = RunConfig::from_toml(
            "[cluster]\nbackend = \"slurm\"\nunits_per_task = 0\nmax_parallel = 3\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            [1, 3, 4, 7].map(|n| packed.cluster.per_task(n)),
            [1, 1, 2, 3]
        );
        assert_eq!(cfg.cluster.per_task(7), 1);
        let served = "[inference]\nbackend = \"openai\"\nurl = \"http://127.0.0.1:1/v1\"\n\
                      model = \"p\"\n";
        let e = err(&format!("{served}[outer]\nrounds = 2\n"));
        assert!(e.contains("policy_lora"), "{e}");
        RunConfig::from_toml(&format!("{served}policy_lora = true\n"), "t").unwrap();
        RunConfig::from_toml(&format!("{served}[outer]\nrounds = 1\n"), "t").unwrap();
        let e = err("[inference]\nbackend = \"openai\"\nmodel = \"p\"\n[outer]\nrounds = 1\n");
        assert!(e.contains("url"), "{e}");
    }

    #[test]
    fn question_settings_read_and_check() {
        let cfg = RunConfig::from_toml("[knowledge]\nquestions = \"self\"\n", "t").unwrap();
        assert_eq!(cfg.knowledge.questions, QuestionSource::SelfWritten);
        assert_eq!(cfg.knowledge.self_questions, DEFAULT_SELF_QUESTIONS);
        assert_eq!(
            RunConfig::default().knowledge.questions,
            QuestionSource::Gold
        );
        let cfg = RunConfig::from_toml(
            "[knowledge]\nquestions = \"both\"\nself_questions = 3\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            (cfg.knowledge.questions, cfg.knowledge.self_questions),
            (QuestionSource::Both, 3)
        );
        let e = err("[knowledge]\nquestions = \"mine\"\n");
        assert!(
            e.contains("mine") && e.contains("gold") && e.contains("both"),
            "{e}"
        );
        let e = err("[knowledge]\nquestions = \"self\"\nself_questions = 0\n");
        assert!(e.contains("knowledge.self_questions = 0"), "{e}");
        let e = err("[knowledge]\nquestions = \"self\"\nself_questions = 99\n");
        assert!(e.contains("between 1 and"), "{e}");
        // The count is not checked while nothing is written.
        RunConfig::from_toml("[knowledge]\nself_questions = 0\n", "t").unwrap();
        let e = err("[knowledge]\nquestions = \"both\"\n[cluster]\nbackend = \"slurm\"\n");
        assert!(e.contains("slurm"), "{e}");
        let e = err("[knowledge]\nquestions = \"self\"\n[heldout]\ndata = \"h.json\"\n");
        assert!(e.contains("held-out"), "{e}");
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }

    #[test]
    fn relative_paths_resolve_beside_the_config_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.json"), "[]").unwrap();
        std::fs::write(
            dir.path().join("run.toml"),
            "[task]\ndata = \"mine.json\"\n[knowledge]\nprompts_dir = \"prompts\"\n",
        )
        .unwrap();
        let cfg = RunConfig::load(&dir.path().join("run.toml")).unwrap();
        assert_eq!(cfg.task.data, dir.path().join("mine.json"));
        // Not beside the config: found among the built-in assets.
        assert!(cfg.knowledge.prompts_dir.join("implications.toml").exists());
    }
}
