//! `seal-tui eval`: the knowledge-incorporation baselines, headless, as a table and a JSON file.

use super::train_args::TrainArgs;
use super::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use seal_tui::engine::SamplingParams;
use seal_tui::openai::{Client, Endpoint};
use seal_tui::record::config::{Grader, HttpJudge};
use seal_tui::record::QuestionSource;
use seal_tui::setup::check_question_source;
use seal_tui::tasks::knowledge::conditions::{
    agreement, format_agreement, format_table, run_conditions, run_continual, run_cpt, Condition,
    ConditionReport, ContinualReport, EvalPlan, FinishedPiece, PieceLog, Synthetic,
};
use seal_tui::tasks::knowledge::inner::{Grading, KnowledgeEval};
use seal_tui::tasks::knowledge::judge::check_api_key;
use seal_tui::tasks::knowledge::questions::{with_questions, write_questions, QuestionsTemplate};
use seal_tui::tasks::knowledge::{load_passages, AnswerTemplate, PromptTemplate};
use seal_tui::text::sanitize_line;
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
    /// Self-edit templates (names in the prompts folder or .toml paths), comma-separated; with
    /// several, the self-edit and SEAL rows are run once per template (the prompt comparison).
    #[arg(long, default_value = "implications", value_delimiter = ',')]
    pub prompt: Vec<String>,
    /// The RL-trained policy for the SEAL row: a PEFT adapter folder (a session's
    /// policy/round-N). Repeat it to merge several rounds' adapters in order.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// Continued pretraining: one adapter per row on the pooled texts of all the passages,
    /// graded on all their questions (the paper's multi-passage table).
    #[arg(long)]
    pub cpt: bool,
    /// Continual learning: the passages learnt one after another (each update merged before the
    /// next), every earlier passage graded after each update (the forgetting matrix).
    #[arg(long, conflicts_with = "cpt")]
    pub continual: bool,
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
    /// Rows to run, comma-separated: base, passage, passage-self-edit, passage-synthetic, seal
    /// (seal needs --policy).
    #[arg(long, default_value = "base,passage,passage-self-edit")]
    pub conditions: String,
    /// Synthetic training data for the passage-synthetic condition (JSON or JSONL).
    #[arg(long, conflicts_with = "synthetic_from")]
    pub synthetic: Option<PathBuf>,
    /// Generate the passage-synthetic condition's data on the fly instead: the --prompt
    /// template sent to this OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1), its reply
    /// split as a self-edit is.
    #[arg(long)]
    pub synthetic_from: Option<String>,
    /// --synthetic-from: the model name the server knows.
    #[arg(long, default_value = "default")]
    pub synthetic_model: String,
    /// --synthetic-from: the environment variable holding the API key (never written anywhere).
    #[arg(long)]
    pub synthetic_key_env: Option<String>,
    /// --synthetic-from: most tokens in one reply.
    #[arg(long, default_value_t = 1024)]
    pub synthetic_max_tokens: usize,
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
    /// Which questions grade the rows: the data's gold ones, ones the model writes about each
    /// passage before it is hidden (`self`; needed for unlabeled text: a .jsonl of
    /// {"title","text"} lines or a folder of .txt files), or `both` (the table stays gold; the
    /// self-written questions are graded beside them and their agreement is reported).
    #[arg(long, value_enum, default_value_t = QuestionsArg::Gold)]
    pub questions: QuestionsArg,
    /// How many question/answer pairs the model is asked to write per passage.
    #[arg(long, default_value_t = seal_tui::record::config::DEFAULT_SELF_QUESTIONS)]
    pub self_questions: usize,
    /// Where to write the machine-readable results.
    #[arg(long, default_value = "eval-results.json")]
    pub out: PathBuf,
}

fn parse_conditions(list: &str) -> Result<Vec<Condition>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Condition::parse(s).with_context(|| {
                format!(
                    "unknown condition {s:?}; use base, passage, passage-self-edit, passage-synthetic, seal"
                )
            })
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QuestionsArg {
    Gold,
    #[value(name = "self")]
    SelfWritten,
    Both,
}

