//! `seal-tui bench ...`: performance figures, printed as medians of several runs.

use super::ModelArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use seal_tui::engine::{self, Message, SamplingParams};
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prefill and decode speed of greedy sampling.
    Sample(BenchSampleArgs),
}

#[derive(Args, Debug)]
pub struct BenchSampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// New tokens per run.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Measured runs (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sample(args) => bench_sample(args),
    }
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn bench_sample(args: BenchSampleArgs) -> Result<()> {
    let model = args.model.load()?;
    let info = &model.info;
    println!(
        "model: {} ({:?}, {:.1}M parameters, {}, quantized for sampling: {})",
        info.name,
        info.arch,
        info.parameters as f64 / 1e6,
        engine::device::describe(&model.transformer.device),
        info.quantized
    );
    let text = "Write a short story about a lighthouse keeper who finds a message in a bottle. \
                Describe the sea, the weather and what the message says.";
    let prompt = model.chat.render(&[Message::user(text)], true);
    let ids = model.tokenizer.encode(&prompt)?;
    // Run the full length: no EOS or stop strings end a bench run early.
    let mut params = SamplingParams::greedy(args.tokens);
    params.stop.clear();
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for run in 0..=args.runs {
        let start = Instant::now();
        let gen = engine::sample::generate_ignoring_eos(&model, &ids, &params)?;
        let total = start.elapsed().as_secs_f64();
        if run == 0 {
            continue; // warm-up
        }
        prefill.push(ids.len() as f64 / gen.prefill_secs);
        decode.push((gen.tokens.len().saturating_sub(1)) as f64 / gen.decode_secs);
        eprintln!(
            "run {run}: prefill {:.1} tok/s, decode {:.1} tok/s ({} tokens, {total:.2} s)",
            prefill[run - 1],
            decode[run - 1],
            gen.tokens.len()
        );
    }
    println!(
        "prefill: {:.1} tokens/s ({} prompt tokens, median of {})",
        median(prefill),
        ids.len(),
        args.runs
    );
    println!(
        "decode:  {:.1} tokens/s ({} new tokens, batch 1, greedy, median of {})",
        median(decode),
        args.tokens,
        args.runs
    );
    Ok(())
}
