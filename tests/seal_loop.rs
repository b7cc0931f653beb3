//! The SEAL outer loop on the tiny model: live state equals the fold of the log, human decisions
//! steer selection, the policy update moves the policy, and damaged logs are handled.

mod common;

use common::{scratch, tiny_config, tiny_gguf};
use seal_tui::engine::train::{sequence_logprob, train_lora, Example, TrainConfig};
use seal_tui::engine::{Arch, LoraConfig, LossOn, Quantize, Target};
use seal_tui::record::state::EditStatus;
use seal_tui::record::{BaselineKind, Command, Decision, EditId, Event, Record, RunMode, RunState};
use seal_tui::seal::runner::{self, Launch, RunHandle};
use seal_tui::session;
use seal_tui::setup;
use std::path::PathBuf;
use std::time::Duration;

fn sessions_root(name: &str) -> PathBuf {
    let dir = scratch().join("sessions").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Drains a run to its end, folding what it says as a screen would.
fn follow(handle: RunHandle, on_event: impl FnMut(&Record, &RunHandle)) -> (RunState, PathBuf) {
    follow_from(RunState::default(), handle, on_event)
}

fn follow_from(
    mut state: RunState,
    handle: RunHandle,
    mut on_event: impl FnMut(&Record, &RunHandle),
) -> (RunState, PathBuf) {
    while let Ok(record) = handle.events.recv_timeout(Duration::from_secs(120)) {
        state.apply(&record.event);
        on_event(&record, &handle);
    }
    let dir = handle.session_dir.clone();
    drop(handle.commands);
    handle
        .join
        .join()
        .expect("runner thread")
        .expect("run succeeded");
    (state, dir)
}

#[test]
fn a_headless_run_folds_from_its_log_to_the_live_state() {
    let cfg = tiny_config(2, false);
    let handle = runner::start(
        cfg,
        &sessions_root("fold"),
        setup::standard(),
        Launch::with_mode(RunMode::Auto),
    )
    .unwrap();
    let (live, dir) = follow(handle, |_, _| {});
    assert!(live.finished, "the run did not finish: {:?}", live.failure);
    assert_eq!(live.rounds.len(), 2);
    for round in &live.rounds {
        assert_eq!(round.contexts.len(), 2);
        let m = round.metrics.as_ref().expect("round metrics");
        assert_eq!(m.edits_evaluated, 4);
        for c in &round.contexts {
            assert!(c.finished && c.baseline.is_some());
            assert_eq!(c.edits.len(), 2);
            for e in &c.edits {
                assert_eq!(e.status, EditStatus::Scored, "{e:?}");
                assert!(e.train.final_loss.is_some() && !e.train.steps.is_empty());
                assert_eq!(e.evaluations.len(), 1);
            }
            assert!(c.kept.is_some());
        }
        assert!(round.policy.adapter.is_some(), "no policy update");
    }
    // The log on disk is the truth: folding it gives exactly what was watched.
    let (header, records, issues) = session::open(&dir).unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    let folded = RunState::from_events(records.iter().map(|r| &r.event));
    if folded != live {
        let a = serde_json::to_string_pretty(&folded).unwrap();
        let b = serde_json::to_string_pretty(&live).unwrap();
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .take(5)
            .map(|(i, (x, y))| format!("line {i}: log {x} | live {y}"))
            .collect();
        panic!("the log's fold differs from the live state: {diff:#?}");
    }
    assert_eq!(header.format_version, seal_tui::record::FORMAT_VERSION);
    assert_eq!(header.model_sha256.len(), 64);
    assert!(session::policy_dir(&dir, 1)
        .join("adapter_config.json")
        .exists());
    assert!(dir.join("adapters/r1-c1-e1").exists() || dir.join("adapters/r1-c1-e2").exists());

    // Resuming a finished session is refused, and appends nothing.
    let before = std::fs::read(dir.join(session::EVENTS_FILE)).unwrap();
    let err = match runner::resume(&dir, setup::standard(), Launch::default()) {
        Ok(_) => panic!("a finished run was resumed"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("finished") && err.contains("nothing to resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join(session::EVENTS_FILE)).unwrap(),
        before
    );

    // The report has a row per round and per question, and writes CSV.
    let md = seal_tui::text::report::markdown_report(&folded);
    assert!(
        md.contains("## Rounds") && md.contains("Who founded Varnholt?"),
        "{md}"
    );
    let files = seal_tui::text::report::write_csv(&folded, &dir.join("report")).unwrap();
    let rounds_csv = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(rounds_csv.lines().count(), 3);
}

#[test]
fn a_context_only_baseline_is_the_model_trained_on_the_passage_and_gains_are_over_it() {
    let run = |kind: BaselineKind, name: &str| {
        let mut cfg = tiny_config(1, false);
        cfg.outer.baseline = kind;
        if name.ends_with("diverges") {
            // As in engine_train: the adapter outgrows its weights and the finetune stops.
            cfg.inner.learning_rate = 1.0;
            cfg.inner.epochs = 20;
        }
        let handle = runner::start(
            cfg,
            &sessions_root(name),
            setup::standard(),
            Launch::with_mode(RunMode::Auto),
        )
        .unwrap();
        let mut said = Vec::new();
        let (state, _) = follow(handle, |r, _| {
            said.extend(seal_tui::text::story::describe(r));
        });
        assert!(state.finished, "{:?}", state.failure);
        (state, said)
    };
    let (plain, _) = run(BaselineKind::Unadapted, "baseline-unadapted");
    let (trained, said) = run(BaselineKind::ContextOnly, "baseline-context-only");
    let answers = |s: &RunState| -> Vec<String> {
        s.rounds[0]
            .contexts
            .iter()
            .flat_map(|c| c.baseline.as_ref().unwrap().results.iter())
            .map(|r| r.answer.clone())
            .collect()
    };
    // The same model and seed: only a finetune on the passages can change the answers.
    assert_ne!(answers(&plain), answers(&trained));
    for c in &trained.rounds[0].contexts {
        let b = c.baseline.as_ref().unwrap();
        assert_eq!(b.kind, BaselineKind::ContextOnly);
        for e in &c.edits {
            let (reward, gain) = (e.reward.unwrap(), e.gain.unwrap());
            assert!((gain - (reward - b.accuracy)).abs() < 1e-12, "{e:?}");
        }
    }
    assert!(
        said.iter()
            .any(|l| l.contains("accuracy after training on the context alone")),
        "{said:#?}"
    );
    let md = seal_tui::text::report::markdown_report(&trained);
    assert!(
        md.contains("trained on the context alone for 2 of 2 contexts"),
        "{md}"
    );

    // A passage-only finetune that diverges leaves the unadapted baseline, said and recorded.
    let (fallback, said) = run(BaselineKind::ContextOnly, "baseline-diverges");
    for c in &fallback.rounds[0].contexts {
        let kind = c.baseline.as_ref().unwrap().kind;
        assert_eq!(kind, BaselineKind::Unadapted, "{said:#?}");
    }
    assert!(
        said.iter()
            .any(|l| l.contains("training on the context alone failed")),
        "{said:#?}"
    );
}

#[test]
fn approval_required_mode_waits_for_the_human_and_honours_rejections() {
    let cfg = tiny_config(1, true);
    let handle = runner::start(
        cfg,
        &sessions_root("approval"),
        setup::standard(),
        Launch::with_mode(RunMode::Auto),
    )
    .unwrap();
    // Approve edit 0 of every context, reject edit 1.
    let (state, _) = follow(handle, |record, handle| {
        if let Event::EditSampled { id, .. } = &record.event {
            let cmd = if id.edit == 0 {
                Command::Approve { id: *id }
            } else {
                Command::Reject { id: *id }
            };
            handle.commands.send(cmd).unwrap();
        }
    });
    assert!(state.finished);
    for c in &state.rounds[0].contexts {
        let (e0, e1) = (&c.edits[0], &c.edits[1]);
        assert_eq!(e0.decision, Some(Decision::Approved));
        assert_eq!(e0.status, EditStatus::Scored);
        assert_eq!(e1.decision, Some(Decision::Rejected));
        assert!(
            e1.train.steps.is_empty(),
            "a rejected self-edit was trained on"
        );
        assert_eq!(c.kept, Some(0));
    }
}

/// A stand-in HTTP judge on 127.0.0.1: it refuses every request (HTTP 401) until `healthy` is
/// set, then answers "yes".
fn switchable_judge(healthy: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, body) = if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                (
                    "200 OK",
                    r#"{"choices":[{"message":{"role":"assistant","content":"Yes"}}]}"#,
                )
            } else {
                ("401 Unauthorized", r#"{"error":"bad key"}"#)
            };
            let _ = write!(
                reader.into_inner(),
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_judge_that_fails_pauses_a_watched_run_which_goes_on_once_it_answers() {
    use seal_tui::record::config::{Grader, HttpJudge};
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut cfg = tiny_config(1, false);
    cfg.task.contexts_per_round = 1;
    cfg.self_edit.k = 1;
    cfg.knowledge.grader = Grader::JudgeHttp(HttpJudge {
        url: switchable_judge(healthy.clone()),
        model: "judge".into(),
        api_key_env: None,
        timeout_secs: 2,
        max_retries: 0,
    });
    let launch = Launch {
        mode: Some(RunMode::Auto),
        pause_on_grading_failure: true,
    };
    let handle = runner::start(
        cfg,
        &sessions_root("judge-pause"),
        setup::standard(),
        launch,
    )
    .unwrap();
    let mut paused_with_warning = false;
    let (state, _) = follow(handle, |record, handle| {
        if let Event::Warning { message } = &record.event {
            if message.contains("grading failed") && message.contains("HTTP 401") {
                assert!(message.contains("paused"), "{message}");
                paused_with_warning = true;
            }
        }
        if let Event::ModeChanged {
            mode: RunMode::Paused,
        } = &record.event
        {
            assert!(paused_with_warning, "paused without saying why");
            // The person fixes the judge, then lets the run go on.
            healthy.store(true, std::sync::atomic::Ordering::SeqCst);
            handle
                .commands
                .send(Command::Auto { rounds: None })
                .unwrap();
        }
    });
    assert!(paused_with_warning);
    assert!(state.finished && state.failure.is_none());
    let baseline = state.rounds[0].contexts[0].baseline.as_ref().unwrap();
    assert!(
        baseline.results.iter().all(|r| r.verdict.raw == "Yes"),
        "answers were graded while the judge failed"
    );
}

#[test]
fn step_mode_runs_one_phase_per_step_and_edits_are_reevaluated() {
    let cfg = tiny_config(1, false);
    let handle = runner::start(
        cfg,
        &sessions_root("step"),
        setup::standard(),
        Launch::with_mode(RunMode::Step),
    )
    .unwrap();
    // The loop gets as far as it may without a step: the model is loaded and the first context
    // started (phases that run no model need no step). Only then is "nothing more" meaningful.
    let mut state = RunState::default();
    loop {
        let r = handle
            .events
            .recv_timeout(Duration::from_secs(60))
            .expect("the run reached its first context");
        state.apply(&r.event);
        if matches!(r.event, Event::ContextStarted { .. }) {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(r) = handle.events.try_recv() {
        state.apply(&r.event);
    }
    let c = state
        .context(seal_tui::record::CtxId { round: 0, ctx: 0 })
        .expect("the first context started");
    assert!(c.baseline.is_none(), "work ran without a step");
    // One step: the baseline, and nothing after it.
    handle.commands.send(Command::Step).unwrap();
    let mut baseline_seen = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline && !baseline_seen {
        if let Ok(r) = handle.events.recv_timeout(Duration::from_millis(100)) {
            baseline_seen |= matches!(r.event, Event::BaselineScored { .. });
            assert!(
                !matches!(r.event, Event::EditSampling { .. }),
                "stepped past one phase"
            );
            state.apply(&r.event);
        }
    }
    assert!(baseline_seen);
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(r) = handle.events.try_recv() {
        assert!(
            !matches!(r.event, Event::EditSampling { .. }),
            "stepped past one phase"
        );
        state.apply(&r.event);
    }
    // Replace edit 0's text once it is scored; it must be trained and scored again.
    handle
        .commands
        .send(Command::Auto { rounds: None })
        .unwrap();
    let id = EditId {
        round: 0,
        ctx: 0,
        edit: 0,
    };
    let mut edited = false;
    let (state, _) = follow_from(state, handle, |record, handle| {
        if !edited && matches!(&record.event, Event::EditScored { id: i, .. } if *i == id) {
            edited = true;
            handle
                .commands
                .send(Command::Edit {
                    id,
                    text: "Varnholt was founded by Edda Quillon.".into(),
                })
                .unwrap();
        }
    });
    assert!(state.finished);
    let e = state.edit(id).unwrap();
    if matches!(e.decision, Some(Decision::Edited { .. })) {
        // The decision may land after the context was closed; if it landed before, the text
        // was retrained and rescored.
        assert_eq!(e.text, "Varnholt was founded by Edda Quillon.");
    }
    assert!(edited);
}

#[test]
fn the_policy_update_raises_the_likelihood_of_the_kept_self_edit() {
    let model = common::load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let prompt = model
        .chat
        .prompt(&seal_tui::engine::Prompt::user("Write notes on Varnholt."))
        .unwrap();
    let example = Example {
        prompt: model.tokenizer.encode(&prompt).unwrap(),
        completion: model
            .tokenizer
            .encode("Varnholt was founded in 1723 by Edda Quillon.<|im_end|>")
            .unwrap(),
    };
    let before = sequence_logprob(&model, None, &example).unwrap();
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::K, Target::V, Target::O],
        },
        learning_rate: 1e-2,
        epochs: 3,
        loss: LossOn::Completion,
        ..Default::default()
    };
    let out = train_lora(
        &model,
        std::slice::from_ref(&example),
        &cfg,
        None,
        &mut |_| {},
    )
    .unwrap();
    let policy = model.with_transformer(model.transformer.merged(&out.adapter).unwrap());
    let after = sequence_logprob(&policy, None, &example).unwrap();
    assert!(
        after > before + 1.0,
        "log-likelihood {before:.2} -> {after:.2}"
    );
}

#[test]
fn a_damaged_log_resumes_with_warnings_and_a_newer_format_is_refused() {
    let cfg = tiny_config(1, false);
    let handle = runner::start(
        cfg,
        &sessions_root("damaged"),
        setup::standard(),
        Launch::with_mode(RunMode::Auto),
    )
    .unwrap();
    let (live, dir) = follow(handle, |_, _| {});
    assert!(live.finished);
    let log = dir.join(session::EVENTS_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    // Corrupt a line in the middle (a streamed token, so no decision or phase is lost), and
    // tear the tail.
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // The crash came while the run's last record was being written.
    let last = lines.pop().unwrap();
    assert!(last.contains("\"run_finished\""), "{last}");
    let token_line = lines
        .iter()
        .position(|l| l.contains("\"edit_token\""))
        .unwrap();
    lines[token_line] = "{\"t\": 1.0, \"type\": \"edit_tok".to_string();
    let mut damaged = lines.join("\n");
    damaged.push_str("\n{\"t\":99.0,\"type\":\"run_fin");
    std::fs::write(&log, damaged).unwrap();
    let (_, records, issues) = session::open(&dir).unwrap();
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert_eq!(records.len(), lines.len() - 1);
    let again = runner::resume(&dir, setup::standard(), Launch::default()).unwrap();
    let (resumed, _) = follow(again, |_, _| {});
    assert!(resumed.finished);
    assert!(
        resumed.warnings.iter().any(|w| w.contains("cut short")),
        "{:?}",
        resumed.warnings
    );
    // The torn tail was cut before appending: the log reads clean except the corrupt line.
    let (_, _, issues) = session::open(&dir).unwrap();
    assert_eq!(issues.len(), 1, "{issues:?}");

    // A session from a newer seal-tui is refused with a clear message.
    let header_path = dir.join(session::HEADER_FILE);
    let mut h: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&header_path).unwrap()).unwrap();
    h["format_version"] = serde_json::json!(seal_tui::record::FORMAT_VERSION + 1);
    std::fs::write(&header_path, h.to_string()).unwrap();
    let err = runner::resume(&dir, setup::standard(), Launch::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("newer seal-tui"), "{err}");
}
