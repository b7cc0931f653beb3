//! Syntax colouring of JSON and TOML (ARC self-edit configs, config files) with syntect.
//!
//! syntect's grammars tag text with scopes; a small syntect theme built here maps scopes to
//! [`Syntax`] slots (encoded in the colour's red channel), and the UI theme gives each slot its
//! colour at draw time, so one grammar pass serves every theme, including 16-colour ones.
//! Grammars load once, on first use; results are cached per text.

use super::theme::{Syntax, Theme};
use ratatui::text::{Line, Span};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::OnceLock;
use syntect::highlighting::{
    Color as SynColor, HighlightIterator, HighlightState, Highlighter, ScopeSelectors,
    StyleModifier, Theme as SynTheme, ThemeItem, ThemeSettings,
};
use syntect::parsing::{
    ParseState, ScopeStack, SyntaxDefinition, SyntaxReference, SyntaxSet, SyntaxSetBuilder,
};
use syntect::util::LinesWithEndings;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Json,
    Toml,
}

/// Guesses whether text is JSON or TOML: a fenced block that says so, or text that opens like
/// either. Prose gets no colouring.
pub fn detect(text: &str) -> Option<Lang> {
    let trimmed = text.trim_start();
    if trimmed.starts_with("```json") || trimmed.starts_with('{') {
        return Some(Lang::Json);
    }
    if trimmed.starts_with("```toml") {
        return Some(Lang::Toml);
    }
    if trimmed.starts_with('[') {
        // `[section]` on its own line is TOML; `[1, 2]` or `[{` is JSON.
        let first = trimmed.lines().next().unwrap_or("").trim();
        let is_table = first.ends_with(']')
            && first[1..first.len() - 1]
                .trim_matches(|c| c == '[' || c == ']')
                .chars()
                .all(|c| c.is_alphanumeric() || "_.-\" ".contains(c));
        return Some(if is_table { Lang::Toml } else { Lang::Json });
    }
    let mut lines = trimmed.lines().filter(|l| !l.trim().is_empty()).take(8);
    let first = lines.next()?;
    let is_assignment = |l: &str| {
        let l = l.trim();
        l.starts_with('#')
            || l.split_once('=').is_some_and(|(k, _)| {
                let k = k.trim();
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-\"".contains(c))
            })
    };
    (is_assignment(first) && !first.trim().starts_with('#') && lines.all(is_assignment))
        .then_some(Lang::Toml)
}

struct Grammars {
    defaults: SyntaxSet,
    extra: SyntaxSet,
    theme: SynTheme,
}

impl Grammars {
    fn syntax(&self, lang: Lang) -> Option<(&SyntaxSet, &SyntaxReference)> {
        let ext = match lang {
            Lang::Json => "json",
            Lang::Toml => "toml",
        };
        [&self.defaults, &self.extra]
            .into_iter()
            .find_map(|set| set.find_syntax_by_extension(ext).map(|s| (set, s)))
    }
}

const SLOTS: [(Syntax, &str); 7] = [
    (Syntax::Comment, "comment"),
    (Syntax::String, "string"),
    (Syntax::Number, "constant.numeric"),
    (Syntax::Constant, "constant.language"),
    (Syntax::Punctuation, "punctuation"),
    (Syntax::Section, "entity.name.section"),
    // Listed last and more specific, so keys win over the string scope they also carry.
    (
        Syntax::Key,
        "meta.structure.dictionary.key, meta.structure.dictionary.key string, \
         meta.structure.dictionary.key punctuation, meta.mapping.key, meta.mapping.key string, \
         meta.mapping.key punctuation",
    ),
];

fn slot_colour(slot: Syntax) -> SynColor {
    let index = SLOTS
        .iter()
        .position(|(s, _)| *s == slot)
        .map_or(0, |i| i + 1);
    SynColor {
        r: index as u8,
        g: 0,
        b: 0,
        a: 0,
    }
}

fn slot_of(colour: SynColor) -> Syntax {
    match colour.r {
        0 => Syntax::Plain,
        i => SLOTS
            .get(usize::from(i) - 1)
            .map_or(Syntax::Plain, |(s, _)| *s),
    }
}

fn grammars() -> &'static Grammars {
    static GRAMMARS: OnceLock<Grammars> = OnceLock::new();
    GRAMMARS.get_or_init(|| {
        let mut extra = SyntaxSetBuilder::new();
        if let Ok(toml) =
            SyntaxDefinition::load_from_str(include_str!("toml.sublime-syntax"), true, None)
        {
            extra.add(toml);
        }
        let scopes = SLOTS
            .iter()
            .filter_map(|(slot, selector)| {
                Some(ThemeItem {
                    scope: ScopeSelectors::from_str(selector).ok()?,
                    style: StyleModifier {
                        foreground: Some(slot_colour(*slot)),
                        background: None,
                        font_style: None,
                    },
                })
            })
            .collect();
        Grammars {
            defaults: SyntaxSet::load_defaults_newlines(),
            extra: extra.build(),
            theme: SynTheme {
                name: Some("seal-tui slots".into()),
                author: None,
                settings: ThemeSettings {
                    foreground: Some(slot_colour(Syntax::Plain)),
                    ..ThemeSettings::default()
                },
                scopes,
            },
        }
    })
}

