//! The ARC domain on the tiny model: test-time training and its evaluation, the domain driven by
//! the SEAL runner, and the `arc eval` table.

mod common;

use common::{scratch, tiny_gguf};
use seal_tui::engine::train::{TrainConfig, TrainEvent};
use seal_tui::engine::{peft, Arch, LoraConfig, Quantize, Target};
use seal_tui::record::config::{DomainKind, LoraSettings, LoraTarget, RunConfig};
use seal_tui::record::state::EditStatus;
use seal_tui::record::ContextBody;
use seal_tui::record::{Command, EditId, Event, RunMode, RunState};
use seal_tui::seal::runner::{self, Launch};
use seal_tui::setup;
use seal_tui::tasks::arc::ttt::{Ttt, TttSettings};
use seal_tui::tasks::arc::{parse_answer, ArcTask, Grid, SelfEditConfig};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

/// A small task: swap the two columns of a 2x2 grid. Three demonstrations, two test inputs.
const TASK: &str = r#"{
    "train": [
        {"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]},
        {"input": [[0, 0], [2, 0]], "output": [[0, 0], [0, 2]]},
        {"input": [[3, 4], [0, 0]], "output": [[4, 3], [0, 0]]}
    ],
    "test": [
        {"input": [[5, 0], [0, 6]], "output": [[0, 5], [6, 0]]},
        {"input": [[0, 7], [0, 0]], "output": [[7, 0], [0, 0]]}
    ]
}"#;

/// A usable config: basic augmentations, answer-only loss, one epoch.
const CONFIG: &str = r#"{"data_generation": {"use_basic_augmentations": true,
    "use_size_augmentations": false, "use_chain_augmentations": false,
    "use_repeat_augmentations": false},
    "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.001,
    "num_train_epochs": 1}}"#;

fn task_file() -> PathBuf {
    let path = scratch().join("swapcols.json");
    if !path.exists() {
        std::fs::write(&path, TASK).unwrap();
    }
    path
}

fn small_lora() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec![Target::Q, Target::V],
    }
}

fn settings() -> TttSettings {
    TttSettings {
        max_steps: 12,
        max_examples: 6,
        leave_two_out: true,
        views: 2,
        max_resamples: 1,
        // The tests below want the tiny model's gibberish; constrained sampling has its own.
        constrained: false,
    }
}

fn small_lora_settings() -> LoraSettings {
    LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    }
}

/// Every test case has one result, in order, whose verdict agrees with its answer, and whose
/// recorded grid is the one read from the answer.
fn check_results(expected: &[Vec<Vec<u8>>], results: &[seal_tui::record::QuestionResult]) {
    assert_eq!(results.len(), expected.len());
    for (i, (r, output)) in results.iter().zip(expected).enumerate() {
        assert_eq!(r.question, i);
        assert_eq!(r.verdict.grader, "exact");
        let read = parse_answer(&r.answer).ok().map(|g| g.rows().to_vec());
        if let Some(grid) = &r.grid {
            assert_eq!(Some(&grid.0), read.as_ref(), "{r:?}");
        }
        let matches = read.as_ref() == Some(output);
        // A solved case shows the matching attempt; an unsolved one never shows the answer.
        assert_eq!(r.verdict.correct, matches, "{r:?}");
        assert!(!r.verdict.raw.is_empty());
    }
}

#[test]
fn test_time_training_on_the_tiny_model_end_to_end() {
    let model = common::load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    let task = ArcTask::load_file(&task_file()).unwrap();
    let base = TrainConfig {
        lora: small_lora(),
        ..TrainConfig::default()
    };
    let ttt = Ttt::new(&model, settings(), &base, 7);

    // Gibberish and over-budget configs are refused with reasons.
    let refusal = ttt.prepare(&task, "x3#q").unwrap_err();
    assert!(refusal.contains("no JSON object"), "{refusal}");
    let long = CONFIG.replace("\"num_train_epochs\": 1", "\"num_train_epochs\": 10");
    let refusal = ttt.prepare(&task, &long).unwrap_err();
    assert!(refusal.contains("over the budget of 12 steps"), "{refusal}");

    let prepared = ttt.prepare(&task, CONFIG).unwrap();
    assert_eq!(prepared.data.pairs.len(), 6);
    assert_eq!(prepared.steps, 6);
    // Training pairs come from the demonstrations only.
    for pair in &prepared.data.pairs {
        let completion = Grid::parse_text(&pair.completion).unwrap();
        assert!(task.test.iter().all(|t| t.output != completion));
    }
    let mut steps = 0;
    let outcome = ttt
        .train(&model, &prepared, &base, None, &mut |e| {
            if let TrainEvent::Step(_) = e {
                steps += 1;
            }
        })
        .unwrap();
    assert_eq!(steps, 6);
    assert!(outcome.losses.iter().all(|l| l.is_finite()));

    let scored = ttt
        .evaluate(&model, Some(&outcome.adapter), &task, None)
        .unwrap();
    assert!(scored.accuracy == 0.0 || scored.accuracy == 1.0);
    check_results(&outputs(&task), &scored.results);
    let all_correct = scored.results.iter().all(|r| r.verdict.correct);
    assert_eq!(scored.accuracy == 1.0, all_correct);

    let icl = ttt.evaluate(&model, None, &task, None).unwrap();
    check_results(&outputs(&task), &icl.results);
}

