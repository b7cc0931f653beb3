//! Command-line interface: argument definitions and the dispatch to each subcommand.

#[macro_use]
pub mod say;
mod arc;
mod bench;
mod bench_suite;
pub mod diag;
mod eval;
mod finetune;
mod gpu_selftest;
mod journal;
mod model_args;
mod record;
mod run;
mod sample;
mod train_args;
mod workbench;
mod worker;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub use model_args::ModelArgs;

#[derive(Parser, Debug)]
#[command(
    name = "seal-tui",
    version,
    about = "A terminal workbench for SEAL (Self-Adapting Language Models)"
)]
pub struct Cli {
    /// Folder holding models (default: $SEAL_MODELS_DIR, else ./models).
    #[arg(long, global = true)]
    pub models_dir: Option<PathBuf>,
    /// Run configuration for the workbench (default: assets/seal.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub screen: workbench::ScreenArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream a completion from a model.
    Sample(sample::SampleArgs),
    /// Fit a LoRA adapter on a JSONL file (PEFT layout).
    Finetune(Box<finetune::FinetuneArgs>),
    /// Knowledge-incorporation baselines (SEAL's table) on SQuAD-style passages.
    Eval(Box<eval::EvalArgs>),
    /// ARC few-shot tasks: fetch them, or run the paper's few-shot table on them.
    #[command(subcommand)]
    Arc(arc::ArcCommand),
    /// Run SEAL (ReSTEM rounds) on a configuration.
    Run(run::RunArgs),
    /// Continue a session after a crash or a quit.
    Resume(run::ResumeArgs),
    /// Re-play a recorded session.
    Replay(run::ReplayArgs),
    /// Per-round and per-question tables of a session (Markdown), and CSV files.
    Report(run::ReportArgs),
    /// Fetch a model into the models folder (default: SmolLM2-135M-Instruct); --list shows the
    /// ones seal-tui knows.
    FetchModel {
        /// A known model's name.
        name: Option<String>,
        /// List the known models and whether each is here.
        #[arg(long)]
        list: bool,
    },
    /// Run one inner loop of a session from its job file (what each task of a SLURM array
    /// runs with [cluster] backend = "slurm").
    Worker(worker::WorkerArgs),
    /// Developer tools (tests use them).
    #[command(subcommand, hide = true)]
    Dev(DevCommand),
    /// Print performance figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Write the tiny random-weight test model (GGUF file or Hugging Face folder).
    TinyModel {
        /// Output path: a .gguf file, or a folder for --hf.
        out: PathBuf,
        /// llama or qwen2.
        #[arg(long, default_value = "llama")]
        arch: String,
        /// Write a Hugging Face folder instead of a GGUF file.
        #[arg(long)]
        hf: bool,
    },
    /// Record a real run through the real writer (test fixtures, the example session).
    Record(record::RecordArgs),
    /// Check the GPU path against the CPU on the tiny model (logits, LoRA gradients, bf16).
    GpuSelftest(gpu_selftest::SelftestArgs),
    /// Write a model's tokenizer files (tokenizer.json, tokenizer_config.json, chat template)
    /// into a folder, for building random-weight Hugging Face folders around it.
    ExportTokenizer {
        /// The folder to write into.
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
}

fn dev(cmd: DevCommand) -> Result<()> {
    match cmd {
        DevCommand::TinyModel { out, arch, hf } => {
            use seal_tui::engine::tiny::{write_gguf, write_hf_folder, TinySpec};
            let arch = seal_tui::engine::Arch::parse(&arch)
                .ok_or_else(|| anyhow::anyhow!("unknown architecture {arch:?}"))?;
            let spec = TinySpec::new(arch);
            if hf {
                write_hf_folder(&out, &spec, false)
            } else {
                write_gguf(&out, &spec)
            }
        }
        DevCommand::Record(args) => record::run(args),
        DevCommand::GpuSelftest(args) => gpu_selftest::run(args),
        DevCommand::ExportTokenizer { out, model } => {
            let mut model = model;
            // The tokenizer is all that is written; the weights need not be quantized.
            model.quantize = seal_tui::record::config::Quantize::Off;
            seal_tui::engine::load::save_tokenizer_files(&model.load()?, &out)
        }
    }
}

impl Cli {
    /// Whether this command opens the workbench (the terminal then belongs to the screen).
    /// Whether the command may run the model (the others never start candle, so the thread
    /// count is not worth the probe it takes).
    pub fn computes(&self) -> bool {
        !matches!(
            &self.command,
            Some(Command::Replay(_) | Command::Report(_) | Command::FetchModel { .. })
        )
    }

