//! What the loop does next, decided from the run's state alone, so a fresh run and a resumed
//! one (whose state is the fold of its log) follow the same path; and which self-edit a context
//! keeps. Both are pure: no model, no threads.

use crate::record::config::{ClusterBackend, RunConfig};
use crate::record::state::{EditState, EditStatus, PolicyStatus, RunState};
use crate::record::{CtxId, EditId, UnitId};

/// An inner loop to run, with the data-set index of its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedUnit {
    pub unit: UnitId,
    pub index: usize,
}

/// What the loop does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    StartRound {
        round: usize,
    },
    StartContext {
        id: CtxId,
        index: usize,
    },
    Baseline {
        id: CtxId,
        index: usize,
    },
    Sample {
        id: EditId,
        index: usize,
    },
    /// In approval-required mode: the edit waits for a human decision.
    AwaitDecision {
        id: EditId,
    },
    Train {
        id: EditId,
        rev: u32,
        index: usize,
        repeat: usize,
    },
    Evaluate {
        id: EditId,
        rev: u32,
        index: usize,
        repeat: usize,
    },
    /// Every inner loop the round still needs, sent out at once (the slurm backend).
    Units {
        round: usize,
        units: Vec<PlannedUnit>,
    },
    Score {
        id: EditId,
        rev: u32,
    },
    Select {
        id: CtxId,
    },
    PolicyUpdate {
        round: usize,
    },
    FinishRound {
        round: usize,
    },
    /// A held-out pass begins (before round 1, or after `after_round`'s policy update).
    HeldoutStart {
        pass: usize,
        after_round: Option<usize>,
    },
    /// The current policy on held-out context `index`: self-edits sampled, trained, graded.
    Heldout {
        pass: usize,
        index: usize,
    },
    HeldoutFinish {
        pass: usize,
    },
    FinishRun,
    Done,
}

impl Phase {
    /// Phases that run the model; each consumes one step in step mode.
    pub fn is_work(&self) -> bool {
        matches!(
            self,
            Phase::Baseline { .. }
                | Phase::Sample { .. }
                | Phase::Train { .. }
                | Phase::Evaluate { .. }
                | Phase::Units { .. }
                | Phase::PolicyUpdate { .. }
                | Phase::Heldout { .. }
        )
    }
}

/// How many contexts there are to work on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub contexts: usize,
    /// Held-out contexts; 0 when the run has none.
    pub heldout: usize,
}

/// The next step of held-out pass `pass`, or `None` when it is finished.
fn heldout_phase(
    state: &RunState,
    pass: usize,
    after_round: Option<usize>,
    count: usize,
) -> Option<Phase> {
    let Some(h) = state.heldout.iter().find(|h| h.pass == pass) else {
        return Some(Phase::HeldoutStart { pass, after_round });
    };
    if h.summary.is_some() {
        return None;
    }
    match (0..count).find(|i| !h.contexts.iter().any(|c| c.index == *i)) {
        Some(index) => Some(Phase::Heldout { pass, index }),
        None => Some(Phase::HeldoutFinish { pass }),
    }
}

/// The evaluation repeats an edit still lacks (at its current revision).
fn missing_repeats(edit: &EditState, repeats: usize) -> Vec<usize> {
    (0..repeats)
        .filter(|r| !edit.evaluations.iter().any(|v| v.repeat == *r))
        .collect()
}

/// The data-set indices of a round's contexts: consecutive slices of the data set (shuffled
/// once with the run's seed if asked), wrapping around.
pub fn contexts_for_round(cfg: &RunConfig, total: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..total).collect();
    if cfg.task.shuffle {
        crate::engine::rng::SplitMix64::new(derive_seed(cfg.seed, &[0xC0])).shuffle(&mut order);
    }
    let n = cfg.task.contexts_per_round;
    (0..n)
        .map(|i| order[(round * n + i) % total.max(1)])
        .collect()
}

