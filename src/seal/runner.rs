//! The ReSTEM outer loop as an event-sourced state machine.
//!
//! The runner keeps a [`RunState`] folded from every event it emits. Before each phase it asks
//! [`plan`] what comes next *from that state alone*, so a fresh run and a resumed one (whose
//! state is the fold of its log) follow the same path. Human commands arrive on another thread,
//! which records decisions at once and steers the runner through a shared [`Control`].

use super::config::{derive_seed, RunConfig, SaveAdapters};
use super::domain::Domain;
use super::events::{CtxId, Decision, EditId, Event, Record, RoundMetrics, RunInfo, RunMode};
use super::state::{EditStatus, PolicyStatus, RunState};
use super::Command;
use crate::engine::sample::generate;
use crate::engine::train::{train_lora, Example, TrainError, TrainEvent};
use crate::engine::{peft, LoraAdapter, Model};
use crate::session::{self, Header, SessionLog};
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

/// Writes events to the log, folds them into the state, and forwards them to the watcher.
struct Emitter {
    log: Mutex<SessionLog>,
    state: Mutex<RunState>,
    tx: Sender<Record>,
    start: Instant,
    t_offset: f64,
}

impl Emitter {
    fn emit(&self, event: Event) -> Result<()> {
        let record = Record {
            t: self.t_offset + self.start.elapsed().as_secs_f64(),
            event,
        };
        // The log is written first: an event the screen has shown is an event on disk.
        self.log
            .lock()
            .map_err(|_| anyhow!("log lock poisoned"))?
            .append(&record)?;
        self.state
            .lock()
            .map_err(|_| anyhow!("state lock poisoned"))?
            .apply(&record.event);
        let _ = self.tx.send(record);
        Ok(())
    }

    fn state(&self) -> RunState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn with_state<T>(&self, f: impl FnOnce(&RunState) -> T) -> T {
        match self.state.lock() {
            Ok(s) => f(&s),
            Err(p) => f(&p.into_inner()),
        }
    }
}

/// How the runner is steered: mode, step credits, and the quit/skip flags.
#[derive(Default)]
struct ControlState {
    mode: RunMode,
    step_credits: usize,
    /// In auto mode, pause after this many more rounds.
    rounds_left: Option<usize>,
    quit: bool,
    skip_context: bool,
}

struct Control {
    state: Mutex<ControlState>,
    wake: Condvar,
    /// Cancels the model work in flight (quit, skip, or a decision about that edit).
    cancel: AtomicBool,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn quitting(&self) -> bool {
        self.lock().quit
    }