impl QuestionsArg {
    fn source(self) -> QuestionSource {
        match self {
            QuestionsArg::Gold => QuestionSource::Gold,
            QuestionsArg::SelfWritten => QuestionSource::SelfWritten,
            QuestionsArg::Both => QuestionSource::Both,
        }
    }
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
    let samples = conditions
        .iter()
        .any(|c| matches!(c, Condition::PassageSelfEdit | Condition::Seal));
    if args.k == 0 && samples {
        bail!(
            "--k 0: the passage-self-edit and seal rows sample k self-edits per passage; give \
             --k 1 or more, or leave those rows out of --conditions"
        );
    }
    if conditions.contains(&Condition::Seal) && args.policy.is_empty() {
        bail!("the seal row needs --policy SESSION/policy/round-N");
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
    if conditions.contains(&Condition::PassageSynthetic)
        && args.synthetic.is_none()
        && args.synthetic_from.is_none()
    {
        bail!("the passage-synthetic condition needs --synthetic FILE or --synthetic-from URL");
    }
    if conditions.is_empty() {
        bail!("--conditions {:?}: names no condition", args.conditions);
    }
    let max = seal_tui::record::config::MAX_SELF_QUESTIONS;
    if args.questions != QuestionsArg::Gold && !(1..=max).contains(&args.self_questions) {
        bail!(
            "--self-questions {}: must be between 1 and {max}",
            args.self_questions
        );
    }
    if args.questions == QuestionsArg::Both && (args.cpt || args.continual) {
        bail!(
            "--questions both measures agreement in the table's rows; leave out --cpt/--continual"
        );
    }
    Ok(())
}

/// The base model merged with a session's policy updates, in order.
pub fn merged_policy(
    model: &seal_tui::engine::Model,
    adapters: &[PathBuf],
) -> Result<Option<seal_tui::engine::Model>> {
    if adapters.is_empty() {
        return Ok(None);
    }
    let mut merged = model.clone();
    for dir in adapters {
        let adapter = seal_tui::engine::peft::load_adapter(dir, &merged)
            .with_context(|| format!("--policy {}", dir.display()))?;
        merged = merged.with_transformer(merged.transformer.merged(&adapter)?);
    }
    Ok(Some(merged))
}

/// What an eval run writes: its settings and results, re-read by `seal-tui report FILE`.
pub const RESULTS_KIND: &str = "seal-tui-eval";

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
    let source = args.questions.source();
    check_question_source(
        &passages.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        source,
        &args.data,
    )
    .context("--questions")?;
    let questions_template = source
        .writes_questions()
        .then(|| QuestionsTemplate::find(&args.prompts_dir))
        .transpose()?;
    let templates = args
        .prompt
        .iter()
        .map(|name| PromptTemplate::find(&args.prompts_dir, name))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if templates.is_empty() {
        bail!("--prompt names no template");
    }
    let answer = AnswerTemplate::find(&args.prompts_dir)?;
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
    let mut synthetic = args.synthetic.as_deref().map(Synthetic::load).transpose()?;
    if let Some(url) = &args.synthetic_from {
        if !conditions.contains(&Condition::PassageSynthetic) {
            bail!("--synthetic-from feeds the passage-synthetic condition; add it to --conditions");
        }
        seal_tui::openai::api_key(args.synthetic_key_env.as_deref())
            .context("--synthetic-key-env")?;
        let client = Client::new(Endpoint {
            base_url: Endpoint::base_of(url),
            model: args.synthetic_model.clone(),
            api_key_env: args.synthetic_key_env.clone(),
            timeout_secs: 600,
            max_retries: 2,
        });
        let sampling = SamplingParams {
            temperature: 1.0,
            top_p: args.top_p,
            max_tokens: args.synthetic_max_tokens,
            seed: args.seed,
            stop: Vec::new(),
        };
        let made = Synthetic::from_server(
            &client,
            // The external generator is asked with the first template's prompt.
            &templates[0],
            &passages,
            &sampling,
            &mut |line| errln!("{line}"),
            &mut |piece| out_err!("{piece}"),
        )?;
        errln!("");
        synthetic = Some(made);
    }
    let model = args.model.load()?;
    let policy = merged_policy(&model, &args.policy)?;
    let judge_model = match (&grader, &args.judge_local_model) {
        (Grader::JudgeLocal, Some(path)) => {
            Some(seal_tui::engine::load_model(path, &args.model.options()?)?)
        }
        (Grader::JudgeLocal, None) => Some(model.clone()),
        _ => None,
    };
    let grading = Grading::new(&grader, &args.prompts_dir, judge_model)?;
    // The model writes its questions with each passage in view, before any row hides it.
    let mut written = Vec::new();
    if let Some(template) = &questions_template {
        for (i, p) in &passages {
            let w = write_questions(&model, template, p, *i, args.self_questions, None)?;
            match &w.problem {
                Some(problem) => errln!(
                    "questions: passage {} ({}): {problem}; it has no self-written questions",
                    i + 1,
                    p.title
                ),
                None => errln!(
                    "questions: passage {} ({}): {} written ({} dropped), {:.1} s",
                    i + 1,
                    p.title,
                    w.questions.len(),
                    w.dropped,
                    w.secs
                ),
            }
            written.push(w);
        }
    }
    let self_passages: std::collections::HashMap<usize, _> = passages
        .iter()
        .zip(&written)
        .map(|((i, p), w)| (*i, with_questions(p, w)))
        .collect();
    let passages: Vec<_> = match source {
        QuestionSource::SelfWritten => passages
            .iter()
            .map(|(i, _)| (*i, self_passages[i].clone()))
            .collect(),
        _ => passages,
    };
    let eval = KnowledgeEval {
        answer: &answer,
        grading: &grading,
    };
    let plan = EvalPlan {
        conditions,
        templates: templates.iter().collect(),
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
        policy: policy.as_ref(),
        also: (source == QuestionSource::Both).then_some(&self_passages),
    };
    let mode = if args.cpt {
        "cpt"
    } else if args.continual {
        "continual"
    } else {
        "table"
    };
    errln!(
        "{mode}: {} passages of {} with {} ({}), grader {}",
        passages.len(),
        args.data.display(),
        model.info.name,
        seal_tui::engine::device::describe(&model.transformer.device),
        grading.label()
    );
    let mut say = |line: &str| errln!("{line}");
    let mut json = serde_json::json!({
        "kind": RESULTS_KIND,
        "mode": mode,
        "model": model.info,
        "policy": args.policy,
        "data": args.data,
        "passages": passages.iter().map(|(i, p)| serde_json::json!({"index": i, "title": p.title})).collect::<Vec<_>>(),
        "templates": templates.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "grader": grading.label(),
        "k": args.k,
        "repeats": plan.repeats,
        "seed": args.seed,
        "train": plan.train,
        "sampling": plan.sampling,
        "synthetic_from": args.synthetic_from,
        "synthetic": synthetic.as_ref().map(|s| s.by_index()),
        "questions": source.name(),
        "self_questions": written,
    });
    if args.continual {
        let report = run_continual(&model, &eval, &passages, &plan, &mut say)?;
        // Its colours are its own; every text in it (titles, template) is sanitised inside.
        super::say::raw(&format!(
            "{}\n",
            format_continual(&report, colour_allowed())
        ));
        json["continual"] = serde_json::to_value(&report)?;
    } else {
        let reports = if args.cpt {
            run_cpt(&model, &eval, &passages, &plan, &mut say)?
        } else {
            // Every finished piece goes to a journal beside the results, so the same command
            // run again continues an interrupted table.
            let settings = serde_json::json!({
                "model": super::journal::model_settings(&model),
                "data": args.data,
                "grader": grading.label(),
                "answer_template": answer.chat.source,
                "questions": source.name(),
                "self_questions": (source != QuestionSource::Gold).then_some(args.self_questions),
                "questions_template": questions_template.as_ref().map(|t| &t.chat.source),
                "repeats": plan.repeats,
                "seed": args.seed,
                "train": plan.train,
                "sampling": plan.sampling,
            });
            let (mut journal, finished) =
                super::journal::open::<FinishedPiece>(&args.out, "eval table", &settings)?;
            let log = PieceLog {
                finished: &finished,
                policy: super::journal::policy_names(&args.policy),
                record: &mut |piece| journal.append(piece),
            };
            run_conditions(&model, &eval, &passages, &plan, log, &mut say)?
        };
        outln!("{}", format_table(&reports));
        json["conditions"] = serde_json::to_value(&reports)?;
        if source == QuestionSource::Both {
            let agreement = agreement(&reports);
            outln!("{}", format_agreement(&agreement));
            json["agreement"] = serde_json::to_value(&agreement)?;
        }
    }
    // Whole or not at all: a kill while writing must not leave hours of results truncated.
    seal_tui::seal::units::write_json(&args.out, &json)?;
    errln!(
        "results written to {} (seal-tui report {} prints them again, with CSV)",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// Colour only on a terminal that has not asked for none.
pub fn colour_allowed() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The forgetting matrix as a heat map: row i is the model after learning passage i, column j
/// its accuracy on passage j (j <= i), red at 0% to green at 100%; with no colour, the numbers.
pub fn format_continual(r: &ContinualReport, colour: bool) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Continual learning ({} passages, template {}): accuracy on passage j (columns) after learning passages 1..i (rows)\n\n",
        r.titles.len(),
        sanitize_line(&r.template)
    ));
    out.push_str("        ");
    for j in 0..r.titles.len() {
        out.push_str(&format!("{:>5}", format!("p{}", j + 1)));
    }
    out.push('\n');
    out.push_str("base    ");
    for a in &r.base {
        out.push_str(&format!("{:>4.0}%", a * 100.0));
    }
    out.push('\n');
    for (i, row) in r.matrix.iter().enumerate() {
        out.push_str(&format!("{:<8}", format!("after {}", i + 1)));
        for a in row {
            let cell = format!("{:>4.0}%", a * 100.0);
            if colour {
                // 24 steps from red through yellow to green.
                let (red, green) = if *a < 0.5 {
                    (255, (a * 2.0 * 255.0) as u8)
                } else {
                    (((1.0 - a) * 2.0 * 255.0) as u8, 200)
                };
                out.push_str(&format!("\x1b[48;2;{red};{green};60m\x1b[30m{cell}\x1b[0m"));
            } else {
                out.push_str(&cell);
            }
        }
        out.push('\n');
    }
    out.push('\n');
    for (j, t) in r.titles.iter().enumerate() {
        out.push_str(&format!("p{}: {}\n", j + 1, sanitize_line(t)));
    }
    out
}

