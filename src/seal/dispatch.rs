//! The slurm backend: a round's inner loops as one SLURM job array whose tasks run
//! `seal-tui worker`, watched until every unit has a result.
//!
//! Everything the runner learns becomes the events an in-process run records (`train_started`,
//! `train_step` from the progress files as they grow, `train_finished`, `edit_evaluated` or
//! `train_failed` from the results), plus what only a cluster has: the array and its task map
//! (`cluster_submitted`), each task's state (`cluster_task`), a cancelled array
//! (`cluster_cancelled`).
//!
//! Because the task map is in the log, a runner killed mid-array and resumed finds its tasks
//! again: it asks SLURM about the ones still out, collects the results written meanwhile, and
//! submits only the units that have neither. A unit is collected once (its `edit_evaluated` is
//! in the fold), and a worker never redoes a unit whose result exists.

use super::execute::{cancelled, recorded_policy_updates, Env};
use super::plan::PlannedUnit;
use super::units::{self, ProgressLine, ProgressTail, UnitJob, UnitOutcome, UnitResult};
use crate::cluster::{self, ArrayRequest, JobState, TaskInfo};
use crate::record::config::{ClusterBackend, RunConfig, SaveAdapters};
use crate::record::state::EditStatus;
use crate::record::{ClusterTask, CtxId, EditId, Event, RunState, TaskStatus, UnitId};
use crate::session;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long SLURM may go unanswered before the phase gives up (a resume re-attaches).
const SCHEDULER_PATIENCE: Duration = Duration::from_secs(300);
/// Polls in a row a task must be missing from `squeue` before it counts as gone.
const MISSING_POLLS: u32 = 2;

/// The binary the tasks run.
pub fn worker_binary(cfg: &RunConfig) -> Result<PathBuf> {
    match &cfg.cluster.worker {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().context("cannot tell which seal-tui is running"),
    }
}

/// What the slurm backend needs before a session starts: the worker binary, SLURM's commands,
/// and settings the scheduler accepts.
pub fn check(cfg: &RunConfig) -> Result<()> {
    if cfg.cluster.backend != ClusterBackend::Slurm {
        return Ok(());
    }
    let worker = worker_binary(cfg)?;
    if !worker.is_file() {
        bail!("cluster.worker: {} is not a file", worker.display());
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    cluster::check_settings(&cfg.cluster, &here).context("cluster")
}

/// Whether the state still wants this unit's result: its edit is at that revision, not rejected
/// nor over, its context open, and that repeat not yet evaluated.
fn needed(s: &RunState, unit: UnitId) -> Result<(), &'static str> {
    let ctx = s.context(unit.id.ctx_id()).ok_or("its context is gone")?;
    if ctx.finished {
        return Err("its context was finished");
    }
    let edit = s.edit(unit.id).ok_or("its self-edit is gone")?;
    if edit.revision != unit.rev {
        return Err("its self-edit was edited");
    }
    if edit.is_rejected() {
        return Err("its self-edit was rejected");
    }
    if matches!(edit.status, EditStatus::Failed | EditStatus::Scored) {
        return Err("its self-edit is over");
    }
    if edit.evaluations.iter().any(|v| v.repeat == unit.repeat) {
        return Err("it is evaluated");
    }
    Ok(())
}

/// A unit still out, as the fold knows it.
#[derive(Clone, Debug)]
struct Out {
    job: String,
    /// The unit's line in the array's list.
    index: usize,
    /// The SLURM array task that runs it.
    slot: usize,
    /// Units that task runs.
    per_task: usize,
    unit: UnitId,
    status: TaskStatus,
}

fn out_tasks(s: &RunState, round: usize) -> Vec<Out> {
    s.arrays
        .iter()
        .filter(|a| a.round == round)
        .flat_map(|a| {
            a.tasks
                .iter()
                .filter(|t| !t.status.is_final())
                .map(move |t| Out {
                    job: a.job.clone(),
                    index: t.index,
                    slot: a.slot(t.index),
                    per_task: a.per_task,
                    unit: t.unit,
                    status: t.status,
                })
        })
        .collect()
}

