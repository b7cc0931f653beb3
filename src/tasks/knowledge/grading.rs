//! Grading an answer against a question's gold answers: the official SQuAD v1.1 exact match and
//! token F1, the grader configuration, and the verdict recorded for every graded answer.

use std::collections::HashMap;

pub use crate::record::config::{Grader, DEFAULT_F1_THRESHOLD};
pub use crate::record::Verdict;

/// Grades `prediction` by exact match against any of `golds`.
pub fn grade_em<S: AsRef<str>>(prediction: &str, golds: &[S]) -> Verdict {
    let correct = exact_match(prediction, golds);
    Verdict {
        grader: Grader::Em.label(),
        correct,
        score: if correct { 1.0 } else { 0.0 },
        raw: compared_strings(prediction, golds),
    }
}

/// Grades `prediction` by token F1 against the best of `golds`; correct at or above `threshold`.
pub fn grade_f1<S: AsRef<str>>(prediction: &str, golds: &[S], threshold: f64) -> Verdict {
    let score = f1(prediction, golds);
    Verdict {
        grader: Grader::F1 { threshold }.label(),
        correct: score >= threshold,
        score,
        raw: compared_strings(prediction, golds),
    }
}

fn compared_strings<S: AsRef<str>>(prediction: &str, golds: &[S]) -> String {
    let golds: Vec<String> = golds
        .iter()
        .map(|g| format!("{:?}", normalize_answer(g.as_ref())))
        .collect();
    format!(
        "prediction {:?} vs gold [{}]",
        normalize_answer(prediction),
        golds.join(", ")
    )
}

/// SQuAD v1.1 answer normalisation, as the official evaluation script does it: lowercase, drop
/// ASCII punctuation, drop the articles a/an/the as whole words, collapse whitespace.
pub fn normalize_answer(text: &str) -> String {
    let lowered = text.to_lowercase();
    let without_punctuation: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let without_articles = remove_articles(&without_punctuation);
    python_split(&without_articles)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The official script uses `re.sub(r'\b(a|an|the)\b', ' ', text)`. Since the articles consist of
/// word characters, a match is always a whole maximal run of word characters.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_python_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Python's `\w` on `str` patterns: Unicode letters and numbers, and the underscore.
fn is_python_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Python's `str.split()` also splits on the ASCII information separators U+001C..U+001F,
/// which Unicode does not count as white space.
fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|t| !t.is_empty())
}

/// True when the normalised prediction equals any normalised gold answer. No gold answers: false.
pub fn exact_match<S: AsRef<str>>(prediction: &str, golds: &[S]) -> bool {
    let prediction = normalize_answer(prediction);
    golds
        .iter()
        .any(|gold| normalize_answer(gold.as_ref()) == prediction)
}

/// The best token F1 of the prediction over the gold answers. No gold answers: 0.
pub fn f1<S: AsRef<str>>(prediction: &str, golds: &[S]) -> f64 {
    golds
        .iter()
        .map(|gold| f1_single(prediction, gold.as_ref()))
        .fold(0.0, f64::max)
}

