//! `seal-tui bench ...`: performance figures, printed as medians of several runs.

use super::ModelArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use seal_tui::engine::{self, Prompt, SamplingParams};
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prefill and decode speed of greedy sampling.
    Sample(BenchSampleArgs),
    /// LoRA training speed: ms per step and trained tokens/s.
    Train(BenchTrainArgs),
    /// Time to draw the full workbench screen at 200x60.
    Draw {
        /// Frames per case.
        #[arg(long, default_value_t = 300)]
        frames: usize,
    },
    /// Frame intervals and key-to-screen latency of the workbench while a finetune runs on the
    /// same cores.
    Tui(BenchTuiArgs),
    /// Every figure of a GPU check on one model, as JSON: LoRA steps at several lengths, decoding,
    /// batched answering and (with --seal) one whole self-edit evaluation by phase.
    Suite(Box<super::bench_suite::SuiteArgs>),
}

#[derive(Args, Debug)]
pub struct BenchTuiArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Seconds to measure.
    #[arg(long, default_value_t = 15.0)]
    pub secs: f64,
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Measured steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Which settings: r16-qkvo (r=16 on q,k,v,o), r32-qv (SEAL's r=32 on q,v), or both.
    #[arg(long, default_value = "r16-qkvo,r32-qv")]
    pub settings: String,
    /// Also print each setting's figures as one JSON line (for scripts/bench-anchors).
    #[arg(long)]
    pub json: bool,
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
    /// Skip the quality check against the f32 weights (it loads the model twice).
    #[arg(long)]
    pub no_quality: bool,
    /// Also print the figures as one JSON line (for scripts/bench-anchors).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sample(args) => bench_sample(args),
        BenchCommand::Train(args) => bench_train(args),
        BenchCommand::Draw { frames } => {
            out!("{}", seal_tui::tui::bench_draw(frames));
            Ok(())
        }
        BenchCommand::Tui(args) => bench_tui(args),
        BenchCommand::Suite(args) => super::bench_suite::run(*args),
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
    outln!(
        "model: {} ({:?}, {:.1}M parameters, {}, sampling reads: {})",
        info.name,
        info.arch,
        info.parameters as f64 / 1e6,
        engine::device::describe(&model.transformer.device),
        match model.transformer.inference_formats() {
            f if f.is_empty() => "dense weights".to_string(),
            f => format!("{f} ({} kernel)", engine::qweight::kernel_name()),
        }
    );
    let text = "Write a short story about a lighthouse keeper who finds a message in a bottle. \
                Describe the sea, the weather and what the message says.";
    let prompt = model.chat.prompt(&Prompt::user(text))?;
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
        errln!(
            "run {run}: prefill {:.1} tok/s, decode {:.1} tok/s ({} tokens, {total:.2} s)",
            prefill[run - 1],
            decode[run - 1],
            gen.tokens.len()
        );
    }
    outln!(
        "prefill: {:.1} tokens/s ({} prompt tokens, median of {})",
        median(prefill.clone()),
        ids.len(),
        args.runs
    );
    outln!(
        "decode:  {:.1} tokens/s ({} new tokens, batch 1, greedy, median of {})",
        median(decode.clone()),
        args.tokens,
        args.runs
    );
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "prompt_tokens": ids.len(),
                "new_tokens": args.tokens,
                "prefill_tok_s": prefill,
                "decode_tok_s": decode,
                "threads": candle_core::utils::get_num_threads(),
            })
        );
    }
    if model.info.quantized && !args.no_quality {
        // The quantized sampling path against the f32 weights it was made from.
        let mut opts = args.model.options()?;
        opts.quantize = engine::Quantize::Off;
        let reference = engine::load_model(&args.model.path()?, &opts)?;
        let text =
            std::fs::read_to_string("assets/passages.json").unwrap_or_else(|_| text.to_string());
        let mut ids = model.tokenizer.encode_document(&text)?;
        ids.truncate(512);
        let q = engine::quality::compare(&reference, &model, &ids)?;
        outln!(
            "quality of the quantized path vs f32 ({} tokens, teacher-forced): top-1 agreement {:.1}%, perplexity {:.3} (f32) vs {:.3}",
            q.tokens,
            q.top1_agreement * 100.0,
            q.perplexity_reference,
            q.perplexity_candidate
        );
    }
    Ok(())
}