/// The grammar's state between lines; cloning it lets highlighting resume mid-text.
#[derive(Clone)]
struct State {
    parse: ParseState,
    highlight: HighlightState,
}

impl State {
    fn start(lang: Lang) -> Option<State> {
        let g = grammars();
        let (_, syntax) = g.syntax(lang)?;
        let highlighter = Highlighter::new(&g.theme);
        Some(State {
            parse: ParseState::new(syntax),
            highlight: HighlightState::new(&highlighter, ScopeStack::new()),
        })
    }

    /// Colours one line (with its newline, if any) and advances the state past it.
    fn line(&mut self, line: &str, lang: Lang, theme: &Theme) -> Option<Line<'static>> {
        let g = grammars();
        let (set, _) = g.syntax(lang)?;
        let highlighter = Highlighter::new(&g.theme);
        let ops = self.parse.parse_line(line, set).ok()?;
        let spans = HighlightIterator::new(&mut self.highlight, &ops, line, &highlighter)
            .filter_map(|(style, piece)| {
                let piece = piece.trim_end_matches(['\n', '\r']);
                (!piece.is_empty()).then(|| {
                    Span::styled(piece.to_string(), theme.syntax(slot_of(style.foreground)))
                })
            })
            .collect::<Vec<_>>();
        Some(Line::from(spans))
    }
}

fn plain(text: &str, theme: &Theme) -> Vec<Line<'static>> {
    text.lines()
        .map(|l| Line::styled(l.to_string(), theme.text()))
        .collect()
}

/// Colours `text` (already sanitised) as `lang`; one [`Line`] per line of text.
pub fn highlight(text: &str, lang: Lang, theme: &Theme) -> Vec<Line<'static>> {
    if !theme.colored {
        return plain(text, theme);
    }
    let Some(mut state) = State::start(lang) else {
        return plain(text, theme);
    };
    let mut lines = Vec::new();
    for line in LinesWithEndings::from(text) {
        match state.line(line, lang, theme) {
            Some(l) => lines.push(l),
            None => return plain(text, theme),
        }
    }
    lines
}

/// Highlighting of text that grows at its end (a self-edit streaming in): the complete lines
/// seen so far and the grammar state after them, so the next frame colours only what is new.
struct Streaming {
    lang: Lang,
    done: String,
    lines: Vec<Line<'static>>,
    state: State,
}

/// Highlighted texts by content, so a frame does not re-run the grammar over unchanged text,
/// nor over the unchanged beginning of text that is streaming in.
#[derive(Default)]
pub struct HighlightCache {
    entries: RefCell<HashMap<(u64, Lang), Highlighted>>,
    streaming: RefCell<Option<Streaming>>,
}

/// Highlighted lines, shared between the cache and the frame drawing them.
pub type Highlighted = Rc<Vec<Line<'static>>>;

/// Streaming text changes every frame; beyond this many entries the cache starts over.
const CACHE_LIMIT: usize = 64;

impl HighlightCache {
    pub fn get(&self, text: &str, lang: Lang, theme: &Theme) -> Highlighted {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let key = (hasher.finish(), lang);
        if let Some(hit) = self.entries.borrow().get(&key) {
            return Rc::clone(hit);
        }
        let lines = Rc::new(self.extend(text, lang, theme));
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key, Rc::clone(&lines));
        lines
    }

    /// Highlights `text`, resuming from the streaming checkpoint when `text` extends it.
    fn extend(&self, text: &str, lang: Lang, theme: &Theme) -> Vec<Line<'static>> {
        if !theme.colored {
            return plain(text, theme);
        }
        let mut slot = self.streaming.borrow_mut();
        let resumable = slot
            .as_ref()
            .is_some_and(|s| s.lang == lang && text.starts_with(&s.done));
        if !resumable {
            let Some(state) = State::start(lang) else {
                return plain(text, theme);
            };
            *slot = Some(Streaming {
                lang,
                done: String::new(),
                lines: Vec::new(),
                state,
            });
        }
        let Some(s) = slot.as_mut() else {
            return plain(text, theme);
        };
        let rest = &text[s.done.len()..];
        let mut tail: Vec<Line<'static>> = Vec::new();
        let mut scratch: Option<State> = None;
        for line in LinesWithEndings::from(rest) {
            if line.ends_with('\n') && scratch.is_none() {
                // A complete line: colour it once and move the checkpoint past it.
                let Some(l) = s.state.line(line, lang, theme) else {
                    *slot = None;
                    return plain(text, theme);
                };
                s.lines.push(l);
                s.done.push_str(line);
            } else {
                // The unfinished last line may still change: colour it from a copy.
                let state = scratch.get_or_insert_with(|| s.state.clone());
                match state.line(line, lang, theme) {
                    Some(l) => tail.push(l),
                    None => return plain(text, theme),
                }
            }
        }
        let mut lines = s.lines.clone();
        lines.extend(tail);
        lines
    }
}