/// A results file's JSON.
fn read_results(path: &std::path::Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))
}

/// The forgetting matrix of a continual evaluation's results file, for the workbench.
pub fn forgetting_of(path: &std::path::Path) -> Result<seal_tui::tui::forgetting::Forgetting> {
    let json = read_results(path)?;
    let continual = match json.get("continual") {
        Some(c) if json.get("kind").and_then(|k| k.as_str()) == Some(RESULTS_KIND) => c,
        _ => bail!(
            "{}: --screen shows the forgetting matrix of an `eval --continual` results file, \
             and this is not one (without --screen, report prints any results file)",
            path.display()
        ),
    };
    let r: ContinualReport = serde_json::from_value(continual.clone())
        .with_context(|| format!("{}: malformed `continual`", path.display()))?;
    Ok(seal_tui::tui::forgetting::Forgetting {
        titles: r.titles,
        base: r.base,
        matrix: r.matrix,
        template: r.template,
    })
}

/// Re-reads an eval results file: the table (or the heat map) and its CSV; an `arc eval` file
/// goes to [`super::arc::report_results`].
pub fn report_file(path: &std::path::Path, out: Option<&std::path::Path>) -> Result<()> {
    use seal_tui::text::report::csv_field;
    let json = read_results(path)?;
    if super::arc::is_results(&json) {
        return super::arc::report_results(path, &json, out);
    }
    if json.get("kind").and_then(|k| k.as_str()) != Some(RESULTS_KIND) {
        bail!(
            "{}: not a results file of seal-tui eval or arc eval (and not a session folder)",
            path.display()
        );
    }
    let csv_path = out
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| path.with_extension("csv"));
    let mut csv = String::new();
    if let Some(c) = json.get("continual") {
        let r: ContinualReport = serde_json::from_value(c.clone())
            .with_context(|| format!("{}: malformed `continual`", path.display()))?;
        // Its colours are its own; every text in it (titles, template) is sanitised inside.
        super::say::raw(&format!("{}\n", format_continual(&r, colour_allowed())));
        csv.push_str("after_passage,passage,title,accuracy\n");
        for (i, row) in r.matrix.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                csv.push_str(&format!(
                    "{},{},{},{a}\n",
                    i + 1,
                    j + 1,
                    csv_field(&r.titles[j])
                ));
            }
        }
    } else {
        let reports: Vec<ConditionReport> =
            serde_json::from_value(json.get("conditions").cloned().unwrap_or_default())
                .with_context(|| format!("{}: malformed `conditions`", path.display()))?;
        outln!("{}", format_table(&reports));
        // Recomputed from the recorded rewards, so a file written before a figure was added
        // shows it too.
        if json.get("agreement").is_some() {
            outln!("{}", format_agreement(&agreement(&reports)));
        }
        csv.push_str("row,template,accuracy,ci95_low,ci95_high,questions,graded,correct,secs\n");
        for r in &reports {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                csv_field(&r.label),
                csv_field(r.template.as_deref().unwrap_or("")),
                r.accuracy,
                r.ci95.0,
                r.ci95.1,
                r.questions,
                r.graded,
                r.correct,
                r.secs
            ));
        }
    }
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    errln!("wrote {}", csv_path.display());
    Ok(())
}
