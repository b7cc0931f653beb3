//! `seal-tui finetune`: fit a LoRA adapter on a JSONL file and save it in PEFT layout.

use super::train_args::TrainArgs;
use super::ModelArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use seal_tui::engine::train::{train_lora, Example, TrainEvent};
use seal_tui::engine::{peft, Model, Prompt};
use seal_tui::seal::execute::truncation_note;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL, one example per line: {"text": ...} or {"prompt": ..., "completion": ...}.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the adapter (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Wrap prompt/completion rows as a user turn and the assistant's reply in the model's chat
    /// format (with its end-of-turn marker).
    #[arg(long)]
    pub chat: bool,
    /// Replace an adapter already in --out.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Refuses to write over an adapter (or anything that is not an empty folder) unless asked:
/// an adapter can be the product of hours of training.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.is_file() {
        bail!("--out {}: a file is there, not a folder", out.display());
    }
    let holds_adapter = [peft::CONFIG_FILE, peft::WEIGHTS_FILE]
        .iter()
        .any(|f| out.join(f).exists());
    if holds_adapter && !force {
        bail!(
            "--out {}: an adapter is already there; pass --force to replace it, or choose \
             another folder",
            out.display()
        );
    }
    Ok(())
}

/// Reads the training rows; every problem names the file and line.
pub fn read_examples(path: &Path, model: &Model, chat: bool) -> Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}: line {}", path.display(), i + 1);
        let row: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: malformed JSON", at()))?;
        let field = |name: &str| -> Result<Option<String>> {
            match row.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(anyhow!("{}: `{name}` must be a string", at())),
            }
        };
        let tok = &model.tokenizer;
        let example = match (field("text")?, field("prompt")?, field("completion")?) {
            (Some(t), None, None) => Example {
                prompt: Vec::new(),
                completion: tok.encode_document(&t)?,
            },
            (None, Some(p), Some(c)) if chat => Example {
                prompt: model.prompt_ids(&Prompt::user(p))?,
                completion: model.reply_ids(&c)?,
            },
            (None, Some(p), Some(c)) => Example {
                prompt: tok.encode_document(&p)?,
                completion: tok.encode(&c)?,
            },
            _ => bail!(
                "{}: a row needs either `text`, or both `prompt` and `completion`",
                at()
            ),
        };
        out.push(example);
    }
    if out.is_empty() {
        bail!("{}: no training rows", path.display());
    }
    Ok(out)
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let cfg = args.train.config()?;
    check_out(&args.out, args.force)?;
    if !args.data.is_file() {
        bail!("--data {}: no such file", args.data.display());
    }
    let model = args.model.load()?;
    let examples = read_examples(&args.data, &model, args.chat)?;
    errln!(
        "finetuning {} on {} examples: LoRA r={} alpha={} on {:?}, lr {}, {} epochs",
        model.info.name,
        examples.len(),
        cfg.lora.rank,
        cfg.lora.alpha,
        cfg.lora
            .targets
            .iter()
            .map(|t| t.module_name())
            .collect::<Vec<_>>(),
        cfg.learning_rate,
        cfg.epochs
    );
    let outcome = train_lora(&model, &examples, &cfg, None, &mut |e| match e {
        TrainEvent::Started {
            total_steps,
            tokens,
            trainable_parameters,
            ..
        } => {
            errln!(
                "{total_steps} steps, {tokens} tokens, {trainable_parameters} trainable parameters"
            );
        }
        TrainEvent::Truncated { .. } => {
            if let Some(note) = truncation_note(e, "--max-seq-len") {
                errln!("warning: {}: {note}", args.data.display());
            }
        }
        TrainEvent::Step(p) => super::say::progress(&format!(
            "step {}/{} epoch {:.2} loss {:.4} lr {:.2e} {:.0} tok/s eta {:.0}s",
            p.step, p.total_steps, p.epoch, p.loss, p.learning_rate, p.tokens_per_sec, p.eta_secs
        )),
        // Said once, as the error, when train_lora returns.
        TrainEvent::Failed { .. } => errln!(""),
    })
    .map_err(|e| anyhow!("{e}; no adapter was written"))?;
    errln!(
        "\ndone: {} steps in {:.1} s, final loss {:.4}",
        outcome.steps,
        outcome.secs,
        outcome.losses.last().copied().unwrap_or(f64::NAN)
    );
    peft::save_adapter(
        &outcome.adapter,
        &args.out,
        &model.info.path.display().to_string(),
    )?;
    outln!("{}", args.out.display());
    Ok(())
}
