//! Running one phase on the model: sampling a self-edit, the inner finetune, evaluation,
//! scoring, selection and the policy update. Each phase reports itself as events; what it keeps
//! in memory between phases (the policy, adapters not yet evaluated) is the [`Work`].

use super::control::Control;
use super::domain::{Domain, Scored};
use super::emitter::Emitter;
use super::plan::{derive_seed, select, Phase};
use super::settings;
use crate::engine::sample::generate_constrained;
use crate::engine::train::{train_lora, Example, TrainError, TrainEvent, TrainOutcome};
use crate::engine::{peft, LoraAdapter, Model, StopReason};
use crate::record::config::{ClusterBackend, RunConfig, SaveAdapters};
use crate::record::metrics::{heldout_summary, mean, round_metrics};
use crate::record::{BaselineKind, CtxId, EditId, Event, HeldoutEdit, TrainProgress, UnitId};
use crate::session;
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// What the runner keeps in memory between phases.
pub struct Work {
    pub policy: Model,
    pub domain: Box<dyn Domain>,
    /// The held-out contexts, as a domain of their own (none when the run has none).
    pub heldout: Option<Box<dyn Domain>>,
    /// Adapters trained but not yet evaluated, by edit, revision and repeat.
    pub adapters: HashMap<(EditId, u32, usize), LoraAdapter>,
    /// The last adapter of each edit, until its context's selection.
    pub last_adapter: HashMap<EditId, LoraAdapter>,
    /// The served policy self-edits are sampled from, when not this process's.
    pub served: Option<super::served::Served>,
}

impl Work {
    pub fn trained(&self, id: EditId, rev: u32, repeat: usize) -> bool {
        self.adapters.contains_key(&(id, rev, repeat))
    }
}

/// Everything a phase may read or report to.
pub struct Env<'a> {
    pub cfg: &'a RunConfig,
    pub dir: &'a Path,
    pub emitter: &'a Emitter,
    pub control: &'a Control,
}

/// The error a phase returns when its work was cancelled on purpose.
pub fn cancelled() -> anyhow::Error {
    anyhow!("cancelled")
}

