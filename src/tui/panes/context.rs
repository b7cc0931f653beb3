//! The context pane: the passage (or ARC task) the self-edits are written for, with its
//! questions. ARC tasks show their demonstrations, the test input, and predicted against
//! expected outputs.

use super::arc_grid::{self, Tile};
use super::{frame_pane, placeholder, scrolled};
use crate::record::state::ContextState;
use crate::record::{ArcTaskView, BaselineKind, ContextBody};
use crate::text::sanitize::{sanitize, sanitize_line};
use crate::tui::app::{App, Pane};
use crate::tui::highlight;
use crate::tui::labels;
use crate::tui::wrap::hanging;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, focused: bool) {
    let Some(ctx) = app.context() else {
        let inner = frame_pane(app, frame, Pane::Context, area, focused, "");
        placeholder(app, frame, inner, "waiting for the first context…");
        return;
    };
    let subtitle = format!(
        "{} · {}",
        labels::ctx(ctx.id),
        sanitize_line(&ctx.view.title)
    );
    let inner = frame_pane(app, frame, Pane::Context, area, focused, &subtitle);
    let mut lines = header(app, ctx);
    // Leave a column for the scrollbar: grid rows must not wrap.
    let width = usize::from(inner.width.saturating_sub(1));
    match &ctx.view.body {
        ContextBody::Passage { text } => passage(app, ctx, text, width, &mut lines),
        ContextBody::Arc { task } => arc(app, ctx, task, width, &mut lines),
    }
    scrolled(app, frame, Pane::Context, inner, lines, false);
}

fn header<'a>(app: &App, ctx: &ContextState) -> Vec<Line<'a>> {
    let theme = &app.theme;
    let mut meta = vec![format!("id {}", sanitize_line(&ctx.view.id))];
    meta.push(match ctx.view.questions.len() {
        1 => "1 question".into(),
        n => format!("{n} questions"),
    });
    if let Some(b) = &ctx.baseline {
        let right = b.results.iter().filter(|r| r.verdict.correct).count();
        let who = match b.kind {
            BaselineKind::Unadapted => "base model",
            BaselineKind::ContextOnly => "trained on context alone",
        };
        meta.push(format!(
            "{who} {} ({right}/{})",
            labels::pct(b.accuracy),
            b.results.len()
        ));
    }
    if ctx.finished {
        meta.push(match ctx.kept {
            Some(e) => format!("kept e{}", e + 1),
            None => "nothing kept".into(),
        });
    }
    vec![
        Line::styled(sanitize_line(&ctx.view.title).into_owned(), theme.strong()),
        Line::styled(meta.join(" · "), theme.muted()),
        Line::default(),
    ]
}

fn passage(app: &App, ctx: &ContextState, text: &str, width: usize, lines: &mut Vec<Line<'_>>) {
    let theme = &app.theme;
    let clean = sanitize(text);
    match highlight::detect(&clean) {
        Some(lang) => lines.extend(app.highlights.get(&clean, lang, theme).iter().cloned()),
        None => lines.extend(
            clean
                .split('\n')
                .map(|l| Line::styled(l.to_string(), theme.text())),
        ),
    }
    if ctx.view.questions.is_empty() {
        return;
    }
    lines.push(Line::default());
    lines.push(Line::styled("Questions", theme.strong()));
    for (i, q) in ctx.view.questions.iter().enumerate() {
        let gold: Vec<String> = q
            .answers
            .iter()
            .map(|a| sanitize_line(a).into_owned())
            .collect();
        lines.extend(hanging(
            vec![Span::styled(format!("{:>2}. ", i + 1), theme.muted())],
            vec![
                Span::styled(sanitize_line(&q.question).into_owned(), theme.text()),
                Span::styled(format!(" → {}", gold.join(" | ")), theme.muted()),
            ],
            width,
        ));
    }
}

fn arc(app: &App, ctx: &ContextState, task: &ArcTaskView, width: usize, lines: &mut Vec<Line<'_>>) {
    let theme = &app.theme;
    let label = theme.muted();
    lines.push(Line::styled(
        format!("Demonstrations ({})", task.train.len()),
        theme.strong(),
    ));
    let pairs: Vec<Tile> = task
        .train
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let input =
                arc_grid::grid(&ex.input, None, theme).labelled(format!("{} in", i + 1), label);
            let output = arc_grid::grid(&ex.output, None, theme).labelled("out".into(), label);
            let arrow = Tile::new(vec![Line::default(), Line::styled("→", theme.muted())]);
            arc_grid::beside(&[input, arrow, output], 1)
        })
        .collect();
    lines.extend(arc_grid::flow(pairs, width, 3));

    let edit = app.edit();
    let adapted = edit.and_then(|e| e.evaluations.last());
    for (i, case) in task.test.iter().enumerate() {
        lines.push(Line::default());
        lines.push(Line::styled(format!("Test {}", i + 1), theme.strong()));
        let mut tiles = vec![
            arc_grid::grid(&case.input, None, theme).labelled("input".into(), label),
            arc_grid::grid(&case.output, None, theme).labelled("expected".into(), label),
        ];
        let mut notes: Vec<String> = Vec::new();
        let baseline = ctx.baseline.as_ref().map(|b| (b.kind.short(), &b.results));
        let edit_label = edit
            .map(|e| format!("e{}", e.index + 1))
            .unwrap_or_default();
        let adapted = adapted.map(|ev| (edit_label.as_str(), &ev.results));
        for (who, results) in baseline.into_iter().chain(adapted) {
            let Some(result) = results.iter().find(|r| r.question == i) else {
                continue;
            };
            let mark = if result.verdict.correct { "✓" } else { "✗" };
            match &result.grid {
                Some(predicted) => {
                    notes.push(format!(
                        "{who} {mark} {}",
                        arc_grid::difference(predicted, &case.output)
                    ));
                    tiles.push(
                        arc_grid::grid(predicted, Some(&case.output), theme)
                            .labelled(format!("{who} {mark}"), label),
                    );
                }
                None => {
                    notes.push(format!("{who} {mark} no readable grid in the answer"));
                    let first = result.answer.lines().next().unwrap_or("");
                    let shown: String = sanitize_line(first).chars().take(24).collect();
                    tiles.push(
                        Tile::text(shown, theme.bad()).labelled(format!("{who} {mark}"), label),
                    );
                }
            }
        }
        lines.extend(arc_grid::flow(tiles, width, 3));
        for note in notes {
            lines.push(Line::styled(note, theme.muted()));
        }
    }
    if !ctx.view.questions.is_empty() && task.test.is_empty() {
        lines.push(Line::styled("(no test cases)", theme.muted()));
    }
}
