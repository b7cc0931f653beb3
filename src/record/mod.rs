//! The vocabulary of what is recorded: every type written to a session's `events.jsonl` and
//! `header.json` (events, commands, ids, the run configuration, the header), the fold of events
//! into a run's state, and the rule that turns that state into a round's figures.
//!
//! It depends on no other room: the engine and the domains convert their own types to these
//! at their boundary, so renaming a trainer's field cannot silently change the file format. The
//! format test below pins the serialised shape of every type to [`FORMAT_VERSION`].

pub mod cluster;
pub mod config;
pub mod events;
pub mod header;
pub mod ids;
pub mod metrics;
pub mod state;

pub use cluster::{ArrayState, ClusterTask, TaskCounts, TaskState, TaskStatus, UnitId};
pub use config::RunConfig;
pub use events::{
    ArcTaskView, BaselineKind, Command, ContextBody, ContextView, Decision, Event, GainRule, Grid,
    GridPair, HeldoutEdit, HeldoutSummary, QuestionResult, QuestionSource, QuestionView, Record,
    RoundMetrics, RunInfo, RunMode, SelfCheck, SelfQuestions, TrainProgress, Verdict,
};
pub use header::Header;
pub use ids::{CtxId, EditId};
pub use state::RunState;

/// The layout of sessions this build writes. A session with a larger number was written by a
/// newer seal-tui and is refused rather than misread; older ones are read (format 1 differs
/// only by fields that now have defaults).
///
/// 2: work events carry the self-edit's revision; round figures may be absent; ARC answers
/// carry the grid read from them; the run names its gain rule.
/// 3: held-out passes (`heldout_started`, `heldout_scored`, `heldout_finished`); inner loops
/// may run on a cluster: `cluster_submitted`, `cluster_task` and
/// `cluster_cancelled` events; training events name the evaluation repeat they serve (several
/// may run at once); the configuration gains `[cluster]` and `[inference]`.
/// 4: a cluster task may run several units (`cluster_submitted` gains `per_task`,
/// `cluster_task` may name SLURM's `task`, `[cluster]` gains `units_per_task`); self-written
/// evaluation questions (`questions_written` and `self_checked` events; `[knowledge]` gains
/// `questions` and `self_questions`).
/// 5: `[model]` gains `checkpoint_layers` (gradient checkpointing).
/// 6: `baseline_scored` gains `kind` (the unadapted model, or trained on the context alone);
/// `[outer]` gains `baseline`.
pub const FORMAT_VERSION: u32 = 6;

#[cfg(test)]
mod format {
    //! One example of every recorded type, serialised, must equal the golden file of the
    //! current format version. A change to the recorded shape fails here until the version is
    //! bumped and a new golden file written (`SEAL_BLESS=1 cargo test record::format`).

    use super::config::*;
    use super::*;
    use std::path::PathBuf;