pub fn execute(phase: &Phase, env: &Env<'_>, work: &mut Work) -> Result<()> {
    let Env {
        cfg,
        dir,
        emitter,
        control,
    } = *env;
    let cancel = &control.cancel;
    match *phase {
        Phase::StartRound { round } => emitter.emit(Event::RoundStarted {
            round,
            contexts: cfg.task.contexts_per_round,
        }),
        Phase::StartContext { id, index } => {
            // Written while the passage is still shown to the model, and before the view, which
            // shows them when they are what is graded.
            let written = work.domain.prepare_context(&work.policy, index, cancel)?;
            emitter.emit(Event::ContextStarted {
                id,
                context: work.domain.view(index),
            })?;
            match written {
                Some(questions) => emitter.emit(Event::QuestionsWritten { id, questions }),
                None => Ok(()),
            }
        }
        Phase::Baseline { id, index } => {
            // Normally a no-op: the questions were written when the context started (a crash
            // in between leaves them to write now).
            if let Some(questions) = work.domain.prepare_context(&work.policy, index, cancel)? {
                emitter.emit(Event::QuestionsWritten { id, questions })?;
            }
            let (s, kind) = score_baseline(id, index, env, work)?;
            if let Some(check) = s.self_check {
                emitter.emit(Event::SelfChecked {
                    id,
                    edit: None,
                    rev: 0,
                    repeat: 0,
                    check,
                })?;
            }
            emitter.emit(Event::BaselineScored {
                id,
                results: s.results,
                accuracy: s.accuracy,
                secs: s.secs,
                kind,
            })
        }
        Phase::Sample { id, index } => sample(id, index, env, work),
        Phase::Train {
            id,
            rev,
            index,
            repeat,
        } => train(id, rev, index, repeat, env, work),
        Phase::Evaluate {
            id,
            rev,
            index,
            repeat,
        } => {
            let adapter = work
                .adapters
                .get(&(id, rev, repeat))
                .context("the adapter to evaluate is gone")?;
            let s = work.domain.evaluate(&work.policy, adapter, index, cancel)?;
            // Before the evaluation, which closes the phase: a resume never sees one without it.
            if let Some(check) = s.self_check {
                emitter.emit(Event::SelfChecked {
                    id: id.ctx_id(),
                    edit: Some(id),
                    rev,
                    repeat,
                    check,
                })?;
            }
            emitter.emit(Event::EditEvaluated {
                id,
                rev,
                repeat,
                results: s.results,
                accuracy: s.accuracy,
                secs: s.secs,
            })?;
            if let Some(a) = work.adapters.remove(&(id, rev, repeat)) {
                work.last_adapter.insert(id, a);
            }
            Ok(())
        }
        Phase::Units { round, ref units } => super::dispatch::run_units(round, units, env),
        Phase::Score { id, rev } => {
            let (accuracies, base) = emitter.with_state(|s| {
                let accs: Vec<f64> = s
                    .edit(id)
                    .map(|e| e.evaluations.iter().map(|v| v.accuracy).collect())
                    .unwrap_or_default();
                let base = s
                    .context(id.ctx_id())
                    .and_then(|c| c.baseline.as_ref())
                    .map_or(0.0, |b| b.accuracy);
                (accs, base)
            });
            let reward = mean(&accuracies).unwrap_or(0.0);
            emitter.emit(Event::EditScored {
                id,
                rev,
                reward,
                gain: work.domain.gain_rule().gain(reward, base),
            })
        }
        Phase::Select { id } => {
            let (kept, reason) = emitter.with_state(|s| select(s, cfg, id));
            if cfg.cluster.backend == ClusterBackend::Slurm {
                emitter.with_state(|s| super::dispatch::keep_adapters(dir, s, cfg, id, kept));
                return emitter.emit(Event::ContextFinished { id, kept, reason });
            }
            let save = |eid: EditId, a: &LoraAdapter| {
                peft::save_adapter(
                    a,
                    &session::edit_adapter_dir(dir, eid),
                    &work.policy.info.name,
                )
            };
            match cfg.outer.save_adapters {
                SaveAdapters::None => {}
                SaveAdapters::Kept => {
                    if let Some(eid) = kept.map(|k| EditId::new(id, k)) {
                        if let Some(a) = work.last_adapter.get(&eid) {
                            save(eid, a)?;
                        }
                    }
                }
                SaveAdapters::All => {
                    for (eid, a) in work.last_adapter.iter().filter(|(e, _)| e.ctx_id() == id) {
                        save(*eid, a)?;
                    }
                }
            }
            work.last_adapter.retain(|e, _| e.ctx_id() != id);
            work.adapters.retain(|(e, _, _), _| e.ctx_id() != id);
            emitter.emit(Event::ContextFinished { id, kept, reason })
        }
        Phase::PolicyUpdate { round } => policy_update(round, env, work),
        Phase::FinishRound { round } => {
            let metrics = emitter.with_state(|s| {
                let rule = s.info.as_ref().map(|i| i.gain_rule).unwrap_or_default();
                s.rounds
                    .get(round)
                    .map(|r| round_metrics(r, rule))
                    .unwrap_or_default()
            });
            emitter.emit(Event::RoundFinished { round, metrics })
        }
        Phase::HeldoutStart { pass, after_round } => emitter.emit(Event::HeldoutStarted {
            pass,
            after_round,
            contexts: work.heldout.as_ref().map_or(0, |d| d.num_contexts()),
        }),
        Phase::Heldout { pass, index } => heldout(pass, index, env, work),
        Phase::HeldoutFinish { pass } => {
            let summary = emitter.with_state(|s| {
                s.heldout
                    .iter()
                    .find(|h| h.pass == pass)
                    .map(heldout_summary)
                    .unwrap_or_default()
            });
            emitter.emit(Event::HeldoutFinished { pass, summary })
        }
        Phase::FinishRun => emitter.emit(Event::RunFinished {
            secs: emitter.elapsed(),
        }),
        Phase::AwaitDecision { .. } | Phase::Done => Ok(()),
    }
}

/// The finetune settings of one inner loop, its seed mixed from the unit's coordinates: the
/// same whether it runs in this process or as a worker on a cluster.
pub fn unit_train_config(cfg: &RunConfig, unit: UnitId) -> crate::engine::train::TrainConfig {
    let UnitId { id, rev, repeat } = unit;
    crate::engine::train::TrainConfig {
        seed: derive_seed(
            cfg.seed,
            &[
                1,
                id.round as u64,
                id.ctx as u64,
                id.edit as u64,
                repeat as u64,
                u64::from(rev),
            ],
        ),
        ..settings::train_config(&cfg.inner)
    }
}

