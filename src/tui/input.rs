//! Terminal input to app updates: keys through the keymap (or to the editor or the quit dialog
//! when one is open), the mouse wheel to the pane under the pointer, clicks to focus.

use super::app::{update, App, QuitState};
use super::keys::{Action, Key, KeyCodeOrd, NamedKey};
use super::layout;
use crate::record::Command;
use crossterm::event::{Event, KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;

/// Lines one wheel notch scrolls.
const WHEEL_LINES: i32 = 3;

/// Applies one terminal event; returns the commands to send to the loop.
pub fn handle(app: &mut App, event: &Event, screen: Rect) -> Vec<Command> {
    match event {
        Event::Key(key) => handle_key(app, *key),
        Event::Mouse(mouse) => {
            handle_mouse(app, mouse, screen);
            Vec::new()
        }
        Event::Paste(text) => {
            if let Some(editor) = app.editor.as_mut() {
                editor.paste(text);
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

pub fn handle_key(app: &mut App, event: KeyEvent) -> Vec<Command> {
    let Some(key) = Key::from_event(&event) else {
        return Vec::new();
    };
    // ctrl-c leaves from anywhere, whatever the keymap says.
    if key.is_ctrl_c() {
        return update(app, Action::ForceQuit);
    }
    if app.editor.is_some() {
        return app.editor_key(event);
    }
    if app.quit == QuitState::Confirming {
        return match key.code {
            KeyCodeOrd::Char('y' | 'Y') | KeyCodeOrd::Named(NamedKey::Enter) => {
                app.confirm_quit(true)
            }
            KeyCodeOrd::Char('n' | 'N' | 'q') | KeyCodeOrd::Named(NamedKey::Esc) => {
                app.confirm_quit(false)
            }
            _ => Vec::new(),
        };
    }
    match app.keymap.action(&key) {
        Some(action) => update(app, action),
        None => Vec::new(),
    }
}

fn handle_mouse(app: &mut App, mouse: &MouseEvent, screen: Rect) {
    if app.editor.is_some() || app.quit == QuitState::Confirming {
        return;
    }
    let delta = match mouse.kind {
        MouseEventKind::ScrollUp => -WHEEL_LINES,
        MouseEventKind::ScrollDown => WHEEL_LINES,
        MouseEventKind::Down(MouseButton::Left) => {
            if app.help {
                return;
            }
            let s = layout::compute(app, screen);
            if let Some(pane) = s
                .tab_at(mouse.column, mouse.row)
                .or_else(|| s.pane_at(mouse.column, mouse.row))
            {
                app.focus_pane(pane);
            }
            return;
        }
        _ => return,
    };
    if app.help {
        app.help_scroll.by(delta);
        return;
    }
    let s = layout::compute(app, screen);
    let pane = s.pane_at(mouse.column, mouse.row).unwrap_or(app.focus);
    app.scroll_pane(pane, delta);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::app::Pane;
    use crate::tui::keys::KeyMap;
    use crate::tui::theme::Theme;
    use crossterm::event::{KeyCode, KeyModifiers};

    fn key(c: KeyCode, m: KeyModifiers) -> Event {
        Event::Key(KeyEvent::new(c, m))
    }

    #[test]
    fn keys_go_through_the_keymap() {
        let mut app = App::live("s", Theme::dark(), KeyMap::default());
        let screen = Rect::new(0, 0, 80, 24);
        handle(
            &mut app,
            &key(KeyCode::Char('3'), KeyModifiers::NONE),
            screen,
        );
        assert_eq!(app.focus, Pane::Finetune);
        handle(
            &mut app,
            &key(KeyCode::BackTab, KeyModifiers::SHIFT),
            screen,
        );
        assert_eq!(app.focus, Pane::Edits);
        assert_eq!(
            handle(
                &mut app,
                &key(KeyCode::Char('s'), KeyModifiers::NONE),
                screen
            ),
            vec![Command::Step]
        );
        assert_eq!(
            handle(
                &mut app,
                &key(KeyCode::Char('c'), KeyModifiers::CONTROL),
                screen
            ),
            vec![Command::Quit]
        );
        assert_eq!(app.quit, QuitState::Exit);
    }

    #[test]
    fn clicks_focus_tabs() {
        let mut app = App::live("s", Theme::dark(), KeyMap::default());
        let click = Event::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 2,
            row: 0,
            modifiers: KeyModifiers::NONE,
        });
        handle(&mut app, &click, Rect::new(0, 0, 80, 24));
        assert_eq!(app.focus, Pane::Context);
    }
}
