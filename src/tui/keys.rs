//! Key bindings: what the user can ask for ([`Action`]), the key syntax (`ctrl-c`, `shift-tab`,
//! `f1`, `pagedown`, `?`), and the keymap read from TOML (`[keys]` table, `"key" = "action"`)
//! over the built-in defaults.

use anyhow::{anyhow, bail, Context as _, Result};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::{de::IntoDeserializer, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Everything a key can do. Serialised in snake_case, so keymaps name actions directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Step,
    ToggleAuto,
    Pause,
    Approve,
    Reject,
    Edit,
    SkipContext,
    NextEdit,
    PrevEdit,
    NextContext,
    PrevContext,
    Follow,
    FocusNext,
    FocusPrev,
    FocusContext,
    FocusEdits,
    FocusFinetune,
    FocusRewards,
    FocusRun,
    Zoom,
    Back,
    ScrollUp,
    ScrollDown,
    PageUp,
    PageDown,
    ScrollTop,
    ScrollBottom,
    PlayPause,
    SpeedUp,
    SpeedDown,
    JumpRound,
    JumpContext,
    Help,
    Quit,
    ForceQuit,
    /// Unbinds a default key in a keymap file.
    None,
}

/// Groups in the help overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Run,
    Navigate,
    View,
    Replay,
    App,
}

impl Section {
    pub fn title(self) -> &'static str {
        match self {
            Section::Run => "Steer the run",
            Section::Navigate => "Navigate",
            Section::View => "View",
            Section::Replay => "Replay",
            Section::App => "App",
        }
    }
}

impl Action {
    pub const ALL: [Action; 35] = [
        Action::Step,
        Action::ToggleAuto,
        Action::Pause,
        Action::Approve,
        Action::Reject,
        Action::Edit,
        Action::SkipContext,
        Action::NextEdit,
        Action::PrevEdit,
        Action::NextContext,
        Action::PrevContext,
        Action::Follow,
        Action::FocusNext,
        Action::FocusPrev,
        Action::FocusContext,
        Action::FocusEdits,
        Action::FocusFinetune,
        Action::FocusRewards,
        Action::FocusRun,
        Action::Zoom,
        Action::Back,
        Action::ScrollUp,
        Action::ScrollDown,
        Action::PageUp,
        Action::PageDown,
        Action::ScrollTop,
        Action::ScrollBottom,
        Action::PlayPause,
        Action::SpeedUp,
        Action::SpeedDown,
        Action::JumpRound,
        Action::JumpContext,
        Action::Help,
        Action::Quit,
        Action::ForceQuit,
    ];

    /// The name used in keymap files.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
            .ok()
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Step => "run the next phase of the loop, then wait",
            Action::ToggleAuto => "switch between auto-run and stepping",
            Action::Pause => "pause the loop (in a replay: pause playback)",
            Action::Approve => "approve the selected self-edit",
            Action::Reject => "reject the selected self-edit",
            Action::Edit => "edit the selected self-edit's text (ctrl-s saves, esc cancels)",
            Action::SkipContext => "finish the current context with what is evaluated",
            Action::NextEdit => "select the next self-edit",
            Action::PrevEdit => "select the previous self-edit",
            Action::NextContext => "select the next context",
            Action::PrevContext => "select the previous context",
            Action::Follow => "follow the newest work again",
            Action::FocusNext => "focus the next pane",
            Action::FocusPrev => "focus the previous pane",
            Action::FocusContext => "show the context pane",
            Action::FocusEdits => "show the self-edits pane",
            Action::FocusFinetune => "show the finetune pane",
            Action::FocusRewards => "show the rewards pane",
            Action::FocusRun => "show the run pane",
            Action::Zoom => "zoom the focused pane to full screen, or back",
            Action::Back => "close the overlay or leave zoom",
            Action::ScrollUp => "scroll the focused pane up a line",
            Action::ScrollDown => "scroll the focused pane down a line",
            Action::PageUp => "scroll the focused pane up a page",
            Action::PageDown => "scroll the focused pane down a page",
            Action::ScrollTop => "scroll the focused pane to the top",
            Action::ScrollBottom => "scroll the focused pane to the end (and follow it)",
            Action::PlayPause => "replay: play or pause",
            Action::SpeedUp => "replay: faster (up to 100x)",
            Action::SpeedDown => "replay: slower (down to 1x)",
            Action::JumpRound => "replay: jump to the next round",
            Action::JumpContext => "replay: jump to the next context",
            Action::Help => "show or hide this help",
            Action::Quit => "quit (asks first while model work runs)",
            Action::ForceQuit => "quit at once",
            Action::None => "unbound",
        }
    }

    pub fn section(self) -> Section {
        match self {
            Action::Step
            | Action::ToggleAuto
            | Action::Pause
            | Action::Approve
            | Action::Reject
            | Action::Edit
            | Action::SkipContext => Section::Run,
            Action::NextEdit
            | Action::PrevEdit
            | Action::NextContext
            | Action::PrevContext
            | Action::Follow => Section::Navigate,
            Action::FocusNext
            | Action::FocusPrev
            | Action::FocusContext
            | Action::FocusEdits
            | Action::FocusFinetune
            | Action::FocusRewards
            | Action::FocusRun
            | Action::Zoom
            | Action::Back
            | Action::ScrollUp
            | Action::ScrollDown
            | Action::PageUp
            | Action::PageDown
            | Action::ScrollTop
            | Action::ScrollBottom => Section::View,
            Action::PlayPause
            | Action::SpeedUp
            | Action::SpeedDown
            | Action::JumpRound
            | Action::JumpContext => Section::Replay,
            Action::Help | Action::Quit | Action::ForceQuit | Action::None => Section::App,
        }
    }
}