/// The policy updates recorded so far (session-relative adapter folders), oldest first.
pub fn recorded_policy_updates(state: &crate::record::RunState) -> Vec<String> {
    state
        .rounds
        .iter()
        .filter_map(|r| r.policy.adapter.clone())
        .collect()
}

/// The model with these policy updates merged in, in order: how a resumed run and a worker
/// rebuild the policy a live run holds in memory.
pub fn apply_policy_updates(mut model: Model, dir: &Path, updates: &[String]) -> Result<Model> {
    for (n, rel) in updates.iter().enumerate() {
        let adapter = peft::load_adapter(&dir.join(rel), &model)
            .with_context(|| format!("cannot reload policy update {} ({rel})", n + 1))?;
        let merged = model.transformer.merged(&adapter)?;
        model = model.with_transformer(merged);
    }
    Ok(model)
}

/// The engine's progress report as recorded.
pub fn progress(p: &crate::engine::train::StepProgress) -> TrainProgress {
    TrainProgress {
        step: p.step,
        total_steps: p.total_steps,
        epoch: p.epoch,
        loss: p.loss,
        learning_rate: p.learning_rate,
        grad_norm: p.grad_norm,
        tokens_per_sec: p.tokens_per_sec,
        elapsed_secs: p.elapsed_secs,
        eta_secs: p.eta_secs,
    }
}

/// What a person should read when training sequences were cut to the length limit, which the
/// setting `field` sets.
pub fn truncation_note(e: &TrainEvent, field: &str) -> Option<String> {
    let TrainEvent::Truncated {
        rows,
        of,
        longest,
        max_seq_len,
        prompt_starts,
    } = e
    else {
        return None;
    };
    let how = match prompt_starts {
        true => "their prompts lost their starts so that their completions are learnt whole",
        false => "their ends are not learnt",
    };
    Some(format!(
        "{rows} of {of} training sequences are longer than {field} = {max_seq_len} tokens (the \
         longest has {longest}) and were cut to it; {how}"
    ))
}

/// A context's baseline as the run asks for it. When training on the context alone fails (a
/// diverged finetune) the baseline is the unadapted model, with a warning, and the event says so:
/// the run goes on and the log never claims what was not measured.
fn score_baseline(
    id: CtxId,
    index: usize,
    env: &Env<'_>,
    work: &Work,
) -> Result<(Scored, BaselineKind)> {
    let cancel = &env.control.cancel;
    if env.cfg.outer.baseline == BaselineKind::ContextOnly {
        let start = Instant::now();
        env.emitter.emit(Event::Status {
            message: format!("{id}: training on the context alone, for its baseline"),
        })?;
        let train = crate::engine::train::TrainConfig {
            seed: derive_seed(env.cfg.seed, &[7, id.round as u64, id.ctx as u64]),
            ..settings::train_config(&env.cfg.inner)
        };
        let failure = match work
            .domain
            .train_on_context(&work.policy, index, &train, cancel)
        {
            Some(Ok(o)) => {
                let mut s = work
                    .domain
                    .evaluate(&work.policy, &o.adapter, index, cancel)?;
                s.secs = start.elapsed().as_secs_f64();
                return Ok((s, BaselineKind::ContextOnly));
            }
            Some(Err(TrainError::Cancelled)) => return Err(cancelled()),
            Some(Err(e)) => e.to_string(),
            None => format!(
                "the {} domain cannot train on a context alone",
                work.domain.name()
            ),
        };
        env.emitter.emit(Event::Warning {
            message: format!("{id}: training on the context alone failed ({failure}); its baseline is the unadapted model"),
        })?;
    }
    Ok((
        work.domain.baseline(&work.policy, index, cancel)?,
        BaselineKind::Unadapted,
    ))
}

