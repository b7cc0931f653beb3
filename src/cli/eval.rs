//! `seal-tui eval`: the knowledge-incorporation baselines, headless, as a table and a JSON file.

use super::train_args::TrainArgs;
use super::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use seal_tui::engine::SamplingParams;
use seal_tui::record::config::{Grader, HttpJudge};
use seal_tui::tasks::knowledge::conditions::{
    format_table, run_conditions, Condition, EvalPlan, Synthetic,
};
use seal_tui::tasks::knowledge::inner::{Grading, KnowledgeEval};
use seal_tui::tasks::knowledge::judge::check_api_key;
use seal_tui::tasks::knowledge::{load_passages, AnswerTemplate, PromptTemplate};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Passages: SQuAD v1.1 (official nested format) or SEAL's flattened format.
    #[arg(long, default_value = "assets/passages.json")]
    pub data: PathBuf,
    /// How many passages to evaluate.
    #[arg(long, default_value_t = 2)]
    pub passages: usize,
    /// Index of the first passage.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Self-edit template (a name in the prompts folder or a .toml path).
    #[arg(long, default_value = "implications")]
    pub prompt: String,
    /// Self-edits sampled per passage.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// Finetune-and-answer repeats per self-edit.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// How answers are graded.
    #[arg(long, value_enum, default_value_t = GraderKind::Em)]
    pub grader: GraderKind,
    /// Minimum token F1 counted correct by the f1 grader.
    #[arg(long, default_value_t = 0.5)]
    pub f1_threshold: f64,
    /// judge-http: the endpoint, e.g. http://127.0.0.1:8000/v1/chat/completions.
    #[arg(long)]
    pub judge_url: Option<String>,
    /// judge-http: the model name the endpoint serves.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// judge-http: the environment variable holding the API key (never written anywhere).
    #[arg(long)]
    pub judge_key_env: Option<String>,
    /// judge-local: the judge model (default: the evaluated model itself, unadapted).
    #[arg(long)]
    pub judge_local_model: Option<PathBuf>,
    /// Conditions to run, comma-separated: base, passage, passage-self-edit, passage-synthetic.
    #[arg(long, default_value = "base,passage,passage-self-edit")]
    pub conditions: String,
    /// Synthetic training data for the passage-synthetic condition (JSON or JSONL).
    #[arg(long)]
    pub synthetic: Option<PathBuf>,
    /// Self-edit sampling: nucleus mass.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Prompt templates folder.
    #[arg(long, default_value = "prompts")]
    pub prompts_dir: PathBuf,
    /// Where to write the machine-readable results.
    #[arg(long, default_value = "eval-results.json")]
    pub out: PathBuf,
}