#[test]
fn under_the_grammar_even_a_random_model_writes_only_valid_configs() {
    use seal_tui::engine::sample::{generate, generate_constrained};
    use seal_tui::engine::SamplingParams;
    use seal_tui::tasks::arc::grammar::ConfigGrammar;
    use seal_tui::tasks::arc::{parse_self_edit, Limits};
    let model = common::load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    // A short prompt: the tiny vocabulary spells a config nearly byte by byte, and a task's
    // whole self-edit prompt would leave too little of its context.
    let prompt = model.tokenizer.encode("Config:").unwrap();
    let limits = Limits::default();
    let grammar = ConfigGrammar::new(&limits);
    for seed in 0..4 {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            max_tokens: 900,
            seed,
            stop: Vec::new(),
        };
        let gen = generate_constrained(
            &model,
            None,
            &prompt,
            &params,
            Some(&grammar),
            None,
            &mut |_| {},
        )
        .unwrap();
        let config = parse_self_edit(&gen.text, &limits);
        assert!(config.is_ok(), "{:?}: {:?}", gen.text, config.err());
        let _: SelfEditConfig = serde_json::from_str(&gen.text).unwrap();
    }
    // Fewer tokens than the shortest config: a clear error, not half a config.
    let short = SamplingParams {
        max_tokens: 50,
        ..SamplingParams::default()
    };
    let err = generate_constrained(
        &model,
        None,
        &prompt,
        &short,
        Some(&grammar),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tokens"), "{err}");
    // The same model sampling freely writes no config at all.
    let free = SamplingParams {
        temperature: 1.0,
        max_tokens: 200,
        ..SamplingParams::default()
    };
    let text = generate(&model, None, &prompt, &free, None, &mut |_| {})
        .unwrap()
        .text;
    assert!(parse_self_edit(&text, &limits).is_err());
}

fn outputs(task: &ArcTask) -> Vec<Vec<Vec<u8>>> {
    task.test.iter().map(|c| c.output.rows().to_vec()).collect()
}

fn arc_config(data: &Path) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.path = Some(tiny_gguf(Arch::Qwen2));
    cfg.task.domain = DomainKind::Arc;
    cfg.task.data = data.to_path_buf();
    cfg.task.contexts_per_round = 1;
    cfg.arc = settings();
    cfg.self_edit.k = 2;
    cfg.self_edit.max_tokens = 16;
    cfg.inner.lora = small_lora_settings();
    cfg.outer.rounds = 1;
    cfg.outer.min_gain = 0.5;
    cfg.policy.train.epochs = 1;
    cfg.policy.train.lora = small_lora_settings();
    cfg
}