/// A unit's task changed state.
fn task_event(t: &Out, status: TaskStatus, detail: String) -> Event {
    Event::ClusterTask {
        job: t.job.clone(),
        index: t.index,
        status,
        detail,
        task: (t.per_task > 1).then_some(t.slot),
    }
}

/// The units of one SLURM task of an array, with their states.
fn slot_units(s: &RunState, job: &str, slot: usize) -> Vec<(UnitId, TaskStatus)> {
    s.arrays
        .iter()
        .rev()
        .find(|a| a.job == job)
        .map(|a| {
            a.tasks
                .iter()
                .filter(|t| a.slot(t.index) == slot)
                .map(|t| (t.unit, t.status))
                .collect()
        })
        .unwrap_or_default()
}

/// The shell lines of a task: its units' folders from the array's list (lines
/// `slot * per_task + 1` on), then the worker on their job files.
fn task_command(list: &Path, worker: &Path, per_task: usize) -> String {
    format!(
        "first=$((SLURM_ARRAY_TASK_ID * {per_task} + 1))\n\
         jobs=()\n\
         while IFS= read -r unit; do jobs+=(\"$unit/{job}\"); done \
         < <(sed -n \"${{first}},$((first + {per_task} - 1))p\" {list})\n\
         exec {worker} worker \"${{jobs[@]}}\"",
        list = shell_quote(&list.display().to_string()),
        worker = shell_quote(&worker.display().to_string()),
        job = units::JOB_FILE,
    )
}

/// Cancels every array with tasks still out (`scancel`), and records it.
pub fn cancel_out(env: &Env<'_>, reason: &str) -> Result<()> {
    let jobs: Vec<String> = env.emitter.with_state(|s| {
        s.arrays
            .iter()
            .filter(|a| a.is_active())
            .map(|a| a.job.clone())
            .collect()
    });
    for job in jobs {
        cluster::cancel(&job, &[])?;
        env.emitter.emit(Event::ClusterCancelled {
            job,
            reason: reason.to_string(),
        })?;
    }
    Ok(())
}

/// Quotes a string for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a round's units on SLURM until each has a result, has failed for good, or is no longer
/// wanted. A quit cancels what is still out; any other interruption leaves it running for the
/// next phase (or a resumed runner) to pick up.
pub fn run_units(round: usize, planned: &[PlannedUnit], env: &Env<'_>) -> Result<()> {
    let mut d = Dispatch {
        env,
        round,
        tails: HashMap::new(),
        missing: HashMap::new(),
        last_answer: Instant::now(),
    };
    d.drop_unwanted()?;
    let mut fresh = Vec::new();
    for p in planned {
        let out = env.emitter.with_state(|s| s.active_task(p.unit).is_some());
        if out {
            continue;
        }
        // A worker may have finished for a task the log never heard of (the runner was killed
        // between submitting and recording it): its result is as good as any.
        if let Some(result) = units::read_result(&units::unit_dir(env.dir, p.unit))? {
            d.collect(None, result)?;
            continue;
        }
        fresh.push((
            *p,
            1 + env.emitter.with_state(|s| s.failed_attempts(p.unit)),
        ));
    }
    d.submit(&fresh)?;
    let index_of: HashMap<UnitId, usize> = planned.iter().map(|p| (p.unit, p.index)).collect();
    loop {
        if env.control.cancelled() {
            if env.control.quitting() {
                cancel_out(env, "the run was quit")?;
            }
            return Err(cancelled());
        }
        let out = env.emitter.with_state(|s| out_tasks(s, round));
        if out.is_empty() {
            return Ok(());
        }
        let retry = d.watch(&out)?;
        let retry: Vec<(PlannedUnit, u32)> = retry
            .into_iter()
            .filter_map(|(unit, attempt)| {
                index_of
                    .get(&unit)
                    .map(|&index| (PlannedUnit { unit, index }, attempt))
            })
            .collect();
        d.submit(&retry)?;
        d.pause();
    }
}

struct Dispatch<'a, 'e> {
    env: &'a Env<'e>,
    round: usize,
    tails: HashMap<(String, usize), ProgressTail>,
    missing: HashMap<(String, usize), u32>,
    last_answer: Instant,
}

