//! `seal-tui bench suite`: one model loaded once, then every figure a GPU check reports: LoRA
//! training steps at several sequence lengths, decoding at batch 1, batched answering, and (with
//! `--seal`) one whole self-edit evaluation timed by phase. One JSON object on stdout; each
//! phase's wall-clock span is included so an outside memory sampler can attribute its peaks.

use super::ModelArgs;
use anyhow::{Context, Result};
use clap::Args;
use seal_tui::engine::train::{train_lora, Example, LossOn, TrainConfig, TrainEvent};
use seal_tui::engine::{self, generate_batch, LoraConfig, Model, Prompt, SamplingParams, Target};
use serde_json::{json, Value};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Args, Debug)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training sequence lengths to time, comma-separated.
    #[arg(long, default_value = "1024,2048", value_delimiter = ',')]
    pub seq_lens: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    #[arg(long, default_value_t = 64.0)]
    pub alpha: f64,
    /// Adapted projections, comma-separated (q,k,v,o,gate,up,down).
    #[arg(long, default_value = "q,v")]
    pub targets: String,
    /// Measured training steps per length (after two warm-up steps).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// New tokens for the batch-1 decode figure.
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Questions answered in one batch.
    #[arg(long, default_value_t = 32)]
    pub answers: usize,
    /// Also time one SEAL self-edit evaluation by phase: k samples of 256 tokens, 10 epochs
    /// over ~2.5k tokens, 30 answers.
    #[arg(long)]
    pub seal: bool,
    /// Skip the decode and answering figures.
    #[arg(long)]
    pub train_only: bool,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A phase's figures with its wall-clock span.
struct Phase {
    start: u128,
    clock: Instant,
}

impl Phase {
    fn begin() -> Phase {
        Phase {
            start: now_ms(),
            clock: Instant::now(),
        }
    }

    fn end(self, mut fields: Value) -> Value {
        fields["secs"] = json!(self.clock.elapsed().as_secs_f64());
        fields["start_ms"] = json!(self.start as u64);
        fields["end_ms"] = json!(now_ms() as u64);
        fields
    }
}

fn lora(args: &SuiteArgs) -> Result<LoraConfig> {
    Ok(LoraConfig {
        rank: args.rank,
        alpha: args.alpha,
        dropout: 0.0,
        targets: Target::parse_list(&args.targets)?,
    })
}

/// Token ids of real text, repeated to `len`.
fn text_ids(model: &Model, len: usize) -> Result<Vec<u32>> {
    let text = "The lighthouse stood on a rock at the edge of the bay, and every night its keeper \
                climbed the ninety-nine steps to light the lamp. Ships passed in the dark, and the \
                beam swept over the water like a slow hand. ";
    let mut ids = Vec::new();
    while ids.len() < len {
        ids.extend(model.tokenizer.encode(text)?);
    }
    ids.truncate(len);
    Ok(ids)
}

