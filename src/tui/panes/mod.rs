//! The five panes. Each is a pure function of the app state drawing into its area; the helpers
//! here give them a common frame (border, title) and common scrolling.

pub mod arc_grid;
pub mod context;
pub mod edits;
pub mod finetune;
pub mod rewards;
pub mod run;

use super::app::{App, Pane};
use super::wrap::reflow;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Paragraph, Scrollbar, ScrollbarOrientation, ScrollbarState, Wrap,
};
use ratatui::Frame;

pub fn draw(app: &App, frame: &mut Frame, pane: Pane, area: Rect, focused: bool) {
    match pane {
        Pane::Context => context::draw(app, frame, area, focused),
        Pane::Edits => edits::draw(app, frame, area, focused),
        Pane::Finetune => finetune::draw(app, frame, area, focused),
        Pane::Rewards => rewards::draw(app, frame, area, focused),
        Pane::Run => run::draw(app, frame, area, focused),
    }
}

/// The pane's border and title (`1 Context · r1 c2 · subtitle`); draws it and returns the inner
/// area.
pub fn frame_pane(
    app: &App,
    frame: &mut Frame,
    pane: Pane,
    area: Rect,
    focused: bool,
    subtitle: &str,
) -> Rect {
    let theme = &app.theme;
    let mut title = vec![Span::styled(
        format!(" {} {} ", pane.index() + 1, pane.title()),
        theme.pane_title(focused),
    )];
    if !subtitle.is_empty() {
        title.push(Span::styled(format!("· {subtitle} "), theme.muted()));
    }
    let block = Block::bordered()
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Rounded
        })
        .border_style(theme.border(focused))
        .title(Line::from(title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    inner
}

/// Draws `lines` in `area`, wrapped, scrolled as the pane's [`crate::tui::app::Scroll`] says,
/// with a scrollbar in the last column when they do not fit. `auto_end` shows the end by
/// default (streaming text).
pub fn scrolled(
    app: &App,
    frame: &mut Frame,
    pane: Pane,
    area: Rect,
    lines: Vec<Line<'static>>,
    auto_end: bool,
) {
    if area.is_empty() {
        return;
    }
    // The last column is kept for the scrollbar, so wrapping does not depend on whether it shows.
    let text_width = area.width.saturating_sub(1).max(1);
    let wrapped = reflow(lines, usize::from(text_width));
    let total = wrapped.len();
    let offset = app.scroll_of(pane).resolve(total, area.height, auto_end);
    let visible: Vec<Line<'static>> = wrapped
        .into_iter()
        .skip(usize::from(offset))
        .take(usize::from(area.height))
        .collect();
    frame.render_widget(
        Paragraph::new(visible).style(app.theme.text()),
        Rect {
            width: text_width,
            ..area
        },
    );
    if total > usize::from(area.height) {
        let mut state = ScrollbarState::new(total.saturating_sub(usize::from(area.height)))
            .position(usize::from(offset));
        frame.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .begin_symbol(None)
                .end_symbol(None)
                .style(app.theme.muted()),
            area,
            &mut state,
        );
    }
}

/// A short, muted line in an otherwise empty pane.
pub fn placeholder(app: &App, frame: &mut Frame, area: Rect, text: &str) {
    frame.render_widget(
        Paragraph::new(Line::styled(text.to_string(), app.theme.muted())).wrap(Wrap { trim: true }),
        area,
    );
}
