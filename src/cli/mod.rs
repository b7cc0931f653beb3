//! Command-line interface: argument definitions and the dispatch to each subcommand.

#[macro_use]
pub mod say;
mod arc;
mod bench;
pub mod diag;
mod eval;
mod finetune;
mod model_args;
mod record;
mod run;
mod sample;
mod train_args;
mod workbench;

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
    /// Fetch the default model (SmolLM2-135M-Instruct) into the models folder.
    FetchModel,
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
    }
}

impl Cli {
    /// Whether this command opens the workbench (the terminal then belongs to the screen).
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

pub fn run(cli: Cli) -> Result<()> {
    cli.check_screen_flags()?;
    cli.check_config_flag()?;
    if let Some(dir) = cli.models_dir {
        seal_tui::engine::fetch::set_models_dir(dir);
    }
    match cli.command {
        Some(Command::Sample(args)) => sample::run(args),
        Some(Command::FetchModel) => {
            let path = seal_tui::engine::fetch::ensure_default_model(&mut |m| errln!("{m}"))?;
            outln!("{}", path.display());
            Ok(())
        }
        Some(Command::Bench(cmd)) => bench::run(cmd),
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
