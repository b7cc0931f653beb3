//! The whole screen rendered off-screen from recorded sessions (no model, no terminal) and
//! compared with insta snapshots: each pane in its interesting states, at 80x24 (tabs) and
//! 200x60 (grid), in two themes (text and colours), plus replay, overlays, ARC grids, and model
//! text full of terminal escape sequences.

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;
use seal_tui::record::{Command, ContextBody, CtxId, EditId, Event, Record};
use seal_tui::record::{ContextView, QuestionView, RunInfo};
use seal_tui::tui::app::{Pane, QuitState};
use seal_tui::tui::draw::draw;
use seal_tui::tui::{update, Action, App, KeyMap, Theme};

/// A recorded session's log, by its folder under the repository root.
fn fixture(folder: &str) -> Vec<Record> {
    let path = format!("{}/{folder}/events.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1)))
        .collect()
}

/// The example session: the default model on the sample passages, recorded by the real
/// writer (see sessions/README.md).
fn knowledge() -> Vec<Record> {
    fixture("sessions/example")
}

fn eid(round: usize, ctx: usize, edit: usize) -> EditId {
    EditId { round, ctx, edit }
}

/// A live app that has seen the records up to and including the first one `stop` picks.
fn app_until(records: &[Record], theme: Theme, stop: impl Fn(&Event) -> bool) -> App {
    let end = records
        .iter()
        .position(|r| stop(&r.event))
        .expect("the fixture has the record the test stops at");
    let mut app = App::live("session-demo", theme, KeyMap::default());
    for r in &records[..=end] {
        app.apply_record(r);
    }
    app
}

fn app_all(records: &[Record], theme: Theme) -> App {
    let mut app = App::live("session-demo", theme, KeyMap::default());
    for r in records {
        app.apply_record(r);
    }
    app
}

fn render(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(app, f)).unwrap();
    terminal.backend().buffer().clone()
}

fn text(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(app, f)).unwrap();
    terminal.backend().to_string()
}

fn colour(c: Option<Color>) -> String {
    match c {
        None | Some(Color::Reset) => "-".into(),
        Some(Color::Rgb(r, g, b)) => format!("#{r:02x}{g:02x}{b:02x}"),
        Some(c) => format!("{c:?}"),
    }
}

/// The buffer's styles as runs of equal style per row: `y x0..x1 fg bg modifiers "text"`.
fn styles(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut x = 0;
        while x < area.width {
            let style = buffer[(x, y)].style();
            let start = x;
            let mut run = String::new();
            while x < area.width && buffer[(x, y)].style() == style {
                run.push_str(buffer[(x, y)].symbol());
                x += 1;
            }
            let plain = style.fg.is_none_or(|c| c == Color::Reset)
                && style.bg.is_none_or(|c| c == Color::Reset)
                && style.add_modifier == Modifier::empty();
            if plain {
                continue;
            }
            let mods = if style.add_modifier.is_empty() {
                String::new()
            } else {
                format!(" {:?}", style.add_modifier)
            };
            out.push_str(&format!(
                "{y:>2} {start:>3}..{x:<3} fg={} bg={}{mods} {:?}\n",
                colour(style.fg),
                colour(style.bg),
                run.trim_end()
            ));
        }
    }
    out
}

fn focused(mut app: App, pane: Pane) -> App {
    app.focus = pane;
    app
}

// --- Knowledge session, 80x24 (tabs) -------------------------------------------------------

#[test]
fn context_pane_after_the_baseline() {
    let app = app_until(
        &knowledge(),
        Theme::dark(),
        |e| matches!(e, Event::BaselineScored { id, .. } if *id == CtxId { round: 0, ctx: 1 }),
    );
    insta::assert_snapshot!(text(&focused(app, Pane::Context), 80, 24));
}

