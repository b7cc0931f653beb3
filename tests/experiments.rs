//! The paper's experiments as commands, on the tiny model: held-out passes inside a run
//! (recorded, resumed without redoing a finished pass), the SEAL row from a run's policy, CPT
//! pooling, the forgetting matrix, the prompt comparison, and the report re-reading results.

mod common;

use common::{scratch, tiny_gguf};
use seal_tui::engine::Arch;
use seal_tui::record::{Event, RunMode, RunState};
use seal_tui::seal::runner::{self, RunHandle};
use seal_tui::session;
use seal_tui::setup;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Two of the sample passages to train on and the other two held out.
fn splits() -> (PathBuf, PathBuf) {
    static SPLITS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    SPLITS
        .get_or_init(|| {
            let all: Vec<serde_json::Value> = serde_json::from_str(
                &std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/passages.json"),
                )
                .unwrap(),
            )
            .unwrap();
            let dir = scratch().join("splits");
            std::fs::create_dir_all(&dir).unwrap();
            let (train, heldout) = (dir.join("train.json"), dir.join("heldout.json"));
            std::fs::write(&train, serde_json::to_string(&all[..2]).unwrap()).unwrap();
            std::fs::write(&heldout, serde_json::to_string(&all[2..]).unwrap()).unwrap();
            (train, heldout)
        })
        .clone()
}

fn follow(handle: RunHandle) -> (RunState, Vec<Event>, PathBuf) {
    let mut state = RunState::default();
    let mut seen = Vec::new();
    while let Ok(r) = handle.events.recv_timeout(Duration::from_secs(300)) {
        state.apply(&r.event);
        seen.push(r.event);
    }
    let dir = handle.session_dir.clone();
    drop(handle.commands);
    handle.join.join().unwrap().unwrap();
    (state, seen, dir)
}

#[test]
fn heldout_passes_are_recorded_and_a_finished_pass_is_not_redone() {
    let (train, heldout) = splits();
    let mut cfg = common::tiny_config(1, false);
    cfg.task.data = train;
    cfg.heldout.data = Some(heldout.clone());
    cfg.heldout.k = 1;
    let root = scratch().join("sessions-heldout");
    std::fs::create_dir_all(&root).unwrap();
    let handle = runner::start(
        cfg,
        &root,
        setup::standard(),
        runner::Launch::with_mode(RunMode::Auto),
    )
    .unwrap();
    let (state, events, dir) = follow(handle);
    assert!(state.finished, "{:?}", state.failure);
    // Before round 1 and after its policy update, each over both held-out passages.
    assert_eq!(state.heldout.len(), 2);
    assert_eq!(state.heldout[0].after_round, None);
    assert_eq!(state.heldout[1].after_round, Some(0));
    let train_titles: Vec<String> = state.rounds[0]
        .contexts
        .iter()
        .map(|c| c.view.title.clone())
        .collect();
    for pass in &state.heldout {
        assert_eq!(pass.contexts.len(), 2);
        let summary = pass.summary.as_ref().expect("a finished pass");
        assert!(summary.graded > 0 && summary.ci95_low <= summary.accuracy);
        for c in &pass.contexts {
            assert!(
                !train_titles.contains(&c.title),
                "{} was trained on",
                c.title
            );
            assert_eq!(c.edits.len(), 1);
        }
    }
    let started = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::HeldoutStarted { .. }))
            .count()
    };
    assert_eq!(started(&events), 2);
    // The report tables them.
    let md = seal_tui::text::report::markdown_report(&state);
    assert!(
        md.contains("Held-out") && md.contains("before round 1"),
        "{md}"
    );

    // Cut the log right after the first pass finished, as if killed then; the resumed run does
    // not redo it, and does the rest.
    let log = dir.join(session::EVENTS_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    let cut = text
        .lines()
        .position(|l| l.contains("\"type\":\"heldout_finished\""))
        .unwrap();
    let kept: Vec<&str> = text.lines().take(cut + 1).collect();
    std::fs::write(&log, kept.join("\n") + "\n").unwrap();
    let again = runner::resume(&dir, setup::standard(), runner::Launch::default()).unwrap();
    let (resumed, events, _) = follow(again);
    assert!(resumed.finished, "{:?}", resumed.failure);
    let scored_pass0 = events
        .iter()
        .skip(kept.len())
        .filter(|e| matches!(e, Event::HeldoutScored { pass: 0, .. }))
        .count();
    assert_eq!(scored_pass0, 0, "the finished pass 0 was redone");
    assert_eq!(resumed.heldout.len(), 2);
    assert!(resumed.heldout[1].summary.is_some());
}

