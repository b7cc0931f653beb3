//! Self-written evaluation questions on the tiny model: a run with `questions = "self"` and
//! `"both"` records the written questions and grades on them, unlabeled text needs `self`, and
//! `eval --questions both` reports the agreement. The random model writes garbage, so the
//! parsed-and-graded path is also driven with a canned generation through the domain's seam
//! (`restore_questions`, the path a resume takes).

mod common;

use common::{load, scratch, tiny_config, tiny_gguf};
use seal_tui::engine::{Arch, Quantize};
use seal_tui::record::config::Grader;
use seal_tui::record::{Event, QuestionSource, RunMode, RunState};
use seal_tui::seal::domain::Domain;
use seal_tui::seal::runner::{self, Launch};
use seal_tui::session;
use seal_tui::setup;
use seal_tui::tasks::knowledge::domain::{KnowledgeDomain, Questions};
use seal_tui::tasks::knowledge::inner::Grading;
use seal_tui::tasks::knowledge::questions::{read_questions, QuestionsTemplate};
use seal_tui::tasks::knowledge::{load_passages, AnswerTemplate, PromptTemplate};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn prompts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts")
}

/// Runs a config to its end and returns the folded log.
fn run(name: &str, cfg: seal_tui::record::RunConfig) -> (RunState, Vec<Event>) {
    let root = scratch().join("sessions").join(name);
    std::fs::create_dir_all(&root).unwrap();
    let handle = runner::start(
        cfg,
        &root,
        setup::standard(),
        Launch::with_mode(RunMode::Auto),
    )
    .unwrap();
    while handle.events.recv_timeout(Duration::from_secs(120)).is_ok() {}
    let dir = handle.session_dir.clone();
    drop(handle.commands);
    handle.join.join().unwrap().expect("the run succeeded");
    let (_, records, issues) = session::open(&dir).unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    let events: Vec<Event> = records.into_iter().map(|r| r.event).collect();
    (RunState::from_events(&events), events)
}

fn written(events: &[Event]) -> Vec<&seal_tui::record::SelfQuestions> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::QuestionsWritten { questions, .. } => Some(questions),
            _ => None,
        })
        .collect()
}

#[test]
fn a_self_run_on_unlabeled_text_records_its_questions_and_finishes() {
    let data = scratch().join("unlabeled.jsonl");
    std::fs::write(
        &data,
        "{\"title\":\"Tides\",\"text\":\"The Moon pulls the oceans twice a day.\"}\n\
         {\"title\":\"Bees\",\"text\":\"Bees dance to show where flowers are.\"}\n",
    )
    .unwrap();
    let mut cfg = tiny_config(1, false);
    cfg.task.data = data.clone();
    cfg.knowledge.questions = QuestionSource::SelfWritten;
    cfg.knowledge.self_questions = 4;
    let (state, events) = run("self", cfg.clone());
    assert!(state.finished, "{:?}", state.failure);
    let w = written(&events);
    assert_eq!(w.len(), 2, "one set of questions per passage");
    for q in &w {
        // Whatever the random model wrote is kept as it came; garbage parses to no pair, which
        // is a recorded problem, not a crash.
        assert_eq!(q.questions.is_empty(), q.problem.is_some(), "{q:?}");
        assert!(q.questions.len() <= 4);
    }
    assert_eq!(state.self_questions.len(), 2);
    for c in &state.rounds[0].contexts {
        let q = &state.self_questions[&(c
            .view
            .id
            .trim_start_matches("passage ")
            .parse::<usize>()
            .unwrap()
            - 1)];
        // What the context shows is what it is graded on: the written questions.
        assert_eq!(c.view.questions, q.questions);
        assert_eq!(
            c.baseline.as_ref().unwrap().results.len(),
            q.questions.len()
        );
    }

    // The same unlabeled data with gold questions is refused before a session exists.
    cfg.knowledge.questions = QuestionSource::Gold;
    let root = scratch().join("sessions").join("refused");
    let err = runner::start(cfg, &root, setup::standard(), Launch::default())
        .err()
        .expect("gold questions on unlabeled text must be refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("no gold questions") && message.contains("questions = \"self\""),
        "{message}"
    );
    assert!(
        !root.exists() || std::fs::read_dir(&root).unwrap().next().is_none(),
        "a session folder was created"
    );
}

#[test]
fn a_both_run_keeps_the_gold_reward_and_records_the_self_check() {
    let mut cfg = tiny_config(1, false);
    cfg.knowledge.questions = QuestionSource::Both;
    cfg.knowledge.self_questions = 3;
    let (state, events) = run("both", cfg);
    assert!(state.finished, "{:?}", state.failure);
    assert_eq!(written(&events).len(), 2);
    let checks = events
        .iter()
        .filter(|e| matches!(e, Event::SelfChecked { .. }))
        .count();
    // One per baseline and one per evaluation: 2 contexts x (1 + 2 self-edits).
    assert_eq!(checks, 6);
    for c in &state.rounds[0].contexts {
        // The view and the reward stay gold.
        assert!(!c.view.questions.is_empty());
        assert_eq!(
            c.baseline.as_ref().unwrap().results.len(),
            c.view.questions.len()
        );
        assert!(c.baseline_check.is_some());
        for e in &c.edits {
            assert_eq!(e.self_checks.len(), 1);
            assert!(e.self_accuracy().is_some());
            assert_eq!(e.evaluations[0].results.len(), c.view.questions.len());
        }
    }
}