/// The official v1.1 `f1_score`: with no common token the score is 0, which includes the case
/// where both sides normalise to nothing (unlike exact match, which calls that a match).
fn f1_single(prediction: &str, gold: &str) -> f64 {
    let prediction = normalize_answer(prediction);
    let gold = normalize_answer(gold);
    let prediction_tokens: Vec<&str> = python_split(&prediction).collect();
    let gold_tokens: Vec<&str> = python_split(&gold).collect();

    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for token in &gold_tokens {
        *gold_counts.entry(token).or_default() += 1;
    }
    let mut common = 0usize;
    for token in &prediction_tokens {
        if let Some(count) = gold_counts.get_mut(token) {
            if *count > 0 {
                *count -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / prediction_tokens.len() as f64;
    let recall = common as f64 / gold_tokens.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn normalisation_lowercases_and_drops_punctuation() {
        assert_eq!(normalize_answer("Denver Broncos!"), "denver broncos");
        assert_eq!(
            normalize_answer("\"golden anniversary\""),
            "golden anniversary"
        );
        // Removing punctuation glues the parts of a hyphenated word together, as officially.
        assert_eq!(normalize_answer("state-of-the-art"), "stateoftheart");
        assert_eq!(normalize_answer("Levi's Stadium"), "levis stadium");
    }

    #[test]
    fn normalisation_removes_articles_as_whole_words_only() {
        assert_eq!(normalize_answer("The Denver Broncos"), "denver broncos");
        assert_eq!(normalize_answer("a cat and an owl"), "cat and owl");
        assert_eq!(normalize_answer("theory of another"), "theory of another");
        assert_eq!(normalize_answer("THE   A  an"), "");
        // An article next to punctuation is still a whole word once punctuation is gone.
        assert_eq!(normalize_answer("(the) end"), "end");
        // `_` is ASCII punctuation and goes before articles are looked for.
        assert_eq!(normalize_answer("the_end"), "theend");
    }

    #[test]
    fn normalisation_collapses_whitespace() {
        assert_eq!(
            normalize_answer("  Santa \t Clara,\n California  "),
            "santa clara california"
        );
    }

    #[test]
    fn normalisation_handles_unicode() {
        // Non-ASCII punctuation is not in Python's string.punctuation and is kept.
        assert_eq!(normalize_answer("24–10"), "24–10");
        assert_eq!(normalize_answer("« Élan »"), "« élan »");
        assert_eq!(normalize_answer("ÜBER the Straße"), "über straße");
        // Articles glued to a non-ASCII letter are part of a longer word.
        assert_eq!(normalize_answer("theé a"), "theé");
        assert_eq!(normalize_answer("東京 the タワー"), "東京 タワー");
    }

    #[test]
    fn exact_match_uses_any_gold() {
        let golds = ["Denver Broncos", "the Broncos"];
        assert!(exact_match("denver broncos.", &golds));
        assert!(exact_match("Broncos", &golds));
        assert!(!exact_match("Carolina Panthers", &golds));
        assert!(!exact_match("Denver", &golds));
    }

    #[test]
    fn exact_match_on_empty_strings_follows_the_official_script() {
        assert!(exact_match("", &[""]));
        assert!(exact_match("the", &["."]));
        assert!(!exact_match("", &["gold"]));
        assert!(!exact_match("anything", &[] as &[&str]));
    }

    #[test]
    fn f1_counts_token_overlap_with_multiplicity() {
        // prediction: denver broncos won (3), gold: denver broncos (2); common 2.
        let score = f1("The Denver Broncos won", &["Denver Broncos"]);
        let (p, r) = (2.0 / 3.0, 1.0);
        assert!(close(score, 2.0 * p * r / (p + r)));
        // A repeated token only counts as often as it appears in the gold answer.
        let score = f1("new new new", &["new york"]);
        let (p, r) = (1.0 / 3.0, 1.0 / 2.0);
        assert!(close(score, 2.0 * p * r / (p + r)));
        assert!(close(f1("Denver Broncos", &["denver broncos"]), 1.0));
        assert!(close(f1("Carolina", &["Denver"]), 0.0));
    }

    #[test]
    fn f1_takes_the_best_gold() {
        let golds = ["February 7, 2016", "February 7"];
        assert!(close(
            f1("on February 7", &golds),
            2.0 * (2.0 / 3.0) / (2.0 / 3.0 + 1.0)
        ));
        assert!(close(f1("February 7 2016", &golds), 1.0));
    }

    #[test]
    fn f1_on_empty_strings_follows_the_official_script() {
        assert!(close(f1("", &["gold"]), 0.0));
        assert!(close(f1("gold", &[""]), 0.0));
        // The v1.1 script scores two empty answers 0 (no common token), though EM calls it a match.
        assert!(close(f1("", &[""]), 0.0));
        assert!(close(f1("anything", &[] as &[&str]), 0.0));
    }

    #[test]
    fn verdicts_record_the_compared_strings() {
        let verdict = grade_em("The Broncos!", &["Denver Broncos", "Broncos"]);
        assert!(verdict.correct);
        assert!(close(verdict.score, 1.0));
        assert_eq!(verdict.grader, "em");
        assert_eq!(
            verdict.raw,
            r#"prediction "broncos" vs gold ["denver broncos", "broncos"]"#
        );

        let verdict = grade_f1("Denver", &["Denver Broncos"], 0.5);
        assert!(close(verdict.score, 2.0 / 3.0));
        assert!(verdict.correct);
        assert_eq!(verdict.grader, "f1>=0.5");
        let verdict = grade_f1("Denver", &["Denver Broncos"], 0.7);
        assert!(!verdict.correct);
    }

    #[test]
    fn grader_config_uses_kebab_case_tags_and_a_default_threshold() {
        let grader: Grader = toml::from_str::<toml::Table>("kind = \"f1\"")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(grader, Grader::F1 { threshold: 0.5 });
        let grader: Grader = serde_json::from_str(r#"{"kind":"judge-local"}"#).unwrap();
        assert_eq!(grader, Grader::JudgeLocal);
        let grader: Grader = serde_json::from_str(
            r#"{"kind":"judge-http","url":"http://127.0.0.1:8000/v1/chat/completions","model":"m"}"#,
        )
        .unwrap();
        match &grader {
            Grader::JudgeHttp(config) => {
                assert_eq!(config.model, "m");
                assert_eq!(config.api_key_env, None);
            }
            other => panic!("expected judge-http, got {other:?}"),
        }
        let json = serde_json::to_string(&Grader::Em).unwrap();
        assert_eq!(json, r#"{"kind":"em"}"#);
        assert!(serde_json::from_str::<Grader>(r#"{"kind":"bleu"}"#).is_err());
    }
}
