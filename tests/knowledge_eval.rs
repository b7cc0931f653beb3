//! `seal-tui eval` end to end: every condition on the tiny model, and the real SmolLM2 on two
//! shared SQuAD passages; and the loaders on both shared SQuAD formats.

mod common;

use common::{scratch, shared_data, tiny_gguf};
use seal_tui::engine::Arch;
use seal_tui::tasks::knowledge::{load_passages, Question};
use std::path::Path;
use std::process::Command;

fn eval(args: &[&str], out: &Path) -> (String, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run seal-tui eval");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "eval failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    (stdout, json)
}

/// Every condition's numbers agree with its own per-question records.
fn check_consistency(json: &serde_json::Value, conditions: &[&str], questions: usize) {
    let reports = json["conditions"].as_array().unwrap();
    assert_eq!(reports.len(), conditions.len());
    for (r, name) in reports.iter().zip(conditions) {
        assert_eq!(r["condition"], *name);
        let mut correct = 0;
        let mut graded = 0;
        for p in r["passages"].as_array().unwrap() {
            for run in p["runs"].as_array().unwrap() {
                let results = run["results"].as_array().unwrap();
                let ok = results
                    .iter()
                    .filter(|q| q["verdict"]["correct"] == true)
                    .count();
                let acc = run["accuracy"].as_f64().unwrap();
                assert!((acc - ok as f64 / results.len() as f64).abs() < 1e-9);
                correct += ok;
                graded += results.len();
                for q in results {
                    assert!(q["verdict"]["grader"]
                        .as_str()
                        .is_some_and(|g| !g.is_empty()));
                }
            }
        }
        assert_eq!(r["correct"].as_u64().unwrap() as usize, correct, "{name}");
        assert_eq!(r["graded"].as_u64().unwrap() as usize, graded, "{name}");
        let acc = r["accuracy"].as_f64().unwrap();
        assert!((acc - correct as f64 / graded.max(1) as f64).abs() < 1e-9);
        let (lo, hi) = (
            r["ci95"][0].as_f64().unwrap(),
            r["ci95"][1].as_f64().unwrap(),
        );
        assert!(lo <= acc + 1e-9 && acc <= hi + 1e-9 && (0.0..=1.0).contains(&lo) && hi <= 1.0);
        assert_eq!(
            r["questions"].as_u64().unwrap() as usize,
            questions,
            "{name}"
        );
    }
}

#[test]
fn every_condition_on_the_tiny_model() {
    let dir = scratch().join("eval-tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let synthetic = dir.join("synthetic.jsonl");
    std::fs::write(
        &synthetic,
        "{\"passage\": 0, \"texts\": [\"Varnholt was founded by Edda Quillon.\"]}\n\
         {\"passage\": 1, \"text\": \"The Tessaly Reactor was built in 2031.\"}\n",
    )
    .unwrap();
    let model = tiny_gguf(Arch::Qwen2);
    let conditions = ["base", "passage", "passage-self-edit", "passage-synthetic"];
    let (stdout, json) = eval(
        &[
            "--model",
            model.to_str().unwrap(),
            "--data",
            "assets/passages.json",
            "--passages",
            "2",
            "--k",
            "2",
            "--conditions",
            &conditions.join(","),
            "--synthetic",
            synthetic.to_str().unwrap(),
            "--grader",
            "judge-local",
            "--epochs",
            "1",
            "--rank",
            "4",
            "--alpha",
            "8",
        ],
        &dir.join("results.json"),
    );
    for label in [
        "base model (no adaptation)",
        "train on passage",
        "train on passage + self-edit",
        "train on passage + synthetic data",
    ] {
        assert!(stdout.contains(label), "missing row {label}:\n{stdout}");
    }
    assert!(stdout.contains("95% interval"), "{stdout}");
    check_consistency(&json, &conditions, 8 + 7);
    // k=2 self-edits per passage, one run each.
    let runs = json["conditions"][2]["passages"][0]["runs"]
        .as_array()
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["self_edit"].is_string()));
    assert_eq!(json["grader"], "judge-local");
}

