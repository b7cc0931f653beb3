//! The frame around the panes: the tab bar (small screens) and the two-line status bar (mode,
//! session, what the loop is doing, the latest notice or log line; then the main keys).

use super::app::{App, LogKind, Pane, QuitState};
use super::keys::Action;
use super::labels;
use super::layout::tab_label;
use super::wrap::fit;
use crate::record::state::Activity;
use crate::text::sanitize::sanitize_line;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn tab_bar(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let mut spans = Vec::new();
    for pane in Pane::ALL {
        if !spans.is_empty() {
            spans.push(Span::raw(" "));
        }
        spans.push(Span::styled(tab_label(pane), theme.tab(pane == app.focus)));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(theme.status()),
        area,
    );
}

fn badge(app: &App) -> (String, ratatui::style::Color) {
    let theme = &app.theme;
    if let Some(r) = &app.replay {
        let state = if r.is_playing() { "▶" } else { "⏸" };
        return (
            format!(" REPLAY {state} {}x ", r.speed()),
            theme.mode_replay,
        );
    }
    match app.quit {
        QuitState::Stopping => (" STOPPING ".into(), theme.mode_paused),
        _ if app.loop_ended => (" ENDED ".into(), theme.mode_paused),
        _ => {
            let colour = match app.state.mode {
                crate::record::RunMode::Step => theme.mode_step,
                crate::record::RunMode::Auto => theme.mode_auto,
                crate::record::RunMode::Paused => theme.mode_paused,
            };
            (format!(" {} ", labels::mode(app.state.mode)), colour)
        }
    }
}

/// What the loop is doing, with the figures that say how far along it is.
pub fn activity(app: &App) -> String {
    let state = &app.state;
    let base = labels::activity(&state.activity);
    match &state.activity {
        Activity::Sampling { id } => match state.edit(*id) {
            Some(e) => format!("{base} · {} chars", labels::count(e.text.chars().count())),
            None => base,
        },
        Activity::Training { id } => match state.edit(*id).and_then(|e| e.train.last()) {
            Some(s) => format!(
                "{base} · step {}/{} · loss {} · ETA {}",
                s.step,
                s.total_steps,
                labels::loss(s.loss),
                labels::secs(s.eta_secs)
            ),
            None => base,
        },
        Activity::Evaluating { id } => {
            let done = state.edit(*id).map_or(0, |e| e.evaluations.len());
            let repeats = state.info.as_ref().map_or(1, |i| i.repeats).max(done + 1);
            format!("{base} · repeat {}/{repeats}", done + 1)
        }
        Activity::PolicyUpdate { round } => {
            match state.rounds.get(*round).and_then(|r| r.policy.steps.last()) {
                Some(s) => format!("{base} · step {}/{}", s.step, s.total_steps),
                None => base,
            }
        }
        Activity::Heldout { pass } => match state.heldout.iter().find(|h| h.pass == *pass) {
            Some(h) => format!("{base} · context {}/{}", h.contexts.len() + 1, h.planned),
            None => base,
        },
        Activity::Cluster { job } => {
            // The round's arrays: its first submission and any retries.
            let round = state
                .arrays
                .iter()
                .rev()
                .find(|a| &a.job == job)
                .map(|a| a.round);
            let c = crate::record::TaskCounts::of(
                state
                    .arrays
                    .iter()
                    .filter(|a| Some(a.round) == round)
                    .flat_map(|a| &a.tasks),
            );
            format!(
                "{base} · {} done · {} running · {} pending{}",
                c.done,
                c.running,
                c.pending,
                if c.failed > 0 {
                    format!(" · {} failed", c.failed)
                } else {
                    String::new()
                }
            )
        }
        Activity::Finished => match state.total_secs {
            Some(s) => format!("finished in {}", labels::secs(s)),
            None => base,
        },
        Activity::Failed => format!(
            "failed: {}",
            sanitize_line(state.failure.as_deref().unwrap_or("unknown error"))
        ),
        // Before the run starts, say what is happening (fetching or loading the model).
        Activity::Idle if state.info.is_none() => match &state.status {
            Some(s) => sanitize_line(s).into_owned(),
            None => "starting".into(),
        },
        Activity::Idle | Activity::Baseline { .. } => base,
    }
}

