//! Starting, resuming and driving a run: the session folder, the runner thread (which asks
//! [`plan`] for the next phase from the state alone and runs it) and the command thread.

use super::control::{handle_commands, set_mode, Control, Wake};
use super::domain::{Domain, GradingFailed};
use super::emitter::Emitter;
use super::execute::{apply_policy_updates, execute, recorded_policy_updates, Env, Work};
use super::plan::{plan, Phase, Sizes};
use super::settings;
use crate::engine::Model;
use crate::record::config::{InferenceBackend, RunConfig};
use crate::record::{Command, Event, Header, Record, RunInfo, RunMode, RunState, FORMAT_VERSION};
use crate::session::{self, SessionLock, SessionLog};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// A running (or resuming) loop, as its owner sees it.
pub struct RunHandle {
    pub session_dir: PathBuf,
    pub events: Receiver<Record>,
    pub commands: Sender<Command>,
    pub join: std::thread::JoinHandle<Result<()>>,
}

/// What a run is built from: the model and the domain, with the fingerprints pinned into the
/// session.
pub struct Setup {
    pub model: Model,
    pub domain: Box<dyn Domain>,
    /// The held-out contexts the policy is measured on and never trained on.
    pub heldout: Option<Box<dyn Domain>>,
    pub model_path: PathBuf,
    pub model_sha256: String,
    pub data_sha256: String,
    pub template_source: String,
    /// What a person should know about how the run was set up (device fallbacks, say).
    pub notices: Vec<String>,
}

/// How the runner gets its model and domain; supplied by the caller so the loop stays
/// independent of how models are found and domains are set up.
pub trait Prepare: Send + 'static {
    /// Everything that can be checked without loading the model; runs before a session folder
    /// exists, so a bad configuration leaves nothing behind.
    fn check(&self, cfg: &RunConfig) -> Result<()>;
    /// Loads the model and builds the domain (slow: runs on the runner's thread).
    fn build(&self, cfg: &RunConfig, say: &mut dyn FnMut(&str)) -> Result<Setup>;
    /// Whether what a session pinned (its data file, its model) is still what it started
    /// with; runs before a resume appends anything. The runner checks again after loading.
    fn check_unchanged(&self, header: &Header) -> Result<()> {
        let _ = header;
        Ok(())
    }
    /// The model at `model_path` and the domain alone, for a worker running one inner loop:
    /// no fingerprints, since hashing a large model in every task would cost more than the
    /// task's own work (the run that wrote the job checked them).
    fn build_worker(
        &self,
        cfg: &RunConfig,
        model_path: &Path,
        say: &mut dyn FnMut(&str),
    ) -> Result<(Model, Box<dyn Domain>)>;
}

/// How a run is launched.
#[derive(Clone, Copy, Debug, Default)]
pub struct Launch {
    /// How the run starts; none: the configuration's `start_mode` for a new run, auto for a
    /// resumed one.
    pub mode: Option<RunMode>,
    /// When a grader cannot grade (an HTTP judge that is down, say), pause and let a person
    /// fix it and try again, rather than stop the run. For runs someone is watching.
    pub pause_on_grading_failure: bool,
}

impl Launch {
    /// A run started in `mode` that stops when a grader fails.
    pub fn with_mode(mode: RunMode) -> Launch {
        Launch {
            mode: Some(mode),
            pause_on_grading_failure: false,
        }
    }
}

