//! How a round's figures are reckoned: one rule for the loop (which records them when a round
//! closes), the screen (which shows them while it runs) and the report.

use super::events::{GainRule, HeldoutSummary, RoundMetrics};
use super::state::{EditState, EditStatus, HeldoutPass, RoundState};

/// The arithmetic mean; `None` for no values (shown as "–", never as 0%).
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Wilson score interval for a binomial proportion at 95%.
pub fn wilson95(correct: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let z = 1.959964f64;
    let n = n as f64;
    let p = correct as f64 / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Ranks from 1, ties given the mean of the ranks they span (as Spearman's rho needs).
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let (mx, my) = (mean(xs)?, mean(ys)?);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman's rank correlation (the Pearson correlation of the tie-averaged ranks). `None` for
/// fewer than three pairs, unequal lengths, or a side that never varies (no ranking to compare).
pub fn spearman(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() != ys.len() || xs.len() < 3 || xs.iter().chain(ys).any(|v| !v.is_finite()) {
        return None;
    }
    pearson(&ranks(xs), &ranks(ys))
}

/// A 95% interval for a Spearman correlation `rho` over `n` pairs, by Fisher's z with the
/// standard error sqrt(1.06 / (n - 3)) of Fieller, Hartley and Pearson (1957). `None` for
/// n <= 3. Approximate for small n and heavy ties; it is what the README reports as such.
pub fn spearman_ci95(rho: f64, n: usize) -> Option<(f64, f64)> {
    if n <= 3 || !rho.is_finite() {
        return None;
    }
    let r = rho.clamp(-0.999_999, 0.999_999);
    let z = r.atanh();
    let half = 1.959964 * (1.06 / (n as f64 - 3.0)).sqrt();
    Some(((z - half).tanh(), (z + half).tanh()))
}

/// An edit's reward and gain once its work is over: its scores, or nothing earned for a failed
/// finetune or an unusable self-edit. `None` while its work is still to come.
pub fn finished_edit(edit: &EditState, baseline: f64, rule: GainRule) -> Option<(f64, f64)> {
    match (edit.reward, edit.status) {
        (Some(reward), _) => Some((reward, edit.gain.unwrap_or(rule.gain(reward, baseline)))),
        (None, EditStatus::Failed) => Some((0.0, rule.gain(0.0, baseline))),
        _ => None,
    }
}

/// A round's figures from what it has done so far (all of it, once the round is over).
pub fn round_metrics(round: &RoundState, rule: GainRule) -> RoundMetrics {
    let before: Vec<f64> = round
        .contexts
        .iter()
        .filter_map(|c| c.baseline.as_ref().map(|b| b.accuracy))
        .collect();
    let mut rewards = Vec::new();
    let mut gains = Vec::new();
    for c in &round.contexts {
        let base = c.baseline.as_ref().map_or(0.0, |b| b.accuracy);
        for (reward, gain) in c.edits.iter().filter_map(|e| finished_edit(e, base, rule)) {
            rewards.push(reward);
            gains.push(gain);
        }
    }
    RoundMetrics {
        accuracy_before: mean(&before),
        // The reward is the adapted model's accuracy, so the two coincide by definition.
        accuracy_after: mean(&rewards),
        mean_reward: mean(&rewards),
        mean_gain: mean(&gains),
        edits_evaluated: rewards.len(),
        edits_kept: round.contexts.iter().filter(|c| c.kept.is_some()).count(),
        contexts: round.contexts.len(),
    }
}

/// A held-out pass's figures from the contexts scored so far: every self-edit's answers count
/// (one that could not be trained, all its questions wrong), with a Wilson interval.
pub fn heldout_summary(pass: &HeldoutPass) -> HeldoutSummary {
    let mut correct = 0;
    let mut graded = 0;
    for c in &pass.contexts {
        for e in &c.edits {
            if e.results.is_empty() {
                graded += c.questions;
            } else {
                graded += e.results.len();
                correct += e.results.iter().filter(|r| r.verdict.correct).count();
            }
        }
    }
    let baselines: Vec<f64> = pass.contexts.iter().map(|c| c.baseline).collect();
    let (low, high) = wilson95(correct, graded);
    HeldoutSummary {
        accuracy: correct as f64 / graded.max(1) as f64,
        ci95_low: low,
        ci95_high: high,
        correct,
        graded,
        baseline: mean(&baselines).unwrap_or(0.0),
        contexts: pass.contexts.len(),
    }
}

/// The figures to show for a round: as recorded when it closed, else as it stands; the flag
/// says whether they are final.
pub fn shown_metrics(round: &RoundState, rule: GainRule) -> (RoundMetrics, bool) {
    match &round.metrics {
        Some(m) => (m.clone(), true),
        None => (round_metrics(round, rule), false),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spearman_on_known_values() {
        // Monotone but not linear: rank correlation 1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 4.0, 9.0, 16.0, 100.0];
        assert!((spearman(&x, &y).unwrap() - 1.0).abs() < 1e-12);
        let rev: Vec<f64> = y.iter().rev().copied().collect();
        assert!((spearman(&x, &rev).unwrap() + 1.0).abs() < 1e-12);
        // With ties: ranks [1, 2.5, 2.5, 4, 5] and [1, 3, 2, 4.5, 4.5], whose Pearson
        // correlation is 9 / sqrt(9.5 * 9.5) = 18/19.
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0, 4.0]).unwrap();
        assert!((rho - 18.0 / 19.0).abs() < 1e-12, "{rho}");
        assert_eq!(ranks(&[0.5, 0.0, 0.5, 1.0]), [2.5, 1.0, 2.5, 4.0]);
        // Undefined: too few pairs, a constant side, mismatched lengths.
        assert_eq!(spearman(&[1.0, 2.0], &[2.0, 1.0]), None);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[0.0, 0.0, 0.0]), None);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[0.0, 1.0]), None);
        assert_eq!(spearman(&[1.0, f64::NAN, 3.0], &[0.0, 1.0, 2.0]), None);
    }

    #[test]
    fn the_spearman_interval_contains_rho_and_narrows_with_n() {
        let (lo, hi) = spearman_ci95(0.5, 24).unwrap();
        assert!(lo < 0.5 && 0.5 < hi && lo > -1.0 && hi < 1.0);
        // z = atanh(0.5) = 0.5493; half-width 1.96 * sqrt(1.06 / 21) = 0.4403.
        assert!((lo - (0.5493 - 0.4403f64).tanh()).abs() < 1e-3, "{lo}");
        let (lo2, hi2) = spearman_ci95(0.5, 200).unwrap();
        assert!(hi2 - lo2 < hi - lo);
        assert_eq!(spearman_ci95(0.5, 3), None);
        let (lo, hi) = spearman_ci95(1.0, 10).unwrap();
        assert!(lo > 0.5 && hi <= 1.0);
    }

    use super::*;
    use crate::record::events::{ContextBody, ContextView};
    use crate::record::ids::CtxId;
    use crate::record::state::{Baseline, ContextState, PolicyState, TrainState};

    fn edit(index: usize, status: EditStatus, reward: Option<f64>) -> EditState {
        EditState {
            index,
            status,
            reward,
            gain: None,
            train: TrainState::default(),
            ..Default::default()
        }
    }

    fn context(
        ctx: usize,
        base: Option<f64>,
        edits: Vec<EditState>,
        kept: Option<usize>,
    ) -> ContextState {
        ContextState {
            id: CtxId { round: 0, ctx },
            view: ContextView {
                id: ctx.to_string(),
                title: "t".into(),
                body: ContextBody::Passage {
                    text: String::new(),
                },
                questions: Vec::new(),
            },
            baseline: base.map(|accuracy| Baseline {
                results: Vec::new(),
                accuracy,
                secs: 0.0,
                kind: Default::default(),
            }),
            baseline_check: None,
            edits,
            finished: kept.is_some(),
            kept,
            selection: None,
        }
    }

    fn round(contexts: Vec<ContextState>) -> RoundState {
        RoundState {
            index: 0,
            planned_contexts: contexts.len(),
            contexts,
            policy: PolicyState::default(),
            metrics: None,
        }
    }

    #[test]
    fn wilson_interval_brackets_the_proportion() {
        let (lo, hi) = wilson95(30, 100);
        assert!(lo < 0.3 && hi > 0.3);
        assert!((lo - 0.219).abs() < 0.005 && (hi - 0.396).abs() < 0.005);
        assert_eq!(wilson95(0, 0), (0.0, 0.0));
        let (lo, hi) = wilson95(0, 10);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.2 && hi < 0.35);
    }

    #[test]
    fn mean_of_nothing_is_none() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }

    /// (baseline, edits as (status, reward)) -> (before, after, gain, evaluated)
    #[test]
    fn table() {
        use EditStatus::*;
        type Case = (
            Vec<(Option<f64>, Vec<(EditStatus, Option<f64>)>)>,
            GainRule,
            (Option<f64>, Option<f64>, Option<f64>, usize),
        );
        let cases: Vec<Case> = vec![
            // Nothing done yet.
            (vec![], GainRule::OverBaseline, (None, None, None, 0)),
            // A baseline only.
            (
                vec![(Some(0.5), vec![])],
                GainRule::OverBaseline,
                (Some(0.5), None, None, 0),
            ),
            // One scored, one still training: only the scored one counts.
            (
                vec![(Some(0.5), vec![(Scored, Some(1.0)), (Training, None)])],
                GainRule::OverBaseline,
                (Some(0.5), Some(1.0), Some(0.5), 1),
            ),
            // A failed edit earns nothing, and loses the baseline.
            (
                vec![(Some(0.25), vec![(Scored, Some(0.75)), (Failed, None)])],
                GainRule::OverBaseline,
                (Some(0.25), Some(0.375), Some(0.125), 2),
            ),
            // ARC: the gain is the reward; a failure gains 0.
            (
                vec![(Some(0.0), vec![(Scored, Some(1.0)), (Failed, None)])],
                GainRule::Reward,
                (Some(0.0), Some(0.5), Some(0.5), 2),
            ),
            // Two contexts, baselines averaged per context.
            (
                vec![
                    (Some(0.0), vec![(Scored, Some(0.5))]),
                    (Some(1.0), vec![(Scored, Some(1.0))]),
                ],
                GainRule::OverBaseline,
                (Some(0.5), Some(0.75), Some(0.25), 2),
            ),
        ];
        for (i, (contexts, rule, (before, after, gain, evaluated))) in cases.into_iter().enumerate()
        {
            let r = round(
                contexts
                    .into_iter()
                    .enumerate()
                    .map(|(ci, (base, edits))| {
                        let edits = edits
                            .into_iter()
                            .enumerate()
                            .map(|(ei, (st, rw))| edit(ei, st, rw))
                            .collect();
                        context(ci, base, edits, None)
                    })
                    .collect(),
            );
            let m = round_metrics(&r, rule);
            assert_eq!(m.accuracy_before, before, "case {i}");
            assert_eq!(m.accuracy_after, after, "case {i}");
            assert_eq!(m.mean_reward, after, "case {i}");
            assert_eq!(m.mean_gain, gain, "case {i}");
            assert_eq!(m.edits_evaluated, evaluated, "case {i}");
        }
    }

    #[test]
    fn recorded_figures_win_and_match_the_live_ones() {
        let mut r = round(vec![context(
            0,
            Some(0.5),
            vec![edit(0, EditStatus::Scored, Some(1.0))],
            Some(0),
        )]);
        let (live, final_) = shown_metrics(&r, GainRule::OverBaseline);
        assert!(!final_);
        assert_eq!(live.edits_kept, 1);
        r.metrics = Some(round_metrics(&r, GainRule::OverBaseline));
        let (recorded, final_) = shown_metrics(&r, GainRule::OverBaseline);
        assert!(final_);
        assert_eq!(
            recorded, live,
            "the numbers must not jump when a round closes"
        );
    }
}
