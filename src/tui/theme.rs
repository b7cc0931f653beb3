//! Colour themes: flat TOML files in `themes/` (one `key = "colour"` per line, plus the ten ARC
//! colours), and a colourless theme for `NO_COLOR` that styles with modifiers only.

use anyhow::{anyhow, bail, Context as _, Result};
use ratatui::style::{Color, Modifier, Style};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Themes shipped in `themes/`, built into the binary so they work from any directory.
const BUILT_IN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

pub const DEFAULT_THEME: &str = "dark";

macro_rules! theme_colours {
    ($($field:ident),* $(,)?) => {
        /// A theme's colours. Field names are the TOML keys.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Theme {
            pub name: String,
            /// False for the `NO_COLOR` theme: styles then carry modifiers only.
            pub colored: bool,
            /// ARC colours 0-9.
            pub arc: [Color; 10],
            $(pub $field: Color,)*
        }

        impl Theme {
            /// Every colour key a theme file may set, besides `name` and `arc`.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn set(&mut self, key: &str, colour: Color) -> bool {
                match key {
                    $(stringify!($field) => self.$field = colour,)*
                    _ => return false,
                }
                true
            }

            /// Every named colour, for tests and for checking a theme's palette.
            pub fn colours(&self) -> Vec<(&'static str, Color)> {
                let mut all = vec![$((stringify!($field), self.$field)),*];
                all.extend(self.arc.iter().map(|&c| ("arc", c)));
                all
            }

            fn blank(name: &str) -> Theme {
                Theme {
                    name: name.to_string(),
                    colored: true,
                    arc: [Color::Reset; 10],
                    $($field: Color::Reset,)*
                }
            }
        }
    };
}

theme_colours!(
    fg,
    bg,
    muted,
    accent,
    border,
    border_focused,
    title,
    selection_fg,
    selection_bg,
    ok,
    bad,
    warn,
    info,
    status_fg,
    status_bg,
    badge_fg,
    mode_step,
    mode_auto,
    mode_paused,
    mode_replay,
    tab_fg,
    tab_active_fg,
    tab_active_bg,
    gauge,
    chart_loss,
    chart_before,
    chart_after,
    chart_reward,
    chart_heldout,
    syntax_key,
    syntax_string,
    syntax_number,
    syntax_constant,
    syntax_punctuation,
    syntax_comment,
    syntax_section,
);

/// Slots of syntax colouring, filled from the theme at draw time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Plain,
    Key,
    String,
    Number,
    Constant,
    Punctuation,
    Comment,
    Section,
}

impl Theme {
    /// Parses a theme file's text. Keys it leaves out keep `base`'s colours; an unknown key or a
    /// bad colour is an error naming `origin` and the key.
    pub fn parse(text: &str, origin: &str, base: Option<&Theme>) -> Result<Theme> {
        let table: toml::Table =
            toml::from_str(text).with_context(|| format!("{origin}: not a valid theme file"))?;
        let mut theme = base.cloned().unwrap_or_else(|| Theme::blank(""));
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in &table {
            match key.as_str() {
                "name" => {
                    theme.name = value
                        .as_str()
                        .ok_or_else(|| anyhow!("{origin}: `name` must be a string"))?
                        .to_string();
                }
                "arc" => {
                    let list = value
                        .as_array()
                        .filter(|a| a.len() == 10)
                        .ok_or_else(|| anyhow!("{origin}: `arc` must list exactly 10 colours"))?;
                    for (i, v) in list.iter().enumerate() {
                        theme.arc[i] = parse_colour(v, origin, &format!("arc[{i}]"))?;
                    }
                }
                _ => {
                    let colour = parse_colour(value, origin, key)?;
                    if !theme.set(key, colour) {
                        bail!(
                            "{origin}: unknown key `{key}` (known: name, arc, {})",
                            Theme::KEYS.join(", ")
                        );
                    }
                }
            }
            seen.push(key);
        }
        if base.is_none() {
            let missing: Vec<&str> = Theme::KEYS
                .iter()
                .chain(&["name", "arc"])
                .copied()
                .filter(|k| !seen.contains(k))
                .collect();
            if !missing.is_empty() {
                bail!("{origin}: missing keys: {}", missing.join(", "));
            }
        }
        if theme.name.is_empty() {
            theme.name = origin.to_string();
        }
        Ok(theme)
    }