/// A key with its modifiers, normalised so that a binding and a key press compare equal:
/// characters carry their own case (no SHIFT), and back-tab is `shift-tab`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub code: KeyCodeOrd,
    pub mods: u8,
}

/// `KeyCode` with an order, so keymaps list deterministically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyCodeOrd {
    Char(char),
    F(u8),
    Named(NamedKey),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamedKey {
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    Tab,
    Enter,
    Esc,
    Backspace,
    Delete,
    Insert,
}

const CTRL: u8 = 1;
const ALT: u8 = 2;
const SHIFT: u8 = 4;

const NAMED: [(&str, NamedKey); 14] = [
    ("up", NamedKey::Up),
    ("down", NamedKey::Down),
    ("left", NamedKey::Left),
    ("right", NamedKey::Right),
    ("pageup", NamedKey::PageUp),
    ("pagedown", NamedKey::PageDown),
    ("home", NamedKey::Home),
    ("end", NamedKey::End),
    ("tab", NamedKey::Tab),
    ("enter", NamedKey::Enter),
    ("esc", NamedKey::Esc),
    ("backspace", NamedKey::Backspace),
    ("delete", NamedKey::Delete),
    ("insert", NamedKey::Insert),
];

const ALIASES: [(&str, &str); 5] = [
    ("escape", "esc"),
    ("return", "enter"),
    ("pgup", "pageup"),
    ("pgdn", "pagedown"),
    ("del", "delete"),
];

impl Key {
    pub fn char(c: char) -> Key {
        Key {
            code: KeyCodeOrd::Char(c),
            mods: 0,
        }
    }

    /// Parses the key syntax: optional `ctrl-`, `alt-`, `shift-` prefixes, then one character,
    /// `space`, `f1`..`f24`, or a named key (`up`, `pagedown`, `tab`, `esc`, ...).
    pub fn parse(text: &str) -> Result<Key, String> {
        let mut mods = 0u8;
        let mut rest = text;
        loop {
            let lower = rest.to_ascii_lowercase();
            let prefix = [
                ("ctrl-", CTRL),
                ("control-", CTRL),
                ("alt-", ALT),
                ("shift-", SHIFT),
            ]
            .into_iter()
            .find(|(p, _)| lower.starts_with(p) && rest.len() > p.len());
            match prefix {
                Some((p, m)) => {
                    mods |= m;
                    rest = &rest[p.len()..];
                }
                None => break,
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (None, _) => return Err("empty key".into()),
            (Some(c), None) if !c.is_control() => KeyCodeOrd::Char(c),
            _ => {
                let lower = rest.to_ascii_lowercase();
                let name = ALIASES
                    .iter()
                    .find(|(a, _)| *a == lower)
                    .map_or(lower.as_str(), |(_, n)| n);
                if name == "space" {
                    KeyCodeOrd::Char(' ')
                } else if let Some((_, k)) = NAMED.iter().find(|(n, _)| *n == name) {
                    KeyCodeOrd::Named(*k)
                } else if let Some(n) = name
                    .strip_prefix('f')
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| (1..=24).contains(n))
                {
                    KeyCodeOrd::F(n)
                } else {
                    return Err(format!(
                        "unknown key {rest:?} (use one character, space, f1-f24, or one of: {})",
                        NAMED.map(|(n, _)| n).join(", ")
                    ));
                }
            }
        };
        Ok(Key { code, mods }.normalised())
    }