#[test]
fn edits_pane_while_a_self_edit_streams() {
    let records = knowledge();
    let mut seen = 0;
    let end = records
        .iter()
        .position(|r| {
            if matches!(&r.event, Event::EditToken { id, .. } if *id == eid(0, 0, 1)) {
                seen += 1;
            }
            seen == 14
        })
        .unwrap();
    let mut app = App::live("session-demo", Theme::dark(), KeyMap::default());
    for r in &records[..=end] {
        app.apply_record(r);
    }
    let screen = text(&app, 80, 24);
    assert!(screen.contains("sampling"), "{screen}");
    assert!(screen.contains("▌"), "streaming cursor: {screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn finetune_pane_mid_training() {
    let app = app_until(
        &knowledge(),
        Theme::dark(),
        |e| matches!(e, Event::TrainStep { id, progress, .. } if *id == eid(0, 1, 0) && progress.step == 6),
    );
    insta::assert_snapshot!(text(&focused(app, Pane::Finetune), 80, 24));
}

#[test]
fn finetune_pane_during_the_policy_update() {
    let app = app_until(
        &knowledge(),
        Theme::dark(),
        |e| matches!(e, Event::PolicyStep { round: 0, progress } if progress.step == 1),
    );
    insta::assert_snapshot!(text(&focused(app, Pane::Finetune), 80, 24));
}

#[test]
fn rewards_pane_after_scoring() {
    let app = app_until(
        &knowledge(),
        Theme::dark(),
        |e| matches!(e, Event::EditScored { id, .. } if *id == eid(0, 1, 0)),
    );
    let screen = text(&focused(app, Pane::Rewards), 80, 24);
    // Both answers to each question, graded: the base model's and the adapted one's.
    assert!(
        screen.contains("gold") && screen.contains("base") && screen.contains("adapted"),
        "{screen}"
    );
    assert!(
        screen.contains("2031"),
        "the first question's gold answer: {screen}"
    );
    assert!(screen.matches('✗').count() >= 2, "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn rewards_pane_shows_the_self_question_check() {
    use seal_tui::record::{QuestionResult, SelfCheck, Verdict};
    // A `questions = "both"` run grades each evaluation on the self-written questions too.
    let mut records = knowledge();
    let at = records
        .iter()
        .position(|r| matches!(r.event, Event::EditScored { id, .. } if id == eid(0, 1, 0)))
        .unwrap();
    let result = |question, correct| QuestionResult {
        question,
        answer: "in the harbour".into(),
        grid: None,
        verdict: Verdict {
            grader: "f1>=0.5".into(),
            correct,
            score: if correct { 1.0 } else { 0.0 },
            raw: String::new(),
        },
    };
    let mut check = records[at].clone();
    check.event = Event::SelfChecked {
        id: CtxId { round: 0, ctx: 1 },
        edit: Some(eid(0, 1, 0)),
        rev: 0,
        repeat: 0,
        check: SelfCheck {
            results: vec![
                result(0, true),
                result(1, false),
                result(2, true),
                result(3, true),
            ],
            accuracy: 0.75,
        },
    };
    records.insert(at, check);
    let app = app_until(
        &records,
        Theme::dark(),
        |e| matches!(e, Event::EditScored { id, .. } if *id == eid(0, 1, 0)),
    );
    let screen = text(&focused(app, Pane::Rewards), 80, 24);
    assert!(
        screen.contains("self-check 75% of 4 own questions"),
        "{screen}"
    );
}

#[test]
fn run_pane_at_the_end() {
    let app = app_all(&knowledge(), Theme::dark());
    insta::assert_snapshot!(text(&focused(app, Pane::Run), 80, 24));
}

#[test]
fn edits_pane_shows_decisions_and_kept() {
    let mut app = app_all(&knowledge(), Theme::dark());
    // Back to the first context, where one edit was approved and the other rejected.
    for _ in 0..3 {
        update(&mut app, Action::PrevContext);
    }
    let screen = text(&app, 80, 24);
    assert!(
        screen.contains("✓ approved") && screen.contains("✗ rejected"),
        "{screen}"
    );
    assert!(screen.contains("★ kept"), "{screen}");
    insta::assert_snapshot!(screen);
}

// --- Two themes: colours ---------------------------------------------------------------------

fn mid_training(theme: Theme) -> App {
    app_until(
        &knowledge(),
        theme,
        |e| matches!(e, Event::TrainStep { id, progress, .. } if *id == eid(1, 0, 0) && progress.step == 5),
    )
}

#[test]
fn themes_change_colours_not_text() {
    let high = Theme::built_in("high-contrast").unwrap();
    for (w, h) in [(80, 24), (200, 60)] {
        assert_eq!(
            text(&mid_training(Theme::dark()), w, h),
            text(&mid_training(high.clone()), w, h)
        );
    }
}

#[test]
fn edits_pane_colours_dark() {
    insta::assert_snapshot!(styles(&render(&mid_training(Theme::dark()), 80, 24)));
}

#[test]
fn edits_pane_colours_high_contrast() {
    let app = mid_training(Theme::built_in("high-contrast").unwrap());
    insta::assert_snapshot!(styles(&render(&app, 80, 24)));
}

#[test]
fn grid_colours_dark() {
    insta::assert_snapshot!(styles(&render(&mid_training(Theme::dark()), 200, 60)));
}

#[test]
fn grid_colours_high_contrast() {
    let app = mid_training(Theme::built_in("high-contrast").unwrap());
    insta::assert_snapshot!(styles(&render(&app, 200, 60)));
}

#[test]
fn no_color_draws_without_colours() {
    let app = mid_training(Theme::plain());
    let buffer = render(&app, 80, 24);
    assert!(buffer
        .content
        .iter()
        .all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
    insta::assert_snapshot!(styles(&buffer));
}

// --- Knowledge session, 200x60 (grid) ------------------------------------------------------

#[test]
fn grid_mid_run() {
    insta::assert_snapshot!(text(&mid_training(Theme::dark()), 200, 60));
}

#[test]
fn grid_at_the_end() {
    insta::assert_snapshot!(text(&app_all(&knowledge(), Theme::dark()), 200, 60));
}

#[test]
fn zoomed_pane_fills_the_screen() {
    let mut app = mid_training(Theme::dark());
    update(&mut app, Action::FocusContext);
    update(&mut app, Action::Zoom);
    insta::assert_snapshot!(text(&app, 200, 60));
}

// --- Overlays --------------------------------------------------------------------------------

#[test]
fn help_lists_every_bound_key() {
    let mut app = mid_training(Theme::dark());
    update(&mut app, Action::Help);
    insta::assert_snapshot!("help_80x24", text(&app, 80, 24));
    let tall = text(&app, 200, 60);
    for (_, action, keys) in app.keymap.help_rows() {
        assert!(tall.contains(action.describe()), "{action:?} missing");
        for k in keys {
            assert!(tall.contains(&k.to_string()), "{k} missing");
        }
    }
}

#[test]
fn quit_with_work_in_flight_asks_first() {
    let mut app = mid_training(Theme::dark());
    assert!(update(&mut app, Action::Quit).is_empty());
    assert_eq!(app.quit, QuitState::Confirming);
    insta::assert_snapshot!(text(&app, 80, 24));
}

#[test]
fn editor_opens_over_the_selected_edit() {
    let mut app = app_until(
        &knowledge(),
        Theme::dark(),
        |e| matches!(e, Event::EditSampled { id, .. } if *id == eid(1, 1, 1)),
    );
    update(&mut app, Action::Edit);
    assert_eq!(app.editor.as_ref().map(|e| e.id), Some(eid(1, 1, 1)));
    insta::assert_snapshot!(text(&app, 80, 24));
}

// --- Replay ----------------------------------------------------------------------------------

fn replay() -> App {
    App::replay(
        "session-demo",
        knowledge(),
        Theme::dark(),
        KeyMap::default(),
    )
}

#[test]
fn replay_jumps_fold_up_to_the_next_round() {
    let records = knowledge();
    let round_starts: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.event, Event::RoundStarted { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(round_starts.len(), 2);
    let mut app = replay();
    update(&mut app, Action::JumpRound);
    assert_eq!(app.state.events, round_starts[0] + 1);
    update(&mut app, Action::JumpRound);
    assert_eq!(app.state.events, round_starts[1] + 1);
    assert_eq!(app.state.rounds.len(), 2);
    assert!(app.state.rounds[0].metrics.is_some(), "round 1 is complete");
    assert!(
        app.state.rounds[1].contexts.is_empty(),
        "round 2 has not begun"
    );
    update(&mut app, Action::JumpContext);
    assert_eq!(app.context_id(), Some(CtxId { round: 1, ctx: 0 }));
    update(&mut app, Action::JumpRound);
    assert!(
        app.replay.as_ref().unwrap().is_done(),
        "no third round: to the end"
    );
    assert!(app.state.finished);
}

#[test]
fn replay_shows_the_decisions_taken() {
    let mut app = replay();
    update(&mut app, Action::JumpRound);
    update(&mut app, Action::JumpRound);
    let decisions: Vec<&str> = app
        .log
        .iter()
        .filter(|l| l.kind == seal_tui::tui::app::LogKind::Decision)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(decisions, ["r1 c1 e1 approved", "r1 c1 e2 rejected"]);
    update(&mut app, Action::PrevContext);
    update(&mut app, Action::PrevContext);
    update(&mut app, Action::FocusEdits);
    let screen = text(&app, 80, 24);
    assert!(screen.contains("REPLAY"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn replay_refuses_commands_that_change_the_run() {
    let mut app = replay();
    update(&mut app, Action::JumpContext);
    for action in [
        Action::Step,
        Action::Approve,
        Action::Reject,
        Action::ToggleAuto,
    ] {
        let out: Vec<Command> = update(&mut app, action);
        assert!(out.is_empty());
        assert!(app.notice.as_deref().unwrap_or("").contains("read-only"));
    }
    let screen = text(&app, 80, 24);
    assert!(screen.contains("read-only"), "{screen}");
}

#[test]
fn replay_speed_is_bounded() {
    let mut app = replay();
    for _ in 0..10 {
        update(&mut app, Action::SpeedDown);
    }
    assert_eq!(app.replay.as_ref().unwrap().speed(), 1.0);
    for _ in 0..10 {
        update(&mut app, Action::SpeedUp);
    }
    assert_eq!(app.replay.as_ref().unwrap().speed(), 100.0);
}

#[test]
fn replay_plays_with_time() {
    let mut app = replay();
    update(&mut app, Action::SpeedUp);
    update(&mut app, Action::SpeedUp);
    update(&mut app, Action::SpeedUp);
    // Gaps are capped at 2 s of screen time, so the whole session plays in bounded time.
    let mut frames = 0;
    while !app.replay.as_ref().unwrap().is_done() {
        app.tick(0.05);
        frames += 1;
        assert!(frames < 10_000, "replay stalls");
    }
    assert!(app.state.finished);
    assert_eq!(app.state.events, knowledge().len());
}

// --- ARC ---------------------------------------------------------------------------------------

fn arc(theme: Theme) -> App {
    let mut app = App::live("arc-demo", theme, KeyMap::default());
    for r in fixture("tests/fixtures/arc-demo") {
        app.apply_record(&r);
    }
    app.focus = Pane::Context;
    app
}

#[test]
fn arc_context_draws_grids() {
    let screen = text(&arc(Theme::dark()), 80, 24);
    assert!(screen.contains("Demonstrations (3)"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn arc_context_wide_shows_predictions_against_expected() {
    let screen = text(&arc(Theme::dark()), 200, 60);
    // The adapted model wrote a grid of the right shape with four cells wrong; the unadapted
    // one wrote prose.
    assert!(screen.contains("e1 ✗ 4 cells differ"), "{screen}");
    assert!(screen.contains("base ✗ no readable grid"), "{screen}");
    assert!(screen.contains("××"), "differing cell marked: {screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn arc_grid_colours_are_the_arc_palette() {
    let app = arc(Theme::dark());
    let buffer = render(&app, 80, 24);
    let arc = Theme::dark().arc;
    for colour in [arc[1], arc[2], arc[3], arc[4]] {
        assert!(
            buffer.content.iter().any(|c| c.bg == colour),
            "{colour:?} not drawn"
        );
    }
    insta::assert_snapshot!(styles(&buffer));
}

#[test]
fn arc_without_colour_falls_back_to_digits() {
    let mut app = arc(Theme::plain());
    update(&mut app, Action::Zoom);
    let screen = text(&app, 120, 50);
    assert!(screen.contains("1 2 0"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn arc_self_edit_json_is_highlighted() {
    let app = focused(arc(Theme::dark()), Pane::Edits);
    let buffer = render(&app, 80, 24);
    let dark = Theme::dark();
    for slot in [dark.syntax_key, dark.syntax_constant, dark.syntax_number] {
        assert!(buffer.content.iter().any(|c| c.fg == slot), "{slot:?}");
    }
    insta::assert_snapshot!(text(&app, 80, 24));
}

// --- Untrusted text ----------------------------------------------------------------------------

#[test]
fn escape_sequences_in_model_text_render_inert() {
    let hostile = "Clear\x1b[2Jscreen, retitle\x1b]0;title\x07, return\rhere, back\x08space, \
                   csi\u{9b}31m and \u{202e}reversed";
    let ctx = CtxId { round: 0, ctx: 0 };
    let records = vec![
        Record {
            t: 0.0,
            event: Event::RunStarted {
                info: RunInfo {
                    session: "escapes".into(),
                    domain: "knowledge".into(),
                    model: "m".into(),
                    device: "cpu".into(),
                    template: "implications".into(),
                    grader: "em".into(),
                    rounds: 1,
                    contexts_per_round: 1,
                    k: 1,
                    repeats: 1,
                    approval_required: false,
                    gain_rule: Default::default(),
                },
            },
        },
        Record {
            t: 0.1,
            event: Event::RoundStarted {
                round: 0,
                contexts: 1,
            },
        },
        Record {
            t: 0.2,
            event: Event::ContextStarted {
                id: ctx,
                context: ContextView {
                    id: "x\x1b[1m".into(),
                    title: "Title\x1b[31m red".into(),
                    body: ContextBody::Passage {
                        text: hostile.into(),
                    },
                    questions: vec![QuestionView {
                        question: "Why\x07?".into(),
                        answers: vec!["because\x1b[0m".into()],
                    }],
                },
            },
        },
        Record {
            t: 0.3,
            event: Event::EditToken {
                id: eid(0, 0, 0),
                piece: "edit \x1b[2J\x1b]0;owned\x07 text\r".into(),
            },
        },
    ];
    let mut app = App::live("escapes\x1b[5m", Theme::dark(), KeyMap::default());
    for r in &records {
        app.apply_record(r);
    }
    app.focus = Pane::Context;
    let buffer = render(&app, 80, 24);
    assert!(buffer
        .content
        .iter()
        .all(|c| !c.symbol().chars().any(char::is_control)));
    let screen = text(&app, 80, 24);
    for shown in [
        "␛[2J",
        "␛]0;title␇",
        "return␍here",
        "back␈space",
        "\\x9b31m",
        "<U+202E>",
    ] {
        assert!(screen.contains(shown), "{shown} not shown: {screen}");
    }
    insta::assert_snapshot!("escapes_context", screen);
    app.focus = Pane::Edits;
    insta::assert_snapshot!("escapes_edits", text(&app, 80, 24));
}

#[test]
fn small_and_resized_terminals_do_not_panic() {
    let app = mid_training(Theme::dark());
    for (w, h) in [
        (1, 1),
        (20, 5),
        (40, 10),
        (80, 24),
        (120, 40),
        (139, 39),
        (140, 40),
        (300, 90),
    ] {
        let _ = render(&app, w, h);
    }
    let screen = text(&app, 30, 8);
    assert!(screen.contains("needs at least"), "{screen}");
}

#[test]
fn configuration_errors_come_back_before_the_terminal_is_touched() {
    use seal_tui::tui::{run, Feed, TuiOptions};
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, "[keys]\n\"s\" = \"stpe\"\n").unwrap();
    let feed = || Feed::Replay {
        records: Vec::new(),
        session: "s".into(),
        speed: 1.0,
    };
    let err = run(
        feed(),
        TuiOptions {
            keys: Some(keys),
            ..TuiOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("keys.toml: [keys] \"s\" = \"stpe\": unknown action \"stpe\""),
        "{err}"
    );
    let err = run(
        feed(),
        TuiOptions {
            theme: Some("neon".into()),
            themes_dir: dir.path().to_path_buf(),
            ..TuiOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no theme named \"neon\""), "{err}");
}

#[test]
fn no_theme_draws_text_in_its_background_colour() {
    for name in ["dark", "light", "high-contrast"] {
        let theme = Theme::built_in(name).unwrap();
        let mut help = mid_training(theme.clone());
        update(&mut help, Action::Help);
        let apps = [
            mid_training(theme.clone()),
            app_all(&knowledge(), theme.clone()),
            arc(theme.clone()),
            help,
        ];
        for app in &apps {
            for (w, h) in [(80, 24), (200, 60)] {
                let buffer = render(app, w, h);
                for (i, cell) in buffer.content.iter().enumerate() {
                    let visible = !cell.symbol().trim().is_empty();
                    let unset = |c: Color| c == Color::Reset;
                    assert!(
                        !visible || unset(cell.fg) || cell.fg != cell.bg,
                        "{name} {w}x{h}: {:?} at {} drawn {:?} on {:?}",
                        cell.symbol(),
                        i,
                        cell.fg,
                        cell.bg
                    );
                }
            }
        }
    }
}

// --- A round's inner loops on a SLURM cluster -------------------------------------------------

/// A real run with the slurm backend on the test cluster (tests/fixtures/recipes/slurm-demo.toml).
fn slurm() -> Vec<Record> {
    fixture("tests/fixtures/slurm-demo")
}

#[test]
fn finetune_pane_shows_the_array_with_live_loss() {
    let records = slurm();
    // The moment the first task's result came back: others still running or waiting.
    let app = app_until(&records, Theme::dark(), |e| {
        matches!(
            e,
            Event::ClusterTask {
                status: seal_tui::record::TaskStatus::Done,
                ..
            }
        )
    });
    let screen = text(&focused(app, Pane::Finetune), 100, 30);
    assert!(screen.contains("SLURM job"), "{screen}");
    assert!(screen.contains("1 done"), "{screen}");
    assert!(
        screen.contains("running") && screen.contains("pending"),
        "{screen}"
    );
    insta::assert_snapshot!(screen);
}

#[test]
fn a_finished_slurm_run_reads_as_a_local_one() {
    let app = app_all(&slurm(), Theme::dark());
    assert!(app.state.finished);
    assert!(app.state.arrays.iter().all(|a| !a.is_active()));
    let screen = text(&app, 200, 60);
    // After the array, the finetune pane is an edit's own again, with the round's summary.
    assert!(screen.contains("slurm r1: 8 done"), "{screen}");
    insta::assert_snapshot!(screen);
}

// --- The forgetting matrix (`report FILE.json --screen`) ------------------------------------

fn forgetting(theme: Theme) -> seal_tui::tui::forgetting::ForgettingView {
    let n = 6;
    let data = seal_tui::tui::forgetting::Forgetting {
        // The last title carries a terminal escape, which must draw inert.
        titles: (1..n)
            .map(|i| format!("Passage {i}"))
            .chain(std::iter::once("Hostile\x1b[2J title".to_string()))
            .collect(),
        base: vec![0.1; n],
        matrix: (0..n)
            .map(|i| {
                (0..=i)
                    .map(|j| (0.9 - 0.15 * (i - j) as f64).max(0.0))
                    .collect()
            })
            .collect(),
        template: "implications".into(),
    };
    seal_tui::tui::forgetting::ForgettingView::new(data, theme, KeyMap::default()).unwrap()
}

fn forgetting_buffer(view: &seal_tui::tui::forgetting::ForgettingView, w: u16, h: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal
        .draw(|f| seal_tui::tui::forgetting::draw(view, f))
        .unwrap();
    terminal.backend().buffer().clone()
}

fn forgetting_text(view: &seal_tui::tui::forgetting::ForgettingView, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal
        .draw(|f| seal_tui::tui::forgetting::draw(view, f))
        .unwrap();
    terminal.backend().to_string()
}

#[test]
fn forgetting_matrix_80x24() {
    let mut view = forgetting(Theme::plain());
    view.act(Action::PrevEdit);
    view.act(Action::NextContext);
    let screen = forgetting_text(&view, 80, 24);
    assert!(
        screen.contains("After update 5 of 6 (p5), on p2"),
        "{screen}"
    );
    assert!(!screen.contains('\x1b'), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn forgetting_matrix_colours_run_from_bad_to_ok() {
    let dark = Theme::dark();
    let buffer = forgetting_buffer(&forgetting(dark.clone()), 80, 24);
    // Each accuracy on its own colour, from the theme's "bad" through "warn" to "ok": the six
    // figures of the matrix (0% to 90%) give six backgrounds, the highest nearest "ok".
    let mut backgrounds: Vec<Color> = Vec::new();
    for c in buffer
        .content
        .iter()
        .filter(|c| c.symbol() == "%" && c.bg != dark.bg)
    {
        if !backgrounds.contains(&c.bg) {
            backgrounds.push(c.bg);
        }
    }
    assert_eq!(backgrounds.len(), 6, "{backgrounds:?}");
    let distance = |a: Color, b: Color| match (a, b) {
        (Color::Rgb(r0, g0, b0), Color::Rgb(r1, g1, b1)) => {
            (r0 as i32 - r1 as i32).abs()
                + (g0 as i32 - g1 as i32).abs()
                + (b0 as i32 - b1 as i32).abs()
        }
        _ => panic!("the dark theme's colours are RGB"),
    };
    let nearest_ok = backgrounds
        .iter()
        .min_by_key(|&&c| distance(c, dark.ok))
        .unwrap();
    let nearest_bad = backgrounds
        .iter()
        .min_by_key(|&&c| distance(c, dark.bad))
        .unwrap();
    let ninety = buffer
        .content
        .iter()
        .zip(buffer.content.iter().skip(1))
        .find(|(a, b)| a.symbol() == "9" && b.symbol() == "0")
        .map(|(a, _)| a.bg)
        .unwrap();
    assert_eq!(*nearest_ok, ninety);
    assert_ne!(nearest_bad, nearest_ok);
    insta::assert_snapshot!(styles(&buffer));
}

#[test]
fn forgetting_matrix_follows_the_cursor_when_it_does_not_fit() {
    let n = 30;
    let data = seal_tui::tui::forgetting::Forgetting {
        titles: (1..=n).map(|i| format!("Passage {i}")).collect(),
        base: vec![0.0; n],
        matrix: (0..n).map(|i| vec![0.5; i + 1]).collect(),
        template: "implications".into(),
    };
    let mut view =
        seal_tui::tui::forgetting::ForgettingView::new(data, Theme::plain(), KeyMap::default())
            .unwrap();
    for _ in 0..29 {
        view.act(Action::NextContext);
    }
    let screen = forgetting_text(&view, 80, 24);
    assert!(screen.contains("p30"), "{screen}");
    assert!(screen.contains("after 30"), "{screen}");
    assert!(screen.contains("Passage 30"), "{screen}");
}
