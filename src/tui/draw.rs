//! The whole screen as a function of the app state. `draw` reads the state; the only things it
//! writes are caches and the scroll bookkeeping the next key press starts from.

use super::app::{App, QuitState};
use super::sanitize::scrub_buffer;
use super::{chrome, layout, overlay, panes};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// Smaller than this, nothing sensible fits.
pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 10;

pub fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    frame.render_widget(Block::new().style(app.theme.base()), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        frame.render_widget(
            Paragraph::new(Line::raw(format!(
                "seal-tui needs at least {MIN_WIDTH}x{MIN_HEIGHT}; this terminal is {}x{}",
                area.width, area.height
            )))
            .wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    let screen = layout::compute(app, area);
    if let Some(tabs) = screen.tabs {
        chrome::tab_bar(app, frame, tabs);
    }
    let single = screen.panes.len() == 1;
    for &(pane, rect) in &screen.panes {
        panes::draw(app, frame, pane, rect, single || pane == app.focus);
    }
    chrome::status_bar(app, frame, screen.status);
    if app.editor.is_some() {
        overlay::editor(app, frame, area);
    }
    if app.quit == QuitState::Confirming {
        overlay::quit_confirm(app, frame, area);
    }
    if app.help {
        overlay::help(app, frame, area);
    }
    scrub_buffer(frame.buffer_mut());
}