#[test]
fn smollm2_on_two_shared_squad_passages() {
    let Some(data) = shared_data("squad/squad_v1.1_dev_seal_format.json") else {
        return;
    };
    common::real_model_path();
    let dir = scratch().join("eval-real");
    std::fs::create_dir_all(&dir).unwrap();
    let conditions = ["base", "passage", "passage-self-edit"];
    let (stdout, json) = eval(
        &[
            "--data",
            data.to_str().unwrap(),
            "--passages",
            "2",
            "--k",
            "1",
            "--conditions",
            &conditions.join(","),
            "--grader",
            "f1",
            "--epochs",
            "2",
        ],
        &dir.join("results.json"),
    );
    eprintln!("{stdout}");
    let passages = seal_tui::tasks::knowledge::load_passages(&data).unwrap();
    let questions = passages[0].questions.len() + passages[1].questions.len();
    check_consistency(&json, &conditions, questions);
}

#[test]
fn loads_the_seal_flattened_dev_set() {
    let Some(path) = shared_data("squad/squad_v1.1_dev_seal_format.json") else {
        return;
    };
    let passages = load_passages(&path).unwrap();
    assert_eq!(passages.len(), 1505);
    let questions: usize = passages.iter().map(|p| p.questions.len()).sum();
    assert_eq!(questions, 7793);
    let first = &passages[0];
    assert_eq!(first.title, "Super Bowl 50");
    assert!(first
        .context
        .starts_with("Super Bowl 50 was an American football game"));
    assert_eq!(
        first.questions[0],
        Question {
            question: "Which NFL team represented the AFC at Super Bowl 50?".to_string(),
            answers: vec!["Denver Broncos".to_string()],
        }
    );
    assert!(passages
        .iter()
        .flat_map(|p| &p.questions)
        .all(|q| q.answers.len() == 1));
}

#[test]
fn loads_the_official_format_keeping_every_distinct_gold_answer() {
    let Some(path) = shared_data("squad/official_v1.1_format_sample.json") else {
        return;
    };
    let passages = load_passages(&path).unwrap();
    assert_eq!(passages.len(), 2);
    assert!(passages
        .iter()
        .all(|p| p.title == "University_of_Notre_Dame"));
    assert!(passages[0]
        .context
        .starts_with("Architecturally, the school"));
    let second = &passages[0].questions[1];
    // Three gold answers in the file, two of them identical.
    assert_eq!(second.answers.len(), 2);
    assert_eq!(second.answers[0], "a golden statue of the Virgin Mary");
    assert!(second.answers[1].starts_with("Architecturally,"));
    assert_eq!(
        passages[0].questions[0].answers,
        ["Saint Bernadette Soubirous"]
    );
}

/// `eval` run again continues from its journal: the base answers and every finished trial are
/// taken as recorded, a torn line is cut, and only the new row runs; other settings are refused.
#[test]
fn an_interrupted_table_continues_from_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
    let journal = dir.path().join("results.trials.jsonl");
    let model = tiny_gguf(Arch::Qwen2);
    let args = |conditions: &'static str, seed: &'static str| {
        vec![
            "--model".to_string(),
            model.display().to_string(),
            "--data".into(),
            "assets/passages.json".into(),
            "--passages".into(),
            "2".into(),
            "--k".into(),
            "2".into(),
            "--conditions".into(),
            conditions.into(),
            "--seed".into(),
            seed.into(),
            "--epochs".into(),
            "1".into(),
            "--rank".into(),
            "4".into(),
            "--alpha".into(),
            "8".into(),
        ]
    };
    let run = |args: Vec<String>| {
        let output = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
            .arg("eval")
            .args(args)
            .arg("--out")
            .arg(&out)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let rows = |json: &serde_json::Value| {
        json["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["condition"].clone(), c["passages"].clone()))
            .collect::<Vec<_>>()
    };
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    };

    let (ok, stderr) = run(args("base,passage", "0"));
    assert!(ok, "{stderr}");
    let first = rows(&read());
    // The header, two passages' base answers, two passage trials.
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        5
    );

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"piece\":\"trial\",\"key\":{\"cond").unwrap();
    drop(f);
    let (ok, stderr) = run(args("base,passage,passage-self-edit", "0"));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(
        stderr.contains("continuing: 4 finished piece(s)"),
        "{stderr}"
    );
    // Two base lines and two passage trials taken as recorded; four self-edits run.
    assert_eq!(stderr.matches("[recorded earlier]").count(), 4, "{stderr}");
    let second = rows(&read());
    assert_eq!(second[..2], first[..]);
    assert_eq!(
        second[2].1[0]["runs"].as_array().unwrap().len(),
        2,
        "{second:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        9
    );

    let before = std::fs::read(&journal).unwrap();
    let (ok, stderr) = run(args("base", "1"));
    assert!(!ok);
    assert!(stderr.contains("other settings"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);
}
