//! What is drawn over the panes: the help (every bound key), the quit confirmation, and the
//! self-edit editor.

use super::app::App;
use super::labels;
use super::wrap::hanging;
use crate::record::state::Activity;
use crate::text::sanitize::sanitize_line;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Clear, Paragraph, Scrollbar, ScrollbarOrientation, ScrollbarState, Wrap,
};
use ratatui::Frame;

/// A centred rectangle of at most `width` x `height` inside `area`.
fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

fn dialog_block<'a>(app: &App, title: String) -> Block<'a> {
    Block::bordered()
        .border_type(BorderType::Double)
        .border_style(app.theme.border(true))
        .title(Span::styled(title, app.theme.pane_title(true)))
        .style(app.theme.base())
}

pub fn help(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let rect = centred(area, 100, area.height.saturating_sub(2));
    frame.render_widget(Clear, rect);
    let block = dialog_block(app, " Keys ".into());
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    // Leave a column for the scrollbar; show action names when there is room for them.
    let width = usize::from(inner.width.saturating_sub(1));
    let names = width >= 80;
    let row = |keys: String, name: String, what: &'static str| {
        let mut prefix = vec![Span::styled(format!("  {keys:<16} "), theme.accent())];
        if names {
            prefix.push(Span::styled(format!("{name:<15}"), theme.muted()));
        }
        hanging(prefix, vec![Span::raw(what)], width)
    };
    let mut lines: Vec<Line> = Vec::new();
    let mut section = None;
    for (s, action, keys) in app.keymap.help_rows() {
        if section != Some(s) {
            if section.is_some() {
                lines.push(Line::default());
            }
            lines.push(Line::styled(s.title(), theme.strong()));
            section = Some(s);
        }
        let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
        lines.extend(row(keys.join(", "), action.name(), action.describe()));
    }
    lines.push(Line::default());
    lines.push(Line::styled("Always", theme.strong()));
    for (keys, what) in [
        ("ctrl-c", "quit at once (the loop is told to stop)"),
        ("ctrl-s / esc", "in the editor: save / cancel"),
        ("y / n", "in the quit dialog: quit / stay"),
        ("mouse wheel", "scrolls the pane under the pointer"),
    ] {
        lines.extend(row(keys.into(), String::new(), what));
    }
    let total = lines.len();
    let offset = app.help_scroll.resolve(total, inner.height, false);
    frame.render_widget(Paragraph::new(lines).scroll((offset, 0)), inner);
    if total > usize::from(inner.height) {
        let mut state = ScrollbarState::new(total.saturating_sub(usize::from(inner.height)))
            .position(usize::from(offset));
        frame.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .begin_symbol(None)
                .end_symbol(None)
                .style(theme.muted()),
            inner,
            &mut state,
        );
    }
}

pub fn quit_confirm(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let work = match &app.state.activity {
        Activity::Training { id } => format!("{} is training", labels::edit(*id)),
        Activity::Evaluating { id } => format!("{} is being evaluated", labels::edit(*id)),
        Activity::Sampling { id } => format!("{} is being sampled", labels::edit(*id)),
        Activity::Baseline { id } => format!("the base model is answering {}", labels::ctx(*id)),
        Activity::PolicyUpdate { round } => format!("the policy of r{} is training", round + 1),
        Activity::Cluster { .. } => {
            let out: usize = app.state.arrays.iter().map(|a| a.counts().active()).sum();
            format!("{out} SLURM task(s) are out, and quitting cancels them")
        }
        other => labels::activity(other),
    };
    let lines = vec![
        Line::styled(format!("Model work is in flight: {work}."), theme.warn()),
        Line::default(),
        Line::raw("Quit anyway? The loop stops after recording what is done;"),
        Line::raw(format!(
            "`seal-tui resume {}` carries on later.",
            sanitize_line(&app.session)
        )),
        Line::default(),
        Line::from(vec![
            Span::styled("y", theme.accent()),
            Span::raw(" quit    "),
            Span::styled("n", theme.accent()),
            Span::raw(" stay"),
        ]),
    ];
    let rect = centred(area, 66, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(dialog_block(app, " Quit? ".into())),
        rect,
    );
}

pub fn editor(app: &App, frame: &mut Frame, area: Rect) {
    let Some(editor) = &app.editor else {
        return;
    };
    // Over the panes, leaving the status bar (and its key hints) in view.
    let body = Rect {
        height: area.height.saturating_sub(super::layout::STATUS_HEIGHT),
        ..area
    };
    let rect = centred(body, body.width.saturating_sub(2), body.height);
    frame.render_widget(Clear, rect);
    let block = dialog_block(
        app,
        format!(
            " Edit {} · ctrl-s save and re-evaluate · esc cancel ",
            labels::edit(editor.id)
        ),
    );
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    frame.render_widget(&editor.textarea, inner);
}
