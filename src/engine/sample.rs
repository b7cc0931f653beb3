//! Text generation with a KV cache: one sequence streamed token by token, or many sequences at
//! once (left-padded) when a batch of short answers is needed.

use super::constraint::{Constraint, Guide};
use super::load::Model;
use super::lora::LoraAdapter;
use super::model::{KvCache, Positions};
use super::ops::{attention_bias, Mode};
use super::rng::SplitMix64;
use super::tokenizer::StreamDecoder;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this mass.
    pub top_p: f64,
    pub max_tokens: usize,
    pub seed: u64,
    /// Generation stops before any of these strings.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 256,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_tokens: usize) -> SamplingParams {
        SamplingParams {
            max_tokens,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!("temperature = {}: must be 0 or more", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p = {}: must be in (0, 1]", self.top_p);
        }
        if self.max_tokens == 0 {
            bail!("max_tokens = 0: must be at least 1");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// Picks tokens from logits.
pub struct TokenSampler {
    rng: SplitMix64,
    temperature: f64,
    top_p: f64,
}

impl TokenSampler {
    pub fn new(params: &SamplingParams, stream: u64) -> TokenSampler {
        TokenSampler {
            rng: SplitMix64::new(params.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            temperature: params.temperature,
            top_p: params.top_p,
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        if self.top_p < 1.0 {
            // Most of the mass sits in a few hundred tokens: sort those first and fall back to a
            // full sort only when they do not reach top_p.
            let head = 512.min(probs.len());
            let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
            if head < probs.len() {
                probs.select_nth_unstable_by(head - 1, cmp);
            }
            probs[..head].sort_unstable_by(cmp);
            let target = self.top_p as f32 * total;
            let mut mass = 0.0;
            let mut keep = None;
            for (i, p) in probs[..head].iter().enumerate() {
                mass += p.1;
                if mass >= target {
                    keep = Some(i + 1);
                    break;
                }
            }
            let keep = match keep {
                Some(k) => k,
                None => {
                    probs.sort_unstable_by(cmp);
                    let mut mass = 0.0;
                    probs
                        .iter()
                        .position(|p| {
                            mass += p.1;
                            mass >= target
                        })
                        .map(|i| i + 1)
                        .unwrap_or(probs.len())
                }
            };
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.next_f64() as f32 * total;
        for &(id, p) in &probs {
            r -= p;
            if r <= 0.0 {
                return id;
            }
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The next token of each active row from the last positions' logits `(rows, vocab)`. On a GPU a
/// greedy pick is made there, and only the chosen ids cross to the host each step; otherwise
/// the logits come over for the row's sampler.
fn pick(
    logits: &Tensor,
    samplers: &mut [TokenSampler],
    rows: &[usize],
    greedy_on_device: bool,
) -> Result<Vec<u32>> {
    if greedy_on_device {
        return Ok(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
    }
    let host: Vec<Vec<f32>> = logits.to_vec2()?;
    Ok(rows
        .iter()
        .zip(&host)
        .map(|(&i, l)| samplers[i].sample(l))
        .collect())
}

fn greedy_on_device(model: &Model, params: &SamplingParams) -> bool {
    params.temperature <= 0.0 && !model.transformer.device.is_cpu()
}

/// Token ids that end a generation: the tokenizer's EOS ids and the chat format's end of turn.
fn stop_ids(model: &Model) -> Vec<u32> {
    let mut ids = model.tokenizer.eos_ids.clone();
    let eot = model.chat.end_of_turn();
    if !eot.is_empty() {
        ids.extend(model.tokenizer.token_to_id(eot));
    }
    ids
}

fn check_length(model: &Model, prompt_len: usize) -> Result<()> {
    let max = model.transformer.config.max_position_embeddings;
    if prompt_len == 0 {
        bail!("the prompt is empty");
    }
    if prompt_len >= max {
        bail!("the prompt has {prompt_len} tokens; the model's context holds {max}");
    }
    Ok(())
}

/// Generates a continuation of `prompt`, calling `on_piece` with each new piece of text as soon
/// as it decodes. `cancel` is checked between tokens.
pub fn generate(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    prompt: &[u32],
    params: &SamplingParams,
    cancel: Option<&AtomicBool>,
    on_piece: &mut dyn FnMut(&str),
) -> Result<Generation> {
    generate_constrained(model, adapter, prompt, params, None, cancel, on_piece)
}

/// [`generate`] under a grammar, when one is given: every token drawn keeps the text a valid
/// prefix that can still be completed in the tokens left, and the generation ends as soon as
/// the text is complete (`StopReason::Eos`). It fails when `max_tokens` cannot hold the shortest
/// valid text, or when the grammar leaves no token possible (the vocabulary cannot spell it).
pub fn generate_constrained(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    prompt: &[u32],
    params: &SamplingParams,
    constraint: Option<&dyn Constraint>,
    cancel: Option<&AtomicBool>,
    on_piece: &mut dyn FnMut(&str),
) -> Result<Generation> {
    generate_inner(
        model,
        adapter,
        prompt,
        params,
        cancel,
        on_piece,
        &stop_ids(model),
        constraint,
    )
}

/// What a streamed generation sends: each piece of text as it decodes, then the result.
#[derive(Debug)]
pub enum SampleEvent {
    Piece(String),
    Done(Generation),
    Failed(String),
}

/// Generates on a thread of its own, streaming pieces through a channel. Setting `cancel` stops
/// it between tokens (it then finishes with `StopReason::Cancelled`).
pub fn stream(
    model: Model,
    adapter: Option<LoraAdapter>,
    prompt: Vec<u32>,
    params: SamplingParams,
    cancel: std::sync::Arc<AtomicBool>,
) -> std::sync::mpsc::Receiver<SampleEvent> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = generate(
            &model,
            adapter.as_ref(),
            &prompt,
            &params,
            Some(&cancel),
            &mut |p| {
                let _ = tx.send(SampleEvent::Piece(p.to_string()));
            },
        );
        let _ = tx.send(match result {
            Ok(g) => SampleEvent::Done(g),
            Err(e) => SampleEvent::Failed(format!("{e:#}")),
        });
    });
    rx
}

/// Generates exactly `max_tokens` tokens whatever they are, for speed measurements.
pub fn generate_ignoring_eos(
    model: &Model,
    prompt: &[u32],
    params: &SamplingParams,
) -> Result<Generation> {
    generate_inner(model, None, prompt, params, None, &mut |_| {}, &[], None)
}

#[allow(clippy::too_many_arguments)]
fn generate_inner(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    prompt: &[u32],
    params: &SamplingParams,
    cancel: Option<&AtomicBool>,
    on_piece: &mut dyn FnMut(&str),
    stops: &[u32],
    constraint: Option<&dyn Constraint>,
) -> Result<Generation> {
    params.validate()?;
    check_length(model, prompt.len())?;
    let t = &model.transformer;
    let max_new = params
        .max_tokens
        .min(t.config.max_position_embeddings - prompt.len());
    let mut cache = KvCache::new(t.config.num_layers, prompt.len() + max_new);
    let mut samplers = [TokenSampler::new(params, 0)];
    let on_device = greedy_on_device(model, params) && constraint.is_none();
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let mut guide = constraint.map(|c| Guide::new(c, &model.tokenizer));
    if let Some(needed) = guide.as_ref().map(|g| g.shortest(&model.tokenizer)) {
        if needed > max_new {
            bail!(
                "the constrained output needs at least {needed} tokens and only {max_new} are allowed \
                 (max_tokens {}, context {} with a prompt of {})",
                params.max_tokens,
                t.config.max_position_embeddings,
                prompt.len()
            );
        }
    }

    let start = Instant::now();
    let ids = Tensor::new(prompt, &t.device)?.unsqueeze(0)?;
    let hidden = t.forward_hidden(
        &ids,
        &Positions::From(0),
        None,
        Some(&mut cache),
        adapter,
        Mode::Infer,
    )?;
    let mut logits = t.last_logits(&hidden)?;
    let prefill_secs = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut stop = StopReason::MaxTokens;
    for step in 0..max_new {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            stop = StopReason::Cancelled;
            break;
        }
        let next = match &guide {
            Some(g) if g.is_complete() => {
                stop = StopReason::Eos;
                break;
            }
            Some(g) => {
                let mut host: Vec<f32> = logits.get(0)?.to_dtype(DType::F32)?.to_vec1()?;
                g.mask(&mut host, &model.tokenizer, max_new - step - 1)?;
                samplers[0].sample(&host)
            }
            None => pick(&logits, &mut samplers, &[0], on_device)?[0],
        };
        if stops.contains(&next) {
            stop = StopReason::Eos;
            break;
        }
        let piece = decoder.push(&model.tokenizer, next)?;
        if let Some(g) = &mut guide {
            g.advance(next)?;
        }
        text.push_str(&piece);
        if let Some(cut) = find_stop(&text, &params.stop) {
            // The stop string itself (and anything after it) is not part of the answer; the
            // pieces already streamed may have shown part of it, which a viewer overwrites with
            // the final text.
            let before = text.len() - piece.len();
            if cut > before {
                on_piece(&text[before..cut]);
            }
            text.truncate(cut);
            stop = StopReason::StopString;
            break;
        }
        on_piece(&piece);
        if step + 1 == max_new {
            break;
        }
        let ids = Tensor::new(&[next], &t.device)?.unsqueeze(0)?;
        let pos = Positions::From(cache.len());
        let hidden = t.forward_hidden(&ids, &pos, None, Some(&mut cache), adapter, Mode::Infer)?;
        logits = t.last_logits(&hidden)?;
    }
    if stop != StopReason::StopString {
        // Text held back while a UTF-8 sequence was incomplete is released now, as it stands.
        let rest = decoder.finish(&model.tokenizer)?;
        if !rest.is_empty() {
            on_piece(&rest);
            text.push_str(&rest);
        }
    }
    Ok(Generation {
        text,
        tokens: decoder.ids().to_vec(),
        prompt_tokens: prompt.len(),
        stop,
        prefill_secs,
        decode_secs: decode_start.elapsed().as_secs_f64(),
    })
}

/// Length of the longest token prefix shared by every prompt.
fn common_prefix(prompts: &[Vec<u32>]) -> usize {
    let first = &prompts[0];
    let mut n = first.len();
    for p in &prompts[1..] {
        n = n.min(first.iter().zip(p).take_while(|(a, b)| a == b).count());
    }
    n
}

fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Generates continuations of several prompts at once. Prompts are left-padded to a common
/// length; each row keeps its own positions and never attends to padding. Row `i` samples with
/// its own stream of the seed, so results do not depend on the batch's composition.
pub fn generate_batch(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    cancel: Option<&AtomicBool>,
) -> Result<Vec<Generation>> {
    params.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    for p in prompts {
        check_length(model, p.len())?;
    }
    let t = &model.transformer;
    let b = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max_new = params
        .max_tokens
        .min(t.config.max_position_embeddings - longest);
    let stops = stop_ids(model);
    let pad = model
        .tokenizer
        .pad_id
        .or(stops.first().copied())
        .unwrap_or(0);

    // Prompts usually share a prefix (system message, chat markup, topic): prefill it once at
    // batch 1, then copy its cache to every row and prefill only the differing suffixes.
    // Every row keeps at least one token of its own, whose logits start its continuation.
    let shortest = prompts.iter().map(Vec::len).min().unwrap_or(1);
    let shared = common_prefix(prompts).min(shortest - 1);
    let suffix_len = longest - shared;
    let mut key_valid: Vec<Vec<u8>> = Vec::with_capacity(b);
    let mut ids = Vec::with_capacity(b * suffix_len);
    let mut positions = Vec::with_capacity(b);
    for p in prompts {
        let padding = longest - p.len();
        key_valid.push(
            [
                vec![1u8; shared],
                vec![0u8; padding],
                vec![1u8; p.len() - shared],
            ]
            .concat(),
        );
        ids.extend(std::iter::repeat_n(pad, padding).chain(p[shared..].iter().copied()));
        positions.push(
            (0..suffix_len)
                .map(|i| (shared + i.saturating_sub(padding)) as u32)
                .collect(),
        );
    }
    let mut lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut cache = KvCache::new(t.config.num_layers, longest + max_new);
    let mut samplers: Vec<TokenSampler> = (0..b)
        .map(|i| TokenSampler::new(params, i as u64))
        .collect();
    let mut decoders: Vec<StreamDecoder> = (0..b).map(|_| StreamDecoder::new()).collect();
    let mut texts = vec![String::new(); b];
    let mut done: Vec<Option<StopReason>> = vec![None; b];

    let start = Instant::now();
    if shared > 0 {
        let prefix = Tensor::new(&prompts[0][..shared], &t.device)?.unsqueeze(0)?;
        t.forward_hidden(
            &prefix,
            &Positions::From(0),
            None,
            Some(&mut cache),
            adapter,
            Mode::Infer,
        )?;
        cache.expand_batch(b)?;
    }
    let input = Tensor::from_vec(ids, (b, suffix_len), &t.device)?;
    let bias = attention_bias(&key_valid, suffix_len, shared, t.dtype, &t.device)?;
    let hidden = t.forward_hidden(
        &input,
        &Positions::PerRow(positions),
        Some(&bias),
        Some(&mut cache),
        adapter,
        Mode::Infer,
    )?;
    let on_device = greedy_on_device(model, params);
    let mut logits = t.last_logits(&hidden)?;
    let prefill_secs = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();

    // Rows still generating, in the order of the cache's batch rows. Finished rows leave the
    // batch, so a few long answers do not keep paying for the many short ones.
    let mut active: Vec<usize> = (0..b).collect();
    for step in 0..max_new {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            for d in done.iter_mut().filter(|d| d.is_none()) {
                *d = Some(StopReason::Cancelled);
            }
            break;
        }
        let mut next_ids = Vec::with_capacity(active.len());
        let picks = pick(&logits, &mut samplers, &active, on_device)?;
        for (r, &i) in active.iter().enumerate() {
            let next = picks[r];
            if stops.contains(&next) {
                done[i] = Some(StopReason::Eos);
                next_ids.push(pad);
                continue;
            }
            let piece = decoders[i].push(&model.tokenizer, next)?;
            texts[i].push_str(&piece);
            if let Some(cut) = find_stop(&texts[i], &params.stop) {
                texts[i].truncate(cut);
                done[i] = Some(StopReason::StopString);
            }
            next_ids.push(next);
        }
        if done.iter().all(Option::is_some) || step + 1 == max_new {
            break;
        }
        let keep: Vec<usize> = (0..active.len())
            .filter(|&r| done[active[r]].is_none())
            .collect();
        if keep.len() < active.len() {
            cache.retain_rows(&keep)?;
            key_valid = keep
                .iter()
                .map(|&r| std::mem::take(&mut key_valid[r]))
                .collect();
            next_ids = keep.iter().map(|&r| next_ids[r]).collect();
            active = keep.iter().map(|&r| active[r]).collect();
        }
        for valid in key_valid.iter_mut() {
            valid.push(1);
        }
        let pos: Vec<Vec<u32>> = active.iter().map(|&i| vec![lengths[i] as u32]).collect();
        for &i in &active {
            lengths[i] += 1;
        }
        let input = Tensor::from_vec(next_ids, (active.len(), 1), &t.device)?;
        let bias = attention_bias(&key_valid, 1, cache.len(), t.dtype, &t.device)?;
        let hidden = t.forward_hidden(
            &input,
            &Positions::PerRow(pos),
            Some(&bias),
            Some(&mut cache),
            adapter,
            Mode::Infer,
        )?;
        logits = t.last_logits(&hidden)?;
    }
    let decode_secs = decode_start.elapsed().as_secs_f64();
    for i in 0..b {
        if done[i] != Some(StopReason::StopString) {
            let rest = decoders[i].finish(&model.tokenizer)?;
            texts[i].push_str(&rest);
        }
    }
    Ok((0..b)
        .map(|i| Generation {
            text: std::mem::take(&mut texts[i]),
            tokens: decoders[i].ids().to_vec(),
            prompt_tokens: prompts[i].len(),
            stop: done[i].unwrap_or(StopReason::MaxTokens),
            prefill_secs,
            decode_secs,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_top_p_keeps_the_head() {
        let mut s = TokenSampler::new(&SamplingParams::greedy(1), 0);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0]), 1);
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        let mut s = TokenSampler::new(&params, 0);
        // Token 2 holds far more than half the mass: nucleus sampling must always pick it.
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.0, 0.0, 5.0, 0.0]), 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: 3,
            ..Default::default()
        };
        let mut s = TokenSampler::new(&params, 0);
        let logits = [0.0f32, (3.0f32).ln()];
        let ones = (0..4000).filter(|_| s.sample(&logits) == 1).count();
        // P(token 1) = 0.75.
        assert!((2850..3150).contains(&ones), "{ones}");
    }

    #[test]
    fn stop_strings_cut_at_the_earliest() {
        assert_eq!(
            find_stop("abc\nQ: x", &["\nQ:".into(), "x".into()]),
            Some(3)
        );
        assert_eq!(find_stop("abc", &["".into()]), None);
    }
}