    /// A built-in theme by name.
    pub fn built_in(name: &str) -> Option<Theme> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name)?;
        // Built-in files are complete and checked by the tests below.
        Theme::parse(text, &format!("themes/{name}.toml"), None).ok()
    }

    pub fn dark() -> Theme {
        Theme::built_in(DEFAULT_THEME).unwrap_or_else(Theme::plain)
    }

    /// The theme for `NO_COLOR`: no colours at all; emphasis by bold, reverse and underline.
    pub fn plain() -> Theme {
        let mut theme = Theme::blank("no-color");
        theme.colored = false;
        theme
    }

    /// Picks the theme: `name` (default `dark`) from `dir`, where a file there overrides the
    /// built-in of the same name; a name with a `/` or ending `.toml` is a path. Files that are
    /// not complete fall back to the dark theme's colours for the keys they leave out.
    pub fn load(name: Option<&str>, dir: &Path, no_color: bool) -> Result<Theme> {
        if no_color {
            return Ok(Theme::plain());
        }
        let name = name.unwrap_or(DEFAULT_THEME);
        let path: PathBuf = if name.contains('/') || name.ends_with(".toml") {
            PathBuf::from(name)
        } else {
            dir.join(format!("{name}.toml"))
        };
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read theme {}", path.display()))?;
            return Theme::parse(&text, &path.display().to_string(), Some(&Theme::dark()));
        }
        Theme::built_in(name).ok_or_else(|| {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            anyhow!(
                "no theme named {name:?}: {} does not exist (built in: {})",
                path.display(),
                names.join(", ")
            )
        })
    }

    fn fg_style(&self, colour: Color) -> Style {
        if self.colored {
            Style::new().fg(colour)
        } else {
            Style::new()
        }
    }

    /// Plain text on the theme's background.
    pub fn base(&self) -> Style {
        if self.colored {
            Style::new().fg(self.fg).bg(self.bg)
        } else {
            Style::new()
        }
    }

    pub fn text(&self) -> Style {
        self.fg_style(self.fg)
    }

    pub fn muted(&self) -> Style {
        if self.colored {
            self.fg_style(self.muted)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    pub fn accent(&self) -> Style {
        self.fg_style(self.accent)
    }

    pub fn ok(&self) -> Style {
        self.fg_style(self.ok)
    }

    pub fn bad(&self) -> Style {
        self.fg_style(self.bad)
    }

    pub fn warn(&self) -> Style {
        self.fg_style(self.warn)
    }

    pub fn info(&self) -> Style {
        self.fg_style(self.info)
    }

    pub fn strong(&self) -> Style {
        self.fg_style(self.title).add_modifier(Modifier::BOLD)
    }

    pub fn border(&self, focused: bool) -> Style {
        match (self.colored, focused) {
            (true, true) => Style::new().fg(self.border_focused),
            (true, false) => Style::new().fg(self.border),
            (false, true) => Style::new().add_modifier(Modifier::BOLD),
            (false, false) => Style::new(),
        }
    }

    pub fn pane_title(&self, focused: bool) -> Style {
        let style = if focused {
            self.fg_style(self.border_focused)
        } else {
            self.fg_style(self.title)
        };
        style.add_modifier(Modifier::BOLD)
    }

    pub fn selected(&self) -> Style {
        if self.colored {
            Style::new()
                .fg(self.selection_fg)
                .bg(self.selection_bg)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn status(&self) -> Style {
        if self.colored {
            Style::new().fg(self.status_fg).bg(self.status_bg)
        } else {
            Style::new()
        }
    }

    /// A mode badge in the status bar, on the mode's colour.
    pub fn badge(&self, colour: Color) -> Style {
        let style = Style::new().add_modifier(Modifier::BOLD);
        if self.colored {
            style.fg(self.badge_fg).bg(colour)
        } else {
            style.add_modifier(Modifier::REVERSED)
        }
    }

    pub fn tab(&self, active: bool) -> Style {
        match (self.colored, active) {
            (true, true) => Style::new()
                .fg(self.tab_active_fg)
                .bg(self.tab_active_bg)
                .add_modifier(Modifier::BOLD),
            (true, false) => Style::new().fg(self.tab_fg),
            (false, true) => Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            (false, false) => Style::new(),
        }
    }

    pub fn chart(&self, colour: Color) -> Style {
        self.fg_style(colour)
    }

    pub fn syntax(&self, slot: Syntax) -> Style {
        let colour = match slot {
            Syntax::Plain => return self.text(),
            Syntax::Key => self.syntax_key,
            Syntax::String => self.syntax_string,
            Syntax::Number => self.syntax_number,
            Syntax::Constant => self.syntax_constant,
            Syntax::Punctuation => self.syntax_punctuation,
            Syntax::Comment => self.syntax_comment,
            Syntax::Section => self.syntax_section,
        };
        self.fg_style(colour)
    }
}

fn parse_colour(value: &toml::Value, origin: &str, key: &str) -> Result<Color> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("{origin}: `{key}` must be a colour string, e.g. \"#88c0d0\""))?;
    Color::from_str(text).map_err(|_| {
        anyhow!(
            "{origin}: `{key}` = {text:?} is not a colour (use \"#rrggbb\", a name such as \
             \"light_blue\", an index 0-255, or \"reset\")"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSI_16: [Color; 17] = [
        Color::Reset,
        Color::Black,
        Color::Red,
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::Magenta,
        Color::Cyan,
        Color::Gray,
        Color::DarkGray,
        Color::LightRed,
        Color::LightGreen,
        Color::LightYellow,
        Color::LightBlue,
        Color::LightMagenta,
        Color::LightCyan,
        Color::White,
    ];

    #[test]
    fn built_in_themes_are_complete() {
        for (name, text) in BUILT_IN {
            let theme = Theme::parse(text, name, None).unwrap();
            assert_eq!(theme.name, name);
        }
    }

    #[test]
    fn high_contrast_uses_only_the_16_ansi_colours() {
        let theme = Theme::built_in("high-contrast").unwrap();
        for (key, colour) in theme.colours() {
            assert!(ANSI_16.contains(&colour), "{key} = {colour:?}");
        }
        let mut arc = theme.arc.to_vec();
        arc.sort_by_key(|c| format!("{c:?}"));
        arc.dedup();
        assert_eq!(arc.len(), 10, "ARC colours must stay distinct");
    }

    #[test]
    fn partial_files_fall_back_and_errors_name_the_key() {
        let dark = Theme::dark();
        let t = Theme::parse("name = \"mine\"\nok = \"green\"", "mine.toml", Some(&dark)).unwrap();
        assert_eq!(t.ok, Color::Green);
        assert_eq!(t.bad, dark.bad);
        let err = Theme::parse("okk = \"green\"", "mine.toml", Some(&dark)).unwrap_err();
        assert!(
            err.to_string().contains("mine.toml: unknown key `okk`"),
            "{err}"
        );
        let err = Theme::parse("ok = \"greenish\"", "mine.toml", Some(&dark)).unwrap_err();
        assert!(err.to_string().contains("`ok` = \"greenish\""), "{err}");
        let err = Theme::parse("arc = [\"red\"]", "mine.toml", Some(&dark)).unwrap_err();
        assert!(err.to_string().contains("exactly 10"), "{err}");
    }

    #[test]
    fn load_picks_files_then_built_ins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dark.toml"),
            "name = \"dark\"\nok = \"red\"",
        )
        .unwrap();
        assert_eq!(
            Theme::load(Some("dark"), dir.path(), false).unwrap().ok,
            Color::Red
        );
        let light = Theme::load(Some("light"), dir.path(), false).unwrap();
        assert_eq!(light.name, "light");
        let err = Theme::load(Some("neon"), dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("no theme named \"neon\""), "{err}");
        assert!(!Theme::load(Some("neon"), dir.path(), true).unwrap().colored);
    }

    #[test]
    fn plain_theme_sets_no_colours() {
        let t = Theme::plain();
        for style in [
            t.text(),
            t.ok(),
            t.selected(),
            t.border(true),
            t.badge(t.mode_auto),
        ] {
            assert_eq!(style.fg, None);
            assert_eq!(style.bg, None);
        }
    }
}