#[test]
fn the_arc_domain_runs_through_the_seal_loop() {
    let root = scratch().join("sessions-arc");
    std::fs::create_dir_all(&root).unwrap();
    let cfg = arc_config(&task_file());
    let handle = runner::start(
        cfg,
        &root,
        setup::standard(),
        Launch::with_mode(RunMode::Step),
    )
    .unwrap();
    // Two steps: the in-context baseline and edit 0's sampling. The tiny model writes
    // gibberish, so edit 0 fails; a human then replaces it with a usable config.
    handle.commands.send(Command::Step).unwrap();
    handle.commands.send(Command::Step).unwrap();
    let e0 = EditId {
        round: 0,
        ctx: 0,
        edit: 0,
    };
    let mut state = RunState::default();
    let mut unusable = 0;
    let mut edited = false;
    while let Ok(record) = handle.events.recv_timeout(Duration::from_secs(120)) {
        state.apply(&record.event);
        match &record.event {
            Event::Warning { message } if message.contains("is unusable") => unusable += 1,
            Event::TrainFailed { id, message, .. } if *id == e0 && !edited => {
                assert!(message.starts_with("invalid self-edit"), "{message}");
                edited = true;
                handle
                    .commands
                    .send(Command::Edit {
                        id: e0,
                        text: CONFIG.into(),
                    })
                    .unwrap();
                handle
                    .commands
                    .send(Command::Auto { rounds: None })
                    .unwrap();
            }
            _ => {}
        }
    }
    drop(handle.commands);
    handle.join.join().unwrap().unwrap();
    assert!(
        state.finished,
        "the run did not finish: {:?}",
        state.failure
    );
    assert!(edited);

    let c = &state.rounds[0].contexts[0];
    let ContextBody::Arc { task } = &c.view.body else {
        panic!("not an ARC context: {:?}", c.view.body);
    };
    assert_eq!(task.id, "swapcols");
    assert_eq!(c.view.questions.len(), 2);
    let expected: Vec<Vec<Vec<u8>>> = task.test.iter().map(|c| c.output.0.clone()).collect();
    check_results(&expected, &c.baseline.as_ref().unwrap().results);

    // Each gibberish edit was drawn 1 + max_resamples times, then scored 0 untrained.
    assert_eq!(unusable, 2 * 2);
    let e1 = &c.edits[1];
    assert_eq!(e1.status, EditStatus::Failed);
    assert!(e1
        .train
        .error
        .as_deref()
        .unwrap()
        .contains("invalid self-edit"));
    assert_eq!(state.rounds[0].metrics.as_ref().unwrap().edits_evaluated, 2);

    // The human's config was trained and graded; ARC's gain is the reward itself.
    let e = &c.edits[0];
    assert_eq!(e.status, EditStatus::Scored, "{e:?}");
    assert_eq!(e.train.total_steps, 6);
    let reward = e.reward.unwrap();
    assert!(reward == 0.0 || reward == 1.0);
    assert_eq!(e.gain, Some(reward));
    check_results(&expected, &e.evaluations[0].results);
    assert_eq!(c.kept, (reward == 1.0).then_some(0));
}

#[test]
fn arc_eval_prints_the_table_and_writes_consistent_json() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = tiny_gguf(Arch::Qwen2);
    // A policy adapter to merge for the SEAL row (any adapter of the right shape will do).
    let model = common::load(&model_path, Quantize::Off);
    let (adapter, _) = seal_tui::engine::LoraAdapter::init(
        &small_lora(),
        &model.transformer.projection_shapes(),
        1,
        &model.transformer.device,
    )
    .unwrap();
    let policy = dir.path().join("round-0");
    peft::save_adapter(&adapter, &policy, &model.info.name).unwrap();
    let config = dir.path().join("arc.toml");
    let mut cfg = arc_config(&task_file());
    cfg.self_edit.max_tokens = 8;
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let out = dir.path().join("results.json");

    let run = Process::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(["arc", "eval", "--k", "2", "--quantize", "off", "--model"])
        .arg(&model_path)
        .arg("--data")
        .arg(task_file())
        .arg("--config")
        .arg(&config)
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let rows = [
        "in-context learning (no training)",
        "TTT + self-edit configs (no RL)",
        "SEAL: TTT + self-edit configs after RL",
        "TTT with the oracle config",
    ];
    for row in rows {
        assert!(stdout.contains(&format!("| {row} |")), "{row}: {stdout}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["tasks"], serde_json::json!(["swapcols"]));
    let conditions = json["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 4);
    for (c, row) in conditions.iter().zip(rows) {
        assert_eq!(c["label"], row);
        let runs = c["runs"].as_array().unwrap();
        let solved = runs.iter().filter(|r| r["solved"] == true).count();
        assert_eq!(c["solved"], solved);
        assert_eq!(c["trials"], runs.len());
        let rate = c["rate"].as_f64().unwrap();
        assert!((rate - solved as f64 / runs.len() as f64).abs() < 1e-12);
        // The self-edit rows count (task, config) pairs; the others count tasks.
        let per_task = if c["unit"] == "task" { 1 } else { 2 };
        assert_eq!(runs.len(), per_task, "{}", c["label"]);
        for r in runs {
            // A trial with results graded every test case; one without failed before grading.
            let results = r["results"].as_array().unwrap();
            assert!(results.len() == 2 || r["failure"].is_string(), "{r}");
        }
    }
    // The tiny model writes gibberish: its sampled configs are unusable and score 0.
    let sampled = &conditions[1]["runs"][0];
    assert!(sampled["self_edit"].is_string());
    assert!(sampled["failure"]
        .as_str()
        .unwrap()
        .starts_with("invalid self-edit"));
    // The oracle config trains and is graded.
    let oracle = &conditions[3]["runs"][0];
    assert!(oracle["steps"].as_u64().unwrap() > 0, "{oracle}");
    assert_eq!(oracle["results"].as_array().unwrap().len(), 2);
    let _: SelfEditConfig = serde_json::from_value(json["oracle"].clone()).unwrap();

    // `report` re-reads the file: the same table, which task each row solved, and CSV files
    // of the rows and of every trial.
    let report = Process::new(env!("CARGO_BIN_EXE_seal-tui"))
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{printed}");
    let table = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains('%'));
    for line in table {
        assert!(printed.contains(line), "{line} not in\n{printed}");
    }
    assert!(printed.contains("| swapcols |"), "{printed}");
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + rows.len(), "{csv}");
    let trials = std::fs::read_to_string(dir.path().join("results-trials.csv")).unwrap();
    // One line per trial: a task each for ICL and the oracle, k = 2 configs for the others.
    assert_eq!(trials.lines().count(), 1 + 1 + 2 + 2 + 1, "{trials}");
    assert!(trials.contains("invalid self-edit"), "{trials}");
}

