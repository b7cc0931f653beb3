//! `seal-tui worker JOB...`: inner loops from job files, on whatever machine runs them. It
//! builds the run's model and domain from the session's header, merges the policy updates so
//! far, trains the adapter through the same [`Domain`](super::domain::Domain) code and with the
//! same seed as an in-process run, answers and grades, and writes the result beside the job.
//! Units of one session and policy share the model: a task that runs several loads it once.
//!
//! Idempotent: a unit with a result is not redone, and a lock on the unit's folder makes a
//! second worker for it (an array resubmitted after the runner was killed between `sbatch`
//! and recording the job) wait for the first and then find its result.

use super::domain::Domain;
use super::execute::{apply_policy_updates, unit_train_config};
use super::runner::Prepare;
use super::units::{
    self, now_unix, ProgressLine, ProgressWriter, TrainSummary, UnitOutcome, UnitResult,
    UnitTiming, ADAPTER_DIR, LOCK_FILE, RESULT_FILE, SKIP_FILE,
};
use crate::engine::train::{TrainError, TrainEvent};
use crate::engine::{peft, Model};
use crate::record::Header;
use crate::session;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The session folder a unit's folder lies in (the nearest folder above it with a header).
pub fn session_of(unit_dir: &Path) -> Result<PathBuf> {
    unit_dir
        .ancestors()
        .skip(1)
        .find(|d| d.join(session::HEADER_FILE).exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "{} is not inside a session folder (no {} above it)",
                unit_dir.display(),
                session::HEADER_FILE
            )
        })
}

/// The progress file for this process: named after its array task when SLURM runs it.
pub fn default_progress(unit_dir: &Path) -> PathBuf {
    let job = std::env::var("SLURM_ARRAY_JOB_ID").ok();
    let index = std::env::var("SLURM_ARRAY_TASK_ID")
        .ok()
        .and_then(|i| i.parse::<usize>().ok());
    match (job, index) {
        (Some(job), Some(index)) => units::progress_path(unit_dir, Some((&job, index))),
        _ => units::progress_path(unit_dir, None),
    }
}

/// Holds an exclusive lock on the unit while it lives.
struct UnitLock {
    _file: std::fs::File,
}

