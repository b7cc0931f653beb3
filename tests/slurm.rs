//! The slurm backend on a real single-node SLURM cluster (scripts/slurm-cluster), driven
//! through the real binary: the same rewards as in-process, re-attaching after `kill -9`,
//! retries and recorded failures, and a quit that cancels the array.

mod common;

use common::{scratch, slurm_cluster, tiny_gguf, SlurmCluster};
use seal_tui::engine::Arch;
use seal_tui::record::state::EditStatus;
use seal_tui::record::{Event, Record, RunState, TaskStatus, UnitId};
use seal_tui::session;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The tiny model's run: 2 contexts x k=2 (a 4-task array per round).
fn write_config(dir: &Path, rounds: usize, cluster: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir).unwrap();
    let template = dir.join("tiny-whole.toml");
    std::fs::write(
        &template,
        "name = \"tiny-whole\"\ndescription = \"test\"\nprompt = \"Notes on {title}: {passage}\"\n\
         max_tokens = 12\nsplit = \"whole\"\nprefix_title = true\ninclude_passage = true\n",
    )
    .unwrap();
    let cfg = format!(
        r#"
seed = 7
[model]
path = "{model}"
[task]
data = "{data}"
contexts_per_round = 2
[knowledge]
template = "{template}"
prompts_dir = "{prompts}"
[self_edit]
k = 2
max_tokens = 12
[inner]
epochs = 3
[inner.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]
[outer]
rounds = {rounds}
min_gain = -1.0
save_adapters = "all"
[policy.train]
epochs = 1
loss = "completion"
[policy.train.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]
[cluster]
{cluster}
"#,
        model = tiny_gguf(Arch::Qwen2).display(),
        data = root.join("assets/passages.json").display(),
        template = template.display(),
        prompts = root.join("prompts").display(),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

const SLURM: &str = "backend = \"slurm\"\ncpus_per_task = 1\npoll_ms = 100\n";

fn spawn(args: &[&str], sessions: &Path, cluster: Option<&SlurmCluster>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seal-tui"));
    cmd.args(args)
        .env("SEAL_SESSIONS_DIR", sessions)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(c) = cluster {
        cmd.envs(c.env());
    }
    cmd.spawn().expect("start seal-tui")
}

/// `seal-tui run --headless --config CFG`, its sessions under `sessions`.
fn run_headless(cfg: &Path, sessions: &Path, cluster: Option<&SlurmCluster>) -> Child {
    spawn(
        &["run", "--headless", "--config", cfg.to_str().unwrap()],
        sessions,
        cluster,
    )
}

/// `scancel` of tasks of an array, from outside the run; it must succeed.
fn scancel(cluster: &SlurmCluster, job: &str, tasks: &[usize]) {
    let out = cluster
        .command("scancel")
        .args(tasks.iter().map(|t| format!("{job}_{t}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn only_session(sessions: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(sessions)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

fn records(dir: &Path) -> Vec<Record> {
    let (_, records, issues) = session::open(dir).unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    records
}

fn fold(records: &[Record]) -> RunState {
    RunState::from_events(records.iter().map(|r| &r.event))
}

/// Reads the child's progress lines, calling `on_line` with each (and the child's stdin), until
/// `on_line` says stop or the output ends; then waits for the child.
fn drive(child: &mut Child, mut on_line: impl FnMut(&str, &mut ChildStdin) -> bool) {
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    for line in stdout.lines() {
        let line = line.unwrap();
        if !on_line(&line, &mut stdin) {
            break;
        }
    }
    drop(stdin);
}

fn run_to_end(child: &mut Child) {
    drive(child, |_, _| true);
    let status = child.wait().unwrap();
    assert!(status.success(), "seal-tui exited with {status}");
}

fn send(stdin: &mut ChildStdin, json: &str) {
    stdin.write_all(json.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

/// `(job, task)` of a progress line about a task in `state` (`slurm task 12_0: running`, or
/// `slurm task 12_0, unit 3: running` for a task that runs several units).
fn task_line<'a>(line: &'a str, state: &str) -> Option<(&'a str, usize)> {
    let rest = line.split("slurm task ").nth(1)?;
    let (task, tail) = rest.split_once(": ")?;
    let task = task.split(", unit ").next()?;
    if !tail.starts_with(state) {
        return None;
    }
    let (job, index) = task.split_once('_')?;
    Some((job, index.parse().ok()?))
}

/// How many times each unit's result was recorded.
fn evaluations(records: &[Record]) -> HashMap<UnitId, usize> {
    let mut out = HashMap::new();
    for r in records {
        if let Event::EditEvaluated {
            id, rev, repeat, ..
        } = &r.event
        {
            *out.entry(UnitId {
                id: *id,
                rev: *rev,
                repeat: *repeat,
            })
            .or_insert(0) += 1;
        }
    }
    out
}

/// Units sent out, with the attempt each went as.
fn submitted(records: &[Record]) -> Vec<(String, UnitId, u32)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ClusterSubmitted { job, tasks, .. } => Some(
                tasks
                    .iter()
                    .map(|t| (job.clone(), t.unit, t.attempt))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// How many workers finished each unit, from the tasks' logs (`<unit>: done in ...`).
fn completions(dir: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let logs = dir.join("cluster/logs");
    for entry in std::fs::read_dir(&logs).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some((unit, _)) = line.split_once(": done in ") {
                *out.entry(unit.to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// What must agree between backends: texts, rewards, answers and finetune results; not times.
fn outcomes(state: &RunState) -> Vec<String> {
    let mut out = Vec::new();
    for round in &state.rounds {
        for c in &round.contexts {
            out.push(format!(
                "{:?} baseline {:?} kept {:?}",
                c.id,
                c.baseline.as_ref().map(|b| b.accuracy),
                c.kept
            ));
            for e in &c.edits {
                let evals: Vec<String> = e
                    .evaluations
                    .iter()
                    .map(|v| {
                        let answers: Vec<&str> =
                            v.results.iter().map(|q| q.answer.as_str()).collect();
                        format!("rep {} acc {} {answers:?}", v.repeat, v.accuracy)
                    })
                    .collect();
                out.push(format!(
                    "  e{} {:?} reward {:?} gain {:?} loss {:?} steps {} {evals:?} text {:?}",
                    e.index,
                    e.status,
                    e.reward,
                    e.gain,
                    e.train.final_loss,
                    e.train.total_steps,
                    e.text
                ));
            }
        }
        out.push(format!(
            "policy {:?} {:?}",
            round.policy.status, round.policy.adapter
        ));
    }
    out
}

#[test]
fn a_slurm_run_gives_the_same_rewards_as_the_local_one() {
    let Some(cluster) = slurm_cluster(2) else {
        return;
    };
    let work = scratch().join("slurm-same");
    let local_cfg = write_config(&work.join("local"), 2, "backend = \"local\"");
    let slurm_cfg = write_config(&work.join("slurm"), 2, SLURM);
    // The same run again with each task running two units, the model loaded once.
    let packed_cfg = write_config(
        &work.join("packed"),
        2,
        &format!("{SLURM}max_parallel = 2\nunits_per_task = 0\n"),
    );
    let local_sessions = work.join("local-sessions");
    let slurm_sessions = work.join("slurm-sessions");
    let packed_sessions = work.join("packed-sessions");
    let mut local = run_headless(&local_cfg, &local_sessions, None);
    let mut slurm = run_headless(&slurm_cfg, &slurm_sessions, Some(&cluster));
    run_to_end(&mut local);
    run_to_end(&mut slurm);
    let mut packed = run_headless(&packed_cfg, &packed_sessions, Some(&cluster));
    run_to_end(&mut packed);
    let local_dir = only_session(&local_sessions);
    let slurm_dir = only_session(&slurm_sessions);
    let local_records = records(&local_dir);
    let slurm_records = records(&slurm_dir);
    let (a, b) = (fold(&local_records), fold(&slurm_records));
    assert!(a.finished && b.finished, "{:?} {:?}", a.failure, b.failure);
    assert_eq!(outcomes(&a), outcomes(&b));
    for round in &b.rounds {
        for c in &round.contexts {
            for e in &c.edits {
                assert_eq!(e.status, EditStatus::Scored, "{e:?}");
            }
        }
        assert!(round.policy.adapter.is_some(), "round {}", round.index + 1);
    }

    // One 4-task array per round, each unit evaluated once, and live progress recorded as the
    // same training events a local run writes.
    let sent = submitted(&slurm_records);
    assert_eq!(sent.len(), 8, "{sent:?}");
    assert!(sent.iter().all(|(_, _, attempt)| *attempt == 1));
    assert_eq!(b.arrays.len(), 2);
    for array in &b.arrays {
        assert_eq!(array.tasks.len(), 4);
        assert!(array
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Done && t.started));
    }
    let evals = evaluations(&slurm_records);
    assert_eq!(evals.len(), 8);
    assert!(evals.values().all(|n| *n == 1), "{evals:?}");
    let steps = |records: &[Record]| {
        records
            .iter()
            .filter(|r| matches!(r.event, Event::TrainStep { .. }))
            .count()
    };
    assert_eq!(steps(&local_records), steps(&slurm_records));
    assert!(completions(&slurm_dir).values().all(|n| *n == 1));
    // Every edit's adapter was kept (save_adapters = "all"), and the units' copies cleared.
    for round in 1..=2 {
        for ctx in 1..=2 {
            for edit in 1..=2 {
                let adapter = slurm_dir.join(format!("adapters/r{round}-c{ctx}-e{edit}"));
                assert!(
                    adapter.join("adapter_model.safetensors").exists(),
                    "{adapter:?}"
                );
            }
        }
    }
    let leftover = std::fs::read_dir(slurm_dir.join("cluster/units"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("adapter").exists())
        .count();
    assert_eq!(leftover, 0);

    // A worker asked again for a finished unit does nothing.
    let unit_dir = std::fs::read_dir(slurm_dir.join("cluster/units"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let before = std::fs::read(unit_dir.join("result.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(["worker", unit_dir.join("job.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));
    assert_eq!(std::fs::read(unit_dir.join("result.json")).unwrap(), before);

    // Packed: the same outcomes, two tasks of two units per round, each unit once, and the
    // model loaded once per task (the second unit of a task reports no load time).
    let packed_dir = only_session(&packed_sessions);
    let packed_records = records(&packed_dir);
    let p = fold(&packed_records);
    assert!(p.finished, "{:?}", p.failure);
    assert_eq!(outcomes(&a), outcomes(&p));
    assert_eq!(p.arrays.len(), 2);
    for array in &p.arrays {
        assert_eq!((array.per_task, array.tasks.len()), (2, 4));
        assert!(array
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Done && t.started));
    }
    let evals = evaluations(&packed_records);
    assert_eq!(evals.len(), 8);
    assert!(evals.values().all(|n| *n == 1), "{evals:?}");
    assert_eq!(steps(&local_records), steps(&packed_records));
    let done = completions(&packed_dir);
    assert_eq!(done.len(), 8, "{done:?}");
    assert!(done.values().all(|n| *n == 1));
    let logs: Vec<String> = std::fs::read_dir(packed_dir.join("cluster/logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(logs.len(), 4, "one log per task");
    for log in &logs {
        assert_eq!(log.matches("loading ").count(), 1, "{log}");
        assert_eq!(log.matches(": done in ").count(), 2, "{log}");
    }

    // The report reckons the cluster's overhead from the log.
    for (name, records) in [
        ("one unit per task", &slurm_records),
        ("packed", &packed_records),
    ] {
        let figures = seal_tui::text::report::cluster_figures(records);
        assert_eq!(figures.len(), 2);
        for f in &figures {
            assert_eq!((f.units, f.arrays), (4, 1));
            assert!(
                f.work_secs > 0.0 && f.wall_secs > 0.0 && f.slots >= 1,
                "{f:?}"
            );
            eprintln!(
            "{name}: round {}: wall {:.2} s, {} slot(s), inner loop {:.2} s, overhead {:.2} s per unit",
            f.round + 1,
            f.wall_secs,
            f.slots,
            f.mean_unit_secs(),
            f.overhead_per_unit()
        );
        }
    }
}

/// Waits until `path` exists (a worker's result), or fails after `secs`.
fn wait_for(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_mid_array_then_resume_collects_every_unit_once() {
    let Some(cluster) = slurm_cluster(0) else {
        return;
    };
    let work = scratch().join("slurm-kill");
    // One task at a time, each held a second in its setup: the array outlives the runner.
    let cfg = write_config(
        &work,
        1,
        &format!("{SLURM}max_parallel = 1\nsetup = \"sleep 1\"\n"),
    );
    let sessions = work.join("sessions");
    let mut child = run_headless(&cfg, &sessions, Some(&cluster));
    let mut job = String::new();
    drive(&mut child, |line, _| {
        if let Some((j, 0)) = task_line(line, "done") {
            job = j.to_string();
            return false;
        }
        true
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!job.is_empty(), "the first task never finished");
    let dir = only_session(&sessions);
    let before = records(&dir);
    let units: Vec<UnitId> = submitted(&before).iter().map(|(_, u, _)| *u).collect();
    assert_eq!(units.len(), 4);
    // While no runner watches, the next task finishes; then the two still waiting are
    // cancelled, so the resumed runner must submit exactly those again.
    wait_for(&session_unit(&dir, units[1]).join("result.json"), 120);
    scancel(&cluster, &job, &[2, 3]);
    let mut child = spawn(
        &["resume", "--headless", dir.to_str().unwrap()],
        &sessions,
        Some(&cluster),
    );
    run_to_end(&mut child);
    let after = records(&dir);
    let state = fold(&after);
    assert!(state.finished, "{:?}", state.failure);
    let evals = evaluations(&after);
    assert_eq!(evals.len(), 4, "{evals:?}");
    assert!(
        evals.values().all(|n| *n == 1),
        "a unit recorded twice: {evals:?}"
    );
    let sent = submitted(&after);
    let again: Vec<UnitId> = sent.iter().skip(4).map(|(_, u, _)| *u).collect();
    let mut want = units[2..].to_vec();
    let mut got = again.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "only the missing units go out again");
    // No worker ran a unit to completion twice.
    let done = completions(&dir);
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done.values().all(|n| *n == 1), "{done:?}");
}

fn session_unit(dir: &Path, unit: UnitId) -> PathBuf {
    seal_tui::seal::units::unit_dir(dir, unit)
}

#[test]
fn a_cancelled_task_is_retried_and_a_failing_one_recorded_while_the_run_goes_on() {
    let Some(cluster) = slurm_cluster(0) else {
        return;
    };
    let work = scratch().join("slurm-fail");
    let cfg = write_config(
        &work,
        2,
        &format!("{SLURM}max_parallel = 2\nretries = 1\nsetup = \"sleep 1\"\n"),
    );
    let sessions = work.join("sessions");
    let mut child = run_headless(&cfg, &sessions, Some(&cluster));
    let mut cancelled = None;
    let mut moved = false;
    let mut round_one_done = false;
    let mut pause_asked = false;
    drive(&mut child, |line, stdin| {
        if !pause_asked && line.contains("mode: auto") {
            // Pause once round 1 is over.
            send(stdin, r#"{"command":"auto","rounds":1}"#);
            pause_asked = true;
        }
        // Killed by scancel while it runs (in its setup): a failure of the task, not of the run.
        if cancelled.is_none() {
            if let Some((job, 0)) = task_line(line, "running") {
                scancel(&cluster, job, &[0]);
                cancelled = Some(job.to_string());
            }
        }
        if line.contains("round 1 done") {
            round_one_done = true;
        }
        if round_one_done && !moved && line.contains("mode: paused") {
            // Round 2's workers will not find the policy update they must merge.
            let dir = only_session(&sessions);
            std::fs::rename(dir.join("policy/round-1"), dir.join("policy/moved")).unwrap();
            moved = true;
            send(stdin, r#"{"command":"auto"}"#);
        }
        true
    });
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(moved, "the run never paused after round 1");
    let dir = only_session(&sessions);
    let all = records(&dir);
    let state = fold(&all);
    assert!(state.finished, "{:?}", state.failure);

    // Round 1: the cancelled task failed with SLURM's reason, went out again, and its unit
    // was recorded once.
    let job = cancelled.expect("no task was seen running");
    let first = &state.arrays[0];
    assert_eq!(first.job, job);
    let task = &first.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    assert!(task.detail.contains("CANCELLED"), "{}", task.detail);
    let sent = submitted(&all);
    assert!(
        sent.iter().any(|(_, u, a)| *u == task.unit && *a == 2),
        "not retried: {sent:?}"
    );
    let evals = evaluations(&all);
    assert_eq!(evals.get(&task.unit), Some(&1));
    for c in &state.rounds[0].contexts {
        assert!(c.edits.iter().all(|e| e.status == EditStatus::Scored));
    }

    // Round 2: every task failed twice (a first try and one retry), then its edit was
    // recorded as failed with the worker's own words, and the run finished.
    for c in &state.rounds[1].contexts {
        assert!(c.finished);
        for e in &c.edits {
            assert_eq!(e.status, EditStatus::Failed, "{e:?}");
            let why = e.train.error.as_deref().unwrap_or("");
            assert!(
                why.contains("failed 2 time(s)") && why.contains("policy update"),
                "{why}"
            );
        }
    }
    assert!(state.rounds[1].metrics.is_some());
}

#[test]
fn a_packed_task_killed_midway_spends_an_attempt_only_on_the_unit_it_was_running() {
    let Some(cluster) = slurm_cluster(0) else {
        return;
    };
    let work = scratch().join("slurm-packed-fail");
    // One task runs all four units of the round.
    let cfg = write_config(
        &work,
        1,
        &format!("{SLURM}max_parallel = 1\nunits_per_task = 0\n"),
    );
    let sessions = work.join("sessions");
    let mut child = run_headless(&cfg, &sessions, Some(&cluster));
    let mut cancelled = None;
    drive(&mut child, |line, _| {
        if cancelled.is_none() && line.contains(", unit ") {
            if let Some((job, 0)) = task_line(line, "running") {
                scancel(&cluster, job, &[0]);
                cancelled = Some(job.to_string());
            }
        }
        true
    });
    assert!(child.wait().unwrap().success());
    let job = cancelled.expect("no unit was seen running");
    let dir = only_session(&sessions);
    let all = records(&dir);
    let state = fold(&all);
    assert!(state.finished, "{:?}", state.failure);
    let first = &state.arrays[0];
    assert_eq!((first.job.as_str(), first.per_task), (job.as_str(), 4));
    let failed: Vec<_> = first
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    let unreached: Vec<_> = first
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Cancelled)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", first.tasks);
    assert!(
        failed[0].detail.contains("CANCELLED"),
        "{}",
        failed[0].detail
    );
    assert!(!unreached.is_empty(), "{:?}", first.tasks);
    assert!(unreached
        .iter()
        .all(|t| t.detail.contains("before reaching it")));
    // The unit it was running goes out as its second attempt; the others as their first.
    let sent = submitted(&all);
    let again: Vec<_> = sent.iter().filter(|(j, _, _)| *j != job).collect();
    assert!(
        again.contains(&&(again[0].0.clone(), failed[0].unit, 2)),
        "{sent:?}"
    );
    for t in &unreached {
        assert!(
            again.iter().any(|(_, u, a)| *u == t.unit && *a == 1),
            "{sent:?}"
        );
    }
    let evals = evaluations(&all);
    assert_eq!(evals.len(), 4, "{evals:?}");
    assert!(evals.values().all(|n| *n == 1), "{evals:?}");
}

#[test]
fn quitting_cancels_the_array_and_a_resume_finishes_the_round() {
    let Some(cluster) = slurm_cluster(0) else {
        return;
    };
    let work = scratch().join("slurm-quit");
    let cfg = write_config(
        &work,
        1,
        &format!("{SLURM}max_parallel = 1\nsetup = \"sleep 2\"\n"),
    );
    let sessions = work.join("sessions");
    let mut child = run_headless(&cfg, &sessions, Some(&cluster));
    let mut job = None;
    drive(&mut child, |line, stdin| {
        if job.is_none() && line.contains("task(s) submitted") {
            job = line
                .split("slurm job ")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .map(str::to_string);
            send(stdin, r#"{"command":"quit"}"#);
        }
        true
    });
    assert!(child.wait().unwrap().success());
    let job = job.expect("no array was submitted");
    let dir = only_session(&sessions);
    let state = fold(&records(&dir));
    assert!(!state.finished);
    assert!(state.arrays[0].cancelled.is_some());
    // SLURM has nothing of it left to run.
    let out = cluster
        .command("squeue")
        .args([
            "--noheader",
            "--array",
            "--states=PENDING,RUNNING",
            "--jobs",
            &job,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "still out after the quit: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut child = spawn(
        &["resume", "--headless", dir.to_str().unwrap()],
        &sessions,
        Some(&cluster),
    );
    run_to_end(&mut child);
    let all = records(&dir);
    assert!(fold(&all).finished);
    let evals = evaluations(&all);
    assert_eq!(evals.len(), 4);
    assert!(evals.values().all(|n| *n == 1), "{evals:?}");
}