fn parse_conditions(list: &str) -> Result<Vec<Condition>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.trim() {
            "base" => Ok(Condition::Base),
            "passage" => Ok(Condition::Passage),
            "passage-self-edit" | "self-edit" => Ok(Condition::PassageSelfEdit),
            "passage-synthetic" | "synthetic" => Ok(Condition::PassageSynthetic),
            other => bail!("unknown condition {other:?}; use base, passage, passage-self-edit, passage-synthetic"),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraderKind {
    /// SQuAD exact match.
    Em,
    /// Token F1 at or above --f1-threshold.
    F1,
    /// An LLM judge on a local model.
    JudgeLocal,
    /// An LLM judge behind an OpenAI-compatible endpoint.
    JudgeHttp,
}

fn grader_from_args(args: &EvalArgs) -> Result<Grader> {
    Ok(match args.grader {
        GraderKind::Em => Grader::Em,
        GraderKind::F1 => Grader::F1 {
            threshold: args.f1_threshold,
        },
        GraderKind::JudgeLocal => Grader::JudgeLocal,
        GraderKind::JudgeHttp => Grader::JudgeHttp(HttpJudge {
            url: args
                .judge_url
                .clone()
                .context("judge-http needs --judge-url")?,
            model: args
                .judge_model
                .clone()
                .context("judge-http needs --judge-model")?,
            api_key_env: args.judge_key_env.clone(),
            timeout_secs: 60,
            max_retries: 2,
        }),
    })
    .and_then(|g| {
        if let Grader::JudgeHttp(j) = &g {
            j.validate()
                .context("--judge-url/--judge-model/--judge-key-env")?;
        }
        Ok(g)
    })
}

/// Everything about the numbers that can be checked before a model is loaded.
fn check_counts(args: &EvalArgs, conditions: &[Condition]) -> Result<()> {
    if args.passages == 0 {
        bail!("--passages 0: evaluate at least one passage");
    }
    if args.repeats == 0 {
        bail!("--repeats 0: each self-edit needs at least one finetune-and-answer");
    }
    if args.k == 0 && conditions.contains(&Condition::PassageSelfEdit) {
        bail!(
            "--k 0: the passage-self-edit condition samples k self-edits per passage; give \
             --k 1 or more, or leave that condition out of --conditions"
        );
    }
    if !(0.0..=1.0).contains(&args.f1_threshold) {
        bail!(
            "--f1-threshold {}: must be between 0 and 1",
            args.f1_threshold
        );
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p {}: must be above 0 and at most 1", args.top_p);
    }
    if conditions.contains(&Condition::PassageSynthetic) && args.synthetic.is_none() {
        bail!("the passage-synthetic condition needs --synthetic FILE");
    }
    if conditions.is_empty() {
        bail!("--conditions {:?}: names no condition", args.conditions);
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<()> {
    let conditions = parse_conditions(&args.conditions)?;
    check_counts(&args, &conditions)?;
    let all = load_passages(&args.data)?;
    let total = all.len();
    let passages: Vec<_> = all
        .into_iter()
        .enumerate()
        .skip(args.offset)
        .take(args.passages)
        .collect();
    if passages.is_empty() {
        bail!(
            "--offset {}: {} holds {total} passage(s) (numbered from 0), so there is none at \
             that offset",
            args.offset,
            args.data.display()
        );
    }
    if passages.len() < args.passages {
        errln!(
            "warning: --passages {} from --offset {}: {} holds only {total}, so {} will be \
             evaluated",
            args.passages,
            args.offset,
            args.data.display(),
            passages.len()
        );
    }
    let template = PromptTemplate::find(&args.prompts_dir, &args.prompt)?;
    let answer = AnswerTemplate::find(&args.prompts_dir)?;
    let synthetic = args.synthetic.as_deref().map(Synthetic::load).transpose()?;
    let grader = grader_from_args(&args)?;
    if let Grader::JudgeHttp(judge) = &grader {
        check_api_key(judge).context("--judge-key-env")?;
    }
    if let (Grader::JudgeLocal, Some(path)) = (&grader, &args.judge_local_model) {
        if !path.exists() {
            bail!(
                "--judge-local-model {}: no such file or folder",
                path.display()
            );
        }
    }
    let model = args.model.load()?;
    let judge_model = match (&grader, &args.judge_local_model) {
        (Grader::JudgeLocal, Some(path)) => {
            Some(seal_tui::engine::load_model(path, &args.model.options()?)?)
        }
        (Grader::JudgeLocal, None) => Some(model.clone()),
        _ => None,
    };
    let grading = Grading::new(&grader, &args.prompts_dir, judge_model)?;
    let eval = KnowledgeEval {
        answer: &answer,
        grading: &grading,
    };
    let plan = EvalPlan {
        conditions,
        template: &template,
        k: args.k,
        repeats: args.repeats,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: args.top_p,
            max_tokens: 1024,
            seed: args.seed,
            stop: Vec::new(),
        },
        train: args.train.config()?,
        synthetic: synthetic.as_ref(),
        seed: args.seed,
    };
    errln!(
        "evaluating {} passages of {} with {} ({}), grader {}",
        passages.len(),
        args.data.display(),
        model.info.name,
        seal_tui::engine::device::describe(&model.transformer.device),
        grading.label()
    );
    let reports = run_conditions(&model, &eval, &passages, &plan, &mut |line| {
        errln!("{line}")
    })?;
    outln!("{}", format_table(&reports));
    let json = serde_json::json!({
        "model": model.info,
        "data": args.data,
        "template": template.name,
        "grader": grading.label(),
        "k": args.k,
        "repeats": plan.repeats,
        "train": plan.train,
        "conditions": reports,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    errln!("results written to {}", args.out.display());
    Ok(())
}
