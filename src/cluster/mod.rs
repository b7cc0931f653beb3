//! SLURM, as a run uses it: a job array submitted with `sbatch`, its tasks' states read with
//! `squeue` (which keeps finished jobs for `MinJobAge`), why a task ended read with `scontrol`
//! (or `sacct` where there is an accounting database), tasks cancelled with `scancel`.
//!
//! It knows nothing of SEAL: an array is a batch script run N times, and a task is its index.
//! The commands are found on `PATH` and told about the cluster by the environment
//! (`SLURM_CONF`), as for a person at a login node.

pub mod parse;

pub use parse::{JobState, TaskEnding, TaskInfo};

use crate::record::config::ClusterSection;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use std::process::{Command, Output};

/// One job array to submit.
#[derive(Debug)]
pub struct ArrayRequest<'a> {
    pub name: &'a str,
    /// Tasks 0..count.
    pub count: usize,
    /// The batch script every task runs (`$SLURM_ARRAY_TASK_ID` tells it which it is).
    pub script: &'a Path,
    /// Where each task's output goes; `%A` is the array's job id, `%a` the task's index.
    pub output: &'a Path,
    /// The folder tasks start in.
    pub workdir: &'a Path,
    pub settings: &'a ClusterSection,
    /// Variables set for the tasks, over the submitter's environment (which SLURM passes on).
    pub env: &'a [(String, String)],
}

/// The `sbatch` options for a request: the array, names and paths, then the settings'
/// resources, then the person's own options (which SLURM lets override the earlier ones).
pub fn sbatch_args(req: &ArrayRequest<'_>) -> Vec<String> {
    let s = req.settings;
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", req.name),
        match s.max_parallel {
            0 => format!("--array=0-{}", req.count.saturating_sub(1)),
            m => format!("--array=0-{}%{m}", req.count.saturating_sub(1)),
        },
        format!("--output={}", req.output.display()),
        format!("--chdir={}", req.workdir.display()),
    ];
    let mut opt = |name: &str, value: &str| {
        if !value.is_empty() {
            args.push(format!("--{name}={value}"));
        }
    };
    opt("partition", &s.partition);
    opt("account", &s.account);
    opt("qos", &s.qos);
    opt("time", &s.time_limit);
    opt("mem", &s.mem);
    if !s.gres.is_empty() {
        opt("gres", &s.gres);
    } else if s.gpus_per_task > 0 {
        opt("gres", &format!("gpu:{}", s.gpus_per_task));
    }
    if s.cpus_per_task > 0 {
        opt("cpus-per-task", &s.cpus_per_task.to_string());
    }
    args.extend(s.sbatch_args.iter().cloned());
    args
}

/// A batch script: the person's setup lines (a `module load`, a virtual environment), then the
/// command, which replaces the shell so that SLURM's signals reach it.
pub fn batch_script(setup: &str, command: &str) -> String {
    let mut out = String::from("#!/bin/bash\n# Written by seal-tui: one task of a job array.\n");
    if !setup.trim().is_empty() {
        out.push_str("# [cluster] setup\n");
        out.push_str(setup.trim_end());
        out.push('\n');
    }
    out.push_str("set -eu\n");
    out.push_str(command.trim_end());
    out.push('\n');
    out
}

fn run(cmd: &mut Command) -> Result<Output> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("`{name}` was not found on PATH: SLURM's client commands are needed for [cluster] backend = \"slurm\"")
        } else {
            anyhow!("cannot run `{name}`: {e}")
        }
    })
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Submits an array; returns its job id.
pub fn submit(req: &ArrayRequest<'_>) -> Result<String> {
    if req.count == 0 {
        bail!("an array needs at least one task");
    }
    let mut cmd = Command::new("sbatch");
    cmd.args(sbatch_args(req)).arg(req.script);
    for (k, v) in req.env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd)?;
    if !out.status.success() {
        bail!("sbatch failed: {}", stderr_of(&out));
    }
    parse::job_id(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("sbatch said {:?}", String::from_utf8_lossy(&out.stdout)))
}

