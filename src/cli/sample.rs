//! `seal-tui sample`: stream a completion to stdout.

use super::ModelArgs;
use anyhow::{Context, Result};
use clap::Args;
use seal_tui::engine::{self, Prompt, SamplingParams};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long, short = 'p')]
    pub prompt: String,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Wrap the prompt as a user turn in the model's chat format.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// A LoRA adapter folder (PEFT layout) to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Write the model's text to stdout exactly as generated, control characters and terminal
    /// escapes included (for piping into another program). By default they are shown inert.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        seed: args.seed,
        stop: Vec::new(),
    };
    params.validate().with_context(|| {
        format!(
            "--temperature {} --top-p {} --max-tokens {}",
            args.temperature, args.top_p, args.max_tokens
        )
    })?;
    if let Some(dir) = &args.adapter {
        if !dir.is_dir() {
            anyhow::bail!("--adapter {}: no such folder", dir.display());
        }
    }
    let model = args.model.load()?;
    let text = if args.chat {
        model.chat.prompt(&Prompt {
            system: args.system.clone(),
            user: args.prompt.clone(),
        })?
    } else {
        args.prompt.clone()
    };
    let prompt = if args.chat {
        model.tokenizer.encode(&text)?
    } else {
        model.tokenizer.encode_document(&text)?
    };
    let adapter = match &args.adapter {
        Some(dir) => Some(
            engine::peft::load_adapter(dir, &model)
                .with_context(|| format!("--adapter {}", dir.display()))?,
        ),
        None => None,
    };
    let gen = engine::generate(
        &model,
        adapter.as_ref(),
        &prompt,
        &params,
        None,
        &mut |piece| {
            if args.raw {
                super::say::raw(piece)
            } else {
                out!("{piece}")
            }
        },
    )?;
    outln!();
    let n = gen.tokens.len();
    errln!(
        "[{} prompt tokens, {n} generated, {:.1} tok/s, stop: {:?}]",
        gen.prompt_tokens,
        n as f64 / gen.decode_secs.max(1e-9),
        gen.stop
    );
    Ok(())
}