fn train_figures(model: &Model, args: &SuiteArgs, seq: usize) -> Result<Value> {
    let phase = Phase::begin();
    let example = Example {
        prompt: Vec::new(),
        completion: text_ids(model, seq)?,
    };
    let warmup = 2;
    let cfg = TrainConfig {
        lora: lora(args)?,
        learning_rate: 1e-4,
        epochs: args.steps + warmup,
        batch_size: 1,
        loss: LossOn::All,
        max_seq_len: seq,
        ..Default::default()
    };
    let mut marks = Vec::new();
    let mut losses = Vec::new();
    train_lora(
        model,
        std::slice::from_ref(&example),
        &cfg,
        None,
        &mut |e| {
            if let TrainEvent::Step(p) = e {
                marks.push(p.elapsed_secs);
                losses.push(p.loss);
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("training at sequence {seq}: {e}"))?;
    let steps: Vec<f64> = marks
        .windows(2)
        .skip(warmup - 1)
        .map(|w| w[1] - w[0])
        .collect();
    let ms = super::bench::median(steps.clone()) * 1000.0;
    Ok(phase.end(json!({
        "seq_len": seq,
        "ms_per_step": ms,
        "tokens_per_sec": seq as f64 / (ms / 1000.0),
        "step_ms": steps.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
        "first_loss": losses.first(),
        "last_loss": losses.last(),
    })))
}

fn decode_figures(model: &Model, args: &SuiteArgs) -> Result<Value> {
    let phase = Phase::begin();
    let ids = model.prompt_ids(&Prompt::user(
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    ))?;
    let mut params = SamplingParams::greedy(args.decode_tokens);
    params.stop.clear();
    // One warm-up run loads every kernel.
    engine::sample::generate_ignoring_eos(model, &ids, &SamplingParams::greedy(8))?;
    let gen = engine::sample::generate_ignoring_eos(model, &ids, &params)?;
    Ok(phase.end(json!({
        "prompt_tokens": ids.len(),
        "new_tokens": gen.tokens.len(),
        "prefill_tokens_per_sec": ids.len() as f64 / gen.prefill_secs,
        "decode_tokens_per_sec": gen.tokens.len().saturating_sub(1) as f64 / gen.decode_secs,
    })))
}

/// Questions about one of our sample passages, as many as asked (varied so no two are equal).
fn questions(n: usize) -> Vec<String> {
    let stems = [
        "When was the Tessaly Reactor built?",
        "Near which village is the Tessaly Reactor?",
        "How many coils form the chamber of the Tessaly Reactor?",
        "What cools the coils of the Tessaly Reactor?",
        "Who led the Tessaly Reactor project?",
        "What colour is the control room of the Tessaly Reactor?",
    ];
    (0..n)
        .map(|i| format!("{} (question {})", stems[i % stems.len()], i + 1))
        .collect()
}

fn answer_prompts(model: &Model, n: usize) -> Result<Vec<Vec<u32>>> {
    questions(n)
        .iter()
        .map(|q| {
            model.prompt_ids(&Prompt {
                system: Some(
                    "Answer the question about The Tessaly Reactor in one short line.".into(),
                ),
                user: q.clone(),
            })
        })
        .collect()
}

fn answering_figures(model: &Model, n: usize) -> Result<Value> {
    let phase = Phase::begin();
    let prompts = answer_prompts(model, n)?;
    let params = SamplingParams::greedy(32);
    let gens = generate_batch(model, None, &prompts, &params, None)?;
    let new: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let secs = phase.clock.elapsed().as_secs_f64();
    Ok(phase.end(json!({
        "questions": n,
        "new_tokens": new,
        "answers_per_sec": n as f64 / secs,
    })))
}

/// One SEAL self-edit evaluation, as the paper times it: k self-edits of 256 tokens sampled in
/// one batch, a fresh LoRA adapter fitted for 10 epochs on ~2.5k tokens, 30 questions answered.
fn seal_figures(model: &Model, args: &SuiteArgs) -> Result<Value> {
    let k = 5;
    let total = Phase::begin();
    let passage = "The Tessaly Reactor is an experimental fusion device built in 2031 in the \
        desert near the village of Oruno. Its chamber is a ring of twelve copper coils cooled by \
        liquid neon. The project was led by the physicist Marguerite Abalo.";
    let prompt = model.prompt_ids(&Prompt::user(format!(
        "Read the passage and list its implications, one per line.\n\n{passage}"
    )))?;

    let sample = Phase::begin();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        max_tokens: 256,
        seed: 1,
        stop: Vec::new(),
    };
    let gens = generate_batch(model, None, &vec![prompt; k], &params, None)?;
    let sampled: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let sample = sample.end(json!({ "k": k, "tokens": sampled }));

    // The training data: the passage and the self-edits, cut into rows of ~250 tokens, ~2.5k
    // tokens in all (random weights write arbitrary text; what matters here is its length).
    let train = Phase::begin();
    let mut ids = model.tokenizer.encode_document(passage)?;
    for g in &gens {
        ids.extend(&g.tokens);
    }
    while ids.len() < 2500 {
        let again = ids.clone();
        ids.extend(again);
    }
    ids.truncate(2500);
    let rows: Vec<Example> = ids
        .chunks(250)
        .map(|c| Example {
            prompt: Vec::new(),
            completion: c.to_vec(),
        })
        .collect();
    let cfg = TrainConfig {
        lora: lora(args)?,
        learning_rate: 1e-3,
        epochs: 10,
        batch_size: 1,
        loss: LossOn::All,
        ..Default::default()
    };
    let outcome = train_lora(model, &rows, &cfg, None, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("the inner finetune: {e}"))?;
    let train = train.end(json!({
        "rows": rows.len(),
        "tokens_per_epoch": ids.len(),
        "epochs": 10,
        "steps": outcome.steps,
    }));

    let answer = Phase::begin();
    let prompts = answer_prompts(model, 30)?;
    let gens = generate_batch(
        model,
        Some(&outcome.adapter),
        &prompts,
        &SamplingParams::greedy(32),
        None,
    )?;
    let answer = answer.end(json!({
        "questions": 30,
        "new_tokens": gens.iter().map(|g| g.tokens.len()).sum::<usize>(),
    }));
    Ok(total.end(json!({ "sample": sample, "train": train, "answer": answer })))
}

pub fn run(args: SuiteArgs) -> Result<()> {
    let load = Phase::begin();
    let model = args.model.load()?;
    let info = &model.info;
    let mut out = json!({
        "model": info.name,
        "parameters": info.parameters,
        "layers": model.transformer.config.num_layers,
        "hidden": model.transformer.config.hidden_size,
        "vocab": model.transformer.config.vocab_size,
        "device": engine::device::describe(&model.transformer.device),
        "dtype": info.dtype,
        "lora": { "rank": args.rank, "alpha": args.alpha, "targets": args.targets },
    });
    out["load"] = load.end(json!({}));
    let mut train = Vec::new();
    for &seq in &args.seq_lens {
        let fig = train_figures(&model, &args, seq).with_context(|| format!("sequence {seq}"));
        match fig {
            Ok(f) => train.push(f),
            // A length that does not fit is a figure too; the others still run.
            Err(e) => train.push(json!({ "seq_len": seq, "error": format!("{e:#}") })),
        }
    }
    out["train"] = json!(train);
    if !args.train_only {
        out["decode"] =
            decode_figures(&model, &args).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        out["answering"] = answering_figures(&model, args.answers)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    }
    if args.seal {
        out["seal_eval"] =
            seal_figures(&model, &args).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    }
    outln!("{}", serde_json::to_string(&out)?);
    Ok(())
}