fn bench_train(args: BenchTrainArgs) -> Result<()> {
    use seal_tui::engine::{
        train_lora, Example, LoraConfig, LossOn, Target, TrainConfig, TrainEvent,
    };
    // Checked before the model loads: a typo should not cost a load.
    let settings = [
        ("r16-qkvo", "r=16, alpha=32, q,k,v,o", 16, 32.0, "q,k,v,o"),
        ("r32-qv", "r=32, alpha=64, q,v (SEAL)", 32, 64.0, "q,v"),
    ];
    let wanted: Vec<&str> = args.settings.split(',').map(str::trim).collect();
    if let Some(bad) = wanted
        .iter()
        .find(|w| !settings.iter().any(|(key, ..)| key == *w))
    {
        anyhow::bail!("--settings: unknown setting {bad:?}; choose r16-qkvo, r32-qv or both");
    }
    let model = args.model.load()?;
    outln!(
        "model: {} ({:.1}M parameters, {}, {})",
        model.info.name,
        model.info.parameters as f64 / 1e6,
        engine::device::describe(&model.transformer.device),
        model.info.dtype
    );
    if model.transformer.device.is_cpu() {
        outln!("frozen products: {} kernel", engine::gemm::kernel_name());
    }
    // Real text, repeated to the requested length.
    let text = "The lighthouse stood on a rock at the edge of the bay, and every night its keeper \
                climbed the ninety-nine steps to light the lamp. Ships passed in the dark, and the \
                beam swept over the water like a slow hand. ";
    let mut ids = Vec::new();
    while ids.len() < args.seq_len {
        ids.extend(model.tokenizer.encode(text)?);
    }
    ids.truncate(args.seq_len);
    let example = Example {
        prompt: Vec::new(),
        completion: ids,
    };
    for (key, label, rank, alpha, targets) in settings {
        if !wanted.contains(&key) {
            continue;
        }
        let cfg = TrainConfig {
            lora: LoraConfig {
                rank,
                alpha,
                dropout: 0.0,
                targets: Target::parse_list(targets)?,
            },
            learning_rate: 1e-4,
            epochs: args.steps + 1,
            batch_size: 1,
            loss: LossOn::All,
            max_seq_len: args.seq_len,
            ..Default::default()
        };
        let mut marks = Vec::new();
        train_lora(
            &model,
            std::slice::from_ref(&example),
            &cfg,
            None,
            &mut |e| {
                if let TrainEvent::Step(p) = e {
                    marks.push(p.elapsed_secs);
                }
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let step_secs: Vec<f64> = marks.windows(2).map(|w| w[1] - w[0]).collect();
        let ms = median(step_secs.clone()) * 1000.0;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "setting": key,
                    "ms_per_step": ms,
                    "steps": step_secs,
                    "peak_gb": peak_memory_gb(),
                })
            );
        }
        outln!(
            "{label}: {ms:.0} ms/step, {:.0} trained tokens/s (batch 1, sequence {}, median of {} steps after 1 warm-up), peak memory {:.2} GB",
            args.seq_len as f64 / (ms / 1000.0),
            args.seq_len,
            args.steps,
            peak_memory_gb()
        );
    }
    Ok(())
}