/// Runs a finetune whose progress becomes events. An event that cannot be recorded fails the
/// phase: the log is the truth, and a gap in it would be a lie.
fn train_with_events<T>(
    emitter: &Emitter,
    to_event: impl Fn(&TrainEvent) -> Option<Event>,
    run: impl FnOnce(&mut dyn FnMut(&TrainEvent)) -> T,
) -> Result<T> {
    let mut failure = None;
    let out = run(&mut |e| {
        if let Some(event) = to_event(e) {
            if let Err(err) = emitter.emit(event) {
                failure.get_or_insert(err);
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn train(
    id: EditId,
    rev: u32,
    index: usize,
    repeat: usize,
    env: &Env<'_>,
    work: &mut Work,
) -> Result<()> {
    let emitter = env.emitter;
    let cfg = env.cfg;
    // The text of the revision planned; a newer one (an edit landing now) is trained next.
    let text = emitter
        .with_state(|s| {
            s.edit(id)
                .filter(|e| e.revision == rev)
                .map(|e| e.text.clone())
        })
        .ok_or_else(cancelled)?;
    let unit = UnitId { id, rev, repeat };
    let train = unit_train_config(cfg, unit);
    let outcome: std::result::Result<TrainOutcome, TrainError> = train_with_events(
        emitter,
        |e| match e {
            TrainEvent::Started {
                total_steps,
                examples,
                tokens,
                ..
            } => Some(Event::TrainStarted {
                id,
                rev,
                repeat,
                total_steps: *total_steps,
                examples: *examples,
                tokens: *tokens,
            }),
            TrainEvent::Step(p) => Some(Event::TrainStep {
                id,
                rev,
                repeat,
                progress: progress(p),
            }),
            TrainEvent::Truncated { .. } => Some(Event::Warning {
                message: format!("{id}: {}", truncation_note(e, "inner.max_seq_len")?),
            }),
            TrainEvent::Failed { .. } => None,
        },
        |on_event| {
            work.domain.apply(
                &work.policy,
                index,
                &text,
                &train,
                &env.control.cancel,
                on_event,
            )
        },
    )?;
    match outcome {
        Ok(o) => {
            let final_loss = o.losses.last().copied().unwrap_or(f64::NAN);
            emitter.emit(Event::TrainFinished {
                id,
                rev,
                repeat,
                steps: o.steps,
                final_loss,
                secs: o.secs,
            })?;
            work.adapters.insert((id, rev, repeat), o.adapter);
            Ok(())
        }
        Err(TrainError::Cancelled) => Err(cancelled()),
        Err(e) => emitter.emit(Event::TrainFailed {
            id,
            rev,
            message: e.to_string(),
        }),
    }
}

fn sample(id: EditId, index: usize, env: &Env<'_>, work: &mut Work) -> Result<()> {
    let Env {
        cfg,
        emitter,
        control,
        ..
    } = *env;
    let Some(prompt) = work.domain.self_edit_prompt(&work.policy, index)? else {
        // A strategy that samples nothing trains on the context alone.
        emitter.emit(Event::EditSampling {
            id,
            prompt: String::new(),
        })?;
        return emitter.emit(Event::EditSampled {
            id,
            text: String::new(),
            tokens: 0,
            secs: 0.0,
        });
    };
    let ids = work.policy.tokenizer.encode(&prompt)?;
    let request = work.domain.self_edit_request(index).unwrap_or_default();
    let updates = emitter.with_state(recorded_policy_updates);
    let attempts = 1 + work.domain.max_resamples();
    for attempt in 0..attempts {
        let seed = derive_seed(
            cfg.seed,
            &[
                2,
                id.round as u64,
                id.ctx as u64,
                id.edit as u64,
                attempt as u64,
            ],
        );
        let params = work
            .domain
            .self_edit_sampling(&settings::self_edit_sampling(cfg, seed));
        emitter.emit(Event::EditSampling {
            id,
            prompt: prompt.clone(),
        })?;
        let start = Instant::now();
        let mut emit_err = None;
        let mut on_piece = |piece: &str| {
            if let Err(e) = emitter.emit(Event::EditToken {
                id,
                piece: piece.to_string(),
            }) {
                emit_err.get_or_insert(e);
            }
        };
        let sampled = match work.served.as_mut() {
            None => {
                let gen = generate_constrained(
                    &work.policy,
                    None,
                    &ids,
                    &params,
                    work.domain.self_edit_constraint(),
                    Some(&control.cancel),
                    &mut on_piece,
                )?;
                (gen.stop != StopReason::Cancelled).then_some((gen.text, gen.tokens.len()))
            }
            Some(served) => served
                .sample(
                    env.dir,
                    &work.policy,
                    &updates,
                    &request,
                    &prompt,
                    &params,
                    &control.cancel,
                    &mut on_piece,
                )?
                .map(|s| (s.text, s.tokens)),
        };
        if let Some(e) = emit_err {
            return Err(e);
        }
        let Some((text, tokens)) = sampled else {
            return Err(cancelled());
        };
        let usable = work.domain.check_self_edit(index, &text);
        if let Err(why) = &usable {
            emitter.emit(Event::Warning {
                message: format!("self-edit {id} attempt {} is unusable: {why}", attempt + 1),
            })?;
            if attempt + 1 < attempts {
                continue;
            }
        }
        emitter.emit(Event::EditSampled {
            id,
            text,
            tokens,
            secs: start.elapsed().as_secs_f64(),
        })?;
        if let Err(why) = usable {
            // Out of attempts: the edit is scored as invalid (reward 0) without training.
            emitter.emit(Event::TrainFailed {
                id,
                rev: 0,
                message: format!("invalid self-edit: {why}"),
            })?;
        }
        return Ok(());
    }
    Ok(())
}

/// Samples one self-edit for context `index` of `domain` from the policy, drawing again while
/// the domain finds it unusable (up to its resample budget); the text and why it is unusable.
fn sample_self_edit(
    domain: &dyn Domain,
    policy: &Model,
    index: usize,
    cfg: &RunConfig,
    seed_parts: &[u64],
    control: &Control,
) -> Result<(String, Option<String>)> {
    let Some(prompt) = domain.self_edit_prompt(policy, index)? else {
        return Ok((String::new(), None));
    };
    let ids = policy.tokenizer.encode(&prompt)?;
    let attempts = 1 + domain.max_resamples();
    let mut last = (String::new(), None);
    for attempt in 0..attempts {
        let mut parts = seed_parts.to_vec();
        parts.push(attempt as u64);
        let params = domain.self_edit_sampling(&settings::self_edit_sampling(
            cfg,
            derive_seed(cfg.seed, &parts),
        ));
        let gen = generate_constrained(
            policy,
            None,
            &ids,
            &params,
            domain.self_edit_constraint(),
            Some(&control.cancel),
            &mut |_| {},
        )?;
        if gen.stop == StopReason::Cancelled {
            return Err(cancelled());
        }
        match domain.check_self_edit(index, &gen.text) {
            Ok(()) => return Ok((gen.text, None)),
            Err(why) => last = (gen.text, Some(why)),
        }
    }
    Ok(last)
}

/// The current policy on one held-out context: its unadapted score, then each self-edit it
/// writes trained into a fresh adapter and graded, exactly as the inner loop does.
fn heldout(pass: usize, index: usize, env: &Env<'_>, work: &mut Work) -> Result<()> {
    let Env {
        cfg,
        emitter,
        control,
        ..
    } = *env;
    let start = Instant::now();
    let domain = work
        .heldout
        .as_deref()
        .context("the run has no held-out contexts")?;
    let view = domain.view(index);
    emitter.emit(Event::Status {
        message: format!(
            "held-out pass {}: context {} of {} ({})",
            pass + 1,
            index + 1,
            domain.num_contexts(),
            view.title
        ),
    })?;
    let base = domain.baseline(&work.policy, index, &control.cancel)?;
    let mut edits = Vec::with_capacity(cfg.heldout.k);
    for e in 0..cfg.heldout.k {
        let parts = [5, pass as u64, index as u64, e as u64];
        let (text, unusable) = sample_self_edit(domain, &work.policy, index, cfg, &parts, control)?;
        if let Some(why) = unusable {
            edits.push(HeldoutEdit {
                text,
                accuracy: 0.0,
                results: Vec::new(),
                note: Some(format!("invalid self-edit: {why}")),
            });
            continue;
        }
        let train = crate::engine::train::TrainConfig {
            seed: derive_seed(cfg.seed, &[6, pass as u64, index as u64, e as u64]),
            ..settings::train_config(&cfg.inner)
        };
        let outcome = domain.apply(
            &work.policy,
            index,
            &text,
            &train,
            &control.cancel,
            &mut |_| {},
        );
        match outcome {
            Ok(o) => {
                let s = domain.evaluate(&work.policy, &o.adapter, index, &control.cancel)?;
                edits.push(HeldoutEdit {
                    text,
                    accuracy: s.accuracy,
                    results: s.results,
                    note: None,
                });
            }
            Err(TrainError::Cancelled) => return Err(cancelled()),
            Err(e) => edits.push(HeldoutEdit {
                text,
                accuracy: 0.0,
                results: Vec::new(),
                note: Some(format!("the finetune failed: {e}")),
            }),
        }
    }
    emitter.emit(Event::HeldoutScored {
        pass,
        index,
        title: view.title,
        questions: view.questions.len(),
        baseline: base.accuracy,
        edits,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn policy_update(round: usize, env: &Env<'_>, work: &mut Work) -> Result<()> {
    let Env {
        cfg,
        dir,
        emitter,
        control,
    } = *env;
    // (prompt, kept self-edit) of every context of the round; an edited text is what a human
    // wanted the model to write, so it is what gets reinforced.
    let pairs: Vec<(String, String)> = emitter.with_state(|s| {
        s.rounds
            .get(round)
            .map(|r| {
                r.contexts
                    .iter()
                    .filter_map(|c| c.kept.and_then(|k| c.edits.get(k)))
                    .filter(|e| !e.prompt.is_empty() && !e.text.trim().is_empty())
                    .map(|e| (e.prompt.clone(), e.text.clone()))
                    .collect()
            })
            .unwrap_or_default()
    });
    if pairs.is_empty() {
        return emitter.emit(Event::PolicySkipped {
            round,
            reason: "no self-edit was kept this round".into(),
        });
    }
    // The recorded prompt is already in the policy's markup; the reply is closed the way the
    // model closes its turns.
    let examples: Vec<Example> = pairs
        .iter()
        .map(|(p, t)| {
            Ok(Example {
                prompt: work.policy.tokenizer.encode(p)?,
                completion: work.policy.reply_ids(t)?,
            })
        })
        .collect::<Result<_>>()?;
    let train = crate::engine::train::TrainConfig {
        seed: derive_seed(cfg.seed, &[3, round as u64]),
        ..settings::train_config(&cfg.policy.train)
    };
    let start = Instant::now();
    let pairs_count = examples.len();
    let outcome = train_with_events(
        emitter,
        |e| match e {
            TrainEvent::Started { total_steps, .. } => Some(Event::PolicyUpdateStarted {
                round,
                pairs: pairs_count,
                total_steps: *total_steps,
            }),
            TrainEvent::Step(p) => Some(Event::PolicyStep {
                round,
                progress: progress(p),
            }),
            TrainEvent::Truncated { .. } => Some(Event::Warning {
                message: format!(
                    "round {} policy update: {}",
                    round + 1,
                    truncation_note(e, "policy.train.max_seq_len")?
                ),
            }),
            TrainEvent::Failed { .. } => None,
        },
        |on_event| {
            train_lora(
                &work.policy,
                &examples,
                &train,
                Some(&control.cancel),
                on_event,
            )
        },
    )?;
    let outcome = match outcome {
        Ok(o) => o,
        Err(TrainError::Cancelled) => return Err(cancelled()),
        Err(e) => {
            return emitter.emit(Event::PolicySkipped {
                round,
                reason: format!("the policy finetune failed: {e}"),
            })
        }
    };
    let adapter_dir = session::policy_dir(dir, round);
    peft::save_adapter(&outcome.adapter, &adapter_dir, &work.policy.info.name)?;
    let merged = work.policy.transformer.merged(&outcome.adapter)?;
    work.policy = work.policy.with_transformer(merged);
    if cfg.policy.save_merged {
        crate::engine::load::save_hf_folder(&work.policy, &adapter_dir.join("merged"))?;
    }
    let rel = adapter_dir
        .strip_prefix(dir)
        .unwrap_or(&adapter_dir)
        .display()
        .to_string();
    emitter.emit(Event::PolicyUpdated {
        round,
        adapter: rel,
        secs: start.elapsed().as_secs_f64(),
    })
}
