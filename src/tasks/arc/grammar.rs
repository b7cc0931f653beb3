//! The self-edit config's JSON schema as a grammar for constrained sampling: the keys in the
//! prompt's order, `true`/`false` switches, one of the two loss strategies, a learning rate in
//! `(0, max]` and whole epochs in `1..=max`, whitespace free between tokens. Every text the
//! grammar completes parses as a config whose fields pass [`super::selfedit`]'s checks (the step
//! budget, which depends on the task's data, is still checked after sampling).

use super::selfedit::{Limits, Strategy, FAMILY_KEYS, OPTION_KEYS};
use crate::engine::{Constraint, PrefixState};

#[derive(Clone, Debug, PartialEq)]
enum Element {
    /// Exactly this text.
    Literal(String),
    /// Zero or more blanks and line breaks (at most [`MAX_BLANKS`]).
    Blank,
    /// One of these texts (none a prefix of another).
    OneOf(Vec<String>),
    /// A positive decimal number no larger than this.
    Rate(f64),
    /// A whole number from 1 to this.
    Count(u32),
}

/// Blanks in one run: enough for an indented line break, not enough to stall the sampler.
const MAX_BLANKS: usize = 10;
/// Digits in a number's parts: enough for any rate up to 1e-2 that a config would use.
const MAX_INT_DIGITS: usize = 3;
const MAX_FRACTION_DIGITS: usize = 8;
const MAX_EXPONENT_DIGITS: usize = 2;
/// Endings that finish any valid rate prefix, shortest first (a test checks they do).
const RATE_ENDINGS: [&str; 9] = ["", "1", "9", "01", "-9", "e-9", ".01", "1e-9", "0e-9"];

/// The config grammar for a task's limits.
#[derive(Clone, Debug)]
pub struct ConfigGrammar {
    elements: Vec<Element>,
}

impl ConfigGrammar {
    pub fn new(limits: &Limits) -> ConfigGrammar {
        let mut g = Vec::new();
        let lit = |g: &mut Vec<Element>, s: &str| {
            g.push(Element::Literal(s.to_string()));
            g.push(Element::Blank);
        };
        let key = |g: &mut Vec<Element>, k: &str| {
            lit(g, &format!("\"{k}\""));
            lit(g, ":");
        };
        g.push(Element::Blank);
        lit(&mut g, "{");
        key(&mut g, "data_generation");
        lit(&mut g, "{");
        let switches: Vec<&str> = FAMILY_KEYS
            .iter()
            .map(|(k, _)| *k)
            .chain(OPTION_KEYS.iter().map(|(k, _)| *k))
            .collect();
        for (i, k) in switches.iter().enumerate() {
            key(&mut g, k);
            g.push(Element::OneOf(vec!["true".into(), "false".into()]));
            g.push(Element::Blank);
            lit(&mut g, if i + 1 == switches.len() { "}" } else { "," });
        }
        lit(&mut g, ",");
        key(&mut g, "training");
        lit(&mut g, "{");
        key(&mut g, "strategy");
        g.push(Element::OneOf(
            Strategy::ALL
                .iter()
                .map(|s| format!("\"{}\"", s.key()))
                .collect(),
        ));
        g.push(Element::Blank);
        lit(&mut g, ",");
        key(&mut g, "learning_rate");
        g.push(Element::Rate(limits.max_learning_rate));
        g.push(Element::Blank);
        lit(&mut g, ",");
        key(&mut g, "num_train_epochs");
        g.push(Element::Count(limits.max_epochs));
        g.push(Element::Blank);
        lit(&mut g, "}");
        g.push(Element::Literal("}".into()));
        ConfigGrammar { elements: g }
    }

