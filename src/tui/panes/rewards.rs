//! The rewards pane: for the selected self-edit, each question with its gold answers, what the
//! unadapted and the adapted model answered and how each was graded, and the totals that make
//! the reward.

use super::{frame_pane, placeholder, scrolled};
use crate::record::state::ContextState;
use crate::record::{BaselineKind, QuestionResult};
use crate::text::sanitize::sanitize_line;
use crate::tui::app::{App, Pane};
use crate::tui::labels;
use crate::tui::theme::Theme;
use crate::tui::wrap::hanging;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

/// Answers longer than this are cut on screen (the log keeps them whole).
const ANSWER_CHARS: usize = 240;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, focused: bool) {
    let Some(ctx) = app.context() else {
        let inner = frame_pane(app, frame, Pane::Rewards, area, focused, "");
        placeholder(app, frame, inner, "no questions yet");
        return;
    };
    let subtitle = app
        .edit_id()
        .map_or_else(|| labels::ctx(ctx.id), labels::edit);
    let inner = frame_pane(app, frame, Pane::Rewards, area, focused, &subtitle);
    if ctx.view.questions.is_empty() {
        placeholder(app, frame, inner, "this context has no questions");
        return;
    }
    // Leave a column for the scrollbar.
    let width = usize::from(inner.width.saturating_sub(1));
    scrolled(
        app,
        frame,
        Pane::Rewards,
        inner,
        lines(app, ctx, width),
        false,
    );
}

fn verdict(theme: &Theme, result: Option<&QuestionResult>) -> Vec<Span<'static>> {
    match result {
        None => vec![Span::styled("–", theme.muted())],
        Some(r) => {
            let answer: String = sanitize_line(r.answer.trim())
                .chars()
                .take(ANSWER_CHARS)
                .collect();
            let (mark, style) = if r.verdict.correct {
                ("✓ ", theme.ok())
            } else {
                ("✗ ", theme.bad())
            };
            let mut spans = vec![Span::styled(mark, style), Span::raw(answer)];
            if r.verdict.score > 0.0 && r.verdict.score < 1.0 {
                spans.push(Span::styled(
                    format!("  ({:.2})", r.verdict.score),
                    theme.muted(),
                ));
            }
            spans
        }
    }
}

fn lines(app: &App, ctx: &ContextState, width: usize) -> Vec<Line<'static>> {
    let theme = &app.theme;
    let edit = app.edit();
    let evaluations = edit.map_or(&[][..], |e| e.evaluations.as_slice());
    let latest = evaluations.last();
    let base = ctx.baseline.as_ref();
    let mut out = Vec::new();

    let who = base.map_or(BaselineKind::Unadapted, |b| b.kind).short();
    let mut totals = vec![Span::styled(format!("{who} "), theme.muted())];
    totals.push(Span::raw(
        base.map_or("–".into(), |b| labels::pct(b.accuracy)),
    ));
    totals.push(Span::styled("  →  adapted ", theme.muted()));
    if evaluations.is_empty() {
        totals.push(Span::raw("–"));
    } else {
        let mean = evaluations.iter().map(|e| e.accuracy).sum::<f64>() / evaluations.len() as f64;
        totals.push(Span::raw(labels::pct(mean)));
        let repeats = app
            .state
            .info
            .as_ref()
            .map_or(evaluations.len(), |i| i.repeats);
        if repeats > 1 {
            totals.push(Span::styled(
                format!(" (mean of {}/{repeats} repeats)", evaluations.len()),
                theme.muted(),
            ));
        }
    }
    if let Some(e) = edit {
        totals.push(Span::styled("  gain ", theme.muted()));
        totals.push(match e.gain {
            Some(g) => Span::styled(
                labels::gain(g),
                if g > 0.0 {
                    theme.ok()
                } else if g < 0.0 {
                    theme.bad()
                } else {
                    theme.text()
                },
            ),
            None => Span::styled("–", theme.muted()),
        });
        totals.push(Span::styled("  reward ", theme.muted()));
        totals.push(Span::styled(labels::reward(e.reward), theme.strong()));
        // `questions = "both"`: the reward the self-written questions would have given.
        if let Some(a) = e.self_accuracy() {
            let asked: usize = e.self_checks.iter().map(|(_, c)| c.results.len()).sum();
            totals.push(Span::styled("  self-check ", theme.muted()));
            totals.push(Span::styled(labels::pct(a), theme.text()));
            totals.push(Span::styled(
                format!(" of {asked} own questions"),
                theme.muted(),
            ));
        }
    }
    out.extend(hanging(Vec::new(), totals, width));
    let grader = latest
        .and_then(|ev| ev.results.first())
        .or_else(|| base.and_then(|b| b.results.first()))
        .map(|r| sanitize_line(&r.verdict.grader).into_owned());
    if let Some(grader) = grader {
        out.push(Line::styled(format!("graded by {grader}"), theme.muted()));
    }

    for (i, q) in ctx.view.questions.iter().enumerate() {
        out.push(Line::default());
        out.extend(hanging(
            vec![Span::styled(format!("Q{} ", i + 1), theme.accent())],
            vec![Span::styled(
                sanitize_line(&q.question).into_owned(),
                theme.strong(),
            )],
            width,
        ));
        let gold: Vec<String> = q
            .answers
            .iter()
            .map(|a| sanitize_line(a).into_owned())
            .collect();
        out.extend(hanging(
            vec![Span::styled("   gold     ", theme.muted())],
            vec![Span::raw(gold.join(" | "))],
            width,
        ));
        let find = |rs: &[QuestionResult]| rs.iter().find(|r| r.question == i).cloned();
        let base_result = base.and_then(|b| find(&b.results));
        out.extend(hanging(
            vec![Span::styled(
                match base.map(|b| b.kind) {
                    Some(BaselineKind::ContextOnly) => "   ctx only ",
                    _ => "   base     ",
                },
                theme.muted(),
            )],
            verdict(theme, base_result.as_ref()),
            width,
        ));
        let adapted = latest.and_then(|ev| find(&ev.results));
        let mut line = verdict(theme, adapted.as_ref());
        if evaluations.len() > 1 {
            let right = evaluations
                .iter()
                .filter(|ev| find(&ev.results).is_some_and(|r| r.verdict.correct))
                .count();
            line.push(Span::styled(
                format!("  [{right}/{} repeats ✓]", evaluations.len()),
                theme.muted(),
            ));
        }
        out.extend(hanging(
            vec![Span::styled("   adapted  ", theme.muted())],
            line,
            width,
        ));
    }
    out
}