#[test]
fn canned_questions_are_parsed_and_graded_through_the_domain() {
    let model = load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    let passages =
        load_passages(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/passages.json")).unwrap();
    let gold = passages[0].questions.len();
    let domain = |source| KnowledgeDomain {
        passages: passages.clone(),
        template: PromptTemplate::find(&prompts(), "implications").unwrap(),
        answer: AnswerTemplate::find(&prompts()).unwrap(),
        grading: Grading::new(&Grader::Em, &prompts(), None).unwrap(),
        questions: Questions::new(
            source,
            Some((QuestionsTemplate::find(&prompts()).unwrap(), 8)),
        ),
    };
    let canned = "Sure, here they are:\n1. Q: Who founded Varnholt?\nA: Edda Quillon\n\
                  2. Q: What colour is Varnholt's salt?\nA: blue.\n\
                  3. Q: What colour is Varnholt's salt?\nA: blue\n\
                  Q: What is the lighthouse called? A: the Amber Lamp\n\
                  Q: Who lives there? A: sea giants\n";
    let cancel = AtomicBool::new(false);

    let own = domain(QuestionSource::SelfWritten);
    own.restore_questions(&read_questions(
        0,
        &passages[0].context,
        canned.into(),
        8,
        0.0,
    ));
    // Restored questions are never written again.
    assert!(own.prepare_context(&model, 0, &cancel).unwrap().is_none());
    let view = own.view(0);
    let asked: Vec<&str> = view.questions.iter().map(|q| q.question.as_str()).collect();
    assert_eq!(
        asked,
        [
            "Who founded Varnholt?",
            "What colour is Varnholt's salt?",
            "What is the lighthouse called?"
        ]
    );
    let scored = own.baseline(&model, 0, &cancel).unwrap();
    assert_eq!(scored.results.len(), 3);
    assert!(scored.results.iter().all(|r| r.verdict.grader == "em"));
    assert!(scored.self_check.is_none());

    let both = domain(QuestionSource::Both);
    both.restore_questions(&read_questions(
        0,
        &passages[0].context,
        canned.into(),
        8,
        0.0,
    ));
    let scored = both.baseline(&model, 0, &cancel).unwrap();
    assert_eq!(scored.results.len(), gold);
    let check = scored
        .self_check
        .expect("the self-written questions graded beside");
    assert_eq!(check.results.len(), 3);

    // Passage 2 was never written: the domain writes it (here: whatever the random model says).
    let fresh = both
        .prepare_context(&model, 1, &cancel)
        .unwrap()
        .expect("written now");
    assert_eq!(fresh.index, 1);
    assert!(both.prepare_context(&model, 1, &cancel).unwrap().is_none());
}

fn eval(args: &[&str]) -> (std::process::Output, PathBuf) {
    let out = scratch().join(format!("eval-{}.json", args.join("-").replace('/', "_")));
    let output = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .arg("eval")
        .args(["-m", tiny_gguf(Arch::Qwen2).to_str().unwrap()])
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (output, out)
}

#[test]
fn eval_with_both_reports_per_self_edit_rewards_and_their_agreement() {
    let (output, out) = eval(&[
        "--passages",
        "2",
        "--k",
        "2",
        "--epochs",
        "1",
        "--conditions",
        "passage-self-edit",
        "--questions",
        "both",
        "--self-questions",
        "3",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Spearman rank correlation"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["questions"], "both");
    assert_eq!(json["self_questions"].as_array().unwrap().len(), 2);
    let agreement = &json["agreement"];
    let points = agreement["points"].as_array().unwrap().len();
    let excluded = agreement["excluded"].as_u64().unwrap() as usize;
    // Every self-edit is either a point or counted as left out (no usable question).
    assert_eq!(points + excluded, 4);
    // `report` prints the agreement again from the recorded rewards, the within-passage line
    // included (defined or not: the random model's rewards are mostly ties).
    let report = Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{printed}");
    assert!(printed.contains("Spearman rank correlation"), "{printed}");
    assert!(printed.contains("Within passages"), "{printed}");

    // Unlabeled text with gold questions: a clear error before any model work.
    let dir = scratch().join("texts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tides.txt"), "The Moon pulls the oceans.").unwrap();
    let (output, _) = eval(&["--data", dir.to_str().unwrap(), "--passages", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no gold questions"), "{stderr}");
    let (output, _) = eval(&[
        "--data",
        dir.to_str().unwrap(),
        "--passages",
        "1",
        "--k",
        "1",
        "--epochs",
        "1",
        "--conditions",
        "base,passage-self-edit",
        "--questions",
        "self",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