impl std::fmt::Debug for HighlightCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HighlightCache({} entries)", self.entries.borrow().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_json_toml_and_prose() {
        assert_eq!(detect("{\"a\": 1}"), Some(Lang::Json));
        assert_eq!(detect("```json\n{}\n```"), Some(Lang::Json));
        assert_eq!(detect("[1, 2]"), Some(Lang::Json));
        assert_eq!(detect("[model]\nname = \"x\""), Some(Lang::Toml));
        assert_eq!(detect("rounds = 2\nk = 5\n# note\n"), Some(Lang::Toml));
        assert_eq!(
            detect("The bridge opened in 1932. It = long."),
            None,
            "prose with an equals sign"
        );
        assert_eq!(detect("1. The bridge opened in 1932."), None);
    }

    fn slots(lines: &[Line], theme: &Theme) -> Vec<(String, Syntax)> {
        let all = [
            Syntax::Key,
            Syntax::String,
            Syntax::Number,
            Syntax::Constant,
            Syntax::Punctuation,
            Syntax::Comment,
            Syntax::Section,
        ];
        lines
            .iter()
            .flat_map(|l| l.spans.iter())
            .filter_map(|s| {
                let slot = all
                    .into_iter()
                    .find(|&slot| theme.syntax(slot) == s.style)?;
                Some((s.content.trim().to_string(), slot))
            })
            .collect()
    }

    #[test]
    fn json_keys_strings_numbers_and_constants_get_their_slots() {
        let theme = Theme::dark();
        let lines = highlight(
            "{\"lr\": 0.0001, \"name\": \"x\", \"on\": true}",
            Lang::Json,
            &theme,
        );
        let found = slots(&lines, &theme);
        assert!(
            found.contains(&("0.0001".into(), Syntax::Number)),
            "{found:?}"
        );
        assert!(
            found.contains(&("true".into(), Syntax::Constant)),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|(t, s)| t.contains("lr") && *s == Syntax::Key),
            "{found:?}"
        );
        assert!(
            found.iter().any(|(t, s)| t == "x" && *s == Syntax::String),
            "{found:?}"
        );
    }

    #[test]
    fn toml_sections_keys_and_values() {
        let theme = Theme::dark();
        let lines = highlight("[seal]\nrounds = 2 # two\nname = \"a\"", Lang::Toml, &theme);
        assert_eq!(lines.len(), 3);
        let found = slots(&lines, &theme);
        assert!(
            found.contains(&("seal".into(), Syntax::Section)),
            "{found:?}"
        );
        assert!(found.contains(&("rounds".into(), Syntax::Key)), "{found:?}");
        assert!(found.contains(&("2".into(), Syntax::Number)), "{found:?}");
        assert!(
            found.contains(&("# two".into(), Syntax::Comment)),
            "{found:?}"
        );
        assert!(
            found.contains(&("\"a\"".into(), Syntax::String)),
            "{found:?}"
        );
    }

    #[test]
    fn colourless_theme_keeps_text_plain() {
        let lines = highlight("{\"a\": 1}\n", Lang::Json, &Theme::plain());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].to_string(), "{\"a\": 1}");
    }

    #[test]
    fn streaming_text_highlights_like_the_whole() {
        let cache = HighlightCache::default();
        let theme = Theme::dark();
        let full = "{\n  \"a\": 1,\n  \"b\": [true, \"x\"]\n}\n";
        for end in 1..=full.len() {
            let prefix = &full[..end];
            assert_eq!(
                *cache.get(prefix, Lang::Json, &theme),
                highlight(prefix, Lang::Json, &theme),
                "after {prefix:?}"
            );
        }
        // Text that does not extend the checkpoint starts over.
        assert_eq!(
            *cache.get("[1]", Lang::Json, &theme),
            highlight("[1]", Lang::Json, &theme)
        );
    }

    #[test]
    fn cache_returns_the_same_lines() {
        let cache = HighlightCache::default();
        let theme = Theme::dark();
        let a = cache.get("{\"a\": 1}", Lang::Json, &theme);
        let b = cache.get("{\"a\": 1}", Lang::Json, &theme);
        assert!(Rc::ptr_eq(&a, &b));
    }
}