    /// One character from `state`; `false` when no config continues so.
    fn step(&self, state: &mut PrefixState, ch: char) -> bool {
        loop {
            let Some(element) = self.elements.get(state.element) else {
                return false;
            };
            let next = |state: &mut PrefixState| {
                state.element += 1;
                state.partial.clear();
            };
            match element {
                Element::Literal(s) => {
                    state.partial.push(ch);
                    if !s.starts_with(state.partial.as_str()) {
                        return false;
                    }
                    if state.partial.len() == s.len() {
                        next(state);
                    }
                    return true;
                }
                Element::Blank => {
                    if matches!(ch, ' ' | '\n' | '\t' | '\r') {
                        state.partial.push(ch);
                        return state.partial.len() <= MAX_BLANKS;
                    }
                    next(state);
                }
                Element::OneOf(options) => {
                    state.partial.push(ch);
                    let p = state.partial.as_str();
                    if !options.iter().any(|o| o.starts_with(p)) {
                        return false;
                    }
                    if options.iter().any(|o| o == p) {
                        next(state);
                    }
                    return true;
                }
                Element::Rate(max) => {
                    if ch.is_ascii_digit() || matches!(ch, '.' | 'e' | 'E' | '-') {
                        state.partial.push(ch);
                        return rate_prefix(&state.partial, *max);
                    }
                    if !rate_complete(&state.partial, *max) {
                        return false;
                    }
                    next(state);
                }
                Element::Count(max) => {
                    if ch.is_ascii_digit() {
                        state.partial.push(ch);
                        let p = state.partial.as_str();
                        return !p.starts_with('0')
                            && p.parse::<u64>().is_ok_and(|n| n <= u64::from(*max));
                    }
                    if state.partial.is_empty() {
                        return false;
                    }
                    next(state);
                }
            }
        }
    }
}