    pub fn opens_screen(&self) -> bool {
        match &self.command {
            None => true,
            Some(Command::Run(a)) => !a.headless,
            Some(Command::Resume(a)) => !a.headless,
            Some(Command::Replay(a)) => !a.headless,
            _ => false,
        }
    }

    /// The screen flags only the workbench reads; given to another command they would be
    /// ignored without a word, so they are refused instead.
    fn check_screen_flags(&self) -> Result<()> {
        if self.opens_screen() {
            return Ok(());
        }
        let given: Vec<&str> = [
            ("--keys", self.screen.keys.is_some()),
            ("--theme", self.screen.theme.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(flag, _)| *flag)
        .collect();
        if given.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} only applies to the workbench screen (seal-tui, run, resume or replay without \
             --headless); this command would ignore it",
            given.join(" and ")
        )
    }

    /// `--config` belongs to the workbench opened with no subcommand; `run` has its own.
    fn check_config_flag(&self) -> Result<()> {
        if self.config.is_some() && self.command.is_some() {
            anyhow::bail!(
                "--config before a subcommand is only read by the bare workbench (`seal-tui \
                 --config FILE`); give it after the subcommand (`seal-tui run --config FILE`)"
            );
        }
        Ok(())
    }
}

fn fetch_model(name: Option<&str>, list: bool) -> Result<()> {
    use seal_tui::engine::fetch;
    if list {
        for m in &fetch::KNOWN_MODELS {
            let here = fetch::models_dir().join(m.file).exists();
            outln!(
                "{:<20} {:>6.0} MB  {}  {}",
                m.name,
                m.bytes as f64 / 1e6,
                if here { "here   " } else { "fetch  " },
                m.about
            );
        }
        return Ok(());
    }
    let model = match name {
        None => &fetch::KNOWN_MODELS[0],
        Some(n) => fetch::known_model(n).ok_or_else(|| {
            let names: Vec<&str> = fetch::KNOWN_MODELS.iter().map(|m| m.name).collect();
            anyhow::anyhow!("no model {n:?}; seal-tui knows {}", names.join(", "))
        })?,
    };
    let path = fetch::ensure_model(model, &mut |m| errln!("{m}"))?;
    outln!("{}", path.display());
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    cli.check_screen_flags()?;
    cli.check_config_flag()?;
    if let Some(dir) = cli.models_dir {
        seal_tui::engine::fetch::set_models_dir(dir);
    }
    match cli.command {
        Some(Command::Sample(args)) => sample::run(args),
        Some(Command::FetchModel { name, list }) => fetch_model(name.as_deref(), list),
        Some(Command::Bench(cmd)) => bench::run(cmd),
        Some(Command::Worker(args)) => worker::run(&args),
        Some(Command::Dev(cmd)) => dev(cmd),
        Some(Command::Eval(args)) => eval::run(*args),
        Some(Command::Finetune(args)) => finetune::run(*args),
        Some(Command::Arc(cmd)) => arc::run(cmd),
        Some(Command::Run(args)) if args.headless => {
            run::follow_headless(run::start_run(&args, false)?)
        }
        Some(Command::Run(args)) => {
            workbench::prepare(&args, &cli.screen)?;
            workbench::live(run::start_run(&args, true)?, &cli.screen)
        }
        Some(Command::Resume(args)) if args.headless => {
            run::follow_headless(run::resume_run(&args, false)?)
        }
        Some(Command::Resume(args)) => {
            workbench::check_screen(&cli.screen)?;
            workbench::need_terminal()?;
            workbench::live(run::resume_run(&args, true)?, &cli.screen)
        }
        Some(Command::Replay(args)) if args.headless => run::replay_headless(&args),
        Some(Command::Replay(args)) => workbench::replay(&args, &cli.screen),
        Some(Command::Report(args)) if args.screen => workbench::forgetting(&args, &cli.screen),
        Some(Command::Report(args)) => run::report(&args),
        None => {
            let args = run::RunArgs {
                config: cli.config.clone(),
                headless: false,
                mode: None,
                model: None,
            };
            workbench::prepare(&args, &cli.screen)?;
            workbench::live(run::start_run(&args, true)?, &cli.screen)
        }
    }
}