impl Dispatch<'_, '_> {
    fn dir(&self) -> &Path {
        self.env.dir
    }

    fn emit(&self, event: Event) -> Result<()> {
        self.env.emitter.emit(event)
    }

    /// Sleeps one poll interval, waking early for a cancellation.
    fn pause(&self) {
        let until = Instant::now() + Duration::from_millis(self.env.cfg.cluster.poll_ms);
        while Instant::now() < until && !self.env.control.cancelled() {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }

    /// Cancels the round's units whose results nobody wants any more.
    fn drop_unwanted(&mut self) -> Result<()> {
        let out = self.env.emitter.with_state(|s| out_tasks(s, self.round));
        for t in out {
            if let Err(why) = self.env.emitter.with_state(|s| needed(s, t.unit)) {
                self.drop_unit(&t, why)?;
            }
        }
        Ok(())
    }

    /// Records a unit as no longer wanted and stops its work: its task is cancelled when it
    /// runs nothing else still wanted; otherwise the worker is told to pass over the unit.
    fn drop_unit(&mut self, t: &Out, why: &str) -> Result<()> {
        if t.per_task > 1 {
            let dir = units::unit_dir(self.dir(), t.unit);
            if let Err(e) = std::fs::write(dir.join(units::SKIP_FILE), why) {
                tracing::warn!("cannot mark {} as skipped: {e}", t.unit);
            }
        }
        self.emit(task_event(
            t,
            TaskStatus::Cancelled,
            format!("no longer needed: {why}"),
        ))?;
        let others_out = self.env.emitter.with_state(|s| {
            slot_units(s, &t.job, t.slot)
                .iter()
                .any(|(_, status)| !status.is_final())
        });
        if !others_out {
            cluster::cancel(&t.job, &[t.slot])?;
        }
        Ok(())
    }

    /// Whether the task of this unit came to any of its units.
    fn slot_reached(&self, t: &Out) -> bool {
        let units = self
            .env
            .emitter
            .with_state(|s| slot_units(s, &t.job, t.slot));
        units
            .iter()
            .any(|(unit, _)| self.reached(&t.job, t.slot, *unit))
    }

    /// Whether the worker has come to this unit (it writes the progress file first).
    fn reached(&self, job: &str, slot: usize, unit: UnitId) -> bool {
        let dir = units::unit_dir(self.dir(), unit);
        units::progress_path(&dir, Some((job, slot))).exists()
    }

    /// Writes the units' job files and submits them as one array.
    fn submit(&mut self, units: &[(PlannedUnit, u32)]) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let env = self.env;
        let cfg = env.cfg;
        let (policy, texts) = env.emitter.with_state(|s| {
            let texts: Vec<Option<String>> = units
                .iter()
                .map(|(p, _)| {
                    s.edit(p.unit.id)
                        .filter(|e| e.revision == p.unit.rev)
                        .map(|e| e.text.clone())
                })
                .collect();
            (recorded_policy_updates(s), texts)
        });
        let mut tasks = Vec::new();
        let mut lines = String::new();
        for ((p, attempt), text) in units.iter().zip(texts) {
            // Edited since it was planned: the next plan asks for the new revision.
            let Some(text) = text else { continue };
            let dir = units::unit_dir(self.dir(), p.unit);
            let job = UnitJob {
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                unit: p.unit,
                context: p.index,
                text,
                policy: policy.clone(),
                save_adapter: cfg.outer.save_adapters != SaveAdapters::None,
            };
            units::write_json(&dir.join(units::JOB_FILE), &job)?;
            let _ = std::fs::remove_file(dir.join(units::SKIP_FILE));
            lines.push_str(&dir.display().to_string());
            lines.push('\n');
            tasks.push(ClusterTask {
                index: tasks.len(),
                unit: p.unit,
                attempt: *attempt,
            });
        }
        if tasks.is_empty() {
            return Ok(());
        }
        let per_task = cfg.cluster.per_task(tasks.len());
        let base = self.dir().join(units::CLUSTER_DIR);
        let arrays = base.join("arrays");
        let logs = base.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let name = format!(
            "r{}-{:03}-{}",
            self.round + 1,
            env.emitter.with_state(|s| s.arrays.len()) + 1,
            std::process::id()
        );
        let list = arrays.join(format!("{name}.units"));
        units::write_atomic(&list, lines.as_bytes())?;
        let worker = worker_binary(cfg)?;
        let command = task_command(&list, &worker, per_task);
        let script = arrays.join(format!("{name}.sh"));
        units::write_atomic(
            &script,
            cluster::batch_script(&cfg.cluster.setup, &command).as_bytes(),
        )?;
        let session_id = self
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The worker uses as many threads as the task has CPUs (not the node's count, which
        // the runner's own setting would pass on).
        let threads = cfg.cluster.cpus_per_task.max(1).to_string();
        let job = cluster::submit(&ArrayRequest {
            name: &format!("seal-{session_id}-r{}", self.round + 1),
            count: tasks.len().div_ceil(per_task),
            script: &script,
            output: &logs.join("%A_%a.out"),
            workdir: self.dir(),
            settings: &cfg.cluster,
            env: &[("RAYON_NUM_THREADS".to_string(), threads)],
        })?;
        tracing::info!(job, units = tasks.len(), per_task, "submitted an array");
        self.emit(Event::ClusterSubmitted {
            job,
            round: self.round,
            tasks,
            per_task,
        })
    }

    /// One look at the tasks still out: progress, results, and what SLURM says. Returns the
    /// units to submit again (with their next attempt).
    fn watch(&mut self, out: &[Out]) -> Result<Vec<(UnitId, u32)>> {
        let mut retry = Vec::new();
        let mut open = Vec::new();
        for t in out {
            if let Err(why) = self.env.emitter.with_state(|s| needed(s, t.unit)) {
                self.drop_unit(t, why)?;
                continue;
            }
            self.report_progress(t)?;
            match units::read_result(&units::unit_dir(self.dir(), t.unit))? {
                Some(result) => self.collect(Some(t), result)?,
                None => open.push(t.clone()),
            }
        }
        if open.is_empty() {
            return Ok(retry);
        }
        let mut jobs: Vec<String> = open.iter().map(|t| t.job.clone()).collect();
        jobs.sort();
        jobs.dedup();
        let infos = match cluster::poll(&jobs) {
            Ok(infos) => {
                self.last_answer = Instant::now();
                infos
            }
            Err(e) if self.last_answer.elapsed() < SCHEDULER_PATIENCE => {
                tracing::warn!("squeue: {e:#}");
                return Ok(retry);
            }
            Err(e) => {
                return Err(e.context(format!(
                    "SLURM has not answered for {} s; resume the session once it does",
                    SCHEDULER_PATIENCE.as_secs()
                )))
            }
        };
        let by_slot: HashMap<(String, usize), TaskInfo> = infos
            .into_iter()
            .map(|i| ((i.job.clone(), i.index), i))
            .collect();
        for t in open {
            let key = (t.job.clone(), t.index);
            let info = by_slot.get(&(t.job.clone(), t.slot));
            if info.is_some() {
                self.missing.remove(&key);
            }
            let ended = match info.map(|i| &i.state) {
                // A task running several units runs one at a time: the others wait in it.
                Some(JobState::Running)
                    if t.status == TaskStatus::Pending
                        && (t.per_task == 1 || self.reached(&t.job, t.slot, t.unit)) =>
                {
                    self.emit(task_event(
                        &t,
                        TaskStatus::Running,
                        info.map(|i| i.reason.clone()).unwrap_or_default(),
                    ))?;
                    None
                }
                Some(s) if s.is_over() => Some(s.clone()),
                Some(_) => None,
                None => {
                    let n = self.missing.entry(key.clone()).or_insert(0);
                    *n += 1;
                    (*n >= MISSING_POLLS).then(|| JobState::Ended("GONE".into()))
                }
            };
            let Some(state) = ended else { continue };
            // The result may have landed between reading the folder and asking SLURM.
            self.report_progress(&t)?;
            if let Some(result) = units::read_result(&units::unit_dir(self.dir(), t.unit))? {
                self.collect(Some(&t), result)?;
                continue;
            }
            let reason = self.why_failed(&t, &state);
            if t.per_task > 1 && !self.reached(&t.job, t.slot, t.unit) && self.slot_reached(&t) {
                // Its task ended on an earlier unit before coming to this one: no attempt of
                // its own was spent, so it goes out again as it was.
                self.emit(task_event(
                    &t,
                    TaskStatus::Cancelled,
                    format!("its task ended before reaching it: {reason}"),
                ))?;
                let failed = self.env.emitter.with_state(|s| s.failed_attempts(t.unit));
                retry.push((t.unit, failed + 1));
                continue;
            }
            self.emit(task_event(&t, TaskStatus::Failed, reason.clone()))?;
            let failed = self.env.emitter.with_state(|s| s.failed_attempts(t.unit));
            if failed <= self.env.cfg.cluster.retries {
                retry.push((t.unit, failed + 1));
            } else {
                self.emit(Event::TrainFailed {
                    id: t.unit.id,
                    rev: t.unit.rev,
                    message: format!(
                        "the cluster task for {} failed {failed} time(s); the last: {reason}",
                        t.unit
                    ),
                })?;
            }
        }
        Ok(retry)
    }

    /// Why a task ended without a result: SLURM's account, and the last words of its log.
    fn why_failed(&self, t: &Out, state: &JobState) -> String {
        let slurm = match cluster::ending(&t.job, t.slot) {
            Ok(Some(e)) => e.describe(),
            _ => match state {
                JobState::Completed => "COMPLETED without writing a result".to_string(),
                JobState::Ended(s) if s == "GONE" => {
                    "no longer known to SLURM (cancelled before it started, or purged)".to_string()
                }
                JobState::Ended(s) | JobState::Waiting(s) => s.clone(),
                other => format!("{other:?}"),
            },
        };
        let log = self
            .dir()
            .join(units::CLUSTER_DIR)
            .join("logs")
            .join(format!("{}_{}.out", t.job, t.slot));
        // A task of several units says each unit's failure on a line naming its folder.
        let own = t.unit.dir_name();
        let last = std::fs::read_to_string(&log)
            .ok()
            .and_then(|text| {
                let lines = || text.lines().rev().filter(|l| !l.trim().is_empty());
                lines()
                    .find(|l| t.per_task > 1 && l.contains(&own))
                    .or_else(|| lines().next())
                    .map(|l| l.trim().chars().take(300).collect::<String>())
            })
            .unwrap_or_default();
        if last.is_empty() {
            slurm
        } else {
            format!("{slurm}: {last}")
        }
    }

    fn tail(&mut self, t: &Out) -> &mut ProgressTail {
        let dir = units::unit_dir(self.env.dir, t.unit);
        self.tails
            .entry((t.job.clone(), t.index))
            .or_insert_with(|| {
                ProgressTail::new(units::progress_path(&dir, Some((&t.job, t.slot))))
            })
    }

    /// The task's training progress not yet recorded, as the events an in-process finetune
    /// emits. Steps already in the log (before a resume) are not recorded twice.
    fn report_progress(&mut self, t: &Out) -> Result<()> {
        let lines = match self.tail(t).read_new() {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!("progress of {}: {e:#}", t.unit);
                return Ok(());
            }
        };
        for line in lines {
            let (started, last_step) = self.env.emitter.with_state(|s| {
                s.active_task(t.unit)
                    .map_or((true, usize::MAX), |(_, task)| (task.started, task.step))
            });
            let UnitId { id, rev, repeat } = t.unit;
            match line {
                ProgressLine::Started {
                    total_steps,
                    examples,
                    tokens,
                } if !started => self.emit(Event::TrainStarted {
                    id,
                    rev,
                    repeat,
                    total_steps,
                    examples,
                    tokens,
                })?,
                ProgressLine::Step { progress } if started && progress.step > last_step => self
                    .emit(Event::TrainStep {
                        id,
                        rev,
                        repeat,
                        progress,
                    })?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Records a unit's result as an in-process run would, and its task as done.
    fn collect(&mut self, task: Option<&Out>, result: UnitResult) -> Result<()> {
        let UnitId { id, rev, repeat } = result.unit;
        let started = task.is_some()
            && self
                .env
                .emitter
                .with_state(|s| s.active_task(result.unit).is_some_and(|(_, t)| t.started));
        let summary = match result.outcome {
            UnitOutcome::Evaluated {
                train,
                results,
                accuracy,
                eval_secs,
            } => {
                if !started {
                    self.emit(Event::TrainStarted {
                        id,
                        rev,
                        repeat,
                        total_steps: train.total_steps,
                        examples: train.examples,
                        tokens: train.tokens,
                    })?;
                }
                self.emit(Event::TrainFinished {
                    id,
                    rev,
                    repeat,
                    steps: train.steps,
                    final_loss: train.final_loss.unwrap_or(f64::NAN),
                    secs: train.secs,
                })?;
                self.emit(Event::EditEvaluated {
                    id,
                    rev,
                    repeat,
                    results,
                    accuracy,
                    secs: eval_secs,
                })?;
                format!(
                    "on {}: load {:.1} s, train {:.1} s, answer {:.1} s",
                    result.timing.host, result.timing.load_secs, train.secs, eval_secs
                )
            }
            UnitOutcome::TrainFailed { message } => {
                self.emit(Event::TrainFailed {
                    id,
                    rev,
                    message: message.clone(),
                })?;
                format!("on {}: the finetune failed", result.timing.host)
            }
        };
        if let Some(t) = task {
            self.emit(task_event(t, TaskStatus::Done, summary))?;
        }
        Ok(())
    }
}

/// After a context's selection: the adapters the run keeps move from the units' folders to
/// `adapters/`, and the rest are deleted (a round of a large model's adapters is big).
pub fn keep_adapters(
    dir: &Path,
    state: &RunState,
    cfg: &RunConfig,
    id: CtxId,
    kept: Option<usize>,
) {
    let Some(c) = state.context(id) else { return };
    let last_repeat = cfg.eval.repeats.saturating_sub(1);
    let keep: Vec<EditId> = match cfg.outer.save_adapters {
        SaveAdapters::None => Vec::new(),
        SaveAdapters::Kept => kept.map(|k| EditId::new(id, k)).into_iter().collect(),
        SaveAdapters::All => (0..c.edits.len()).map(|e| EditId::new(id, e)).collect(),
    };
    for eid in keep {
        let Some(edit) = state.edit(eid) else {
            continue;
        };
        let unit = UnitId {
            id: eid,
            rev: edit.revision,
            repeat: last_repeat,
        };
        let from = units::unit_dir(dir, unit).join(units::ADAPTER_DIR);
        if !from.is_dir() {
            continue;
        }
        let to = session::edit_adapter_dir(dir, eid);
        let _ = std::fs::remove_dir_all(&to);
        if let Some(parent) = to.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!("cannot keep the adapter of {eid}: {e}");
        }
    }
    let prefix = format!("r{}-c{}-", id.round + 1, id.ctx + 1);
    if let Ok(entries) = std::fs::read_dir(units::units_dir(dir)) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path().join(units::ADAPTER_DIR));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task command, run by bash as SLURM would for each task of a 5-unit list packed 2 by
    /// 2, hands each task its own units.
    #[test]
    fn each_task_runs_its_own_units() {
        let dir = std::env::temp_dir().join(format!("seal-task-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("a b.units");
        std::fs::write(&list, "/s/u1\n/s/u 2\n/s/u3\n/s/u4\n/s/u5\n").unwrap();
        let worker = dir.join("worker");
        std::fs::write(&worker, "#!/bin/sh\nshift\nprintf '%s|' \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = crate::cluster::batch_script("", &task_command(&list, &worker, 2));
        let run = |slot: usize| {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .env("SLURM_ARRAY_TASK_ID", slot.to_string())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run(0), "/s/u1/job.json|/s/u 2/job.json|");
        assert_eq!(run(1), "/s/u3/job.json|/s/u4/job.json|");
        assert_eq!(run(2), "/s/u5/job.json|");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shell_quoting_survives_quotes_and_blanks() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