#[test]
fn the_same_data_as_training_and_heldout_is_refused() {
    let (train, _) = splits();
    let mut cfg = common::tiny_config(1, false);
    cfg.task.data = train.clone();
    cfg.heldout.data = Some(train);
    let root = scratch().join("sessions-heldout-bad");
    std::fs::create_dir_all(&root).unwrap();
    let err = runner::start(cfg, &root, setup::standard(), runner::Launch::default())
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("never trains on"), "{err:#}");
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "a folder was made"
    );
}

fn eval(args: &[&str], out: &Path) -> (String, serde_json::Value) {
    let model = tiny_gguf(Arch::Qwen2);
    let output = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .arg("eval")
        .args(["--model", model.to_str().unwrap()])
        .args([
            "--data",
            "assets/passages.json",
            "--epochs",
            "1",
            "--rank",
            "4",
        ])
        .args(["--alpha", "8", "--grader", "f1"])
        .args(args)
        .arg("--out")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "eval {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        stdout,
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap(),
    )
}

/// A policy adapter of the tiny model's shape, as a session's policy/round-N would be.
fn policy_adapter() -> PathBuf {
    let dir = scratch().join("policy-adapter");
    if !dir.exists() {
        let model = common::load(&tiny_gguf(Arch::Qwen2), seal_tui::engine::Quantize::Off);
        let cfg = seal_tui::engine::TrainConfig {
            lora: seal_tui::engine::LoraConfig {
                rank: 4,
                alpha: 8.0,
                dropout: 0.0,
                targets: vec![seal_tui::engine::Target::Q, seal_tui::engine::Target::V],
            },
            epochs: 2,
            learning_rate: 1e-2,
            ..Default::default()
        };
        let ex = seal_tui::engine::Example {
            prompt: vec![],
            completion: model.tokenizer.encode("the sea is wide and deep").unwrap(),
        };
        let out = seal_tui::engine::train_lora(&model, &[ex], &cfg, None, &mut |_| {}).unwrap();
        seal_tui::engine::peft::save_adapter(&out.adapter, &dir, "tiny").unwrap();
    }
    dir
}

