//! Command-line interface: argument definitions and the dispatch to each subcommand.

mod bench;
mod eval;
mod model_args;
mod sample;
mod train_args;

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
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream a completion from a model.
    Sample(sample::SampleArgs),
    /// Knowledge-incorporation baselines (SEAL's table) on SQuAD-style passages.
    Eval(eval::EvalArgs),
    /// Fetch the default model (SmolLM2-135M-Instruct) into the models folder.
    FetchModel,
    /// Print performance figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(dir) = cli.models_dir {
        seal_tui::engine::fetch::set_models_dir(dir);
    }
    match cli.command {
        Some(Command::Sample(args)) => sample::run(args),
        Some(Command::FetchModel) => {
            let path = seal_tui::engine::fetch::ensure_default_model(&mut |m| eprintln!("{m}"))?;
            println!("{}", path.display());
            Ok(())
        }
        Some(Command::Bench(cmd)) => bench::run(cmd),
        Some(Command::Eval(args)) => eval::run(args),
        None => {
            println!("seal-tui {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