/// `arc eval` on the tiny model with the given rows; the run's stdout, stderr and success.
fn arc_eval(config: &Path, out: &Path, conditions: &str) -> (String, String, bool) {
    arc_eval_with(config, out, conditions, &[])
}

fn arc_eval_with(
    config: &Path,
    out: &Path,
    conditions: &str,
    extra: &[&std::ffi::OsStr],
) -> (String, String, bool) {
    let run = Process::new(env!("CARGO_BIN_EXE_seal-tui"))
        .args(["arc", "eval", "--k", "2", "--quantize", "off", "--model"])
        .arg(tiny_gguf(Arch::Qwen2))
        .arg("--data")
        .arg(task_file())
        .arg("--config")
        .arg(config)
        .args(["--conditions", conditions, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
        run.status.success(),
    )
}

fn runs_of(out: &Path, label: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    json["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .unwrap_or_else(|| panic!("no row {label} in {json}"))["runs"]
        .clone()
}

#[test]
fn arc_eval_continues_from_its_journal_and_refuses_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("arc.toml");
    let mut cfg = arc_config(&task_file());
    cfg.self_edit.max_tokens = 8;
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let out = dir.path().join("results.json");
    let journal = dir.path().join("results.trials.jsonl");
    let oracle = "TTT with the oracle config";
    let icl = "in-context learning (no training)";

    let (_, stderr, ok) = arc_eval(&config, &out, "icl,oracle");
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("recorded earlier"), "{stderr}");
    let first = (runs_of(&out, icl), runs_of(&out, oracle));
    // The header and one line per trial.
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        3
    );

    // Killed while writing a third trial: the torn line is cut; the two finished trials are
    // taken as they are, and only the new row's trials run.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"condition\":\"self-edit\",\"tri").unwrap();
    drop(f);
    let (stdout, stderr, ok) = arc_eval(&config, &out, "icl,self-edit,oracle");
    assert!(ok, "{stderr}");
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(
        stderr.contains("continuing: 2 finished piece(s)"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("[recorded earlier]").count(), 2, "{stderr}");
    assert!(
        stdout.contains("| TTT + self-edit configs (no RL) |"),
        "{stdout}"
    );
    assert_eq!((runs_of(&out, icl), runs_of(&out, oracle)), first);
    assert_eq!(
        runs_of(&out, "TTT + self-edit configs (no RL)")
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        5
    );

    // The SEAL row's trials belong to the policy they were run with: the same policy takes
    // them again, another runs its own.
    let model = common::load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    let policy = |name: &str| {
        let (adapter, _) = seal_tui::engine::LoraAdapter::init(
            &small_lora(),
            &model.transformer.projection_shapes(),
            1,
            &model.transformer.device,
        )
        .unwrap();
        let dir = dir.path().join(name);
        peft::save_adapter(&adapter, &dir, &model.info.name).unwrap();
        dir
    };
    let (one, two) = (policy("round-0"), policy("other"));
    let seal =
        |p: &Path| arc_eval_with(&config, &out, "seal", &["--policy".as_ref(), p.as_os_str()]);
    let (_, stderr, ok) = seal(&one);
    assert!(ok && !stderr.contains("recorded earlier"), "{stderr}");
    let (_, stderr, ok) = seal(&one);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches("[recorded earlier]").count(), 2, "{stderr}");
    let (_, stderr, ok) = seal(&two);
    assert!(ok && !stderr.contains("recorded earlier"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        9
    );

    // Other settings would mix two experiments in one table: refused, journal untouched.
    let before = std::fs::read(&journal).unwrap();
    cfg.seed += 1;
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let (_, stderr, ok) = arc_eval(&config, &out, "icl");
    assert!(!ok);
    assert!(stderr.contains("other settings"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);
}
