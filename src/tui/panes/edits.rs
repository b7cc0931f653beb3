//! The self-edits pane: the k candidates of the context on screen, one row each (state, tokens,
//! reward, gain, the human's decision, whether it was kept), and below them the selected
//! self-edit's text, growing as tokens stream in.

use super::{frame_pane, placeholder, scrolled};
use crate::record::state::{ContextState, EditState, EditStatus};
use crate::record::Decision;
use crate::text::sanitize::{sanitize, sanitize_line};
use crate::tui::app::{App, Pane};
use crate::tui::highlight;
use crate::tui::labels;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, focused: bool) {
    let Some(ctx) = app.context() else {
        let inner = frame_pane(app, frame, Pane::Edits, area, focused, "");
        placeholder(app, frame, inner, "no self-edits yet");
        return;
    };
    let planned = app.state.info.as_ref().map_or(ctx.edits.len(), |i| i.k);
    let sampled = ctx
        .edits
        .iter()
        .filter(|e| e.status != EditStatus::Sampling)
        .count();
    let subtitle = format!("{} · {sampled}/{planned} sampled", labels::ctx(ctx.id));
    let inner = frame_pane(app, frame, Pane::Edits, area, focused, &subtitle);
    if ctx.edits.is_empty() {
        placeholder(
            app,
            frame,
            inner,
            "sampling has not started for this context",
        );
        return;
    }
    let rows = u16::try_from(ctx.edits.len()).unwrap_or(u16::MAX);
    let table_height = rows.saturating_add(1).min(inner.height / 2).max(2);
    let [table_area, rule_area, text_area] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(table(app, ctx, table_area)), table_area);
    let Some(edit) = app.edit() else {
        return;
    };
    frame.render_widget(Paragraph::new(rule(app, edit, rule_area.width)), rule_area);
    let streaming = edit.status == EditStatus::Sampling;
    scrolled(
        app,
        frame,
        Pane::Edits,
        text_area,
        body(app, edit),
        streaming,
    );
}

fn decision(theme: &Theme, edit: &EditState) -> Span<'static> {
    match &edit.decision {
        Some(Decision::Approved) => Span::styled("✓ approved", theme.ok()),
        Some(Decision::Rejected) => Span::styled("✗ rejected", theme.bad()),
        Some(Decision::Edited { .. }) => Span::styled("✎ edited  ", theme.warn()),
        None => Span::raw("          "),
    }
}

fn status_style(theme: &Theme, status: EditStatus) -> Style {
    match status {
        EditStatus::Sampling => theme.info(),
        EditStatus::Queued => theme.muted(),
        EditStatus::Training | EditStatus::Evaluating => theme.accent(),
        EditStatus::Scored => theme.ok(),
        EditStatus::Failed => theme.bad(),
    }
}

fn table(app: &App, ctx: &ContextState, area: Rect) -> Vec<Line<'static>> {
    let theme = &app.theme;
    let selected = app.edit_id().map(|id| id.edit);
    let header = format!(
        "   {:<4}{:<12}{:>7} {:>7} {:>6}  {:<10}{:<9}{}",
        "#", "state", "tokens", "reward", "gain", "human", "  kept", "text"
    );
    let mut lines = vec![Line::styled(header, theme.muted())];
    // Keep the selected row visible when k is larger than the rows available.
    let rows = usize::from(area.height.saturating_sub(1)).max(1);
    let first = selected.map_or(0, |s| (s + 1).saturating_sub(rows));
    for edit in ctx.edits.iter().skip(first).take(rows) {
        let is_selected = selected == Some(edit.index);
        let kept = ctx.kept == Some(edit.index);
        // A rejected edit in a finished context was never trained; "queued" would mislead.
        let state = if ctx.finished && edit.status == EditStatus::Queued {
            "not trained"
        } else {
            labels::status(edit.status)
        };
        let tokens = if edit.status == EditStatus::Sampling {
            "…".to_string()
        } else {
            labels::count(edit.tokens)
        };
        let preview: String = sanitize_line(edit.text.trim_start())
            .chars()
            .take(usize::from(area.width))
            .collect();
        let mut spans = vec![
            Span::raw(if is_selected { " ▶ " } else { "   " }),
            Span::styled(format!("e{:<2} ", edit.index + 1), theme.strong()),
            Span::styled(format!("{state:<11} "), status_style(theme, edit.status)),
            Span::raw(format!("{tokens:>7} ")),
            Span::raw(format!("{:>7} ", labels::reward(edit.reward))),
            Span::styled(
                format!("{:>6}  ", edit.gain.map_or("–".into(), labels::gain)),
                match edit.gain {
                    Some(g) if g > 0.0 => theme.ok(),
                    Some(g) if g < 0.0 => theme.bad(),
                    _ => theme.muted(),
                },
            ),
            decision(theme, edit),
            Span::styled(if kept { "  ★ kept " } else { "         " }, theme.ok()),
            Span::styled(preview, theme.muted()),
        ];
        if is_selected {
            let style = theme.selected();
            spans = spans.into_iter().map(|s| s.patch_style(style)).collect();
        }
        lines.push(Line::from(spans));
    }
    lines
}

fn rule(app: &App, edit: &EditState, width: u16) -> Line<'static> {
    let theme = &app.theme;
    let mut facts = vec![format!("e{}", edit.index + 1)];
    if let Some(secs) = edit.sample_secs {
        facts.push(format!(
            "{} tokens in {}",
            labels::count(edit.tokens),
            labels::secs(secs)
        ));
    } else {
        facts.push(format!(
            "{} chars so far",
            labels::count(edit.text.chars().count())
        ));
    }
    if let Some(Decision::Edited { .. }) = edit.decision {
        facts.push("text replaced by a human".into());
    }
    let label = format!("── {} ", facts.join(" · "));
    let fill = usize::from(width).saturating_sub(label.chars().count());
    Line::styled(format!("{label}{}", "─".repeat(fill)), theme.muted())
}

fn body(app: &App, edit: &EditState) -> Vec<Line<'static>> {
    let theme = &app.theme;
    let clean = sanitize(&edit.text);
    let mut lines: Vec<Line<'static>> = match highlight::detect(&clean) {
        Some(lang) => app.highlights.get(&clean, lang, theme).as_ref().clone(),
        None => clean
            .split('\n')
            .map(|l| Line::styled(l.to_string(), theme.text()))
            .collect(),
    };
    if edit.status == EditStatus::Sampling {
        let cursor = Span::styled("▌", theme.accent());
        match lines.last_mut() {
            Some(last) => last.spans.push(cursor),
            None => lines.push(Line::from(cursor)),
        }
    }
    if let Some(err) = &edit.train.error {
        lines.push(Line::default());
        lines.push(Line::styled(
            format!("training failed: {}", sanitize_line(err)),
            theme.bad(),
        ));
    }
    lines
}