/// Whether `p` starts a number of the form `D[.D][e-D]` (D digits) that can still end up in
/// `(0, max]`: a zero mantissa may not take an exponent, nor fill its fraction with zeros.
fn rate_prefix(p: &str, max: f64) -> bool {
    let (mantissa, exponent) = match p.find(['e', 'E']) {
        Some(i) => (&p[..i], Some(&p[i + 1..])),
        None => (p, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || !digits(int) || int.len() > MAX_INT_DIGITS {
        return false;
    }
    if int.len() > 1 && int.starts_with('0') {
        return false;
    }
    let zero = int
        .chars()
        .chain(frac.unwrap_or("").chars())
        .all(|c| c == '0');
    if let Some(f) = frac {
        if !digits(f) || f.len() > MAX_FRACTION_DIGITS {
            return false;
        }
        if f.len() == MAX_FRACTION_DIGITS && zero {
            return false;
        }
        if exponent.is_some() && f.is_empty() {
            return false;
        }
    }
    match exponent {
        None => true,
        Some(e) => {
            if zero {
                return false;
            }
            let Some(d) = e.strip_prefix('-') else {
                return e.is_empty();
            };
            if !digits(d) || d.len() > MAX_EXPONENT_DIGITS {
                return false;
            }
            // A full exponent ("5e-05" as Python writes it, or "1e-12") takes no more digits,
            // so it must already give a rate in range: no prefix may be a dead end.
            d.len() < MAX_EXPONENT_DIGITS || p.parse::<f64>().is_ok_and(|v| v > 0.0 && v <= max)
        }
    }
}

fn rate_complete(p: &str, max: f64) -> bool {
    rate_prefix(p, max)
        && !p.ends_with(['.', 'e', 'E', '-'])
        && p.parse::<f64>().is_ok_and(|v| v > 0.0 && v <= max)
}

impl Constraint for ConfigGrammar {
    fn feed(&self, state: &PrefixState, text: &str) -> Option<PrefixState> {
        let mut s = state.clone();
        text.chars().all(|ch| self.step(&mut s, ch)).then_some(s)
    }

    fn is_complete(&self, state: &PrefixState) -> bool {
        state.element == self.elements.len()
    }

    fn shortest_completion(&self, state: &PrefixState) -> String {
        let rest = |i: usize, partial: &str| -> String {
            match &self.elements[i] {
                Element::Literal(s) => s[partial.len()..].to_string(),
                Element::Blank => String::new(),
                Element::OneOf(options) => options
                    .iter()
                    .filter(|o| o.starts_with(partial))
                    .min_by_key(|o| o.len())
                    .map(|o| o[partial.len()..].to_string())
                    .unwrap_or_default(),
                Element::Rate(max) => RATE_ENDINGS
                    .iter()
                    .find(|e| rate_complete(&format!("{partial}{e}"), *max))
                    .unwrap_or(&"1e-9")
                    .to_string(),
                Element::Count(_) if partial.is_empty() => "1".into(),
                Element::Count(_) => String::new(),
            }
        };
        (state.element..self.elements.len())
            .map(|i| {
                rest(
                    i,
                    if i == state.element {
                        &state.partial
                    } else {
                        ""
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::selfedit::{parse_self_edit, SelfEditConfig};
    use super::*;

    fn grammar() -> ConfigGrammar {
        ConfigGrammar::new(&Limits::default())
    }

    fn accepts(text: &str) -> bool {
        let g = grammar();
        g.feed(&g.start(), text).is_some_and(|s| g.is_complete(&s))
    }

    #[test]
    fn the_example_config_in_both_layouts_is_complete() {
        let example = SelfEditConfig::example();
        for text in [
            serde_json::to_string(&example).unwrap(),
            serde_json::to_string_pretty(&example).unwrap(),
        ] {
            assert!(accepts(&text), "{text}");
        }
    }

    #[test]
    fn values_outside_the_schema_are_cut_off_where_they_go_wrong() {
        let g = grammar();
        let start = g.start();
        assert!(g
            .feed(&start, "{\"data_generation\": {\"use_basic")
            .is_some());
        assert!(g
            .feed(&start, "{\"data_generation\": {\"use_best")
            .is_none());
        assert!(g.feed(&start, "Sure! {").is_none());
        let head = "{\"data_generation\": {\"use_basic_augmentations\": ";
        assert!(g.feed(&start, &format!("{head}tru")).is_some());
        assert!(g.feed(&start, &format!("{head}yes")).is_none());
        // A complete config takes nothing more.
        let done = serde_json::to_string(&SelfEditConfig::example()).unwrap();
        let s = g.feed(&start, &done).unwrap();
        assert!(g.feed(&s, " ").is_none() && g.feed(&s, "}").is_none());
    }

    #[test]
    fn rates_and_epochs_stay_in_range() {
        let with = |lr: &str, epochs: &str| {
            let t = format!(
                "{{\"data_generation\": {{\"use_basic_augmentations\": true, \"use_size_augmentations\": false, \"use_chain_augmentations\": false, \"use_repeat_augmentations\": false, \"permute_colours\": false, \"shuffle_examples\": false}}, \"training\": {{\"strategy\": \"train_using_all_tokens\", \"learning_rate\": {lr}, \"num_train_epochs\": {epochs}}}}}"
            );
            accepts(&t)
        };
        for ok in [
            "1e-4", "0.0001", "5e-05", "1.5e-3", "0.01", "3e-10", "1e-09",
        ] {
            assert!(with(ok, "3"), "{ok}");
        }
        for bad in [
            "0", "0.5", "1", "1e4", "1e+4", "-1e-4", "0e-3", "1.e-4", "00.1",
        ] {
            assert!(!with(bad, "3"), "{bad}");
        }
        assert!(with("1e-4", "10") && with("1e-4", "1"));
        for bad in ["0", "11", "01", "2.5"] {
            assert!(!with("1e-4", bad), "{bad}");
        }
    }

    #[test]
    fn no_prefix_is_a_dead_end() {
        // From every valid prefix of a rate some digit or terminator still leads on.
        let g = grammar();
        let head = "{\"data_generation\": {\"use_basic_augmentations\": true, \"use_size_augmentations\": true, \"use_chain_augmentations\": true, \"use_repeat_augmentations\": true, \"permute_colours\": true, \"shuffle_examples\": true}, \"training\": {\"strategy\": \"train_using_output_tokens\", \"learning_rate\": ";
        let mut frontier = vec![g.feed(&g.start(), head).unwrap()];
        let alphabet = ['0', '1', '5', '9', '.', 'e', '-', ','];
        for _ in 0..7 {
            let mut next: Vec<PrefixState> = Vec::new();
            for s in &frontier {
                let moves: Vec<PrefixState> = alphabet
                    .iter()
                    .filter_map(|c| g.feed(s, &c.to_string()))
                    .collect();
                assert!(!moves.is_empty(), "dead end after {:?}", s.partial);
                let ending = g.shortest_completion(s);
                let done = g.feed(s, &ending).map(|d| g.is_complete(&d));
                assert_eq!(done, Some(true), "{:?} + {ending:?}", s.partial);
                next.extend(moves.into_iter().filter(|m| m.element == s.element));
            }
            next.sort_by(|a, b| a.partial.cmp(&b.partial));
            next.dedup();
            frontier = next;
        }
    }

    #[test]
    fn every_complete_text_parses_as_a_config() {
        let text = "{\n  \"data_generation\": {\n    \"use_basic_augmentations\": false,\n    \"use_size_augmentations\": true,\n    \"use_chain_augmentations\": false,\n    \"use_repeat_augmentations\": true,\n    \"permute_colours\": true,\n    \"shuffle_examples\": false\n  },\n  \"training\": {\n    \"strategy\": \"train_using_output_tokens\",\n    \"learning_rate\": 2.5e-4,\n    \"num_train_epochs\": 7\n  }\n}";
        assert!(accepts(text));
        let config = parse_self_edit(text, &Limits::default()).unwrap();
        assert_eq!(config.training.num_train_epochs, 7);
    }
}
