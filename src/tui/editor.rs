//! The self-edit editor: a text area over the selected self-edit's text. ctrl-s saves (the app
//! then sends `Command::Edit`), escape cancels.
//!
//! The text is loaded sanitised, so control characters in model output appear as visible
//! stand-ins (`␛`); saving keeps those stand-ins as ordinary characters rather than restoring
//! the raw bytes.

use super::theme::Theme;
use crate::record::EditId;
use crate::text::sanitize::sanitize;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::style::{Modifier, Style};
use ratatui_textarea::TextArea;

pub struct Editor {
    pub id: EditId,
    pub textarea: TextArea<'static>,
    original: String,
}

/// What a key press in the editor asks for.
#[derive(Debug, PartialEq)]
pub enum EditorOutcome {
    Save(String),
    Cancel,
}

impl Editor {
    pub fn new(id: EditId, text: &str, theme: &Theme) -> Editor {
        let original = sanitize(text).into_owned();
        let mut textarea = TextArea::new(original.split('\n').map(str::to_string).collect());
        textarea.set_style(theme.text());
        textarea.set_cursor_line_style(Style::new());
        textarea.set_cursor_style(Style::new().add_modifier(Modifier::REVERSED));
        if theme.colored {
            textarea.set_line_number_style(theme.muted());
        }
        Editor {
            id,
            textarea,
            original,
        }
    }

    pub fn text(&self) -> String {
        self.textarea.lines().join("\n")
    }

    pub fn is_modified(&self) -> bool {
        self.text() != self.original
    }

    /// Feeds a key press to the editor; returns what the user asked for, if it ends editing.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<EditorOutcome> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('s') if ctrl => Some(EditorOutcome::Save(self.text())),
            KeyCode::Esc => Some(EditorOutcome::Cancel),
            _ => {
                self.textarea.input(key);
                None
            }
        }
    }

    /// Inserts pasted text (bracketed paste), sanitised like everything else.
    pub fn paste(&mut self, text: &str) {
        self.textarea.insert_str(sanitize(text));
    }
}

impl std::fmt::Debug for Editor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Editor").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn typing_then_ctrl_s_saves_the_new_text() {
        let id = EditId {
            round: 0,
            ctx: 0,
            edit: 1,
        };
        let mut ed = Editor::new(id, "line one\nline two", &Theme::dark());
        assert!(!ed.is_modified());
        ed.textarea
            .move_cursor(ratatui_textarea::CursorMove::Bottom);
        ed.textarea.move_cursor(ratatui_textarea::CursorMove::End);
        for c in "!".chars() {
            assert_eq!(
                ed.handle_key(key(KeyCode::Char(c), KeyModifiers::NONE)),
                None
            );
        }
        assert!(ed.is_modified());
        assert_eq!(
            ed.handle_key(key(KeyCode::Char('s'), KeyModifiers::CONTROL)),
            Some(EditorOutcome::Save("line one\nline two!".into()))
        );
        assert_eq!(
            ed.handle_key(key(KeyCode::Esc, KeyModifiers::NONE)),
            Some(EditorOutcome::Cancel)
        );
    }

    #[test]
    fn control_characters_load_as_visible_stand_ins() {
        let id = EditId {
            round: 0,
            ctx: 0,
            edit: 0,
        };
        let ed = Editor::new(id, "a\x1b[2Jb", &Theme::dark());
        assert_eq!(ed.text(), "a␛[2Jb");
    }
}
