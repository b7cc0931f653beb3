//! Crash safety of the real binary: a headless run killed with SIGKILL at several points resumes
//! and finishes, and no human decision it acknowledged is lost.

mod common;

use common::{scratch, tiny_gguf};
use seal_tui::engine::Arch;
use seal_tui::record::{Decision, Event, RunState};
use seal_tui::session;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn write_config(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = dir.join("tiny-whole.toml");
    std::fs::write(
        &template,
        "name = \"tiny-whole\"\ndescription = \"test\"\nprompt = \"Notes on {title}: {passage}\"\n\
         max_tokens = 12\nsplit = \"whole\"\nprefix_title = true\ninclude_passage = true\n",
    )
    .unwrap();
    let cfg = format!(
        r#"
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
epochs = 2
[inner.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]
[outer]
rounds = 2
min_gain = -1.0
[policy.train]
epochs = 1
loss = "completion"
[policy.train.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]
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

fn spawn(args: &[&str], sessions: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(args)
        .env("SEAL_SESSIONS_DIR", sessions)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start seal-tui")
}

/// Reads the child's progress lines, answering each sampled self-edit with a decision (approve
/// even edits, reject odd ones), until `stop_after` lines (then SIGKILL) or the end. Returns the
/// decisions the run acknowledged on stdout.
fn drive(child: &mut Child, stop_after: Option<usize>) -> Vec<(String, &'static str)> {
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut acknowledged = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        let line = line.unwrap();
        if let Some(rest) = line.split("] ").nth(1) {
            if let Some(id) = rest.strip_suffix(": approved by the human") {
                acknowledged.push((id.to_string(), "approved"));
            }
            if let Some(id) = rest.strip_suffix(": rejected by the human") {
                acknowledged.push((id.to_string(), "rejected"));
            }
            if let Some((id, _)) = rest.split_once(": self-edit sampled") {
                let nums: Vec<usize> = id
                    .split_whitespace()
                    .map(|p| p[1..].parse().unwrap())
                    .collect();
                let verb = if nums[2].is_multiple_of(2) {
                    "approve"
                } else {
                    "reject"
                };
                let cmd = format!(
                    "{{\"command\":\"{verb}\",\"id\":{{\"round\":{},\"ctx\":{},\"edit\":{}}}}}\n",
                    nums[0], nums[1], nums[2]
                );
                let _ = stdin.write_all(cmd.as_bytes());
                let _ = stdin.flush();
            }
        }
        if stop_after.is_some_and(|s| n + 1 >= s) {
            child.kill().unwrap();
            break;
        }
    }
    drop(stdin);
    child.wait().unwrap();
    acknowledged
}

fn decisions_in_log(dir: &Path) -> Vec<(String, &'static str)> {
    let (_, records, _) = session::open(dir).unwrap();
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::EditDecision { id, decision } => Some((
                format!("r{} c{} e{}", id.round, id.ctx, id.edit),
                match decision {
                    Decision::Approved => "approved",
                    Decision::Rejected => "rejected",
                    Decision::Edited { .. } => "edited",
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn sigkill_at_several_points_then_resume_loses_no_decision() {
    let work = scratch().join("kill");
    std::fs::create_dir_all(&work).unwrap();
    let config = write_config(&work);
    for (i, kill_after) in [8usize, 17, 33].into_iter().enumerate() {
        let sessions = work.join(format!("sessions-{i}"));
        let mut child = spawn(
            &["run", "--headless", "--config", config.to_str().unwrap()],
            &sessions,
        );
        let before = drive(&mut child, Some(kill_after));
        let dir = std::fs::read_dir(&sessions)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let logged = decisions_in_log(&dir);
        for d in &before {
            assert!(
                logged.contains(d),
                "kill point {kill_after}: decision {d:?} lost after SIGKILL"
            );
        }

        let mut child = spawn(&["resume", "--headless", dir.to_str().unwrap()], &sessions);
        drive(&mut child, None);
        let (_, records, _) = session::open(&dir).unwrap();
        let state = RunState::from_events(records.iter().map(|r| &r.event));
        assert!(
            state.finished,
            "kill point {kill_after}: the resumed run did not finish"
        );
        let logged = decisions_in_log(&dir);
        for d in &before {
            assert!(
                logged.contains(d),
                "kill point {kill_after}: decision {d:?} lost after resume"
            );
        }
        assert_eq!(state.rounds.len(), 2);
        for round in &state.rounds {
            assert!(round.metrics.is_some());
            assert_eq!(round.contexts.len(), 2);
            for c in &round.contexts {
                assert!(c.finished);
                if let Some(k) = c.kept {
                    assert!(!c.edits[k].is_rejected(), "a rejected self-edit was kept");
                }
            }
        }
        // Every context of every round was started exactly once in the surviving history, or
        // restarted after the crash and then finished: either way exactly one finish each.
        let finishes = records
            .iter()
            .filter(|r| matches!(r.event, Event::ContextFinished { .. }))
            .count();
        assert_eq!(finishes, 4, "kill point {kill_after}");
    }
}