    fn normalised(mut self) -> Key {
        if let KeyCodeOrd::Char(c) = self.code {
            if self.mods & SHIFT != 0 {
                let mut upper = c.to_uppercase();
                if let (Some(u), None) = (upper.next(), upper.next()) {
                    self.code = KeyCodeOrd::Char(u);
                }
                self.mods &= !SHIFT;
            }
        }
        self
    }

    /// The key of a key press, if it is one a binding can name (presses and repeats only).
    pub fn from_event(event: &KeyEvent) -> Option<Key> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        let mut mods = 0u8;
        if event.modifiers.contains(KeyModifiers::CONTROL) {
            mods |= CTRL;
        }
        if event.modifiers.contains(KeyModifiers::ALT) {
            mods |= ALT;
        }
        if event.modifiers.contains(KeyModifiers::SHIFT) {
            mods |= SHIFT;
        }
        let code = match event.code {
            KeyCode::Char(c) => {
                // The character already carries the shift.
                mods &= !SHIFT;
                KeyCodeOrd::Char(c)
            }
            KeyCode::F(n) => KeyCodeOrd::F(n),
            KeyCode::BackTab => {
                mods |= SHIFT;
                KeyCodeOrd::Named(NamedKey::Tab)
            }
            KeyCode::Up => KeyCodeOrd::Named(NamedKey::Up),
            KeyCode::Down => KeyCodeOrd::Named(NamedKey::Down),
            KeyCode::Left => KeyCodeOrd::Named(NamedKey::Left),
            KeyCode::Right => KeyCodeOrd::Named(NamedKey::Right),
            KeyCode::PageUp => KeyCodeOrd::Named(NamedKey::PageUp),
            KeyCode::PageDown => KeyCodeOrd::Named(NamedKey::PageDown),
            KeyCode::Home => KeyCodeOrd::Named(NamedKey::Home),
            KeyCode::End => KeyCodeOrd::Named(NamedKey::End),
            KeyCode::Tab => KeyCodeOrd::Named(NamedKey::Tab),
            KeyCode::Enter => KeyCodeOrd::Named(NamedKey::Enter),
            KeyCode::Esc => KeyCodeOrd::Named(NamedKey::Esc),
            KeyCode::Backspace => KeyCodeOrd::Named(NamedKey::Backspace),
            KeyCode::Delete => KeyCodeOrd::Named(NamedKey::Delete),
            KeyCode::Insert => KeyCodeOrd::Named(NamedKey::Insert),
            _ => return None,
        };
        Some(Key { code, mods })
    }

    pub fn is_ctrl_c(&self) -> bool {
        self.mods == CTRL && matches!(self.code, KeyCodeOrd::Char('c' | 'C'))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, name) in [(CTRL, "ctrl-"), (ALT, "alt-"), (SHIFT, "shift-")] {
            if self.mods & bit != 0 {
                f.write_str(name)?;
            }
        }
        match self.code {
            KeyCodeOrd::Char(' ') => f.write_str("space"),
            KeyCodeOrd::Char(c) => write!(f, "{c}"),
            KeyCodeOrd::F(n) => write!(f, "f{n}"),
            KeyCodeOrd::Named(k) => {
                let name = NAMED.iter().find(|(_, n)| *n == k).map_or("?", |(s, _)| s);
                f.write_str(name)
            }
        }
    }
}

