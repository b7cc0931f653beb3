//! The one place events are made into records: appended to the log, folded into the run's
//! state and sent to whoever watches, all under one lock. Whichever thread emits (the runner,
//! or the command thread recording a decision), the order on disk is the order folded is the
//! order the screen sees.

use crate::record::{Event, Record, RunState};
use crate::session::SessionLog;
use anyhow::{anyhow, Result};
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::Instant;

struct Inner {
    log: SessionLog,
    state: RunState,
    watcher: Sender<Record>,
    /// The last time given out, so times never run backwards in the file.
    last_t: f64,
}

pub struct Emitter {
    inner: Mutex<Inner>,
    start: Instant,
    /// Seconds recorded before this process took over the session (a resume).
    t_offset: f64,
}

impl Emitter {
    /// An emitter continuing from `state` (the fold of what the log already holds).
    pub fn new(
        log: SessionLog,
        state: RunState,
        watcher: Sender<Record>,
        t_offset: f64,
    ) -> Emitter {
        Emitter {
            inner: Mutex::new(Inner {
                log,
                state,
                watcher,
                last_t: t_offset,
            }),
            start: Instant::now(),
            t_offset,
        }
    }

    /// Records an event. The log is written first: an event the screen has shown is an event
    /// on disk. A failed write is an error, and nothing is folded or shown.
    pub fn emit(&self, event: Event) -> Result<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("the event lock is poisoned"))?;
        let t = (self.t_offset + self.start.elapsed().as_secs_f64()).max(inner.last_t);
        inner.last_t = t;
        if !event.is_chatter() {
            tracing::debug!(t, "event {}", event_name(&event));
        }
        let record = Record { t, event };
        inner.log.append(&record)?;
        inner.state.apply(&record.event);
        // A watcher that has gone (the screen closed) does not stop the run.
        let _ = inner.watcher.send(record);
        Ok(())
    }

    /// Reads the state as it stands, under the lock (so it matches what is on disk).
    pub fn with_state<T>(&self, f: impl FnOnce(&RunState) -> T) -> T {
        match self.inner.lock() {
            Ok(inner) => f(&inner.state),
            Err(poisoned) => f(&poisoned.into_inner().state),
        }
    }

    /// Seconds since the session began, counting earlier processes' time.
    pub fn elapsed(&self) -> f64 {
        self.t_offset + self.start.elapsed().as_secs_f64()
    }
}

/// The event's tag as written in the log, for diagnostics.
fn event_name(event: &Event) -> String {
    serde_json::to_value(event)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunMode;
    use std::sync::Arc;

    /// Two threads emitting at once: the file, the fold and the watcher see one order.
    #[test]
    fn disk_fold_and_screen_agree_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let lock = crate::session::SessionLock::acquire(dir.path()).unwrap();
        let log = SessionLog::create(&path, lock).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let emitter = Arc::new(Emitter::new(log, RunState::default(), tx, 0.0));
        let threads: Vec<_> = (0..2)
            .map(|k| {
                let e = emitter.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        e.emit(Event::Warning {
                            message: format!("{k}-{i}"),
                        })
                        .unwrap();
                        if i % 50 == 0 {
                            e.emit(Event::ModeChanged {
                                mode: RunMode::Paused,
                            })
                            .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let seen: Vec<Record> = rx.try_iter().collect();
        let on_disk = crate::session::LogReader::read(&path).unwrap().records;
        assert_eq!(seen, on_disk);
        let folded: Vec<String> = emitter.with_state(|s| s.warnings.clone());
        let from_disk: Vec<String> = on_disk
            .iter()
            .filter_map(|r| match &r.event {
                Event::Warning { message } => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(folded, from_disk);
        assert!(on_disk.windows(2).all(|w| w[0].t <= w[1].t));
    }
}