    fn golden_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/record/format")
            .join(format!("v{FORMAT_VERSION}.jsonl"))
    }

    /// The name of each variant; the match is exhaustive, so a new event does not compile until
    /// it is named here and given an example below.
    fn name(e: &Event) -> &'static str {
        match e {
            Event::RunStarted { .. } => "run_started",
            Event::RoundStarted { .. } => "round_started",
            Event::ContextStarted { .. } => "context_started",
            Event::BaselineScored { .. } => "baseline_scored",
            Event::EditSampling { .. } => "edit_sampling",
            Event::EditToken { .. } => "edit_token",
            Event::EditSampled { .. } => "edit_sampled",
            Event::EditDecision { .. } => "edit_decision",
            Event::TrainStarted { .. } => "train_started",
            Event::TrainStep { .. } => "train_step",
            Event::TrainFinished { .. } => "train_finished",
            Event::TrainFailed { .. } => "train_failed",
            Event::EditEvaluated { .. } => "edit_evaluated",
            Event::EditScored { .. } => "edit_scored",
            Event::QuestionsWritten { .. } => "questions_written",
            Event::SelfChecked { .. } => "self_checked",
            Event::ContextFinished { .. } => "context_finished",
            Event::PolicyUpdateStarted { .. } => "policy_update_started",
            Event::PolicyStep { .. } => "policy_step",
            Event::PolicyUpdated { .. } => "policy_updated",
            Event::PolicySkipped { .. } => "policy_skipped",
            Event::RoundFinished { .. } => "round_finished",
            Event::HeldoutStarted { .. } => "heldout_started",
            Event::HeldoutScored { .. } => "heldout_scored",
            Event::HeldoutFinished { .. } => "heldout_finished",
            Event::RunFinished { .. } => "run_finished",
            Event::ModeChanged { .. } => "mode_changed",
            Event::Warning { .. } => "warning",
            Event::ClusterSubmitted { .. } => "cluster_submitted",
            Event::ClusterTask { .. } => "cluster_task",
            Event::ClusterCancelled { .. } => "cluster_cancelled",
            Event::Status { .. } => "status",
            Event::Failed { .. } => "failed",
        }
    }

    const EVENT_COUNT: usize = 33;

    fn examples() -> Vec<Event> {
        let ctx = CtxId { round: 0, ctx: 1 };
        let id = EditId::new(ctx, 2);
        let verdict = Verdict {
            grader: "f1>=0.5".into(),
            correct: true,
            score: 0.75,
            raw: "a | b".into(),
        };
        let result = QuestionResult {
            question: 0,
            answer: "Paris".into(),
            grid: None,
            verdict: verdict.clone(),
        };
        let arc_result = QuestionResult {
            question: 0,
            answer: "12\n34".into(),
            grid: Some(Grid(vec![vec![1, 2], vec![3, 4]])),
            verdict,
        };
        let progress = TrainProgress {
            step: 3,
            total_steps: 10,
            epoch: 0.5,
            loss: 1.25,
            learning_rate: 0.001,
            grad_norm: 0.5,
            tokens_per_sec: 100.0,
            elapsed_secs: 2.0,
            eta_secs: 4.0,
        };
        vec![
            Event::RunStarted {
                info: RunInfo {
                    session: "s".into(),
                    domain: "knowledge".into(),
                    model: "m".into(),
                    device: "cpu".into(),
                    template: "implications".into(),
                    grader: "f1>=0.5".into(),
                    rounds: 2,
                    contexts_per_round: 2,
                    k: 3,
                    repeats: 1,
                    approval_required: false,
                    gain_rule: GainRule::OverBaseline,
                },
            },
            Event::RoundStarted {
                round: 0,
                contexts: 2,
            },
            Event::ContextStarted {
                id: ctx,
                context: ContextView {
                    id: "7".into(),
                    title: "T".into(),
                    body: ContextBody::Passage { text: "p".into() },
                    questions: vec![QuestionView {
                        question: "q?".into(),
                        answers: vec!["a".into()],
                    }],
                },
            },
            Event::ContextStarted {
                id: ctx,
                context: ContextView {
                    id: "arc".into(),
                    title: "arc".into(),
                    body: ContextBody::Arc {
                        task: ArcTaskView {
                            id: "arc".into(),
                            train: vec![GridPair {
                                input: Grid(vec![vec![0]]),
                                output: Grid(vec![vec![1]]),
                            }],
                            test: vec![],
                        },
                    },
                    questions: vec![],
                },
            },
            Event::BaselineScored {
                id: ctx,
                results: vec![result.clone()],
                accuracy: 0.5,
                secs: 1.0,
                kind: BaselineKind::Unadapted,
            },
            Event::EditSampling {
                id,
                prompt: "p".into(),
            },
            Event::EditToken {
                id,
                piece: "x".into(),
            },
            Event::EditSampled {
                id,
                text: "t".into(),
                tokens: 4,
                secs: 1.0,
            },
            Event::EditDecision {
                id,
                decision: Decision::Approved,
            },
            Event::EditDecision {
                id,
                decision: Decision::Edited { text: "new".into() },
            },
            Event::TrainStarted {
                id,
                rev: 1,
                repeat: 1,
                total_steps: 10,
                examples: 2,
                tokens: 100,
            },
            Event::TrainStep {
                id,
                rev: 1,
                repeat: 1,
                progress: progress.clone(),
            },
            Event::TrainFinished {
                id,
                rev: 1,
                repeat: 1,
                steps: 10,
                final_loss: 0.5,
                secs: 3.0,
            },
            Event::TrainFailed {
                id,
                rev: 1,
                message: "m".into(),
            },
            Event::EditEvaluated {
                id,
                rev: 1,
                repeat: 0,
                results: vec![arc_result],
                accuracy: 1.0,
                secs: 1.0,
            },
            Event::EditScored {
                id,
                rev: 1,
                reward: 1.0,
                gain: 0.5,
            },
            Event::QuestionsWritten {
                id: ctx,
                questions: SelfQuestions {
                    index: 7,
                    raw: "Q: q?\nA: a".into(),
                    questions: vec![QuestionView {
                        question: "q?".into(),
                        answers: vec!["a".into()],
                    }],
                    dropped: 1,
                    problem: None,
                    secs: 1.5,
                },
            },
            Event::QuestionsWritten {
                id: ctx,
                questions: SelfQuestions {
                    index: 8,
                    raw: "no pairs".into(),
                    questions: vec![],
                    dropped: 0,
                    problem: Some("no pair parsed".into()),
                    secs: 0.5,
                },
            },
            Event::SelfChecked {
                id: ctx,
                edit: None,
                rev: 0,
                repeat: 0,
                check: SelfCheck {
                    results: vec![result.clone()],
                    accuracy: 1.0,
                },
            },
            Event::SelfChecked {
                id: ctx,
                edit: Some(id),
                rev: 1,
                repeat: 2,
                check: SelfCheck {
                    results: vec![result.clone()],
                    accuracy: 0.0,
                },
            },
            Event::ContextFinished {
                id: ctx,
                kept: Some(2),
                reason: "r".into(),
            },
            Event::PolicyUpdateStarted {
                round: 0,
                pairs: 1,
                total_steps: 2,
            },
            Event::PolicyStep { round: 0, progress },
            Event::PolicyUpdated {
                round: 0,
                adapter: "policy/round-0".into(),
                secs: 2.0,
            },
            Event::PolicySkipped {
                round: 0,
                reason: "r".into(),
            },
            Event::RoundFinished {
                round: 0,
                metrics: RoundMetrics {
                    accuracy_before: Some(0.5),
                    accuracy_after: Some(1.0),
                    mean_reward: Some(1.0),
                    mean_gain: None,
                    edits_evaluated: 1,
                    edits_kept: 1,
                    contexts: 1,
                },
            },
            Event::HeldoutStarted {
                pass: 1,
                after_round: Some(0),
                contexts: 4,
            },
            Event::HeldoutScored {
                pass: 1,
                index: 2,
                title: "T".into(),
                questions: 2,
                baseline: 0.25,
                edits: vec![HeldoutEdit {
                    text: "e".into(),
                    accuracy: 0.5,
                    results: vec![],
                    note: Some("n".into()),
                }],
                secs: 3.0,
            },
            Event::HeldoutFinished {
                pass: 1,
                summary: HeldoutSummary {
                    accuracy: 0.5,
                    ci95_low: 0.25,
                    ci95_high: 0.75,
                    correct: 2,
                    graded: 4,
                    baseline: 0.25,
                    contexts: 1,
                },
            },
            Event::RunFinished { secs: 9.0 },
            Event::ModeChanged {
                mode: RunMode::Step,
            },
            Event::ClusterSubmitted {
                job: "1234".into(),
                round: 0,
                tasks: vec![ClusterTask {
                    index: 0,
                    unit: UnitId {
                        id,
                        rev: 1,
                        repeat: 1,
                    },
                    attempt: 2,
                }],
                per_task: 2,
            },
            Event::ClusterTask {
                job: "1234".into(),
                index: 0,
                status: TaskStatus::Failed,
                detail: "TIMEOUT".into(),
                task: Some(1),
            },
            Event::ClusterCancelled {
                job: "1234".into(),
                reason: "quit".into(),
            },
            Event::Warning {
                message: "w".into(),
            },
            Event::Status {
                message: "s".into(),
            },
            Event::Failed {
                message: "f".into(),
            },
        ]
    }

    fn commands() -> Vec<Command> {
        let id = EditId {
            round: 0,
            ctx: 0,
            edit: 1,
        };
        vec![
            Command::Approve { id },
            Command::Reject { id },
            Command::Edit {
                id,
                text: "t".into(),
            },
            Command::Pause,
            Command::Step,
            Command::Auto { rounds: Some(1) },
            Command::SkipContext,
            Command::Quit,
        ]
    }

    fn header() -> Header {
        let mut config = RunConfig::default();
        config.knowledge.grader = Grader::JudgeHttp(HttpJudge {
            url: "http://127.0.0.1:1/v1/chat/completions".into(),
            model: "judge".into(),
            api_key_env: Some("KEY".into()),
            timeout_secs: 5,
            max_retries: 1,
        });
        config.knowledge.questions = QuestionSource::Both;
        config.knowledge.self_questions = 6;
        config.model.device = Device::Cuda(1);
        config.model.dtype = Some(Dtype::Bf16);
        config.cluster = ClusterSection {
            backend: ClusterBackend::Slurm,
            partition: "gpu".into(),
            account: "lab".into(),
            qos: "normal".into(),
            time_limit: "01:00:00".into(),
            gpus_per_task: 1,
            gres: String::new(),
            cpus_per_task: 8,
            mem: "32G".into(),
            max_parallel: 16,
            units_per_task: 0,
            sbatch_args: vec!["--constraint=a100".into()],
            setup: "module load cuda".into(),
            retries: 2,
            worker: Some("/opt/seal-tui".into()),
            poll_ms: 500,
        };
        config.inference = InferenceSection {
            backend: InferenceBackend::Openai,
            url: "http://127.0.0.1:8000/v1".into(),
            model: "policy".into(),
            api_key_env: Some("KEY".into()),
            api: OpenAiApi::Completions,
            timeout_secs: 60,
            max_retries: 1,
            policy_lora: true,
        };
        Header {
            format_version: FORMAT_VERSION,
            tool_version: "x".into(),
            id: "s".into(),
            created: "2026-01-01T00:00:00Z".into(),
            config,
            model_path: "m".into(),
            model_sha256: "h".into(),
            data_path: "d".into(),
            data_sha256: "h".into(),
            template_source: "t".into(),
        }
    }

    fn rendered() -> String {
        let mut out = String::new();
        for (i, e) in examples().into_iter().enumerate() {
            let record = Record {
                t: i as f64,
                event: e,
            };
            out.push_str(&serde_json::to_string(&record).unwrap());
            out.push('\n');
        }
        for c in commands() {
            out.push_str(&serde_json::to_string(&c).unwrap());
            out.push('\n');
        }
        out.push_str(&serde_json::to_string(&header()).unwrap());
        out.push('\n');
        out
    }

    #[test]
    fn every_event_has_an_example() {
        let mut names: Vec<&str> = examples().iter().map(name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EVENT_COUNT, "give every event an example");
    }

    #[test]
    fn the_recorded_shape_matches_the_format_version() {
        let now = rendered();
        let path = golden_path();
        if std::env::var_os("SEAL_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &now).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "no golden file {} for format {FORMAT_VERSION}: if the recorded shape changed on \
                 purpose, bump FORMAT_VERSION and write it with SEAL_BLESS=1",
                path.display()
            )
        });
        for (n, (a, b)) in golden.lines().zip(now.lines()).enumerate() {
            assert_eq!(
                a,
                b,
                "line {} of {}: the recorded shape changed. If on purpose, bump FORMAT_VERSION \
                 (older sessions must stay readable) and write a new golden file with \
                 SEAL_BLESS=1",
                n + 1,
                path.display()
            );
        }
        assert_eq!(golden.lines().count(), now.lines().count());
        // What is written reads back as itself.
        for line in now.lines().take(examples().len()) {
            let r: Record = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&r).unwrap(), line);
        }
    }

    #[test]
    fn format_1_sessions_still_read() {
        // Lines as seal-tui 0.1 wrote them: no revision, numbers for round figures, string
        // settings in the header.
        let lines = [
            r#"{"t":1.0,"type":"train_step","id":{"round":0,"ctx":0,"edit":0},"progress":{"step":1,"total_steps":2,"epoch":0.5,"loss":2.0,"learning_rate":0.001,"grad_norm":1.0,"tokens_per_sec":10.0,"elapsed_secs":1.0,"eta_secs":1.0}}"#,
            r#"{"t":2.0,"type":"round_finished","round":0,"metrics":{"accuracy_before":0.0,"accuracy_after":0.5,"mean_reward":0.5,"mean_gain":0.5,"edits_evaluated":2,"edits_kept":1,"contexts":1}}"#,
            r#"{"t":0.0,"type":"run_started","info":{"session":"s","domain":"knowledge","model":"m","device":"cpu","template":"t","grader":"g","rounds":1,"contexts_per_round":1,"k":1,"repeats":1,"approval_required":false}}"#,
        ];
        for line in lines {
            serde_json::from_str::<Record>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        let cfg: RunConfig = serde_json::from_str(
            r#"{"model":{"path":"","device":"auto","dtype":"","quantize":"auto"},"outer":{"start_mode":"step"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.model.path, None);
        assert_eq!(cfg.outer.start_mode, RunMode::Step);
    }

    #[test]
    fn format_2_sessions_still_read() {
        // The golden file of format 2: every record, command and header it holds still reads,
        // and a format-2 configuration runs locally and samples on the engine.
        let path = golden_path().with_file_name("v2.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut headers = 0;
        for line in text.lines() {
            let read = serde_json::from_str::<Record>(line).is_ok()
                || serde_json::from_str::<Command>(line).is_ok();
            if !read {
                let h: Header =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert_eq!(h.config.cluster.backend, ClusterBackend::Local);
                assert_eq!(h.config.inference.backend, InferenceBackend::Engine);
                headers += 1;
            }
        }
        assert_eq!(headers, 1);
        let r: Record = serde_json::from_str(
            r#"{"t":1.0,"type":"train_started","id":{"round":0,"ctx":0,"edit":0},"rev":0,"total_steps":2,"examples":1,"tokens":3}"#,
        )
        .unwrap();
        assert!(matches!(r.event, Event::TrainStarted { repeat: 0, .. }));
    }
}
