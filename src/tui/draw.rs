//! The whole screen as a function of the app state. `draw` reads the state; the only things it
//! writes are caches and the scroll bookkeeping the next key press starts from.

use super::app::{App, QuitState};
use super::{chrome, layout, overlay, panes};
use ratatui::buffer::Buffer;
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

/// Replaces any cell whose symbol still holds a control character. Widgets receive sanitised
/// text, so this only fires on a bug; it keeps such a bug from ever reaching the terminal.
pub fn scrub_buffer(buffer: &mut Buffer) {
    for cell in buffer.content.iter_mut() {
        if cell.symbol().chars().any(|c| c.is_control()) {
            cell.set_symbol("\u{fffd}");
        }
    }
}

#[cfg(test)]
mod scrub_tests {
    use super::*;

    #[test]
    fn scrub_replaces_control_symbols() {
        let mut buffer = Buffer::empty(ratatui::layout::Rect::new(0, 0, 3, 1));
        buffer[(1, 0)].set_symbol("\x1b");
        scrub_buffer(&mut buffer);
        assert_eq!(buffer[(1, 0)].symbol(), "\u{fffd}");
    }
}
