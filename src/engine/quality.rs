//! How close a quantized sampling path stays to the f32 model: on a reference text, with the
//! true tokens fed in (teacher forcing), how often the two predict the same next token, and
//! each one's perplexity.

use super::load::Model;
use super::model::{KvCache, Positions};
use super::ops::Mode;
use anyhow::{bail, Result};
use candle_core::{Tensor, D};

#[derive(Clone, Debug)]
pub struct Agreement {
    pub tokens: usize,
    pub top1_agreement: f64,
    pub perplexity_reference: f64,
    pub perplexity_candidate: f64,
}

/// Next-token log-probabilities and argmaxes for every position, fed `chunk` tokens at a time
/// through the KV cache (so a quantized model runs its decoding path, not its dense prefill).
fn next_token_stats(model: &Model, ids: &[u32], chunk: usize) -> Result<(Vec<f64>, Vec<u32>)> {
    let t = &model.transformer;
    let mut cache = KvCache::new(t.config.num_layers, ids.len());
    let mut logp = Vec::new();
    let mut top = Vec::new();
    for start in (0..ids.len() - 1).step_by(chunk) {
        let end = (start + chunk).min(ids.len() - 1);
        let x = Tensor::new(&ids[start..end], &t.device)?.unsqueeze(0)?;
        let h = t.forward_hidden(
            &x,
            &Positions::From(start),
            None,
            Some(&mut cache),
            None,
            Mode::Infer,
        )?;
        let rows = end - start;
        let mut logits = Vec::with_capacity(rows);
        for r in 0..rows {
            // One row at a time keeps the output head on its single-row path too.
            logits.push(t.logits(&h.narrow(1, r, 1)?.squeeze(1)?, Mode::Infer)?);
        }
        let logits = Tensor::cat(&logits, 0)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = Tensor::new(&ids[start + 1..end + 1], &t.device)?.unsqueeze(1)?;
        let picked: Vec<f32> = lsm.gather(&targets, 1)?.squeeze(1)?.to_vec1()?;
        logp.extend(picked.into_iter().map(f64::from));
        top.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    Ok((logp, top))
}

pub fn compare(reference: &Model, candidate: &Model, ids: &[u32]) -> Result<Agreement> {
    if ids.len() < 2 {
        bail!("the reference text needs at least two tokens");
    }
    let (lp_ref, top_ref) = next_token_stats(reference, ids, 4)?;
    let (lp_cand, top_cand) = next_token_stats(candidate, ids, 4)?;
    let n = lp_ref.len();
    let same = top_ref
        .iter()
        .zip(&top_cand)
        .filter(|(a, b)| a == b)
        .count();
    let ppl = |lp: &[f64]| (-lp.iter().sum::<f64>() / lp.len() as f64).exp();
    Ok(Agreement {
        tokens: n,
        top1_agreement: same as f64 / n as f64,
        perplexity_reference: ppl(&lp_ref),
        perplexity_candidate: ppl(&lp_cand),
    })
}