fn hints(app: &App) -> Vec<(String, &'static str)> {
    let fixed = |pairs: &[(&str, &'static str)]| {
        pairs
            .iter()
            .map(|(k, l)| (k.to_string(), *l))
            .collect::<Vec<_>>()
    };
    if app.editor.is_some() {
        return fixed(&[("ctrl-s", "save and re-evaluate"), ("esc", "cancel")]);
    }
    if app.quit == QuitState::Confirming {
        return fixed(&[("y", "quit"), ("n", "stay")]);
    }
    if app.help {
        let close = app
            .keymap
            .hint(Action::Back)
            .unwrap_or_else(|| "esc".into());
        return vec![(close, "close"), ("↑↓".into(), "scroll")];
    }
    // Most important first: the bar drops from the right when it runs out of room.
    let wanted: &[(Action, &'static str)] = if app.is_replay() {
        &[
            (Action::PlayPause, "play/pause"),
            (Action::SpeedUp, "faster"),
            (Action::SpeedDown, "slower"),
            (Action::JumpRound, "next round"),
            (Action::JumpContext, "next context"),
            (Action::Help, "help"),
            (Action::Quit, "quit"),
            (Action::NextContext, "context"),
            (Action::NextEdit, "self-edit"),
            (Action::FocusNext, "pane"),
            (Action::Zoom, "zoom"),
        ]
    } else {
        &[
            (Action::Step, "step"),
            (Action::ToggleAuto, "auto"),
            (Action::Approve, "approve"),
            (Action::Reject, "reject"),
            (Action::Edit, "edit"),
            (Action::Help, "help"),
            (Action::Quit, "quit"),
            (Action::Pause, "pause"),
            (Action::NextContext, "context"),
            (Action::NextEdit, "self-edit"),
            (Action::FocusNext, "pane"),
            (Action::Zoom, "zoom"),
        ]
    };
    wanted
        .iter()
        .filter_map(|(a, l)| Some((app.keymap.hint(*a)?, *l)))
        .collect()
}

pub fn status_bar(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let [top, bottom] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);

    let (badge_text, colour) = badge(app);
    let mut left = vec![
        Span::styled(badge_text, theme.badge(colour)),
        Span::styled(
            format!(" {} ", sanitize_line(&app.session)),
            theme.status().add_modifier(Modifier::BOLD),
        ),
        Span::raw("· "),
        Span::raw(activity(app)),
    ];
    if let Some(r) = &app.replay {
        left.push(Span::styled(
            format!(
                " · {}/{}",
                labels::clock(r.position()),
                labels::clock(r.duration())
            ),
            theme.muted(),
        ));
    }
    if !app.follow {
        let how = app
            .keymap
            .hint(Action::Follow)
            .map_or(String::new(), |k| format!(": {k} follows"));
        left.push(Span::styled(format!(" · pinned{how}"), theme.warn()));
    }
    let left = Line::from(left);
    let right = match (&app.notice, app.log.last()) {
        (Some(n), _) => Line::styled(sanitize_line(n).into_owned(), theme.accent()),
        (None, Some(entry)) => Line::styled(
            format!("{} {}", labels::clock(entry.t), entry.text),
            match entry.kind {
                LogKind::Decision => theme.accent(),
                LogKind::Warning => theme.warn(),
                LogKind::Error => theme.bad(),
                LogKind::Info => theme.muted(),
            },
        ),
        (None, None) => Line::default(),
    };
    // A notice answers the user's last key, so it may take up to half the bar from the
    // activity; the log line only gets what the activity leaves.
    let width = usize::from(top.width);
    let reserved = if app.notice.is_some() {
        right.width().min(width / 2)
    } else {
        0
    };
    let left = fit(left, width.saturating_sub(reserved + 1).max(1));
    let room = width.saturating_sub(left.width() + 3);
    let right = if room >= 12 || app.notice.is_some() {
        fit(right, room)
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(left).style(theme.status()), top);
    let right_width = u16::try_from(right.width()).unwrap_or(top.width);
    if right_width > 0 {
        let at = Rect {
            x: top.right().saturating_sub(right_width + 1),
            width: right_width,
            ..top
        };
        frame.render_widget(Paragraph::new(right), at);
    }

    let mut keys = vec![Span::raw(" ")];
    let mut used = 1usize;
    for (key, label) in hints(app) {
        let label = format!(" {label}  ");
        let w = Span::raw(key.as_str()).width() + Span::raw(label.as_str()).width();
        if used + w > usize::from(bottom.width) {
            break;
        }
        used += w;
        keys.push(Span::styled(
            key,
            theme.accent().add_modifier(Modifier::BOLD),
        ));
        keys.push(Span::styled(label, theme.muted()));
    }
    frame.render_widget(Paragraph::new(Line::from(keys)), bottom);
}