    /// Blocks until the runner may start a model-work phase; false when quitting.
    fn wait_turn(&self) -> bool {
        let mut s = self.lock();
        loop {
            if s.quit {
                return false;
            }
            match s.mode {
                RunMode::Auto => return true,
                RunMode::Step if s.step_credits > 0 => {
                    s.step_credits -= 1;
                    return true;
                }
                _ => {}
            }
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until `ready()` holds (checked whenever a command arrives); false when quitting.
    fn wait_until(&self, ready: impl Fn() -> bool) -> bool {
        let mut s = self.lock();
        loop {
            if s.quit {
                return false;
            }
            if ready() {
                return true;
            }
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
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
        index: usize,
        repeat: usize,
    },
    Evaluate {
        id: EditId,
        index: usize,
        repeat: usize,
    },
    Score {
        id: EditId,
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
    FinishRun,
    Done,
}

impl Phase {
    /// Phases that run the model; each consumes one step in step mode.
    fn is_work(&self) -> bool {
        matches!(
            self,
            Phase::Baseline { .. }
                | Phase::Sample { .. }
                | Phase::Train { .. }
                | Phase::Evaluate { .. }
                | Phase::PolicyUpdate { .. }
        )
    }
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

/// Decides the next phase from the state alone.
pub fn plan(
    state: &RunState,
    cfg: &RunConfig,
    total_contexts: usize,
    trained: &dyn Fn(EditId, usize) -> bool,
    skip_context: bool,
) -> Phase {
    if state.finished {
        return Phase::Done;
    }
    let rounds_done = state.rounds.iter().filter(|r| r.metrics.is_some()).count();
    if rounds_done >= cfg.outer.rounds {
        return Phase::FinishRun;
    }
    let r = rounds_done;
    let Some(round) = state.rounds.get(r) else {
        return Phase::StartRound { round: r };
    };
    let k = cfg.self_edit.k;
    for (ci, &index) in contexts_for_round(cfg, total_contexts, r)
        .iter()
        .enumerate()
    {
        let id = CtxId { round: r, ctx: ci };
        let Some(c) = round.contexts.get(ci) else {
            return Phase::StartContext { id, index };
        };
        if c.finished {
            continue;
        }
        if skip_context {
            return Phase::Select { id };
        }
        if c.baseline.is_none() {
            return Phase::Baseline { id, index };
        }
        for e in 0..k {
            let eid = EditId {
                round: r,
                ctx: ci,
                edit: e,
            };
            match c.edits.get(e) {
                Some(edit) if edit.sample_secs.is_some() || edit.status != EditStatus::Sampling => {
                }
                _ => return Phase::Sample { id: eid, index },
            }
        }
        for (e, edit) in c.edits.iter().enumerate().take(k) {
            let eid = EditId {
                round: r,
                ctx: ci,
                edit: e,
            };
            if edit.is_rejected() || matches!(edit.status, EditStatus::Failed | EditStatus::Scored)
            {
                continue;
            }
            if cfg.outer.approval_required && edit.decision.is_none() {
                return Phase::AwaitDecision { id: eid };
            }
            let repeat = edit.evaluations.len();
            if repeat >= cfg.eval.repeats {
                return Phase::Score { id: eid };
            }
            return if edit.status == EditStatus::Evaluating && trained(eid, repeat) {
                Phase::Evaluate {
                    id: eid,
                    index,
                    repeat,
                }
            } else {
                Phase::Train {
                    id: eid,
                    index,
                    repeat,
                }
            };
        }
        return Phase::Select { id };
    }
    match round.policy.status {
        PolicyStatus::Pending | PolicyStatus::Training => Phase::PolicyUpdate { round: r },
        PolicyStatus::Updated | PolicyStatus::Skipped => Phase::FinishRound { round: r },
    }
}

/// The selection rule: the best-rewarded edit, if a human has not rejected it (and approved it,
/// when approval is required) and its gain reaches the threshold.
pub fn select(state: &RunState, cfg: &RunConfig, id: CtxId) -> (Option<usize>, String) {
    let Some(c) = state.context(id) else {
        return (None, "no such context".into());
    };
    let eligible = c.edits.iter().filter(|e| {
        e.reward.is_some() && !e.is_rejected() && (!cfg.outer.approval_required || e.is_approved())
    });
    let best = eligible.fold(None::<&super::state::EditState>, |best, e| match best {
        Some(b) if b.reward >= e.reward => Some(b),
        _ => Some(e),
    });
    match best {
        None => (None, "no eligible self-edit".into()),
        Some(e) => {
            let gain = e.gain.unwrap_or(0.0);
            if gain >= cfg.outer.min_gain {
                (
                    Some(e.index),
                    format!(
                        "kept self-edit {} (reward {:.3}, gain {:+.3})",
                        e.index,
                        e.reward.unwrap_or(0.0),
                        gain
                    ),
                )
            } else {
                (
                    None,
                    format!(
                        "best self-edit {} gains {:+.3}, below the threshold {:+.3}",
                        e.index, gain, cfg.outer.min_gain
                    ),
                )
            }
        }
    }
}

fn round_metrics(state: &RunState, round: usize, domain: &dyn Domain) -> RoundMetrics {
    let Some(r) = state.rounds.get(round) else {
        return RoundMetrics::default();
    };
    let mut m = RoundMetrics {
        contexts: r.contexts.len(),
        ..Default::default()
    };
    let base: Vec<f64> = r
        .contexts
        .iter()
        .filter_map(|c| c.baseline.as_ref().map(|b| b.accuracy))
        .collect();
    m.accuracy_before = mean(&base);
    let mut rewards = Vec::new();
    let mut gains = Vec::new();
    for c in &r.contexts {
        let base = c.baseline.as_ref().map(|b| b.accuracy).unwrap_or(0.0);
        for e in &c.edits {
            match (e.reward, e.status) {
                (Some(reward), _) => {
                    rewards.push(reward);
                    gains.push(e.gain.unwrap_or_else(|| domain.gain(reward, base)));
                }
                // A failed finetune (or an unusable self-edit) earns nothing.
                (None, EditStatus::Failed) => {
                    rewards.push(0.0);
                    gains.push(domain.gain(0.0, base));
                }
                _ => {}
            }
        }
        m.edits_kept += c.kept.is_some() as usize;
    }
    m.edits_evaluated = rewards.len();
    m.mean_reward = mean(&rewards);
    m.accuracy_after = m.mean_reward;
    m.mean_gain = mean(&gains);
    m
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// A running (or resuming) loop, as its owner sees it.
pub struct RunHandle {
    pub session_dir: PathBuf,
    pub events: Receiver<Record>,
    pub commands: Sender<Command>,
    pub join: std::thread::JoinHandle<Result<()>>,
}

/// Builds the model and the domain for a run; supplied by the caller so the loop stays
/// independent of how models are found and domains are set up.
pub struct Setup {
    pub model: Model,
    pub domain: Box<dyn Domain>,
    pub model_path: PathBuf,
    pub model_sha256: String,
    pub data_sha256: String,
    pub template_source: String,
}

pub type SetupFn = Box<dyn FnOnce(&RunConfig, &mut dyn FnMut(&str)) -> Result<Setup> + Send>;

/// Starts a new session under `sessions_root` and runs it on a thread.
pub fn start(
    cfg: RunConfig,
    sessions_root: &Path,
    setup: SetupFn,
    mode: Option<RunMode>,
) -> Result<RunHandle> {
    let id = session::new_id();
    let dir = sessions_root.join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = SessionLog::create(&dir.join(session::EVENTS_FILE))?;
    let mode = mode.unwrap_or(match cfg.outer.start_mode {
        super::config::StartMode::Auto => RunMode::Auto,
        super::config::StartMode::Step => RunMode::Step,
        super::config::StartMode::Paused => RunMode::Paused,
    });
    launch(cfg, dir, log, Vec::new(), setup, mode, Some(id))
}

/// Resumes a session from its log: the state is the fold of what was recorded, and the loop
/// continues from the phase after the last completed one.
pub fn resume(dir: &Path, setup: SetupFn, mode: Option<RunMode>) -> Result<RunHandle> {
    let header = Header::read(&dir.join(session::HEADER_FILE))?;
    let reader = session::LogReader::read(&dir.join(session::EVENTS_FILE))?;
    let log = SessionLog::reopen(&dir.join(session::EVENTS_FILE), reader.intact_len)?;
    let mut records = reader.records;
    for issue in &reader.issues {
        records.push(Record {
            t: records.last().map(|r| r.t).unwrap_or(0.0),
            event: Event::Warning {
                message: format!("session log: {issue}"),
            },
        });
    }
    let mode = mode.unwrap_or(RunMode::Auto);
    launch(
        header.config,
        dir.to_path_buf(),
        log,
        records,
        setup,
        mode,
        None,
    )
}

fn launch(
    cfg: RunConfig,
    dir: PathBuf,
    log: SessionLog,
    history: Vec<Record>,
    setup: SetupFn,
    mode: RunMode,
    new_id: Option<String>,
) -> Result<RunHandle> {
    let (tx, events) = std::sync::mpsc::channel();
    let (commands, command_rx) = std::sync::mpsc::channel::<Command>();
    let mut state = RunState::default();
    for r in &history {
        state.apply(&r.event);
        let _ = tx.send(r.clone());
    }
    let emitter = Arc::new(Emitter {
        log: Mutex::new(log),
        state: Mutex::new(state),
        tx,
        start: Instant::now(),
        t_offset: history.last().map(|r| r.t).unwrap_or(0.0),
    });
    let control = Arc::new(Control {
        state: Mutex::new(ControlState {
            mode,
            ..Default::default()
        }),
        wake: Condvar::new(),
        cancel: AtomicBool::new(false),
    });
    {
        let emitter = Arc::downgrade(&emitter);
        let control = control.clone();
        std::thread::Builder::new()
            .name("seal-commands".into())
            .spawn(move || handle_commands(command_rx, emitter, &control))?;
    }
    let session_dir = dir.clone();
    let join = std::thread::Builder::new()
        .name("seal-runner".into())
        .spawn(move || {
            let result = run_loop(cfg, &dir, setup, &emitter, &control, mode, new_id);
            if let Err(e) = &result {
                let _ = emitter.emit(Event::Failed {
                    message: format!("{e:#}"),
                });
            }
            result
        })?;
    Ok(RunHandle {
        session_dir,
        events,
        commands,
        join,
    })
}

/// Receives commands until the channel closes or the runner is gone. It holds the emitter
/// weakly, so the events channel closes as soon as the runner thread ends.
fn handle_commands(rx: Receiver<Command>, emitter: Weak<Emitter>, control: &Control) {
    while let Ok(cmd) = rx.recv() {
        let Some(emitter) = emitter.upgrade() else {
            break;
        };
        let result = match cmd {
            Command::Approve { id } => decide(&emitter, control, id, Decision::Approved),
            Command::Reject { id } => decide(&emitter, control, id, Decision::Rejected),
            Command::Edit { id, text } => decide(&emitter, control, id, Decision::Edited { text }),
            Command::Pause => set_mode(&emitter, control, RunMode::Paused, None),
            Command::Step => {
                control.lock().step_credits += 1;
                set_mode(&emitter, control, RunMode::Step, None)
            }
            Command::Auto { rounds } => set_mode(&emitter, control, RunMode::Auto, rounds),
            Command::SkipContext => {
                control.lock().skip_context = true;
                control.cancel.store(true, Ordering::Relaxed);
                Ok(())
            }
            Command::Quit => {
                control.lock().quit = true;
                control.cancel.store(true, Ordering::Relaxed);
                Ok(())
            }
        };
        if let Err(e) = result {
            let _ = emitter.emit(Event::Warning {
                message: format!("command failed: {e:#}"),
            });
        }
        control.wake.notify_all();
    }
}

/// Records a human decision at once (it is fsync'd with the event) and stops work on the edit
/// that the decision makes pointless.
fn decide(emitter: &Emitter, control: &Control, id: EditId, decision: Decision) -> Result<()> {
    if emitter.with_state(|s| s.edit(id).is_none()) {
        return Ok(());
    }
    let interrupts = !matches!(decision, Decision::Approved);
    emitter.emit(Event::EditDecision { id, decision })?;
    let busy_on_it = emitter.with_state(|s| match s.activity {
        super::state::Activity::Training { id: a }
        | super::state::Activity::Evaluating { id: a } => a == id,
        _ => false,
    });
    if interrupts && busy_on_it {
        control.cancel.store(true, Ordering::Relaxed);
    }
    Ok(())
}

fn set_mode(
    emitter: &Emitter,
    control: &Control,
    mode: RunMode,
    rounds: Option<usize>,
) -> Result<()> {
    let changed = {
        let mut s = control.lock();
        s.rounds_left = rounds;
        let changed = s.mode != mode;
        s.mode = mode;
        changed
    };
    if changed {
        emitter.emit(Event::ModeChanged { mode })?;
    }
    Ok(())
}

/// What the runner keeps in memory between phases.
struct Work {
    policy: Model,
    domain: Box<dyn Domain>,
    /// Adapters trained but not yet evaluated, by edit and repeat.
    adapters: HashMap<(EditId, usize), LoraAdapter>,
    /// The last adapter of each edit, until its context's selection.
    last_adapter: HashMap<EditId, LoraAdapter>,
}

fn run_loop(
    cfg: RunConfig,
    dir: &Path,
    setup: SetupFn,
    emitter: &Emitter,
    control: &Control,
    mode: RunMode,
    new_id: Option<String>,
) -> Result<()> {
    let mut say = |m: &str| {
        let _ = emitter.emit(Event::Status {
            message: m.to_string(),
        });
    };
    let built = setup(&cfg, &mut say)?;
    match &new_id {
        Some(id) => {
            let header = Header {
                format_version: session::FORMAT_VERSION,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                id: id.clone(),
                created: chrono::Utc::now().to_rfc3339(),
                config: cfg.clone(),
                model_path: built.model_path.display().to_string(),
                model_sha256: built.model_sha256.clone(),
                data_path: cfg.task.data.clone(),
                data_sha256: built.data_sha256.clone(),
                template_source: built.template_source.clone(),
            };
            header.write(&dir.join(session::HEADER_FILE))?;
            emitter.emit(Event::RunStarted {
                info: RunInfo {
                    session: id.clone(),
                    domain: built.domain.name().to_string(),
                    model: built.model.info.name.clone(),
                    device: crate::engine::device::describe(&built.model.transformer.device),
                    template: built.domain.strategy(),
                    grader: built.domain.grader(),
                    rounds: cfg.outer.rounds,
                    contexts_per_round: cfg.task.contexts_per_round,
                    k: cfg.self_edit.k,
                    repeats: cfg.eval.repeats,
                    approval_required: cfg.outer.approval_required,
                },
            })?;
        }
        None => {
            let header = Header::read(&dir.join(session::HEADER_FILE))?;
            if header.model_sha256 != built.model_sha256 {
                return Err(anyhow!(
                    "the model file has changed since this session started (sha256 {} then, {} now); \
                     resuming would mix two models",
                    header.model_sha256,
                    built.model_sha256
                ));
            }
        }
    }
    emitter.emit(Event::ModeChanged { mode })?;
    let mut work = Work {
        policy: built.model,
        domain: built.domain,
        adapters: HashMap::new(),
        last_adapter: HashMap::new(),
    };
    // A resumed run re-applies every policy update recorded so far.
    let updates: Vec<(usize, String)> = emitter.with_state(|s| {
        s.rounds
            .iter()
            .filter_map(|r| r.policy.adapter.clone().map(|a| (r.index, a)))
            .collect()
    });
    for (round, rel) in updates {
        let adapter = peft::load_adapter(&dir.join(&rel), &work.policy)
            .with_context(|| format!("cannot reload the policy update of round {round}"))?;
        let merged = work.policy.transformer.merged(&adapter)?;
        work.policy = work.policy.with_transformer(merged);
    }
    let total = work.domain.num_contexts();
    loop {
        if control.quitting() {
            return Ok(());
        }
        let state = emitter.state();
        let skip = control.lock().skip_context;
        let phase = {
            let adapters = &work.adapters;
            plan(
                &state,
                &cfg,
                total,
                &|id, rep| adapters.contains_key(&(id, rep)),
                skip,
            )
        };
        if phase == Phase::Done {
            return Ok(());
        }
        if let Phase::AwaitDecision { id } = phase {
            let decided =
                || emitter.with_state(|s| s.edit(id).is_some_and(|e| e.decision.is_some()));
            if !control.wait_until(decided) {
                return Ok(());
            }
            continue;
        }
        if phase.is_work() && !control.wait_turn() {
            return Ok(());
        }
        control.cancel.store(false, Ordering::Relaxed);
        match execute(&phase, &cfg, dir, emitter, control, &mut work) {
            Ok(()) => {}
            Err(e) if control.cancel.load(Ordering::Relaxed) => {
                // Cancelled on purpose (quit, skip, a decision): the phase simply did not
                // happen, and the planner decides again.
                let _ = e;
            }
            Err(e) => return Err(e),
        }
        if matches!(phase, Phase::Select { .. }) {
            control.lock().skip_context = false;
        }
        if let Phase::FinishRound { .. } = phase {
            let pause = {
                let mut s = control.lock();
                match s.rounds_left.as_mut() {
                    Some(n) => {
                        *n = n.saturating_sub(1);
                        *n == 0
                    }
                    None => false,
                }
            };
            if pause {
                set_mode(emitter, control, RunMode::Paused, None)?;
            }
        }
    }
}

fn execute(
    phase: &Phase,
    cfg: &RunConfig,
    dir: &Path,
    emitter: &Emitter,
    control: &Control,
    work: &mut Work,
) -> Result<()> {
    let cancel = &control.cancel;
    match *phase {
        Phase::StartRound { round } => emitter.emit(Event::RoundStarted {
            round,
            contexts: cfg.task.contexts_per_round,
        }),
        Phase::StartContext { id, index } => emitter.emit(Event::ContextStarted {
            id,
            context: work.domain.view(index),
        }),
        Phase::Baseline { id, index } => {
            let s = work.domain.baseline(&work.policy, index, cancel)?;
            emitter.emit(Event::BaselineScored {
                id,
                results: s.results,
                accuracy: s.accuracy,
                secs: s.secs,
            })
        }
        Phase::Sample { id, index } => sample(id, index, cfg, emitter, control, work),
        Phase::Train { id, index, repeat } => {
            let text = emitter
                .with_state(|s| s.edit(id).map(|e| e.text.clone()))
                .unwrap_or_default();
            let train = crate::engine::train::TrainConfig {
                seed: derive_seed(
                    cfg.seed,
                    &[
                        1,
                        id.round as u64,
                        id.ctx as u64,
                        id.edit as u64,
                        repeat as u64,
                    ],
                ),
                ..cfg.inner.clone()
            };
            let outcome = train_with_events(
                emitter,
                |e| match e {
                    TrainEvent::Started {
                        total_steps,
                        examples,
                        tokens,
                        ..
                    } => Some(Event::TrainStarted {
                        id,
                        total_steps: *total_steps,
                        examples: *examples,
                        tokens: *tokens,
                    }),
                    TrainEvent::Step(p) => Some(Event::TrainStep {
                        id,
                        progress: p.clone(),
                    }),
                    TrainEvent::Failed { .. } => None,
                },
                |on_event| {
                    work.domain
                        .apply(&work.policy, index, &text, &train, cancel, on_event)
                },
            )?;
            match outcome {
                Ok(o) => {
                    let final_loss = o.losses.last().copied().unwrap_or(f64::NAN);
                    emitter.emit(Event::TrainFinished {
                        id,
                        steps: o.steps,
                        final_loss,
                        secs: o.secs,
                    })?;
                    work.adapters.insert((id, repeat), o.adapter);
                    Ok(())
                }
                Err(TrainError::Cancelled) => Err(anyhow!("cancelled")),
                Err(e) => emitter.emit(Event::TrainFailed {
                    id,
                    message: e.to_string(),
                }),
            }
        }
        Phase::Evaluate { id, index, repeat } => {
            let adapter = work
                .adapters
                .get(&(id, repeat))
                .context("the adapter to evaluate is gone")?;
            let s = work.domain.evaluate(&work.policy, adapter, index, cancel)?;
            emitter.emit(Event::EditEvaluated {
                id,
                repeat,
                results: s.results,
                accuracy: s.accuracy,
                secs: s.secs,
            })?;
            if let Some(a) = work.adapters.remove(&(id, repeat)) {
                work.last_adapter.insert(id, a);
            }
            Ok(())
        }
        Phase::Score { id } => {
            let (reward, base) = emitter.with_state(|s| {
                let e = s.edit(id);
                let accs: Vec<f64> = e
                    .map(|e| e.evaluations.iter().map(|v| v.accuracy).collect())
                    .unwrap_or_default();
                let base = s
                    .context(id.ctx_id())
                    .and_then(|c| c.baseline.as_ref())
                    .map(|b| b.accuracy)
                    .unwrap_or(0.0);
                (mean(&accs), base)
            });
            emitter.emit(Event::EditScored {
                id,
                reward,
                gain: work.domain.gain(reward, base),
            })
        }
        Phase::Select { id } => {
            let (kept, reason) = emitter.with_state(|s| select(s, cfg, id));
            if let Some(k) = kept {
                let eid = EditId {
                    round: id.round,
                    ctx: id.ctx,
                    edit: k,
                };
                if cfg.outer.save_adapters != SaveAdapters::None {
                    if let Some(a) = work.last_adapter.get(&eid) {
                        peft::save_adapter(
                            a,
                            &session::edit_adapter_dir(dir, eid),
                            &work.policy.info.name,
                        )?;
                    }
                }
            }
            if cfg.outer.save_adapters == SaveAdapters::All {
                for (eid, a) in work.last_adapter.iter().filter(|(e, _)| e.ctx_id() == id) {
                    peft::save_adapter(
                        a,
                        &session::edit_adapter_dir(dir, *eid),
                        &work.policy.info.name,
                    )?;
                }
            }
            work.last_adapter.retain(|e, _| e.ctx_id() != id);
            work.adapters.retain(|(e, _), _| e.ctx_id() != id);
            emitter.emit(Event::ContextFinished { id, kept, reason })
        }
        Phase::PolicyUpdate { round } => policy_update(round, cfg, dir, emitter, control, work),
        Phase::FinishRound { round } => {
            let metrics = emitter.with_state(|s| round_metrics(s, round, work.domain.as_ref()));
            emitter.emit(Event::RoundFinished { round, metrics })
        }
        Phase::FinishRun => {
            let secs = emitter.start.elapsed().as_secs_f64() + emitter.t_offset;
            emitter.emit(Event::RunFinished { secs })
        }
        Phase::AwaitDecision { .. } | Phase::Done => Ok(()),
    }
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

fn sample(
    id: EditId,
    index: usize,
    cfg: &RunConfig,
    emitter: &Emitter,
    control: &Control,
    work: &mut Work,
) -> Result<()> {
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
        let params = work.domain.self_edit_sampling(&cfg.sampling(seed));
        emitter.emit(Event::EditSampling {
            id,
            prompt: prompt.clone(),
        })?;
        let start = Instant::now();
        let mut emit_err = None;
        let gen = generate(
            &work.policy,
            None,
            &ids,
            &params,
            Some(&control.cancel),
            &mut |piece| {
                if let Err(e) = emitter.emit(Event::EditToken {
                    id,
                    piece: piece.to_string(),
                }) {
                    emit_err = Some(e);
                }
            },
        )?;
        if let Some(e) = emit_err {
            return Err(e);
        }
        if gen.stop == crate::engine::StopReason::Cancelled {
            return Err(anyhow!("cancelled"));
        }
        let usable = work.domain.check_self_edit(index, &gen.text);
        if let Err(why) = &usable {
            emitter.emit(Event::Warning {
                message: format!(
                    "self-edit r{}c{}e{} attempt {} is unusable: {why}",
                    id.round,
                    id.ctx,
                    id.edit,
                    attempt + 1
                ),
            })?;
            if attempt + 1 < attempts {
                continue;
            }
        }
        emitter.emit(Event::EditSampled {
            id,
            text: gen.text.clone(),
            tokens: gen.tokens.len(),
            secs: start.elapsed().as_secs_f64(),
        })?;
        if let Err(why) = usable {
            // Out of attempts: the edit is scored as invalid (reward 0) without training.
            emitter.emit(Event::TrainFailed {
                id,
                message: format!("invalid self-edit: {why}"),
            })?;
        }
        return Ok(());
    }
    Ok(())
}

fn policy_update(
    round: usize,
    cfg: &RunConfig,
    dir: &Path,
    emitter: &Emitter,
    control: &Control,
    work: &mut Work,
) -> Result<()> {
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
    let eot = work.policy.chat.end_of_turn();
    let examples: Vec<Example> = pairs
        .iter()
        .map(|(p, t)| {
            Ok(Example {
                prompt: work.policy.tokenizer.encode(p)?,
                completion: work.policy.tokenizer.encode(&format!("{t}{eot}"))?,
            })
        })
        .collect::<Result<_>>()?;
    let train = crate::engine::train::TrainConfig {
        seed: derive_seed(cfg.seed, &[3, round as u64]),
        ..cfg.policy.train.clone()
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
                progress: p.clone(),
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
        Err(TrainError::Cancelled) => return Err(anyhow!("cancelled")),
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