/// Asks the scheduler whether a job with these settings would be accepted, without submitting
/// one: a wrong partition or account is refused here, before a run starts.
pub fn check_settings(settings: &ClusterSection, workdir: &Path) -> Result<()> {
    let req = ArrayRequest {
        name: "seal-check",
        count: 1,
        script: Path::new("/dev/null"),
        output: Path::new("/dev/null"),
        workdir,
        settings,
        env: &[],
    };
    let args: Vec<String> = sbatch_args(&req)
        .into_iter()
        .filter(|a| a != "--parsable")
        .collect();
    let out = run(Command::new("sbatch")
        .arg("--test-only")
        .args(args)
        .arg("--wrap=true"))?;
    if !out.status.success() {
        bail!("sbatch refuses these settings: {}", stderr_of(&out));
    }
    Ok(())
}

/// The state of every task of these arrays that the scheduler still knows.
pub fn poll(jobs: &[String]) -> Result<Vec<TaskInfo>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let out = run(Command::new("squeue").args([
        "--noheader",
        "--states=all",
        "--array",
        "--jobs",
        &jobs.join(","),
        "--format=%F|%K|%T|%R",
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = stderr_of(&out);
        // One id the scheduler has forgotten makes squeue fail (several are skipped quietly):
        // it is just not there any more.
        if err.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        bail!("squeue failed: {err}");
    }
    Ok(parse::squeue_lines(&text))
}

/// How a task ended, from `scontrol` while the scheduler remembers it, else from `sacct` where
/// there is an accounting database; `None` when neither knows.
pub fn ending(job: &str, index: usize) -> Result<Option<TaskEnding>> {
    let id = format!("{job}_{index}");
    let out = run(Command::new("scontrol").args(["--oneliner", "show", "job", &id]))?;
    if out.status.success() {
        if let Some(e) = parse::scontrol_ending(&String::from_utf8_lossy(&out.stdout)) {
            return Ok(Some(e));
        }
    }
    let Ok(out) = Command::new("sacct")
        .args([
            "--noheader",
            "--parsable2",
            "--jobs",
            &id,
            "--format=State,ExitCode,Reason",
        ])
        .output()
    else {
        return Ok(None);
    };
    if !out.status.success() {
        return Ok(None);
    }
    Ok(parse::sacct_ending(&String::from_utf8_lossy(&out.stdout)))
}

/// Cancels tasks of an array (all of them for an empty list).
pub fn cancel(job: &str, indices: &[usize]) -> Result<()> {
    let targets: Vec<String> = if indices.is_empty() {
        vec![job.to_string()]
    } else {
        indices.iter().map(|i| format!("{job}_{i}")).collect()
    };
    let out = run(Command::new("scancel").args(&targets))?;
    if !out.status.success() {
        bail!("scancel {} failed: {}", targets.join(" "), stderr_of(&out));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_request_becomes_sbatch_options() {
        let settings = ClusterSection {
            partition: "gpu".into(),
            time_limit: "00:30:00".into(),
            gpus_per_task: 1,
            cpus_per_task: 4,
            max_parallel: 2,
            sbatch_args: vec!["--constraint=a100".into()],
            ..Default::default()
        };
        let out = PathBuf::from("/s/logs/%A_%a.out");
        let req = ArrayRequest {
            name: "seal-x",
            count: 4,
            script: Path::new("/s/a.sh"),
            output: &out,
            workdir: Path::new("/s"),
            settings: &settings,
            env: &[],
        };
        assert_eq!(
            sbatch_args(&req),
            [
                "--parsable",
                "--job-name=seal-x",
                "--array=0-3%2",
                "--output=/s/logs/%A_%a.out",
                "--chdir=/s",
                "--partition=gpu",
                "--time=00:30:00",
                "--gres=gpu:1",
                "--cpus-per-task=4",
                "--constraint=a100",
            ]
        );
        let own_gres = ClusterSection {
            gres: "gpu:h100:2".into(),
            gpus_per_task: 1,
            ..Default::default()
        };
        let args = sbatch_args(&ArrayRequest {
            settings: &own_gres,
            count: 1,
            ..req
        });
        assert!(args.contains(&"--gres=gpu:h100:2".to_string()));
        assert!(args.contains(&"--array=0-0".to_string()));
    }

    #[test]
    fn the_script_runs_the_setup_then_the_command() {
        let s = batch_script("module load cuda/12\n", "exec /bin/true");
        assert!(s.starts_with("#!/bin/bash\n"));
        let setup = s.find("module load cuda/12").unwrap();
        let strict = s.find("set -eu").unwrap();
        let command = s.find("exec /bin/true").unwrap();
        assert!(setup < strict && strict < command, "{s}");
        assert!(!batch_script("", "x").contains("[cluster] setup"));
    }
}