/// The built-in keymap, in the same format as a `--keys` file.
pub const DEFAULT_KEYS: &str = r#"[keys]
"s" = "step"
"a" = "toggle_auto"
"p" = "pause"
"y" = "approve"
"n" = "reject"
"e" = "edit"
"x" = "skip_context"
"j" = "next_edit"
"down" = "next_edit"
"k" = "prev_edit"
"up" = "prev_edit"
"l" = "next_context"
"right" = "next_context"
"]" = "next_context"
"h" = "prev_context"
"left" = "prev_context"
"[" = "prev_context"
"f" = "follow"
"tab" = "focus_next"
"shift-tab" = "focus_prev"
"1" = "focus_context"
"2" = "focus_edits"
"3" = "focus_finetune"
"4" = "focus_rewards"
"5" = "focus_run"
"z" = "zoom"
"esc" = "back"
"K" = "scroll_up"
"J" = "scroll_down"
"pageup" = "page_up"
"pagedown" = "page_down"
"home" = "scroll_top"
"g" = "scroll_top"
"end" = "scroll_bottom"
"G" = "scroll_bottom"
"space" = "play_pause"
"+" = "speed_up"
"=" = "speed_up"
"-" = "speed_down"
"r" = "jump_round"
"c" = "jump_context"
"?" = "help"
"f1" = "help"
"q" = "quit"
"ctrl-c" = "force_quit"
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

/// Which action each key triggers.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyMap {
    bindings: BTreeMap<Key, Action>,
}

impl Default for KeyMap {
    fn default() -> Self {
        let mut map = KeyMap {
            bindings: BTreeMap::new(),
        };
        // The built-in text is checked by a test; a failure here would leave keys unbound,
        // never crash.
        let _ = map.merge(DEFAULT_KEYS, "built-in keymap");
        map
    }
}

