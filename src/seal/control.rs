//! How a human steers a running loop. Commands arrive on their own thread; decisions are
//! recorded at once (they are events), and the mode, step credits and quit/skip flags live in a
//! [`Control`] the runner waits on between phases.

use super::emitter::Emitter;
use crate::record::state::Activity;
use crate::record::{Command, Decision, EditId, Event, RunMode};
use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex, MutexGuard, Weak};

#[derive(Default)]
pub struct ControlState {
    pub mode: RunMode,
    pub step_credits: usize,
    /// In auto mode, pause after this many more rounds.
    pub rounds_left: Option<usize>,
    pub quit: bool,
    pub skip_context: bool,
    /// Every sender of commands is gone (a headless run's stdin closed): whatever waits for a
    /// command would wait forever.
    pub no_more_commands: bool,
}

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The runner may go on.
    Go,
    Quit,
    /// What was waited for needs a command, and none can come any more.
    NoCommands,
}

pub struct Control {
    state: Mutex<ControlState>,
    wake: Condvar,
    /// Cancels the model work in flight (quit, skip, or a decision about that edit).
    pub cancel: AtomicBool,
}

impl Control {
    pub fn new(mode: RunMode) -> Control {
        Control {
            state: Mutex::new(ControlState {
                mode,
                ..Default::default()
            }),
            wake: Condvar::new(),
            cancel: AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn quitting(&self) -> bool {
        self.lock().quit
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Blocks until the runner may start a model-work phase.
    pub fn wait_turn(&self) -> Wake {
        let mut s = self.lock();
        loop {
            if s.quit {
                return Wake::Quit;
            }
            match s.mode {
                RunMode::Auto => return Wake::Go,
                RunMode::Step if s.step_credits > 0 => {
                    s.step_credits -= 1;
                    return Wake::Go;
                }
                _ if s.no_more_commands => return Wake::NoCommands,
                _ => {}
            }
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until `ready()` holds (checked whenever a command arrives).
    pub fn wait_until(&self, ready: impl Fn() -> bool) -> Wake {
        let mut s = self.lock();
        loop {
            if s.quit {
                return Wake::Quit;
            }
            if ready() {
                return Wake::Go;
            }
            if s.no_more_commands {
                return Wake::NoCommands;
            }
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Counts down a round in "auto for N rounds"; true when the run should now pause.
    pub fn round_done(&self) -> bool {
        let mut s = self.lock();
        match s.rounds_left.as_mut() {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        }
    }

    fn wake_all(&self) {
        self.wake.notify_all();
    }
}

/// Receives commands until the channel closes or the runner is gone. It holds the emitter
/// weakly, so the events channel closes as soon as the runner thread ends.
pub fn handle_commands(rx: Receiver<Command>, emitter: Weak<Emitter>, control: &Control) {
    while let Ok(cmd) = rx.recv() {
        let Some(emitter) = emitter.upgrade() else {
            break;
        };
        tracing::debug!(?cmd, "command");
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
        control.wake_all();
    }
    control.lock().no_more_commands = true;
    control.wake_all();
}

/// Records a human decision at once (it is fsync'd with the event) and stops work on the edit
/// that the decision makes pointless. A decision about an edit the run has not reached is an
/// error, said aloud.
fn decide(emitter: &Emitter, control: &Control, id: EditId, decision: Decision) -> Result<()> {
    if emitter.with_state(|s| s.edit(id).is_none()) {
        anyhow::bail!("there is no self-edit {id} (yet) to decide on");
    }
    let interrupts = !matches!(decision, Decision::Approved);
    emitter.emit(Event::EditDecision { id, decision })?;
    let busy_on_it = emitter.with_state(|s| match s.activity {
        Activity::Training { id: a } | Activity::Evaluating { id: a } => a == id,
        _ => false,
    });
    if interrupts && busy_on_it {
        control.cancel.store(true, Ordering::Relaxed);
    }
    Ok(())
}

pub fn set_mode(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunState;
    use crate::session::{SessionLock, SessionLog};
    use std::sync::Arc;

    fn emitter(dir: &std::path::Path) -> Arc<Emitter> {
        let lock = SessionLock::acquire(dir).unwrap();
        let log = SessionLog::create(&dir.join("events.jsonl"), lock).unwrap();
        let (tx, _rx) = std::sync::mpsc::channel();
        Arc::new(Emitter::new(log, RunState::default(), tx, 0.0))
    }

    #[test]
    fn a_wait_that_needs_a_command_ends_when_none_can_come() {
        let dir = tempfile::tempdir().unwrap();
        let emitter = emitter(dir.path());
        let control = Arc::new(Control::new(RunMode::Step));
        let (tx, rx) = std::sync::mpsc::channel();
        let handler = {
            let control = control.clone();
            let emitter = Arc::downgrade(&emitter);
            std::thread::spawn(move || handle_commands(rx, emitter, &control))
        };
        tx.send(Command::Step).unwrap();
        // A step sent before the input closed is still honoured.
        drop(tx);
        handler.join().unwrap();
        assert_eq!(control.wait_turn(), Wake::Go);
        assert_eq!(control.wait_turn(), Wake::NoCommands);
        assert_eq!(control.wait_until(|| false), Wake::NoCommands);
        assert_eq!(control.wait_until(|| true), Wake::Go);
        control.lock().mode = RunMode::Auto;
        assert_eq!(control.wait_turn(), Wake::Go);
        control.lock().quit = true;
        assert_eq!(control.wait_turn(), Wake::Quit);
    }

    #[test]
    fn a_decision_for_an_unknown_edit_is_answered_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let emitter = emitter(dir.path());
        let control = Control::new(RunMode::Auto);
        let (tx, rx) = std::sync::mpsc::channel();
        let id: EditId = serde_json::from_str("\"r1 c1 e9\"").unwrap();
        tx.send(Command::Approve { id }).unwrap();
        drop(tx);
        handle_commands(rx, Arc::downgrade(&emitter), &control);
        let warnings = emitter.with_state(|s| s.warnings.clone());
        assert_eq!(
            warnings,
            vec!["command failed: there is no self-edit r1 c1 e9 (yet) to decide on"]
        );
    }
}