fn lock_unit(unit_dir: &Path, say: &mut dyn FnMut(&str)) -> Result<UnitLock> {
    use std::os::fd::AsRawFd;
    let path = unit_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Safety: flock on a descriptor this function owns; it blocks until the lock is free.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        // Some network file systems refuse locks; the result file still decides what is done.
        say(&format!(
            "cannot lock {} ({}); going on without the lock",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(UnitLock { _file: file })
}

/// The model and domain built for a session at a policy, kept for the next unit.
struct Loaded {
    session: PathBuf,
    policy: Vec<String>,
    model: Model,
    domain: Box<dyn Domain>,
}

/// Runs units one after another, building the model only when the session or the policy
/// changes.
pub struct Worker<'p> {
    prepare: &'p dyn Prepare,
    loaded: Option<Loaded>,
}

impl<'p> Worker<'p> {
    pub fn new(prepare: &'p dyn Prepare) -> Self {
        Worker {
            prepare,
            loaded: None,
        }
    }

    /// Runs the unit of `job_path`, unless it is done or no longer wanted. Returns the result
    /// written, or `None` when there was nothing to do.
    pub fn run(
        &mut self,
        job_path: &Path,
        progress: Option<&Path>,
        say: &mut dyn FnMut(&str),
    ) -> Result<Option<UnitResult>> {
        run_unit(self, job_path, progress, say)
    }

    fn model_for(
        &mut self,
        session: &Path,
        header: &Header,
        policy: &[String],
        say: &mut dyn FnMut(&str),
    ) -> Result<&Loaded> {
        let fits = self
            .loaded
            .as_ref()
            .is_some_and(|l| l.session == session && l.policy == policy);
        if !fits {
            // The old model goes before the new one is built: two may not fit in memory.
            self.loaded = None;
            let (model, domain) =
                self.prepare
                    .build_worker(&header.config, Path::new(&header.model_path), say)?;
            let model = apply_policy_updates(model, session, policy)?;
            self.loaded = Some(Loaded {
                session: session.to_path_buf(),
                policy: policy.to_vec(),
                model,
                domain,
            });
        }
        Ok(self.loaded.as_ref().expect("just built"))
    }
}

fn run_unit(
    worker: &mut Worker<'_>,
    job_path: &Path,
    progress: Option<&Path>,
    say: &mut dyn FnMut(&str),
) -> Result<Option<UnitResult>> {
    let started_at = now_unix();
    let clock = Instant::now();
    let job = units::read_job(job_path)?;
    let ours = env!("CARGO_PKG_VERSION");
    if job.tool_version != ours {
        bail!(
            "{}: written by seal-tui {}, but this worker is seal-tui {ours}; point [cluster] \
             worker at the same build as the run",
            job_path.display(),
            job.tool_version
        );
    }
    let dir = job_path
        .parent()
        .context("a job file lies in its unit's folder")?;
    if dir.join(RESULT_FILE).exists() {
        say(&format!("{}: already done", job.unit));
        return Ok(None);
    }
    if dir.join(SKIP_FILE).exists() {
        say(&format!("{}: the run no longer needs it", job.unit));
        return Ok(None);
    }
    let _lock = lock_unit(dir, say)?;
    if dir.join(RESULT_FILE).exists() {
        say(&format!("{}: done by another worker meanwhile", job.unit));
        return Ok(None);
    }
    let session = session_of(dir)?;
    let header = Header::read(&session.join(session::HEADER_FILE))?;
    let progress_path = progress.map_or_else(|| default_progress(dir), Path::to_path_buf);
    // Written before the model is built, so that the runner knows the task reached this unit.
    let mut writer = ProgressWriter::create(&progress_path)?;
    let Loaded { model, domain, .. } = worker.model_for(&session, &header, &job.policy, say)?;
    let (model, domain) = (model, domain.as_ref());
    let load_secs = clock.elapsed().as_secs_f64();
    let train = unit_train_config(&header.config, job.unit);
    let mut write_failure = None;
    let mut started = (0, 0, 0);
    let cancel = AtomicBool::new(false);
    let trained = domain.apply(model, job.context, &job.text, &train, &cancel, &mut |e| {
        let line = match e {
            TrainEvent::Started {
                total_steps,
                examples,
                tokens,
                ..
            } => {
                started = (*total_steps, *examples, *tokens);
                ProgressLine::Started {
                    total_steps: *total_steps,
                    examples: *examples,
                    tokens: *tokens,
                }
            }
            TrainEvent::Step(p) => ProgressLine::Step {
                progress: super::execute::progress(p),
            },
            TrainEvent::Failed { .. } => return,
            // Not a progress line (the runner reads those); said on the worker's own output,
            // which the cluster keeps with the task.
            TrainEvent::Truncated { .. } => {
                if let Some(note) = super::execute::truncation_note(e, "inner.max_seq_len") {
                    say(&format!("warning: {}: {note}", job.unit));
                }
                return;
            }
        };
        if let Err(err) = writer.write(&line) {
            write_failure.get_or_insert(err);
        }
    });
    if let Some(err) = write_failure {
        return Err(err.context("writing the progress file"));
    }
    let outcome = match trained {
        Ok(o) => {
            let scored = domain.evaluate(model, &o.adapter, job.context, &cancel)?;
            if job.save_adapter {
                save_adapter_atomically(&o.adapter, dir, &model.info.name)?;
            }
            UnitOutcome::Evaluated {
                train: TrainSummary {
                    total_steps: started.0,
                    examples: started.1,
                    tokens: started.2,
                    steps: o.steps,
                    final_loss: o.losses.last().copied(),
                    secs: o.secs,
                },
                results: scored.results,
                accuracy: scored.accuracy,
                eval_secs: scored.secs,
            }
        }
        Err(TrainError::Cancelled) => bail!("the finetune was cancelled"),
        Err(e) => UnitOutcome::TrainFailed {
            message: e.to_string(),
        },
    };
    let result = UnitResult {
        unit: job.unit,
        outcome,
        timing: UnitTiming {
            host: hostname(),
            started_at,
            load_secs,
            total_secs: clock.elapsed().as_secs_f64(),
        },
    };
    units::write_json(&dir.join(RESULT_FILE), &result)?;
    Ok(Some(result))
}

/// The adapter under a temporary name, renamed into place: a folder named `adapter` is whole.
fn save_adapter_atomically(
    adapter: &crate::engine::LoraAdapter,
    dir: &Path,
    base_model: &str,
) -> Result<()> {
    let tmp = dir.join(format!(".{ADAPTER_DIR}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    peft::save_adapter(adapter, &tmp, base_model)?;
    for f in [peft::CONFIG_FILE, peft::WEIGHTS_FILE] {
        std::fs::File::open(tmp.join(f))?.sync_all()?;
    }
    let dest = dir.join(ADAPTER_DIR);
    // Left by an attempt that died between saving its adapter and writing its result.
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    units::sync_dir(dir);
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