/// The process's peak resident memory, from /proc (Linux); NaN elsewhere.
fn peak_memory_gb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The workbench's own update and draw code, on a 200x60 off-screen terminal, driven at its
/// frame rate with a key every quarter second, while a LoRA finetune of the real model runs
/// on a thread and streams its steps in as events.
fn bench_tui(args: BenchTuiArgs) -> Result<()> {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use seal_tui::engine::{
        train_lora, Example, LoraConfig, LossOn, Target, TrainConfig, TrainEvent,
    };
    use seal_tui::record::{EditId, Event, Record};
    use seal_tui::seal::execute::progress;
    use seal_tui::tui::{self, Action, App, KeyMap, Theme};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let model = args.model.load()?;
    let text = "The lighthouse stood on a rock at the edge of the bay, and every night its keeper \
                climbed the ninety-nine steps to light the lamp. ";
    let mut ids = Vec::new();
    while ids.len() < 256 {
        ids.extend(model.tokenizer.encode(text)?);
    }
    ids.truncate(256);
    let example = Example {
        prompt: Vec::new(),
        completion: ids,
    };
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 32,
            alpha: 64.0,
            dropout: 0.0,
            targets: Target::parse_list("q,v")?,
        },
        epochs: 1000,
        loss: LossOn::All,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<Record>();
    let trainer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let id = EditId {
                round: 0,
                ctx: 0,
                edit: 0,
            };
            let _ = train_lora(
                &model,
                std::slice::from_ref(&example),
                &cfg,
                Some(&stop),
                &mut |e| {
                    if let TrainEvent::Step(p) = e {
                        let _ = tx.send(Record {
                            t: start.elapsed().as_secs_f64(),
                            event: Event::TrainStep {
                                id,
                                rev: 0,
                                repeat: 0,
                                progress: progress(p),
                            },
                        });
                    }
                },
            );
        })
    };

    let mut app = App::live("bench", Theme::dark(), KeyMap::default());
    for r in tui::bench::heavy_records() {
        app.apply_record(&r);
    }
    let mut term = Terminal::new(TestBackend::new(200, 60))?;
    let frame = Duration::from_millis(33);
    let key_every = Duration::from_millis(250);
    let actions = [
        Action::FocusNext,
        Action::NextEdit,
        Action::PrevEdit,
        Action::ScrollDown,
    ];
    // Let the finetune get going before measuring.
    while rx.try_recv().is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let mut last_frame = Instant::now();
    let mut next_key = start + key_every;
    let mut intervals = Vec::new();
    let mut latencies = Vec::new();
    let mut steps = 0usize;
    let mut k = 0usize;
    while start.elapsed().as_secs_f64() < args.secs {
        while let Ok(r) = rx.try_recv() {
            steps += 1;
            app.apply_record(&r);
        }
        let now = Instant::now();
        if now >= next_key {
            // A key arrives: the loop handles it and redraws at once.
            let _ = tui::update(&mut app, actions[k % actions.len()]);
            k += 1;
            term.draw(|f| tui::draw::draw(&app, f))?;
            latencies.push(next_key.elapsed().as_secs_f64());
            next_key += key_every;
        }
        if last_frame.elapsed() >= frame {
            term.draw(|f| tui::draw::draw(&app, f))?;
            intervals.push(last_frame.elapsed().as_secs_f64());
            last_frame = Instant::now();
        }
        let wake = (last_frame + frame).min(next_key);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = trainer.join();
    let pct = |mut v: Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
            * 1e3
    };
    outln!(
        "while a finetune ran ({steps} training steps in {:.0} s on the same cores):",
        args.secs
    );
    outln!(
        "  frame interval: median {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} frames (target: a frame at least every 100 ms)",
        pct(intervals.clone(), 0.5),
        pct(intervals.clone(), 0.99),
        pct(intervals.clone(), 1.0),
        intervals.len()
    );
    outln!(
        "  key to redrawn screen: median {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} keys (target: under 100 ms)",
        pct(latencies.clone(), 0.5),
        pct(latencies.clone(), 0.99),
        pct(latencies.clone(), 1.0),
        latencies.len()
    );
    Ok(())
}