/// Starts a new session under `sessions_root` and runs it on a thread.
pub fn start(
    cfg: RunConfig,
    sessions_root: &Path,
    prepare: Box<dyn Prepare>,
    launch: Launch,
) -> Result<RunHandle> {
    cfg.validate()?;
    settings::check(&cfg)?;
    super::dispatch::check(&cfg)?;
    prepare.check(&cfg)?;
    let id = session::new_id();
    let dir = sessions_root.join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = SessionLock::acquire(&dir)
        .and_then(|lock| SessionLog::create(&dir.join(session::EVENTS_FILE), lock));
    let log = match log {
        Ok(log) => log,
        Err(e) => {
            // Nothing was recorded: leave no folder that later commands would trip over.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let launch = Launch {
        mode: Some(launch.mode.unwrap_or(cfg.outer.start_mode)),
        ..launch
    };
    launch_run(cfg, dir, log, Vec::new(), prepare, launch, Some(id))
}

/// Resumes a session from its log: the state is the fold of what was recorded, and the loop
/// continues from the phase after the last completed one. A session another process is
/// writing, or one that has finished, is refused before anything is appended.
pub fn resume(dir: &Path, prepare: Box<dyn Prepare>, launch: Launch) -> Result<RunHandle> {
    let header = Header::read(&dir.join(session::HEADER_FILE))?;
    // Taken before the log is read: another writer could otherwise append (or we could cut
    // its torn tail) between the read and the reopen.
    let lock = SessionLock::acquire(dir)?;
    let reader = session::LogReader::read(&dir.join(session::EVENTS_FILE))?;
    let done = RunState::from_events(reader.records.iter().map(|r| &r.event));
    if done.finished {
        bail!(
            "{0}: this run has finished ({1:.1} s recorded), so there is nothing to resume and \
             nothing was added to it; see it with `seal-tui replay {0}` or `seal-tui report {0}`",
            dir.display(),
            done.total_secs.unwrap_or(0.0)
        );
    }
    let cfg = &header.config;
    let pinned = |e: anyhow::Error| {
        e.context(format!(
            "{}: the pinned configuration",
            dir.join(session::HEADER_FILE).display()
        ))
    };
    cfg.validate().map_err(pinned)?;
    settings::check(cfg).map_err(pinned)?;
    super::dispatch::check(cfg).map_err(pinned)?;
    prepare.check(cfg).map_err(pinned)?;
    prepare.check_unchanged(&header)?;
    let log = SessionLog::reopen(&dir.join(session::EVENTS_FILE), reader.intact_len, lock)?;
    let mut records = reader.records;
    for issue in &reader.issues {
        records.push(Record {
            t: records.last().map_or(0.0, |r| r.t),
            event: Event::Warning {
                message: format!("session log: {issue}"),
            },
        });
    }
    launch_run(
        header.config,
        dir.to_path_buf(),
        log,
        records,
        prepare,
        launch,
        None,
    )
}

/// Runs a session on a thread; `launch.mode` is the mode it starts in (auto when none).
fn launch_run(
    cfg: RunConfig,
    dir: PathBuf,
    log: SessionLog,
    history: Vec<Record>,
    prepare: Box<dyn Prepare>,
    launch: Launch,
    new_id: Option<String>,
) -> Result<RunHandle> {
    let mode = launch.mode.unwrap_or(RunMode::Auto);
    let (tx, events) = std::sync::mpsc::channel();
    let (commands, command_rx) = std::sync::mpsc::channel::<Command>();
    let mut state = RunState::default();
    for r in &history {
        state.apply(&r.event);
        let _ = tx.send(r.clone());
    }
    let t_offset = history.last().map_or(0.0, |r| r.t);
    let emitter = Arc::new(Emitter::new(log, state, tx, t_offset));
    let control = Arc::new(Control::new(mode));
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
            let fresh = new_id.is_some();
            let result = run_loop(&cfg, &dir, prepare, &emitter, &control, launch, new_id);
            if let Err(e) = &result {
                tracing::error!("the run stopped: {e:#}");
                let _ = emitter.emit(Event::Failed {
                    message: format!("{e:#}"),
                });
                // A new session whose setup failed never started: nothing in it is worth
                // keeping, and a folder without a header would only confuse later commands.
                if fresh && !dir.join(session::HEADER_FILE).exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
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

fn run_loop(
    cfg: &RunConfig,
    dir: &Path,
    prepare: Box<dyn Prepare>,
    emitter: &Emitter,
    control: &Control,
    launch: Launch,
    new_id: Option<String>,
) -> Result<()> {
    let mut say = |m: &str| {
        tracing::info!("{m}");
        let _ = emitter.emit(Event::Status {
            message: m.to_string(),
        });
    };
    let built = prepare.build(cfg, &mut say)?;
    for notice in &built.notices {
        emitter.emit(Event::Warning {
            message: notice.clone(),
        })?;
    }
    match &new_id {
        Some(id) => {
            let header = Header {
                format_version: FORMAT_VERSION,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                id: id.clone(),
                created: chrono::Utc::now().to_rfc3339(),
                config: cfg.clone(),
                model_path: built.model_path.display().to_string(),
                model_sha256: built.model_sha256.clone(),
                data_path: cfg.task.data.display().to_string(),
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
                    gain_rule: built.domain.gain_rule(),
                },
            })?;
        }
        None => {
            let header = Header::read(&dir.join(session::HEADER_FILE))?;
            if header.model_sha256 != built.model_sha256 {
                return Err(anyhow!(
                    "the model has changed since this session started (sha256 {} then, {} now); \
                     resuming would mix two models",
                    header.model_sha256,
                    built.model_sha256
                ));
            }
            if header.data_sha256 != built.data_sha256 {
                return Err(anyhow!(
                    "{}: the data file has changed since this session started (sha256 {} then, \
                     {} now); resuming would score other contexts than the ones recorded",
                    header.data_path,
                    header.data_sha256,
                    built.data_sha256
                ));
            }
        }
    }
    // The mode the run starts in (a command may have changed it while the model loaded).
    let mode = control.lock().mode;
    emitter.emit(Event::ModeChanged { mode })?;
    let mut work = Work {
        policy: built.model,
        domain: built.domain,
        heldout: built.heldout,
        adapters: HashMap::new(),
        last_adapter: HashMap::new(),
        served: (cfg.inference.backend == InferenceBackend::Openai)
            .then(|| super::served::Served::new(&cfg.inference)),
    };
    // A resumed run grades on the questions written before, never on freshly written ones.
    let written: Vec<_> = emitter.with_state(|s| s.self_questions.values().cloned().collect());
    for questions in &written {
        work.domain.restore_questions(questions);
    }
    // A resumed run re-applies every policy update recorded so far.
    let updates = emitter.with_state(recorded_policy_updates);
    work.policy = apply_policy_updates(work.policy, dir, &updates)?;
    let sizes = Sizes {
        contexts: work.domain.num_contexts(),
        heldout: work.heldout.as_ref().map_or(0, |d| d.num_contexts()),
    };
    let env = Env {
        cfg,
        dir,
        emitter,
        control,
    };
    loop {
        if control.quitting() {
            // Nothing of a quit run keeps running on a cluster.
            return super::dispatch::cancel_out(&env, "the run was quit");
        }
        let skip = control.lock().skip_context;
        let phase = emitter.with_state(|s| {
            plan(
                s,
                cfg,
                sizes,
                &|id, rev, rep| work.trained(id, rev, rep),
                skip,
            )
        });
        tracing::debug!(?phase, "next phase");
        if phase == Phase::Done {
            return Ok(());
        }
        if let Phase::AwaitDecision { id } = phase {
            let decided =
                || emitter.with_state(|s| s.edit(id).is_some_and(|e| e.decision.is_some()));
            if !decided() {
                // Said aloud, so a person (or a script's log) sees what the run waits for.
                emitter.emit(Event::Status {
                    message: format!(
                        "waiting for a decision on {id}: approve, reject or edit it \
                         (approval_required = true)"
                    ),
                })?;
            }
            match control.wait_until(decided) {
                Wake::Go => continue,
                Wake::Quit => return super::dispatch::cancel_out(&env, "the run was quit"),
                Wake::NoCommands => bail!(
                    "the command input closed while the run waited for a decision on {id} \
                     (approval_required = true), so none can come; resume the session and \
                     approve, reject or edit it"
                ),
            }
        }
        if phase.is_work() {
            match control.wait_turn() {
                Wake::Go => {}
                Wake::Quit => return super::dispatch::cancel_out(&env, "the run was quit"),
                Wake::NoCommands => {
                    let mode = control.lock().mode;
                    bail!(
                        "the run is in {} mode and the command input closed, so nothing can \
                         move it on; resume the session (in auto mode it runs to the end)",
                        mode.name()
                    )
                }
            }
        }
        control
            .cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match execute(&phase, &env, &mut work) {
            Ok(()) => {}
            // Cancelled on purpose (quit, skip, a decision): the phase simply did not happen,
            // and the planner decides again.
            Err(_) if control.cancelled() => {}
            // Nothing was graded; a person watching can fix the grader and try the phase again.
            Err(e)
                if launch.pause_on_grading_failure
                    && e.chain().any(|c| c.is::<GradingFailed>()) =>
            {
                emitter.emit(Event::Warning {
                    message: format!(
                        "{e:#}; nothing was graded and the run is paused: fix the grader, \
                         then step or auto-run to try again"
                    ),
                })?;
                set_mode(emitter, control, RunMode::Paused, None)?;
            }
            Err(e) => return Err(e),
        }
        if matches!(phase, Phase::Select { .. }) {
            control.lock().skip_context = false;
        }
        if matches!(phase, Phase::FinishRound { .. }) && control.round_done() {
            set_mode(emitter, control, RunMode::Paused, None)?;
        }
    }
}
