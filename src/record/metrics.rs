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
            }),
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