#[test]
fn the_seal_row_uses_the_policy_and_prompts_compare_side_by_side() {
    let dir = scratch().join("eval-seal");
    std::fs::create_dir_all(&dir).unwrap();
    let policy = policy_adapter();
    let (stdout, json) = eval(
        &[
            "--passages",
            "2",
            "--k",
            "1",
            "--prompt",
            "implications,rewrite",
            "--conditions",
            "base,passage-self-edit,seal",
            "--policy",
            policy.to_str().unwrap(),
        ],
        &dir.join("results.json"),
    );
    let labels: Vec<String> = json["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    // One base row; the self-edit and SEAL rows once per template.
    assert_eq!(labels.len(), 5, "{labels:?}");
    for t in ["implications", "rewrite"] {
        assert!(labels
            .iter()
            .any(|l| l.contains("self-edit (") && l.contains(t)));
        assert!(labels
            .iter()
            .any(|l| l.starts_with("SEAL") && l.contains(t)));
    }
    assert!(stdout.contains("SEAL"), "{stdout}");
    // The report prints the table again from the file, and writes its CSV.
    let out = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(["report", dir.join("results.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = String::from_utf8_lossy(&out.stdout);
    assert!(
        again.contains("SEAL") && again.contains("95% interval"),
        "{again}"
    );
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
    // The SEAL row needs a policy.
    let output = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(["eval", "--conditions", "seal", "--passages", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--policy"));
}

#[test]
fn cpt_pools_one_adapter_over_all_passages() {
    let dir = scratch().join("eval-cpt");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, json) = eval(
        &[
            "--passages",
            "3",
            "--k",
            "1",
            "--cpt",
            "--conditions",
            "base,passage,passage-self-edit",
        ],
        &dir.join("results.json"),
    );
    assert_eq!(json["mode"], "cpt");
    let rows = json["conditions"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows[1..] {
        let passages = row["passages"].as_array().unwrap();
        assert_eq!(passages.len(), 3);
        // One adapter for all: every passage was graded with the same finetune.
        let tokens: Vec<u64> = passages
            .iter()
            .map(|p| p["runs"][0]["train_tokens"].as_u64().unwrap())
            .collect();
        assert!(tokens.windows(2).all(|w| w[0] == w[1]), "{tokens:?}");
        assert!(row["label"].as_str().unwrap().starts_with("CPT"));
    }
    let questions = rows[1]["questions"].as_u64().unwrap();
    assert_eq!(questions, rows[1]["graded"].as_u64().unwrap());
}

#[test]
fn continual_learning_gives_a_lower_triangular_matrix() {
    let dir = scratch().join("eval-continual");
    std::fs::create_dir_all(&dir).unwrap();
    let (stdout, json) = eval(
        &["--passages", "3", "--k", "1", "--continual"],
        &dir.join("results.json"),
    );
    let m = json["continual"]["matrix"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    for (i, row) in m.iter().enumerate() {
        assert_eq!(row.as_array().unwrap().len(), i + 1);
    }
    assert_eq!(json["continual"]["base"].as_array().unwrap().len(), 3);
    assert!(stdout.contains("after 3"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(["report", dir.join("results.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    // 1 + 2 + 3 cells of the lower triangle, and a header.
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
}

/// `scripts/study-table` on `results`, from the checkout (the files name their data relatively).
fn study_table(args: &[&Path], extra: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("scripts/study-table")
        .args(args)
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs scripts/study-table")
}

#[test]
fn chunks_of_an_eval_pool_to_the_whole_table() {
    let dir = scratch().join("eval-chunks");
    std::fs::create_dir_all(&dir).unwrap();
    let rows = [
        "--k",
        "1",
        "--seed",
        "3",
        "--conditions",
        "base,passage-self-edit",
    ];
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let (_, json) = eval(&[&rows[..], extra].concat(), &out);
        (out, json)
    };
    let (whole, whole_json) = run("whole.json", &["--passages", "2"]);
    let (first, _) = run("first.json", &["--offset", "0", "--passages", "1"]);
    let (second, second_json) = run("second.json", &["--offset", "1", "--passages", "1"]);

    // A passage's self-edit and answers follow the passage, not the chunk it ran in.
    let passage = |json: &serde_json::Value, row: usize, index: u64| {
        json["conditions"][row]["passages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["index"] == index)
            .map(|p| {
                p["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["self_edit"].clone(), r["results"].clone()))
                    .collect::<Vec<_>>()
            })
            .unwrap()
    };
    assert_eq!(passage(&whole_json, 1, 1), passage(&second_json, 1, 1));

    let table = |files: &[&Path], csv: &str| {
        let out = study_table(files, &["--csv", dir.join(csv).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.join(csv)).unwrap()
    };
    let pooled = table(&[&first, &second], "pooled.csv");
    assert_eq!(pooled, table(&[&whole], "whole.csv"));
    assert_eq!(pooled.lines().count(), 1 + 2, "{pooled}");

    let out = study_table(&[&first, &second], &["--regrade", "em"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("re-graded"), "{text}");
    assert!(
        text.contains("0 of 2 self-edits are the passage itself"),
        "{text}"
    );

    // Another seed is another experiment: refused, not pooled.
    let other = dir.join("other-seed.json");
    let args = ["--k", "1", "--seed", "4", "--conditions", "base"];
    eval(
        &[&args[..], &["--offset", "1", "--passages", "1"]].concat(),
        &other,
    );
    let out = study_table(&[&first, &other], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed differs"));
}

/// Every configuration shipped under `assets/` (the examples and the study's runs) loads and
/// passes the checks a run makes before it starts, and the study's model names are ones
/// `fetch-model` knows.
#[test]
fn every_shipped_configuration_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
    }
    let mut configs = 0;
    for path in &found {
        let text = std::fs::read_to_string(path).unwrap();
        // Prompt templates live under assets/ too; run configurations set a seed.
        if !text.lines().any(|l| l.starts_with("seed")) {
            continue;
        }
        let cfg = seal_tui::record::RunConfig::load(path)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        seal_tui::seal::settings::check(&cfg)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        if let Some(model) = &cfg.model.path {
            let named = seal_tui::engine::fetch::named_model(model).is_some();
            assert!(
                model.as_os_str().is_empty() || named || model.exists(),
                "{}: model {}",
                path.display(),
                model.display()
            );
        }
        configs += 1;
    }
    assert!(configs >= 4, "{found:?}");
}
