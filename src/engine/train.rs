//! Supervised finetuning of a fresh LoRA adapter on a frozen base model.
//!
//! The base weights never change and never receive gradients; only the adapter's A and B
//! matrices are variables. Progress is reported through a callback after every optimizer step,
//! the run can be cancelled between steps, and a run that diverges stops with an error: a loss
//! that is no longer a number, a loss far above where it started, a gradient that is no longer
//! a number, or an adapter whose change to a weight dwarfs the weight itself (a learning rate
//! too high for the model can do that while the loss stays finite).

use super::adamw::AdamW;
use super::load::Model;
use super::lora::{LoraAdapter, LoraConfig, Target};
use super::model::Positions;
use super::ops::{with_cpu_f32, Mode};
use super::rng::SplitMix64;
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Which tokens the loss is taken over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// Every token of the sequence (after the first).
    All,
    /// Only the completion's tokens, not the prompt's.
    Completion,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub loss: LossOn,
    pub seed: u64,
    /// Longer sequences are cut to this many tokens.
    pub max_seq_len: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        // SEAL's inner loop for knowledge incorporation: r=32, alpha=64 on q,v, lr 1e-3,
        // 10 epochs.
        TrainConfig {
            lora: LoraConfig::default(),
            learning_rate: 1e-3,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            epochs: 10,
            batch_size: 1,
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            loss: LossOn::All,
            seed: 0,
            max_seq_len: 1024,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            bail!("learning_rate = {}: must be positive", self.learning_rate);
        }
        for (name, value) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
        ] {
            if value == 0 {
                bail!("{name} = 0: must be at least 1");
            }
        }
        if self.max_seq_len < 2 {
            bail!("max_seq_len = {}: must be at least 2", self.max_seq_len);
        }
        for (name, value) in [
            ("max_grad_norm", self.max_grad_norm),
            ("weight_decay", self.weight_decay),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                bail!("{name} = {value}: must not be negative");
            }
        }
        Ok(())
    }

    /// Optimizer steps for `n` examples.
    pub fn total_steps(&self, n: usize) -> usize {
        self.epochs * n.div_ceil(self.batch_size * self.grad_accum)
    }

    /// Learning rate at optimizer step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let base = self.learning_rate;
        if step < self.warmup_steps {
            return base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        match self.schedule {
            Schedule::Constant => base,
            Schedule::Linear => base * (1.0 - progress),
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

/// One training sequence: the prompt part and the completion part, as token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
}

impl Example {
    pub fn len(&self) -> usize {
        self.prompt.len() + self.completion.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
    pub eta_secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        total_steps: usize,
        examples: usize,
        tokens: usize,
        trainable_parameters: usize,
    },
    /// Some examples were longer than `max_seq_len` and were cut to it: their ends, or, when
    /// only completions are learnt (`prompt_starts`), the starts of their prompts, so that the
    /// completions are learnt whole. Sent before `Started`, so a caller can say so.
    Truncated {
        rows: usize,
        of: usize,
        longest: usize,
        max_seq_len: usize,
        #[serde(default)]
        prompt_starts: bool,
    },
    Step(StepProgress),
    Failed {
        step: usize,
        message: String,
    },
}

#[derive(Debug)]
pub enum TrainError {
    Cancelled,
    NonFiniteLoss {
        step: usize,
        loss: f64,
    },
    /// The run blew up though its loss is still a number; `why` says what grew.
    Diverged {
        step: usize,
        why: String,
    },
    Other(anyhow::Error),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Cancelled => write!(f, "training was cancelled"),
            TrainError::NonFiniteLoss { step, loss } => write!(
                f,
                "the loss became {loss} at step {step}; training diverged (try a lower learning rate)"
            ),
            TrainError::Diverged { step, why } => write!(
                f,
                "training diverged at step {step}: {why} (try a lower learning rate)"
            ),
            TrainError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<anyhow::Error> for TrainError {
    fn from(e: anyhow::Error) -> Self {
        TrainError::Other(e)
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Other(e.into())
    }
}

pub struct TrainOutcome {
    pub adapter: LoraAdapter,
    pub steps: usize,
    pub losses: Vec<f64>,
    pub tokens: usize,
    pub secs: f64,
}

/// Fits a fresh LoRA adapter on `examples`. `on_event` sees every step; `cancel` is checked
/// between steps.
pub fn train_lora(
    model: &Model,
    examples: &[Example],
    cfg: &TrainConfig,
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> std::result::Result<TrainOutcome, TrainError> {
    cfg.validate()?;
    let long: Vec<usize> = examples
        .iter()
        .map(Example::len)
        .filter(|&n| n > cfg.max_seq_len)
        .collect();
    if let Some(&longest) = long.iter().max() {
        on_event(&TrainEvent::Truncated {
            rows: long.len(),
            of: examples.len(),
            longest,
            max_seq_len: cfg.max_seq_len,
            prompt_starts: cfg.loss == LossOn::Completion,
        });
    }
    let examples: Vec<Example> = examples
        .iter()
        .map(|e| truncate(e, cfg.max_seq_len, cfg.loss))
        .filter(|e| e.len() >= 2 && counted_positions(e, cfg.loss) > 0)
        .collect();
    if examples.is_empty() {
        return Err(anyhow!("no training example has a token to learn from").into());
    }
    let t = &model.transformer;
    let (adapter, vars) =
        LoraAdapter::init(&cfg.lora, &t.projection_shapes(), cfg.seed, &t.device)?;
    let guard = UpdateGuard::new(model, &adapter)?;
    let mut first_loss = None;
    let mut opt = AdamW::new(vars.clone(), cfg.weight_decay)?;
    let total_steps = cfg.total_steps(examples.len());
    let total_tokens: usize = examples.iter().map(Example::len).sum::<usize>() * cfg.epochs;
    on_event(&TrainEvent::Started {
        total_steps,
        examples: examples.len(),
        tokens: total_tokens,
        trainable_parameters: adapter.num_parameters(),
    });
    let pad = model
        .tokenizer
        .pad_id
        .or(model.tokenizer.eos_ids.first().copied())
        .unwrap_or(0);
    let mut rng = SplitMix64::new(cfg.seed ^ 0x5EA1);
    let start = Instant::now();
    let mut losses = Vec::with_capacity(total_steps);
    let mut tokens_done = 0usize;
    let mut step = 0usize;
    let per_step = cfg.batch_size * cfg.grad_accum;
    for _ in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        rng.shuffle(&mut order);
        for chunk in order.chunks(per_step) {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(TrainError::Cancelled);
            }
            let micro: Vec<&[usize]> = chunk.chunks(cfg.batch_size).collect();
            let mut grads: Option<Vec<Tensor>> = None;
            let mut step_loss = 0.0;
            for batch in &micro {
                let rows: Vec<&Example> = batch.iter().map(|&i| &examples[i]).collect();
                let loss = batch_loss(model, &adapter, &rows, cfg.loss, pad)?;
                let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
                if !value.is_finite() {
                    on_event(&TrainEvent::Failed {
                        step: step + 1,
                        message: TrainError::NonFiniteLoss {
                            step: step + 1,
                            loss: value,
                        }
                        .to_string(),
                    });
                    return Err(TrainError::NonFiniteLoss {
                        step: step + 1,
                        loss: value,
                    });
                }
                step_loss += value / micro.len() as f64;
                let store = (loss / micro.len() as f64)?.backward()?;
                let g: Vec<Tensor> = vars
                    .iter()
                    .map(|v| {
                        store
                            .get(v.as_tensor())
                            .cloned()
                            .ok_or_else(|| anyhow!("an adapter tensor received no gradient"))
                    })
                    .collect::<Result<_>>()?;
                grads = Some(match grads {
                    None => g,
                    Some(acc) => acc
                        .iter()
                        .zip(&g)
                        .map(|(a, b)| a + b)
                        .collect::<candle_core::Result<_>>()?,
                });
                tokens_done += rows.iter().map(|e| e.len()).sum::<usize>();
            }
            let grads = grads.expect("a step has at least one micro-batch");
            let norm = global_norm(&grads)?;
            let first = *first_loss.get_or_insert(step_loss);
            let diverged = if !norm.is_finite() {
                Some(format!("the gradient norm became {norm}"))
            } else if step_loss > loss_limit(first) {
                Some(format!(
                    "the loss rose from {first:.3} at the first step to {step_loss:.3}"
                ))
            } else {
                None
            };
            if let Some(why) = diverged {
                return Err(fail(on_event, step + 1, why));
            }
            let clip = (cfg.max_grad_norm > 0.0 && norm > cfg.max_grad_norm)
                .then(|| cfg.max_grad_norm / (norm + 1e-6));
            let lr = cfg.lr_at(step, total_steps);
            opt.step(&grads, clip, lr)?;
            if let Some(why) = guard.check(&adapter)? {
                return Err(fail(on_event, step + 1, why));
            }
            step += 1;
            losses.push(step_loss);
            let elapsed = start.elapsed().as_secs_f64();
            let rate = tokens_done as f64 / elapsed.max(1e-9);
            let steps_per_epoch = (total_steps / cfg.epochs).max(1);
            on_event(&TrainEvent::Step(StepProgress {
                step,
                total_steps,
                epoch: step as f64 / steps_per_epoch as f64,
                loss: step_loss,
                learning_rate: lr,
                grad_norm: norm,
                tokens_per_sec: rate,
                elapsed_secs: elapsed,
                eta_secs: elapsed / step as f64 * (total_steps - step) as f64,
            }));
        }
    }
    Ok(TrainOutcome {
        adapter: adapter.detached(),
        steps: step,
        losses,
        tokens: tokens_done,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Reports a divergence as a `Failed` event and returns it as the error.
fn fail(on_event: &mut dyn FnMut(&TrainEvent), step: usize, why: String) -> TrainError {
    let err = TrainError::Diverged { step, why };
    on_event(&TrainEvent::Failed {
        step,
        message: err.to_string(),
    });
    err
}

/// How far above its first step's value the loss may rise before the run counts as diverged.
/// The loss wanders from batch to batch, so the bound is wide: four times the start, and at
/// least ten nats above it (a token's probability down by a factor of e^10 on average).
fn loss_limit(first: f64) -> f64 {
    (first * 4.0).max(first + 10.0)
}

/// How large an adapter's change to a weight may grow, relative to the weight, before the run
/// counts as diverged. A LoRA update corrects a weight; one many times the weight's own size
/// has overwritten it, whatever the loss says (the final norm keeps logits, and so the loss,
/// bounded even when the weights before it are ruined).
pub const MAX_UPDATE_RATIO: f64 = 10.0;

/// Compares each adapted module's change, `|scale B A|`, with its base weight `|W|`
/// (Frobenius norms).
struct UpdateGuard {
    /// (layer, target) of each module, with its weight's squared norm.
    weights: Vec<((usize, Target), f64)>,
}

impl UpdateGuard {
    fn new(model: &Model, adapter: &LoraAdapter) -> Result<UpdateGuard> {
        let keys: Vec<(usize, Target)> = adapter.modules.keys().copied().collect();
        let squares = keys
            .iter()
            .map(|&(layer, target)| {
                let w = &model.transformer.layers[layer].linear(target).weight;
                w.to_dtype(DType::F32)?.sqr()?.sum_all()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let squares = Tensor::stack(&squares, 0)?.to_vec1::<f32>()?;
        Ok(UpdateGuard {
            weights: keys
                .into_iter()
                .zip(squares.into_iter().map(f64::from))
                .collect(),
        })
    }

    /// Why the adapter has blown up, if it has.
    fn check(&self, adapter: &LoraAdapter) -> Result<Option<String>> {
        let scale = adapter.scale();
        // A module left at zero is one whose size cannot matter: below the limit.
        let mut squares = vec![0f32; self.weights.len()];
        let (mut exact_at, mut exact) = (Vec::new(), Vec::new());
        for (i, (key, weight_sq)) in self.weights.iter().enumerate() {
            let pair = &adapter.modules[key];
            // |B A| <= |B| |A|: a module whose bound keeps it well inside the limit cannot be
            // the one reported, and skips the products below (~3 ms a step for SEAL's 60).
            let bound = with_cpu_f32(&[Some(&pair.a), Some(&pair.b)], |v| {
                Some(square_sum(v[0]?) * square_sum(v[1]?))
            });
            if bound.is_some_and(|b| update_ratio(scale, b, *weight_sq) * 1.001 < MAX_UPDATE_RATIO)
            {
                continue;
            }
            // |B A|^2 = sum((B^T B) * (A A^T)): two r x r products instead of the full delta.
            let btb = pair.b.t()?.matmul(&pair.b)?;
            let aat = pair.a.matmul(&pair.a.t()?)?;
            exact_at.push(i);
            exact.push((btb * aat)?.sum_all()?);
        }
        if !exact.is_empty() {
            // Read from the device once.
            let values = Tensor::stack(&exact, 0)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            for (i, value) in exact_at.into_iter().zip(values) {
                squares[i] = value;
            }
        }
        let mut worst: Option<((usize, Target), f64)> = None;
        for ((key, weight_sq), delta_sq) in self.weights.iter().zip(squares) {
            let ratio = update_ratio(scale, f64::from(delta_sq), *weight_sq);
            if !ratio.is_finite() || worst.is_none_or(|(_, w)| ratio > w) {
                worst = Some((*key, ratio));
                if !ratio.is_finite() {
                    break;
                }
            }
        }
        Ok(worst.and_then(|((layer, target), ratio)| {
            (ratio.is_nan() || ratio > MAX_UPDATE_RATIO).then(|| {
                format!(
                    "the adapter's change to layer {layer} {} grew to {ratio:.1} times the \
                     weight itself (at most {MAX_UPDATE_RATIO} is allowed)",
                    target.module_name()
                )
            })
        }))
    }
}

/// `e` cut to `max` tokens. Where only the completion is learnt, the prompt loses its start
/// (the completion is what the example teaches; cutting its end, as the first version did, left
/// a long ARC config half learnt); if the completion alone is too long, one prompt token stays
/// to predict its start from. Otherwise the end goes.
fn truncate(e: &Example, max: usize, loss: LossOn) -> Example {
    let mut e = e.clone();
    if e.len() <= max {
        return e;
    }
    if loss == LossOn::Completion && !e.prompt.is_empty() && !e.completion.is_empty() {
        let keep = max.saturating_sub(e.completion.len()).max(1);
        e.prompt.drain(..e.prompt.len().saturating_sub(keep));
        e.completion.truncate(max - e.prompt.len());
    } else if e.prompt.len() >= max {
        e.prompt.truncate(max);
        e.completion.clear();
    } else {
        e.completion.truncate(max - e.prompt.len());
    }
    e
}

/// Positions whose next token counts in the loss.
fn counted_positions(e: &Example, loss: LossOn) -> usize {
    match loss {
        LossOn::All => e.len().saturating_sub(1),
        LossOn::Completion if e.prompt.is_empty() => e.completion.len().saturating_sub(1),
        LossOn::Completion => e.completion.len(),
    }
}

/// Mean negative log-likelihood of the counted tokens of a right-padded batch. Causal attention
/// never lets a real token see the padding after it, so no mask is needed.
pub fn batch_loss(
    model: &Model,
    adapter: &LoraAdapter,
    rows: &[&Example],
    loss_on: LossOn,
    pad: u32,
) -> Result<Tensor> {
    let t = &model.transformer;
    let longest = rows.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * longest);
    let mut picks = Vec::new();
    let mut targets = Vec::new();
    for (r, e) in rows.iter().enumerate() {
        let seq: Vec<u32> = e.prompt.iter().chain(&e.completion).copied().collect();
        let first = match loss_on {
            LossOn::All => 0,
            LossOn::Completion => e.prompt.len().saturating_sub(1),
        };
        for p in first..seq.len().saturating_sub(1) {
            picks.push((r, p));
            targets.push(seq[p + 1]);
        }
        ids.extend(
            seq.iter()
                .copied()
                .chain(std::iter::repeat_n(pad, longest - seq.len())),
        );
    }
    let input = Tensor::from_vec(ids, (rows.len(), longest), &t.device)?;
    let hidden = t.forward_hidden(
        &input,
        &Positions::From(0),
        None,
        None,
        Some(adapter),
        Mode::Train,
    )?;
    let logp = t.token_logprobs(&hidden, &picks, &targets, Mode::Train)?;
    Ok(logp.mean_all()?.neg()?)
}

/// Total log-probability of an example's completion given its prompt.
pub fn sequence_logprob(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    example: &Example,
) -> Result<f64> {
    let t = &model.transformer;
    let seq: Vec<u32> = example
        .prompt
        .iter()
        .chain(&example.completion)
        .copied()
        .collect();
    if seq.len() < 2 {
        return Ok(0.0);
    }
    let first = example.prompt.len().saturating_sub(1);
    let picks: Vec<(usize, usize)> = (first..seq.len() - 1).map(|p| (0, p)).collect();
    let targets: Vec<u32> = (first..seq.len() - 1).map(|p| seq[p + 1]).collect();
    let input = Tensor::new(seq.as_slice(), &t.device)?.unsqueeze(0)?;
    let hidden = t.forward_hidden(
        &input,
        &Positions::From(0),
        None,
        None,
        adapter,
        Mode::Infer,
    )?;
    let logp = t.token_logprobs(&hidden, &picks, &targets, Mode::Infer)?;
    Ok(logp.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
}

/// `|scale B A| / |W|` from the squares `|B A|^2` and `|W|^2`.
fn update_ratio(scale: f64, delta_sq: f64, weight_sq: f64) -> f64 {
    // Rounding can make a tiny square negative; NaN (an overflow) must stay NaN.
    let delta_sq = if delta_sq < 0.0 { 0.0 } else { delta_sq };
    scale * delta_sq.sqrt() / weight_sq.sqrt().max(1e-12)
}

/// The sum of the squares of `values`, in f64 (eight running sums, so that it pipelines).
fn square_sum(values: &[f32]) -> f64 {
    let mut sums = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum();
    for chunk in chunks {
        for (sum, &x) in sums.iter_mut().zip(chunk) {
            *sum += f64::from(x) * f64::from(x);
        }
    }
    sums.iter().sum::<f64>() + rest
}

/// The global gradient norm, summed on the device and read once (on a GPU every read is a
/// synchronisation).
fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let sums = grads
        .iter()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let total = Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok(total.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_sums_are_exact_past_the_eight_lanes() {
        let values: Vec<f32> = (0..19).map(|i| i as f32 - 9.5).collect();
        let want: f64 = values.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert_eq!(square_sum(&values), want);
        assert_eq!(square_sum(&[]), 0.0);
        assert!(square_sum(&[1.0, f32::NAN]).is_nan());
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        let cfg = TrainConfig {
            learning_rate: 1.0,
            warmup_steps: 2,
            schedule: Schedule::Linear,
            ..Default::default()
        };
        let lrs: Vec<f64> = (0..6).map(|s| cfg.lr_at(s, 6)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert_eq!(lrs[2], 1.0);
        assert!(lrs[3] < lrs[2] && lrs[5] < lrs[4]);
        let cos = TrainConfig {
            schedule: Schedule::Cosine,
            ..cfg.clone()
        };
        assert!((cos.lr_at(4, 6) - 0.5).abs() < 1e-9);
        let constant = TrainConfig {
            schedule: Schedule::Constant,
            warmup_steps: 0,
            ..cfg
        };
        assert_eq!(constant.lr_at(5, 6), 1.0);
    }

    #[test]
    fn steps_count_batches_and_accumulation() {
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 2,
            grad_accum: 2,
            ..Default::default()
        };
        assert_eq!(cfg.total_steps(5), 6);
        assert_eq!(cfg.total_steps(4), 3);
    }

    #[test]
    fn counted_positions_follow_the_loss_choice() {
        let e = Example {
            prompt: vec![1, 2, 3],
            completion: vec![4, 5],
        };
        assert_eq!(counted_positions(&e, LossOn::All), 4);
        assert_eq!(counted_positions(&e, LossOn::Completion), 2);
    }

    #[test]
    fn truncation_keeps_what_the_loss_learns() {
        let e = Example {
            prompt: vec![1, 2, 3],
            completion: vec![4, 5],
        };
        let cut = |max, loss| {
            let t = truncate(&e, max, loss);
            (t.prompt, t.completion)
        };
        // Every token learnt: the end goes.
        assert_eq!(cut(4, LossOn::All), (vec![1, 2, 3], vec![4]));
        assert_eq!(cut(2, LossOn::All), (vec![1, 2], vec![]));
        // Only the completion learnt: the prompt's start goes, the completion stays whole...
        assert_eq!(cut(4, LossOn::Completion), (vec![2, 3], vec![4, 5]));
        assert_eq!(cut(3, LossOn::Completion), (vec![3], vec![4, 5]));
        // ...unless it alone is too long: one prompt token predicts its start.
        assert_eq!(cut(2, LossOn::Completion), (vec![3], vec![4]));
        // Short enough: untouched.
        assert_eq!(cut(5, LossOn::Completion), (vec![1, 2, 3], vec![4, 5]));
        for max in 2..=5 {
            for loss in [LossOn::All, LossOn::Completion] {
                let t = truncate(&e, max, loss);
                assert!(t.len() <= max && counted_positions(&t, loss) > 0);
            }
        }
    }
}