/// A seed for one piece of work, mixed from the run's seed and the work's coordinates so that a
/// resumed run redoes a phase with the same randomness.
pub fn derive_seed(base: u64, parts: &[u64]) -> u64 {
    let mut rng = crate::engine::rng::SplitMix64::new(base);
    let mut seed = rng.next_u64();
    for &p in parts {
        seed = crate::engine::rng::SplitMix64::new(seed ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .next_u64();
    }
    seed
}

/// Decides the next phase from the state alone. `trained(id, rev, repeat)` says whether an
/// adapter for that edit's revision and repeat is in memory (it is not after a resume, so the
/// finetune is redone).
///
/// Locally, a context is finished before the next starts, and its inner loops run one after
/// another. With the slurm backend, every context of the round is started, scored unadapted
/// and sampled first; then all of the round's inner loops go out as one job array (one wait in
/// the queue per round, and as many tasks at once as the cluster gives); then each edit is
/// scored and each context's selection made. The seeds depend on the work's coordinates, not
/// its order, so both give the same rewards.
pub fn plan(
    state: &RunState,
    cfg: &RunConfig,
    sizes: Sizes,
    trained: &dyn Fn(EditId, u32, usize) -> bool,
    skip_context: bool,
) -> Phase {
    let total_contexts = sizes.contexts;
    if state.finished {
        return Phase::Done;
    }
    // The policy as it starts, on the held-out contexts, before it learns anything.
    if sizes.heldout > 0 {
        if let Some(phase) = heldout_phase(state, 0, None, sizes.heldout) {
            return phase;
        }
    }
    let rounds_done = state.rounds.iter().filter(|r| r.metrics.is_some()).count();
    if rounds_done >= cfg.outer.rounds {
        return Phase::FinishRun;
    }
    let r = rounds_done;
    let Some(round) = state.rounds.get(r) else {
        return Phase::StartRound { round: r };
    };
    let batched = cfg.cluster.backend == ClusterBackend::Slurm;
    let k = cfg.self_edit.k;
    let contexts = contexts_for_round(cfg, total_contexts, r);
    if skip_context {
        // Locally the context in work is the first unfinished one; a batched round works on
        // all of them, and the newest is the one a person is looking at.
        let mut unfinished = round.contexts.iter().filter(|c| !c.finished);
        let current = if batched {
            unfinished.next_back()
        } else {
            unfinished.min_by_key(|c| c.id.ctx)
        };
        if let Some(c) = current {
            return Phase::Select { id: c.id };
        }
    }
    let mut units = Vec::new();
    let mut score = None;
    for (ci, &index) in contexts.iter().enumerate() {
        let id = CtxId { round: r, ctx: ci };
        let Some(c) = round.contexts.get(ci) else {
            return Phase::StartContext { id, index };
        };
        if c.finished {
            continue;
        }
        if c.baseline.is_none() {
            return Phase::Baseline { id, index };
        }
        for e in 0..k {
            let sampled = c.edits.get(e).is_some_and(|edit| {
                edit.sample_secs.is_some() || edit.status != EditStatus::Sampling
            });
            if !sampled {
                return Phase::Sample {
                    id: EditId::new(id, e),
                    index,
                };
            }
        }
        for (e, edit) in c.edits.iter().enumerate().take(k) {
            let eid = EditId::new(id, e);
            if edit.is_rejected() || matches!(edit.status, EditStatus::Failed | EditStatus::Scored)
            {
                continue;
            }
            if cfg.outer.approval_required && edit.decision.is_none() {
                return Phase::AwaitDecision { id: eid };
            }
            let rev = edit.revision;
            let missing = missing_repeats(edit, cfg.eval.repeats);
            let Some(&repeat) = missing.first() else {
                if batched {
                    // What is still missing goes out first (a retry waits in the queue);
                    // scoring only does arithmetic.
                    score.get_or_insert(Phase::Score { id: eid, rev });
                    continue;
                }
                return Phase::Score { id: eid, rev };
            };
            if batched {
                units.extend(missing.into_iter().map(|repeat| PlannedUnit {
                    unit: UnitId {
                        id: eid,
                        rev,
                        repeat,
                    },
                    index,
                }));
                continue;
            }
            return if edit.status == EditStatus::Evaluating && trained(eid, rev, repeat) {
                Phase::Evaluate {
                    id: eid,
                    rev,
                    index,
                    repeat,
                }
            } else {
                Phase::Train {
                    id: eid,
                    rev,
                    index,
                    repeat,
                }
            };
        }
        if !batched {
            return Phase::Select { id };
        }
    }
    if !units.is_empty() {
        return Phase::Units { round: r, units };
    }
    if let Some(phase) = score {
        return phase;
    }
    if let Some(c) = round.contexts.iter().find(|c| !c.finished) {
        return Phase::Select { id: c.id };
    }
    match round.policy.status {
        PolicyStatus::Pending | PolicyStatus::Training => Phase::PolicyUpdate { round: r },
        // The updated policy on the held-out contexts (an unchanged one would score the same).
        PolicyStatus::Updated if sizes.heldout > 0 => {
            heldout_phase(state, r + 1, Some(r), sizes.heldout)
                .unwrap_or(Phase::FinishRound { round: r })
        }
        PolicyStatus::Updated | PolicyStatus::Skipped => Phase::FinishRound { round: r },
    }
}

/// The selection rule: the best-rewarded edit, if a human has not rejected it (and approved it,
/// when approval is required) and its gain reaches the threshold. Ties go to the earlier edit.
pub fn select(state: &RunState, cfg: &RunConfig, id: CtxId) -> (Option<usize>, String) {
    let Some(c) = state.context(id) else {
        return (None, "no such context".into());
    };
    let eligible = c.edits.iter().filter(|e| {
        e.reward.is_some() && !e.is_rejected() && (!cfg.outer.approval_required || e.is_approved())
    });
    let best = eligible.fold(None::<&EditState>, |best, e| match best {
        Some(b) if b.reward >= e.reward => Some(b),
        _ => Some(e),
    });
    let label = |e: &EditState| EditId::new(id, e.index);
    match best {
        None => (None, "no eligible self-edit".into()),
        Some(e) => {
            let gain = e.gain.unwrap_or(0.0);
            if gain >= cfg.outer.min_gain {
                (
                    Some(e.index),
                    format!(
                        "kept self-edit {} (reward {:.3}, gain {:+.3})",
                        label(e),
                        e.reward.unwrap_or(0.0),
                        gain
                    ),
                )
            } else {
                (
                    None,
                    format!(
                        "best self-edit {} gains {:+.3}, below the threshold {:+.3}",
                        label(e),
                        gain,
                        cfg.outer.min_gain
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::events::{ContextBody, ContextView, Decision, Event, RoundMetrics};

    fn cfg(k: usize, repeats: usize, approval: bool) -> RunConfig {
        let mut c = RunConfig::default();
        c.self_edit.k = k;
        c.eval.repeats = repeats;
        c.outer.approval_required = approval;
        c.outer.rounds = 1;
        c.task.contexts_per_round = 1;
        c
    }

    fn view() -> ContextView {
        ContextView {
            id: "0".into(),
            title: "t".into(),
            body: ContextBody::Passage {
                text: String::new(),
            },
            questions: vec![],
        }
    }

    const C: CtxId = CtxId { round: 0, ctx: 0 };

    fn e(edit: usize) -> EditId {
        EditId::new(C, edit)
    }

    /// A state built from events, as the runner and a resume build it.
    fn state(events: Vec<Event>) -> RunState {
        RunState::from_events(events.iter())
    }

    fn started() -> Vec<Event> {
        vec![
            Event::RoundStarted {
                round: 0,
                contexts: 1,
            },
            Event::ContextStarted {
                id: C,
                context: view(),
            },
            Event::BaselineScored {
                id: C,
                results: vec![],
                accuracy: 0.25,
                secs: 0.0,
                kind: Default::default(),
            },
        ]
    }

    fn sampled(edit: usize) -> Event {
        Event::EditSampled {
            id: e(edit),
            text: format!("edit {edit}"),
            tokens: 1,
            secs: 0.0,
        }
    }

    fn trained_done(edit: usize, rev: u32) -> Event {
        Event::TrainFinished {
            id: e(edit),
            rev,
            repeat: 0,
            steps: 1,
            final_loss: 0.0,
            secs: 0.0,
        }
    }

    fn scored(edit: usize, rev: u32, reward: f64) -> Event {
        Event::EditScored {
            id: e(edit),
            rev,
            reward,
            gain: reward - 0.25,
        }
    }

    fn sizes(contexts: usize) -> Sizes {
        Sizes {
            contexts,
            heldout: 0,
        }
    }

    fn never(_: EditId, _: u32, _: usize) -> bool {
        false
    }

    fn always(_: EditId, _: u32, _: usize) -> bool {
        true
    }

    #[test]
    fn the_loop_walks_its_phases_in_order() {
        let c = cfg(2, 1, false);
        let mut events = vec![];
        let expect = |events: &Vec<Event>, phase: Phase| {
            assert_eq!(
                plan(&state(events.clone()), &c, sizes(3), &never, false),
                phase
            );
        };
        expect(&events, Phase::StartRound { round: 0 });
        events.push(Event::RoundStarted {
            round: 0,
            contexts: 1,
        });
        expect(&events, Phase::StartContext { id: C, index: 0 });
        events.push(Event::ContextStarted {
            id: C,
            context: view(),
        });
        expect(&events, Phase::Baseline { id: C, index: 0 });
        events.extend(started().into_iter().skip(2));
        expect(&events, Phase::Sample { id: e(0), index: 0 });
        events.push(sampled(0));
        expect(&events, Phase::Sample { id: e(1), index: 0 });
        events.push(sampled(1));
        let train0 = Phase::Train {
            id: e(0),
            rev: 0,
            index: 0,
            repeat: 0,
        };
        expect(&events, train0.clone());
        events.push(trained_done(0, 0));
        // Trained but the adapter is not in memory (a resume): train again.
        expect(&events, train0);
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(3), &always, false),
            Phase::Evaluate {
                id: e(0),
                rev: 0,
                index: 0,
                repeat: 0
            }
        );
        events.push(Event::EditEvaluated {
            id: e(0),
            rev: 0,
            repeat: 0,
            results: vec![],
            accuracy: 0.5,
            secs: 0.0,
        });
        expect(&events, Phase::Score { id: e(0), rev: 0 });
        events.push(scored(0, 0, 0.5));
        events.push(Event::TrainFailed {
            id: e(1),
            rev: 0,
            message: "nan".into(),
        });
        expect(&events, Phase::Select { id: C });
        events.push(Event::ContextFinished {
            id: C,
            kept: Some(0),
            reason: String::new(),
        });
        expect(&events, Phase::PolicyUpdate { round: 0 });
        events.push(Event::PolicySkipped {
            round: 0,
            reason: String::new(),
        });
        expect(&events, Phase::FinishRound { round: 0 });
        events.push(Event::RoundFinished {
            round: 0,
            metrics: RoundMetrics::default(),
        });
        expect(&events, Phase::FinishRun);
        events.push(Event::RunFinished { secs: 1.0 });
        expect(&events, Phase::Done);
    }

    #[test]
    fn approval_mode_waits_and_rejected_edits_are_skipped() {
        let c = cfg(2, 1, true);
        let mut events = started();
        events.extend([sampled(0), sampled(1)]);
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(1), &never, false),
            Phase::AwaitDecision { id: e(0) }
        );
        events.push(Event::EditDecision {
            id: e(0),
            decision: Decision::Rejected,
        });
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(1), &never, false),
            Phase::AwaitDecision { id: e(1) }
        );
        events.push(Event::EditDecision {
            id: e(1),
            decision: Decision::Approved,
        });
        assert!(matches!(
            plan(&state(events), &c, sizes(1), &never, false),
            Phase::Train { id, .. } if id == e(1)
        ));
    }

    #[test]
    fn an_edit_supersedes_work_on_the_old_text() {
        let c = cfg(1, 1, false);
        let mut events = started();
        events.push(sampled(0));
        events.push(trained_done(0, 0));
        events.push(Event::EditDecision {
            id: e(0),
            decision: Decision::Edited {
                text: "better".into(),
            },
        });
        // The old adapter finished after the edit: ignored, and the new text is trained.
        events.push(trained_done(0, 0));
        events.push(scored(0, 0, 1.0));
        let s = state(events);
        assert_eq!(s.edit(e(0)).unwrap().reward, None);
        assert_eq!(
            plan(&s, &c, sizes(1), &|_, rev, _| rev == 0, false),
            Phase::Train {
                id: e(0),
                rev: 1,
                index: 0,
                repeat: 0
            }
        );
    }

    #[test]
    fn repeats_train_again_and_skip_goes_to_selection() {
        let c = cfg(1, 2, false);
        let mut events = started();
        events.push(sampled(0));
        events.push(trained_done(0, 0));
        events.push(Event::EditEvaluated {
            id: e(0),
            rev: 0,
            repeat: 0,
            results: vec![],
            accuracy: 0.5,
            secs: 0.0,
        });
        let s = state(events);
        assert_eq!(
            plan(&s, &c, sizes(1), &never, false),
            Phase::Train {
                id: e(0),
                rev: 0,
                index: 0,
                repeat: 1
            }
        );
        assert_eq!(
            plan(&s, &c, sizes(1), &never, true),
            Phase::Select { id: C }
        );
    }

    /// (rewards, gains, decisions, approval, threshold) -> kept
    #[test]
    fn selection_table() {
        type Case = (
            Vec<Option<f64>>,
            Vec<Option<Decision>>,
            bool,
            f64,
            Option<usize>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![Some(0.5), Some(0.75)],
                vec![None, None],
                false,
                0.01,
                Some(1),
            ),
            // Ties keep the earlier edit.
            (
                vec![Some(0.75), Some(0.75)],
                vec![None, None],
                false,
                0.01,
                Some(0),
            ),
            // The best is rejected: the next best.
            (
                vec![Some(0.5), Some(0.75)],
                vec![None, Some(Decision::Rejected)],
                false,
                0.01,
                Some(0),
            ),
            // Below the threshold (gain = reward - 0.25).
            (vec![Some(0.25)], vec![None], false, 0.01, None),
            // Approval required: only approved (or edited) ones.
            (
                vec![Some(0.5), Some(0.75)],
                vec![Some(Decision::Approved), None],
                true,
                0.01,
                Some(0),
            ),
            (vec![None, None], vec![None, None], false, 0.0, None),
        ];
        for (i, (rewards, decisions, approval, threshold, kept)) in cases.into_iter().enumerate() {
            let mut c = cfg(rewards.len(), 1, approval);
            c.outer.min_gain = threshold;
            let mut events = started();
            for (ei, (reward, decision)) in rewards.iter().zip(&decisions).enumerate() {
                events.push(sampled(ei));
                if let Some(d) = decision {
                    events.push(Event::EditDecision {
                        id: e(ei),
                        decision: d.clone(),
                    });
                }
                if let Some(r) = reward {
                    let rev = u32::from(matches!(decision, Some(Decision::Edited { .. })));
                    events.push(scored(ei, rev, *r));
                }
            }
            let (got, reason) = select(&state(events), &c, C);
            assert_eq!(got, kept, "case {i}: {reason}");
        }
    }

    #[test]
    fn heldout_passes_come_before_round_one_and_after_each_update() {
        use crate::record::HeldoutSummary;
        let c = cfg(1, 1, false);
        let sz = Sizes {
            contexts: 1,
            heldout: 2,
        };
        let p = |events: &Vec<Event>| plan(&state(events.clone()), &c, sz, &never, false);
        let mut events = vec![];
        assert_eq!(
            p(&events),
            Phase::HeldoutStart {
                pass: 0,
                after_round: None
            }
        );
        events.push(Event::HeldoutStarted {
            pass: 0,
            after_round: None,
            contexts: 2,
        });
        let scored = |pass, index| Event::HeldoutScored {
            pass,
            index,
            title: "h".into(),
            questions: 1,
            baseline: 0.0,
            edits: vec![],
            secs: 0.0,
        };
        assert_eq!(p(&events), Phase::Heldout { pass: 0, index: 0 });
        events.push(scored(0, 0));
        assert_eq!(p(&events), Phase::Heldout { pass: 0, index: 1 });
        events.push(scored(0, 1));
        assert_eq!(p(&events), Phase::HeldoutFinish { pass: 0 });
        events.push(Event::HeldoutFinished {
            pass: 0,
            summary: HeldoutSummary::default(),
        });
        // A finished pass is never redone; the round starts.
        assert_eq!(p(&events), Phase::StartRound { round: 0 });
        events.extend(started());
        events.push(sampled(0));
        events.push(scored_edit(0));
        events.push(Event::ContextFinished {
            id: C,
            kept: Some(0),
            reason: String::new(),
        });
        assert_eq!(p(&events), Phase::PolicyUpdate { round: 0 });
        // An updated policy is measured again before the round closes...
        let mut updated = events.clone();
        updated.push(Event::PolicyUpdated {
            round: 0,
            adapter: "a".into(),
            secs: 0.0,
        });
        assert_eq!(
            p(&updated),
            Phase::HeldoutStart {
                pass: 1,
                after_round: Some(0)
            }
        );
        // ...an unchanged one is not.
        events.push(Event::PolicySkipped {
            round: 0,
            reason: String::new(),
        });
        assert_eq!(p(&events), Phase::FinishRound { round: 0 });
    }

    fn scored_edit(edit: usize) -> Event {
        scored(edit, 0, 0.5)
    }

    #[test]
    fn a_batched_round_samples_every_context_then_sends_all_its_units_at_once() {
        let mut c = cfg(2, 2, false);
        c.cluster.backend = ClusterBackend::Slurm;
        c.task.contexts_per_round = 2;
        let c1 = CtxId { round: 0, ctx: 1 };
        let mut events = started();
        events.extend([sampled(0), sampled(1)]);
        // Not the first context's finetunes: the second context first.
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(3), &never, false),
            Phase::StartContext { id: c1, index: 1 }
        );
        events.push(Event::ContextStarted {
            id: c1,
            context: view(),
        });
        events.push(Event::BaselineScored {
            id: c1,
            results: vec![],
            accuracy: 0.0,
            secs: 0.0,
            kind: Default::default(),
        });
        for edit in 0..2 {
            events.push(Event::EditSampled {
                id: EditId::new(c1, edit),
                text: "t".into(),
                tokens: 1,
                secs: 0.0,
            });
        }
        let Phase::Units { round: 0, units } =
            plan(&state(events.clone()), &c, sizes(3), &never, false)
        else {
            panic!("expected the round's units");
        };
        // 2 contexts x 2 edits x 2 repeats, each with its context's data index.
        assert_eq!(units.len(), 8);
        assert!(units.iter().all(|u| u.index == u.unit.id.ctx));
        // Results come back in any order; what is still missing goes out, then scoring.
        let evaluated = |u: &PlannedUnit| Event::EditEvaluated {
            id: u.unit.id,
            rev: u.unit.rev,
            repeat: u.unit.repeat,
            results: vec![],
            accuracy: 0.5,
            secs: 0.0,
        };
        events.extend(units.iter().skip(1).rev().map(evaluated));
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(3), &never, false),
            Phase::Units {
                round: 0,
                units: vec![units[0]]
            }
        );
        events.push(evaluated(&units[0]));
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(3), &never, false),
            Phase::Score { id: e(0), rev: 0 }
        );
        for (ctx, edit) in [(C, 0), (C, 1), (c1, 0), (c1, 1)] {
            events.push(Event::EditScored {
                id: EditId::new(ctx, edit),
                rev: 0,
                reward: 0.5,
                gain: 0.0,
            });
        }
        assert_eq!(
            plan(&state(events.clone()), &c, sizes(3), &never, false),
            Phase::Select { id: C }
        );
        // "Finish the context now" in a batched round finishes the newest one.
        assert_eq!(
            plan(&state(events), &c, sizes(3), &never, true),
            Phase::Select { id: c1 }
        );
    }

    #[test]
    fn contexts_cycle_and_shuffle_with_the_seed() {
        let mut c = cfg(1, 1, false);
        c.task.contexts_per_round = 2;
        assert_eq!(contexts_for_round(&c, 3, 0), vec![0, 1]);
        assert_eq!(contexts_for_round(&c, 3, 1), vec![2, 0]);
        c.task.shuffle = true;
        let a = contexts_for_round(&c, 10, 0);
        assert_eq!(a, contexts_for_round(&c, 10, 0));
        c.seed = 1;
        assert_ne!(a, contexts_for_round(&c, 10, 0));
    }

    #[test]
    fn seeds_differ_by_coordinate_and_repeat_exactly() {
        assert_eq!(derive_seed(1, &[0, 1, 2]), derive_seed(1, &[0, 1, 2]));
        assert_ne!(derive_seed(1, &[0, 1, 2]), derive_seed(1, &[0, 2, 1]));
        assert_ne!(derive_seed(1, &[0]), derive_seed(2, &[0]));
    }
}