impl KeyMap {
    /// The defaults with `path`'s entries laid over them (a key bound to `none` is unbound).
    pub fn load(path: Option<&Path>) -> Result<KeyMap> {
        let mut map = KeyMap::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read keymap {}", path.display()))?;
            map.merge(&text, &path.display().to_string())?;
        }
        Ok(map)
    }

    /// Lays the `[keys]` entries of `text` over this map. Errors name `origin` and the entry.
    pub fn merge(&mut self, text: &str, origin: &str) -> Result<()> {
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| anyhow!("{origin}: not a keymap (expected a [keys] table): {e}"))?;
        for (key_text, action_text) in &file.keys {
            let entry = format!("{origin}: [keys] \"{key_text}\" = \"{action_text}\"");
            let key = Key::parse(key_text).map_err(|e| anyhow!("{entry}: {e}"))?;
            let Some(action) = Action::from_name(action_text) else {
                let known: Vec<String> = Action::ALL.iter().map(|a| a.name()).collect();
                bail!(
                    "{entry}: unknown action {action_text:?} (known: {}, or none to unbind)",
                    known.join(", ")
                );
            };
            if action == Action::None {
                self.bindings.remove(&key);
            } else {
                self.bindings.insert(key, action);
            }
        }
        Ok(())
    }

    pub fn action(&self, key: &Key) -> Option<Action> {
        self.bindings.get(key).copied()
    }

    /// Keys bound to `action`, in a stable order.
    pub fn keys_for(&self, action: Action) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .bindings
            .iter()
            .filter(|(_, a)| **a == action)
            .map(|(k, _)| *k)
            .collect();
        // Letters and digits read best in hints, then other characters, then named keys.
        keys.sort_by_key(|k| {
            let rank = match k.code {
                KeyCodeOrd::Char(c) if c.is_alphanumeric() => 0,
                KeyCodeOrd::Char(_) => 1,
                _ => 2,
            };
            (k.mods, rank, *k)
        });
        keys
    }

    /// The first key for `action`, as the status bar shows it.
    pub fn hint(&self, action: Action) -> Option<String> {
        self.keys_for(action).first().map(Key::to_string)
    }

    /// Every bound action with its keys, grouped for the help overlay.
    pub fn help_rows(&self) -> Vec<(Section, Action, Vec<Key>)> {
        let mut rows: Vec<(Section, Action, Vec<Key>)> = Action::ALL
            .iter()
            .map(|&a| (a.section(), a, self.keys_for(a)))
            .filter(|(_, _, keys)| !keys.is_empty())
            .collect();
        rows.sort_by_key(|(s, a, _)| (*s, Action::ALL.iter().position(|x| x == a)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn default_keymap_parses_and_binds_the_documented_keys() {
        let mut map = KeyMap {
            bindings: BTreeMap::new(),
        };
        map.merge(DEFAULT_KEYS, "built-in").unwrap();
        assert_eq!(map, KeyMap::default());
        let k = |s: &str| map.action(&Key::parse(s).unwrap());
        assert_eq!(k("s"), Some(Action::Step));
        assert_eq!(k("y"), Some(Action::Approve));
        assert_eq!(k("shift-tab"), Some(Action::FocusPrev));
        assert_eq!(k("ctrl-c"), Some(Action::ForceQuit));
        assert_eq!(k("space"), Some(Action::PlayPause));
        assert_eq!(k("]"), Some(Action::NextContext));
        assert_eq!(k("f1"), Some(Action::Help));
    }

    #[test]
    fn every_action_round_trips_its_name_and_most_are_bound() {
        let map = KeyMap::default();
        for a in Action::ALL {
            assert_eq!(Action::from_name(&a.name()), Some(a));
            assert!(!map.keys_for(a).is_empty(), "{a:?} has no default key");
        }
        assert_eq!(Action::from_name("none"), Some(Action::None));
        assert_eq!(Action::from_name("Step"), None);
    }

    #[test]
    fn key_syntax() {
        assert_eq!(Key::parse("ctrl-c").unwrap().to_string(), "ctrl-c");
        assert_eq!(Key::parse("Ctrl-Shift-x").unwrap().to_string(), "ctrl-X");
        assert_eq!(Key::parse("shift-a").unwrap(), Key::char('A'));
        assert_eq!(Key::parse("-").unwrap(), Key::char('-'));
        assert_eq!(Key::parse("ctrl--").unwrap().to_string(), "ctrl--");
        assert_eq!(Key::parse("PgDn").unwrap().to_string(), "pagedown");
        assert_eq!(Key::parse("F12").unwrap().to_string(), "f12");
        assert_eq!(Key::parse("space").unwrap(), Key::char(' '));
        for bad in ["", "ctrl-", "f0", "f25", "hyper-x", "enterr", "\u{1b}"] {
            assert!(Key::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn key_events_normalise_like_bindings() {
        let ev = |c, m| Key::from_event(&press(c, m)).unwrap();
        assert_eq!(
            ev(KeyCode::BackTab, KeyModifiers::SHIFT),
            Key::parse("shift-tab").unwrap()
        );
        assert_eq!(
            ev(KeyCode::Char('G'), KeyModifiers::SHIFT),
            Key::parse("G").unwrap()
        );
        assert_eq!(
            ev(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Key::parse("ctrl-c").unwrap()
        );
        assert_eq!(
            ev(KeyCode::Char('+'), KeyModifiers::SHIFT),
            Key::parse("+").unwrap()
        );
        assert!(ev(KeyCode::Char('c'), KeyModifiers::CONTROL).is_ctrl_c());
    }

    #[test]
    fn keymap_files_override_and_unbind() {
        let mut map = KeyMap::default();
        map.merge("[keys]\n\"s\" = \"help\"\n\"x\" = \"none\"\n", "mine.toml")
            .unwrap();
        assert_eq!(map.action(&Key::char('s')), Some(Action::Help));
        assert_eq!(map.action(&Key::char('x')), None);
        assert_eq!(map.action(&Key::char('y')), Some(Action::Approve));
    }

    #[test]
    fn bad_entries_are_clear_errors_naming_file_and_entry() {
        let mut map = KeyMap::default();
        let err = map
            .merge("[keys]\n\"s\" = \"stepp\"\n", "my-keys.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("my-keys.toml: [keys] \"s\" = \"stepp\": unknown action \"stepp\""),
            "{err}"
        );
        assert!(err.contains("toggle_auto"), "{err}");
        let err = map
            .merge("[keys]\n\"ctrl-\" = \"step\"\n", "my-keys.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("my-keys.toml: [keys] \"ctrl-\" = \"step\": "),
            "{err}"
        );
        let err = map
            .merge("[keys]\n\"hyper-s\" = \"step\"\n", "my-keys.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key \"hyper-s\""), "{err}");
        let err = map
            .merge("[bindings]\n\"s\" = \"step\"\n", "my-keys.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("my-keys.toml: not a keymap"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[keys]\n\"q\" = \"exit\"\n").unwrap();
        let err = KeyMap::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("k.toml: [keys] \"q\" = \"exit\""), "{err}");
    }

    #[test]
    fn help_rows_cover_every_binding() {
        let map = KeyMap::default();
        let rows = map.help_rows();
        let listed: usize = rows.iter().map(|(_, _, k)| k.len()).sum();
        assert_eq!(listed, map.bindings.len());
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
