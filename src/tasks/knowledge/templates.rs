//! Prompt templates, stored as TOML files in `prompts/`: one per self-edit strategy, plus the
//! answer template (`answer.toml`) and the judge template (`judge.toml`, see `judge.rs`).
//!
//! A self-edit template says how to ask the model for a self-edit about a passage and how the
//! self-edit's text becomes training sequences. Placeholders are written `{name}`; `{{` and `}}`
//! stand for literal braces. Placeholders are checked when a file is loaded, so a typo fails
//! at once instead of reaching the model as literal text.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::passage::Passage;
use crate::engine::Prompt;

/// File name of the answer template inside a prompts directory.
pub const ANSWER_TEMPLATE_FILE: &str = "answer.toml";
/// File name of the judge template inside a prompts directory.
pub const JUDGE_TEMPLATE_FILE: &str = "judge.toml";
/// File name of the template the model writes its own evaluation questions from.
pub const QUESTIONS_TEMPLATE_FILE: &str = "questions.toml";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid template: {source}", path.display())]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("no template `{name}` in {} (available: {})", dir.display(), available.join(", "))]
    NotFound {
        name: String,
        dir: PathBuf,
        available: Vec<String>,
    },
}

/// Template text whose placeholders were checked against the names allowed where it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateText {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(String),
}

impl TemplateText {
    /// Parses `source`, refusing placeholders outside `allowed` and unbalanced braces.
    pub fn parse(source: &str, allowed: &[&str]) -> Result<Self, String> {
        let hint = "write `{{` or `}}` for a literal brace";
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(format!("a lone `}}`; {hint}")),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!("an unclosed `{{{name}`; {hint}"))
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    if !allowed.contains(&name.as_str()) {
                        let allowed: Vec<String> =
                            allowed.iter().map(|a| format!("{{{a}}}")).collect();
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` (allowed: {}); {hint}",
                            allowed.join(", ")
                        ));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Placeholder(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self {
            source: source.to_string(),
            segments,
        })
    }

    /// Substitutes every placeholder in one pass, so text inside a value (a passage that happens
    /// to contain `{title}`) is never substituted again.
    pub fn render(&self, values: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Placeholder(name) => {
                    // `parse` admitted only allowed names and callers pass a value for each.
                    if let Some((_, value)) = values.iter().find(|(n, _)| n == name) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }

    /// The text as written in the file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the text has the placeholder `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Placeholder(p) if p == name))
    }
}

/// Refuses a prompt (system part and prompt together) that lacks a placeholder it needs; `why`
/// says what the placeholder is for.
fn require(
    path: &Path,
    system: Option<&TemplateText>,
    prompt: &TemplateText,
    needed: &[(&str, &str)],
) -> Result<(), TemplateError> {
    for (name, why) in needed {
        if !prompt.uses(name) && !system.is_some_and(|s| s.uses(name)) {
            return Err(invalid(
                path,
                format!("field `prompt` has no `{{{name}}}` placeholder: {why}"),
            ));
        }
    }
    Ok(())
}

/// Reads and deserialises a TOML file, returning the value and the file's text.
fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), TemplateError> {
    let source = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value = toml::from_str(&source).map_err(|source| TemplateError::Toml {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((value, source))
}

/// Parses a template field, naming the file and field on error.
fn parse_field(
    path: &Path,
    field: &str,
    source: &str,
    allowed: &[&str],
) -> Result<TemplateText, TemplateError> {
    TemplateText::parse(source, allowed).map_err(|problem| TemplateError::Invalid {
        path: path.to_path_buf(),
        problem: format!("field `{field}`: {problem}"),
    })
}

fn invalid(path: &Path, problem: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// How a self-edit's text becomes training sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Each line with letters or digits, list bullets and numbering stripped.
    Lines,
    /// The pieces between occurrences of the separator.
    Separator(String),
    /// Each `Question: ... / Answer: ...` pair.
    QaPairs,
    /// The whole text.
    Whole,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SplitKind {
    Lines,
    Separator,
    QaPairs,
    Whole,
}

/// The TOML file as written; checked and turned into a [`PromptTemplate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelfEditFile {
    name: String,
    description: String,
    system: Option<String>,
    prompt: Option<String>,
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    split: Option<SplitKind>,
    separator: Option<String>,
    keep_after: Option<String>,
    #[serde(default)]
    prefix_title: bool,
    #[serde(default)]
    include_passage: bool,
    #[serde(default = "default_samples")]
    samples: bool,
}

fn default_samples() -> bool {
    true
}

const SELF_EDIT_PLACEHOLDERS: &[&str] = &["title", "passage"];

/// A self-edit is written about the passage, and later questions name its title: a prompt that
/// shows the model neither would have it write about nothing.
const SELF_EDIT_REQUIRED: &[(&str, &str)] = &[
    (
        "passage",
        "the model would write its self-edit without seeing the passage",
    ),
    (
        "title",
        "the questions are asked about the passage's title, so the self-edit must name it",
    ),
];

/// How to ask for a self-edit; absent for a template that trains on the passage alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub system: Option<TemplateText>,
    pub prompt: TemplateText,
    pub max_tokens: usize,
    /// `None`: the engine's default.
    pub temperature: Option<f64>,
    pub split: Split,
    /// Only the text after the last occurrence of this marker (ASCII case-insensitive) is
    /// trained on, so chain-of-thought reasoning is left out. Without the marker, all of it is.
    pub keep_after: Option<String>,
}

/// A self-edit strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    /// Equal to the file stem; the name a session records.
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// The file's text, so a session can record exactly what was used.
    pub source: String,
    /// `None` when the file says `samples = false`.
    pub sampling: Option<Sampling>,
    /// Start each training sequence with the passage title.
    pub prefix_title: bool,
    /// Also train on the passage itself.
    pub include_passage: bool,
}

impl PromptTemplate {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let (file, source): (SelfEditFile, String) = read_toml(path)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if file.name != stem {
            return Err(invalid(
                path,
                format!(
                    "field `name` is {:?} but the file is named {stem:?}; they must agree so a \
                     template is known by one name",
                    file.name
                ),
            ));
        }
        let sampling = if file.samples {
            Some(Self::sampling(path, &file)?)
        } else {
            let stray: Vec<&str> = [
                ("system", file.system.is_some()),
                ("prompt", file.prompt.is_some()),
                ("max_tokens", file.max_tokens.is_some()),
                ("temperature", file.temperature.is_some()),
                ("split", file.split.is_some()),
                ("separator", file.separator.is_some()),
                ("keep_after", file.keep_after.is_some()),
            ]
            .iter()
            .filter(|(_, present)| *present)
            .map(|(field, _)| *field)
            .collect();
            if !stray.is_empty() {
                return Err(invalid(
                    path,
                    format!(
                        "`samples = false` samples nothing, so it takes no {}",
                        stray.join(", ")
                    ),
                ));
            }
            if !file.include_passage {
                return Err(invalid(
                    path,
                    "`samples = false` needs `include_passage = true`, or there is nothing to \
                     train on",
                ));
            }
            None
        };
        Ok(Self {
            name: file.name,
            description: file.description,
            path: path.to_path_buf(),
            source,
            sampling,
            prefix_title: file.prefix_title,
            include_passage: file.include_passage,
        })
    }

    fn sampling(path: &Path, file: &SelfEditFile) -> Result<Sampling, TemplateError> {
        let prompt = file
            .prompt
            .as_deref()
            .ok_or_else(|| invalid(path, "field `prompt` is missing"))?;
        if prompt.trim().is_empty() {
            return Err(invalid(path, "field `prompt` is empty"));
        }
        let max_tokens = match file.max_tokens {
            Some(0) => return Err(invalid(path, "field `max_tokens` must be positive")),
            Some(n) => n,
            None => return Err(invalid(path, "field `max_tokens` is missing")),
        };
        if let Some(t) = file.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(invalid(path, "field `temperature` must be a number >= 0"));
            }
        }
        let split = match (file.split, &file.separator) {
            (None, _) => return Err(invalid(path, "field `split` is missing")),
            (Some(SplitKind::Separator), Some(sep)) if !sep.trim().is_empty() => {
                Split::Separator(sep.clone())
            }
            (Some(SplitKind::Separator), _) => {
                return Err(invalid(
                    path,
                    "`split = \"separator\"` needs a non-blank `separator` field",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    path,
                    "field `separator` is only used with `split = \"separator\"`",
                ))
            }
            (Some(SplitKind::Lines), None) => Split::Lines,
            (Some(SplitKind::QaPairs), None) => Split::QaPairs,
            (Some(SplitKind::Whole), None) => Split::Whole,
        };
        if file
            .keep_after
            .as_deref()
            .is_some_and(|m| m.trim().is_empty())
        {
            return Err(invalid(path, "field `keep_after` is blank"));
        }
        let system = file
            .system
            .as_deref()
            .map(|s| parse_field(path, "system", s, SELF_EDIT_PLACEHOLDERS))
            .transpose()?;
        let prompt = parse_field(path, "prompt", prompt, SELF_EDIT_PLACEHOLDERS)?;
        require(path, system.as_ref(), &prompt, SELF_EDIT_REQUIRED)?;
        Ok(Sampling {
            system,
            prompt,
            max_tokens,
            temperature: file.temperature,
            split,
            keep_after: file.keep_after.clone(),
        })
    }

    /// Finds a template by name in `dir`, or loads `name` as a path when it names a `.toml` file.
    pub fn find(dir: &Path, name: &str) -> Result<Self, TemplateError> {
        let as_path = Path::new(name);
        if as_path.extension().is_some_and(|e| e == "toml") {
            if as_path.exists() {
                return Self::load(as_path);
            }
            let in_dir = dir.join(as_path);
            if in_dir.exists() {
                return Self::load(&in_dir);
            }
        } else {
            let path = dir.join(format!("{name}.toml"));
            if path.exists() && !is_reserved(&path) {
                return Self::load(&path);
            }
        }
        Err(TemplateError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            available: template_files(dir)?
                .iter()
                .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
                .collect(),
        })
    }

    /// The prompt asking for a self-edit about `passage`; `None` when this template samples nothing.
    pub fn render(&self, passage: &Passage) -> Option<Prompt> {
        let sampling = self.sampling.as_ref()?;
        let values = [
            ("title", passage.title.as_str()),
            ("passage", passage.context.as_str()),
        ];
        Some(Prompt {
            system: sampling.system.as_ref().map(|s| s.render(&values)),
            user: sampling.prompt.render(&values),
        })
    }

    /// The same template training on the passage alone (the "train on passage" row, and the
    /// context-only baseline).
    pub fn passage_only(&self) -> PromptTemplate {
        PromptTemplate {
            sampling: None,
            include_passage: true,
            ..self.clone()
        }
    }

    /// The training sequences for one self-edit: the passage first when `include_passage`, then
    /// the pieces of the self-edit text (ignored when this template samples nothing).
    pub fn training_sequences(&self, passage: &Passage, self_edit_text: &str) -> Vec<String> {
        let mut pieces = Vec::new();
        if self.include_passage {
            pieces.push(passage.context.trim().to_string());
        }
        if let Some(sampling) = &self.sampling {
            let text = match &sampling.keep_after {
                Some(marker) => text_after_marker(self_edit_text, marker),
                None => self_edit_text,
            };
            pieces.extend(split_text(text, &sampling.split));
        }
        if self.prefix_title && !passage.title.trim().is_empty() {
            let title = passage.title.trim();
            pieces = pieces
                .into_iter()
                .map(|piece| format!("{title}\n{piece}"))
                .collect();
        }
        pieces
    }
}

/// Every self-edit template in `dir`, sorted by name. The answer and judge templates are not
/// self-edit strategies and are skipped.
pub fn list_templates(dir: &Path) -> Result<Vec<PromptTemplate>, TemplateError> {
    let mut templates = template_files(dir)?
        .iter()
        .map(|path| PromptTemplate::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    templates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(templates)
}

fn is_reserved(path: &Path) -> bool {
    path.file_name().is_some_and(|f| {
        f == ANSWER_TEMPLATE_FILE || f == JUDGE_TEMPLATE_FILE || f == QUESTIONS_TEMPLATE_FILE
    })
}

/// The self-edit template files in `dir`, sorted.
fn template_files(dir: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let io = |source| TemplateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") && !is_reserved(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn text_after_marker<'a>(text: &'a str, marker: &str) -> &'a str {
    // ASCII lowercasing keeps byte offsets, so the index found is valid in `text`.
    let haystack = text.to_ascii_lowercase();
    match haystack.rfind(&marker.to_ascii_lowercase()) {
        Some(i) => &text[i + marker.len()..],
        None => text,
    }
}

fn split_text(text: &str, split: &Split) -> Vec<String> {
    match split {
        Split::Lines => text
            .lines()
            .map(strip_list_marker)
            .filter(|line| has_content(line))
            .map(String::from)
            .collect(),
        Split::Separator(separator) => text
            .split(separator.as_str())
            .map(str::trim)
            .filter(|piece| has_content(piece))
            .map(String::from)
            .collect(),
        Split::QaPairs => qa_pairs(text),
        Split::Whole => {
            let text = text.trim();
            if has_content(text) {
                vec![text.to_string()]
            } else {
                Vec::new()
            }
        }
    }
}

/// A piece with no letter or digit (a stray `**` or `---`) teaches the model nothing.
fn has_content(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

/// Strips a leading bullet (`-`, `*`, `+`, `•`, `–`) or number (`1.`, `2)`, `(3)`) and spaces.
pub(super) fn strip_list_marker(line: &str) -> &str {
    let line = line.trim();
    for bullet in ["- ", "* ", "+ ", "• ", "– "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return rest.trim();
        }
    }
    let unparenthesised = line.strip_prefix('(');
    let body = unparenthesised.unwrap_or(line);
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    // At most three digits, so a line opening with a year ("1998. The ...") is left alone.
    if (1..=3).contains(&digits) {
        let rest = &body[digits..];
        let closer = if unparenthesised.is_some() {
            rest.strip_prefix(')')
        } else {
            rest.strip_prefix('.').or_else(|| rest.strip_prefix(')'))
        };
        if let Some(rest) = closer {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                return rest.trim();
            }
        }
    }
    line
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QaLabel {
    Question,
    Answer,
}

/// Recognises `Question:`, `Q:`, `Answer:`, `A:` (any case, optionally numbered like
/// `Question 2:`, optionally in markdown bold or after a list marker) and returns the text after it.
pub(super) fn qa_label(line: &str) -> Option<(QaLabel, &str)> {
    let line = strip_list_marker(line).trim_start_matches(['*', '#', '_', ' ']);
    for (word, label) in [
        ("question", QaLabel::Question),
        ("answer", QaLabel::Answer),
        ("q", QaLabel::Question),
        ("a", QaLabel::Answer),
    ] {
        let Some(head) = line.get(..word.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(word) {
            continue;
        }
        let rest = line[word.len()..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        if let Some(rest) = rest.strip_prefix(':') {
            return Some((label, rest.trim_start_matches(['*', '_']).trim()));
        }
    }
    None
}

fn qa_pairs(text: &str) -> Vec<String> {
    let mut pairs = Vec::new();
    let mut question: Option<String> = None;
    let mut answer: Option<String> = None;
    let mut emit = |question: &mut Option<String>, answer: &mut Option<String>| {
        if let (Some(q), Some(a)) = (question.take(), answer.take()) {
            if has_content(&q) && has_content(&a) {
                pairs.push(format!("Question: {}\nAnswer: {}", q.trim(), a.trim()));
            }
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match qa_label(line) {
            Some((QaLabel::Question, rest)) => {
                emit(&mut question, &mut answer);
                // A question left without an answer is dropped here.
                question = Some(rest.to_string());
                answer = None;
            }
            Some((QaLabel::Answer, rest)) => {
                if question.is_some() {
                    match &mut answer {
                        Some(a) => {
                            a.push(' ');
                            a.push_str(rest);
                        }
                        None => answer = Some(rest.to_string()),
                    }
                }
            }
            // A line without a label continues whatever came last.
            None => {
                if let Some(text) = answer.as_mut().or(question.as_mut()) {
                    text.push(' ');
                    text.push_str(line);
                }
            }
        }
    }
    emit(&mut question, &mut answer);
    pairs
}

/// A prompt file of the shape `answer.toml` and `judge.toml` share: an optional system part,
/// the prompt, and how many tokens a reply may take.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFile {
    pub path: PathBuf,
    pub source: String,
    pub system: Option<TemplateText>,
    pub prompt: TemplateText,
    pub max_tokens: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFileToml {
    system: Option<String>,
    prompt: String,
    max_tokens: usize,
}

impl PromptFile {
    /// Loads the file, allowing only `placeholders` in its system part and prompt, and
    /// requiring each of `required` (name, and what it is for) in one of them.
    pub(crate) fn load(
        path: &Path,
        placeholders: &[&str],
        required: &[(&str, &str)],
    ) -> Result<Self, TemplateError> {
        let (file, source): (PromptFileToml, String) = read_toml(path)?;
        if file.max_tokens == 0 {
            return Err(invalid(path, "field `max_tokens` must be positive"));
        }
        let system = file
            .system
            .as_deref()
            .map(|s| parse_field(path, "system", s, placeholders))
            .transpose()?;
        let prompt = parse_field(path, "prompt", &file.prompt, placeholders)?;
        require(path, system.as_ref(), &prompt, required)?;
        Ok(Self {
            path: path.to_path_buf(),
            source,
            system,
            prompt,
            max_tokens: file.max_tokens,
        })
    }

    pub(crate) fn render(&self, values: &[(&str, &str)]) -> Prompt {
        Prompt {
            system: self.system.as_ref().map(|s| s.render(values)),
            user: self.prompt.render(values),
        }
    }
}

/// The template the adapted model answers questions with: the passage's title as topic, never
/// the passage itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerTemplate {
    pub chat: PromptFile,
}

const ANSWER_PLACEHOLDERS: &[&str] = &["title", "question"];
const ANSWER_REQUIRED: &[(&str, &str)] = &[(
    "question",
    "the model would answer without being asked anything",
)];

impl AnswerTemplate {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        Ok(Self {
            chat: PromptFile::load(path, ANSWER_PLACEHOLDERS, ANSWER_REQUIRED)?,
        })
    }

    /// Loads `answer.toml` from a prompts directory.
    pub fn find(dir: &Path) -> Result<Self, TemplateError> {
        Self::load(&dir.join(ANSWER_TEMPLATE_FILE))
    }

    pub fn render(&self, title: &str, question: &str) -> Prompt {
        self.chat
            .render(&[("title", title), ("question", question)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::knowledge::passage::Question;

    fn prompts_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts")
    }

    fn passage() -> Passage {
        Passage {
            title: "Tides".to_string(),
            context: "The Moon's gravity pulls the oceans. {title} is not a placeholder here."
                .to_string(),
            questions: vec![Question {
                question: "What pulls the oceans?".to_string(),
                answers: vec!["The Moon".to_string()],
            }],
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn shipped(name: &str) -> PromptTemplate {
        PromptTemplate::find(&prompts_dir(), name).unwrap()
    }

    const MINIMAL: &str = r#"
name = "mine"
description = "test"
prompt = "About {title}: {passage}"
max_tokens = 64
split = "lines"
"#;

    #[test]
    fn every_shipped_prompt_file_parses() {
        let templates = list_templates(&prompts_dir()).unwrap();
        let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
        for expected in [
            "implications",
            "implications-long",
            "implications-very-long",
            "rewrite",
            "self-qa",
            "implications-cot",
            "none",
        ] {
            assert!(
                names.contains(&expected),
                "missing template {expected}: {names:?}"
            );
        }
        for template in &templates {
            assert!(!template.description.trim().is_empty(), "{}", template.name);
            if let Some(prompt) = template.render(&passage()) {
                assert!(
                    prompt.user.contains("The Moon's gravity"),
                    "{}",
                    template.name
                );
            }
        }
        assert!(shipped("none").sampling.is_none());
        let answer = AnswerTemplate::find(&prompts_dir()).unwrap();
        let rendered = answer.render("Tides", "What pulls the oceans?");
        assert!(rendered.user.contains("Tides"));
        assert!(rendered.user.contains("What pulls the oceans?"));
        crate::tasks::knowledge::judge::JudgeTemplate::find(&prompts_dir()).unwrap();
        crate::tasks::knowledge::questions::QuestionsTemplate::find(&prompts_dir()).unwrap();
        // Every .toml in prompts/ is covered: self-edit templates, answer, judge, questions.
        let all = std::fs::read_dir(prompts_dir()).unwrap().count();
        assert_eq!(all, templates.len() + 3);
    }

    #[test]
    fn rendering_substitutes_once_and_keeps_escaped_braces() {
        let text =
            TemplateText::parse("{{literal}} {title}: {passage}", SELF_EDIT_PLACEHOLDERS).unwrap();
        let rendered = text.render(&[("title", "T"), ("passage", "has {title} inside")]);
        assert_eq!(rendered, "{literal} T: has {title} inside");
    }

    #[test]
    fn unknown_or_unbalanced_placeholders_are_refused() {
        let err = TemplateText::parse("about {topic}", SELF_EDIT_PLACEHOLDERS).unwrap_err();
        assert!(err.contains("unknown placeholder `{topic}`"), "{err}");
        assert!(err.contains("{title}, {passage}"), "{err}");
        assert!(TemplateText::parse("open {title", SELF_EDIT_PLACEHOLDERS)
            .unwrap_err()
            .contains("unclosed"));
        assert!(TemplateText::parse("close }", SELF_EDIT_PLACEHOLDERS)
            .unwrap_err()
            .contains("lone"));
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "mine.toml", &MINIMAL.replace("{title}", "{titel}"));
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("field `prompt`: unknown placeholder `{titel}`"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_template_is_a_clear_error() {
        let err = PromptTemplate::find(&prompts_dir(), "no-such-strategy").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("no template `no-such-strategy`"),
            "{message}"
        );
        assert!(message.contains("implications"), "{message}");
        assert!(
            !message.contains("answer"),
            "answer.toml is not a strategy: {message}"
        );
        let dir = tempfile::tempdir().unwrap();
        let message = PromptTemplate::load(&dir.path().join("gone.toml"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("gone.toml: cannot read"), "{message}");
    }

    #[test]
    fn a_broken_template_names_the_file_and_the_toml_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "mine.toml",
            "name = \"mine\"\nprompt = \"unterminated\n",
        );
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: not a valid template", path.display())),
            "{message}"
        );
        let path = write(&dir, "mine.toml", &format!("{MINIMAL}\nmax_tokenz = 3\n"));
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(message.contains("max_tokenz"), "{message}");
        let path = write(&dir, "mine.toml", &MINIMAL.replace("max_tokens = 64", ""));
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(
            message.ends_with("mine.toml: field `max_tokens` is missing"),
            "{message}"
        );
        let path = write(
            &dir,
            "mine.toml",
            &MINIMAL.replace("\"lines\"", "\"separator\""),
        );
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("needs a non-blank `separator`"),
            "{message}"
        );
        // A broken user file fails the listing, naming itself.
        write(&dir, "mine.toml", "this is not toml");
        let message = list_templates(dir.path()).unwrap_err().to_string();
        assert!(message.contains("mine.toml"), "{message}");
    }

    #[test]
    fn name_must_match_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "copy.toml", MINIMAL);
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(message.contains("field `name` is \"mine\""), "{message}");
    }

    #[test]
    fn templates_are_found_by_name_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "mine.toml", MINIMAL);
        assert_eq!(
            PromptTemplate::find(dir.path(), "mine").unwrap().name,
            "mine"
        );
        assert_eq!(
            PromptTemplate::find(dir.path(), "mine.toml").unwrap().name,
            "mine"
        );
        let by_path = PromptTemplate::find(&prompts_dir(), path.to_str().unwrap()).unwrap();
        assert_eq!(by_path.path, path);
        let listed = list_templates(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn samples_false_trains_on_the_passage_alone() {
        let template = shipped("none");
        assert!(template.render(&passage()).is_none());
        let sequences = template.training_sequences(&passage(), "ignored text");
        assert_eq!(sequences.len(), 1);
        assert!(sequences[0].contains("The Moon's gravity"));
        assert!(!sequences[0].contains("ignored"));

        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "bare.toml",
            "name = \"bare\"\ndescription = \"d\"\nsamples = false\n",
        );
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("needs `include_passage = true`"),
            "{message}"
        );
        let path = write(
            &dir,
            "bare.toml",
            "name = \"bare\"\ndescription = \"d\"\nsamples = false\ninclude_passage = true\nprompt = \"x\"\n",
        );
        let message = PromptTemplate::load(&path).unwrap_err().to_string();
        assert!(message.contains("takes no prompt"), "{message}");
    }

    fn template_with(split: &str, extra: &str) -> PromptTemplate {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "name = \"t\"\ndescription = \"d\"\nprompt = \"{{title}}: {{passage}}\"\n\
             max_tokens = 8\nsplit = \"{split}\"\n{extra}"
        );
        PromptTemplate::load(&write(&dir, "t.toml", &text)).unwrap()
    }

    #[test]
    fn prompts_without_the_placeholders_they_need_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let strategy = |prompt: &str| {
            let text = format!(
                "name = \"s\"\ndescription = \"d\"\nprompt = \"{prompt}\"\nmax_tokens = 8\n\
                 split = \"whole\"\n"
            );
            PromptTemplate::load(&write(&dir, "s.toml", &text)).map(|_| ())
        };
        let err = strategy("Notes on {title}").unwrap_err().to_string();
        assert!(err.contains("s.toml") && err.contains("{passage}"), "{err}");
        let err = strategy("Notes: {passage}").unwrap_err().to_string();
        assert!(err.contains("{title}"), "{err}");
        strategy("{title}: {passage}").unwrap();
        // The system part counts too.
        let text = "name = \"s\"\ndescription = \"d\"\nsystem = \"About {title}.\"\n\
                    prompt = \"{passage}\"\nmax_tokens = 8\nsplit = \"whole\"\n";
        PromptTemplate::load(&write(&dir, "s.toml", text)).unwrap();
        let answer = write(
            &dir,
            "answer.toml",
            "prompt = \"About {title}\"\nmax_tokens = 8\n",
        );
        let err = AnswerTemplate::load(&answer).unwrap_err().to_string();
        assert!(
            err.contains("answer.toml") && err.contains("{question}"),
            "{err}"
        );
    }

    #[test]
    fn lines_split_strips_bullets_and_numbering() {
        let template = template_with("lines", "");
        let text = "Implications:\n\n1. The Moon pulls water.\n2) Tides rise twice a day.\n\
                    - Gravity weakens with distance.\n* Spring tides are large.\n\
                    • Neap tides are small.\n(3) The Sun matters too.\n**\n\
                    1998. A year-led line stays whole.\n1.5 metres is a typical range.";
        assert_eq!(
            template.training_sequences(&passage(), text),
            [
                "Implications:",
                "The Moon pulls water.",
                "Tides rise twice a day.",
                "Gravity weakens with distance.",
                "Spring tides are large.",
                "Neap tides are small.",
                "The Sun matters too.",
                "1998. A year-led line stays whole.",
                "1.5 metres is a typical range.",
            ]
        );
    }

    #[test]
    fn separator_split_keeps_multi_line_pieces() {
        let template = template_with("separator", "separator = \"---\"");
        let text = "First rewrite,\non two lines.\n---\nSecond rewrite.\n---\n\n---";
        assert_eq!(
            template.training_sequences(&passage(), text),
            ["First rewrite,\non two lines.", "Second rewrite."]
        );
    }

    #[test]
    fn qa_pairs_split_reads_common_layouts() {
        let template = template_with("qa-pairs", "");
        let text = "Here are some pairs.\n\
                    Question: What pulls the oceans?\nAnswer: The Moon.\n\n\
                    1. **Question 2:** How often do tides rise?\n**Answer:** Twice\na day.\n\
                    Q: Orphan question without answer?\n\
                    q: Does the Sun matter?\na: Yes, less than the Moon.";
        assert_eq!(
            template.training_sequences(&passage(), text),
            [
                "Question: What pulls the oceans?\nAnswer: The Moon.",
                "Question: How often do tides rise?\nAnswer: Twice a day.",
                "Question: Does the Sun matter?\nAnswer: Yes, less than the Moon.",
            ]
        );
        assert!(template
            .training_sequences(&passage(), "Aardvark: not a label")
            .is_empty());
    }

    #[test]
    fn whole_split_and_title_and_passage_options() {
        let template = template_with("whole", "prefix_title = true\ninclude_passage = true");
        let sequences = template.training_sequences(&passage(), "  One rewrite.\nStill it.  ");
        assert_eq!(sequences.len(), 2);
        assert!(sequences[0].starts_with("Tides\nThe Moon's gravity"));
        assert_eq!(sequences[1], "Tides\nOne rewrite.\nStill it.");
        assert_eq!(template.training_sequences(&passage(), " \n ").len(), 1);
    }

    #[test]
    fn keep_after_drops_the_reasoning() {
        let template = template_with("lines", "keep_after = \"Implications:\"");
        let text = "Reasoning: the passage says implications: matter.\n\
                    The Moon is close.\n**IMPLICATIONS:**\n- Tides follow the Moon.\n- Seas bulge.";
        assert_eq!(
            template.training_sequences(&passage(), text),
            ["Tides follow the Moon.", "Seas bulge."]
        );
        assert_eq!(
            template.training_sequences(&passage(), "No marker.\nJust lines."),
            ["No marker.", "Just lines."]
        );
    }

    #[test]
    fn shipped_templates_split_as_their_strategy_needs() {
        let p = passage();
        let lines = "1. The Moon pulls water.\n2. Tides rise twice a day.";
        for name in [
            "implications",
            "implications-long",
            "implications-very-long",
        ] {
            let sequences = shipped(name).training_sequences(&p, lines);
            assert!(
                sequences
                    .iter()
                    .any(|s| s.ends_with("The Moon pulls water.")),
                "{name}: {sequences:?}"
            );
            assert!(sequences.len() >= 2, "{name}");
        }
        let cot = shipped("implications-cot");
        let marker = cot.sampling.as_ref().unwrap().keep_after.clone().unwrap();
        let text = format!("I think about gravity.\n{marker}\n- The Moon pulls water.");
        let sequences = cot.training_sequences(&p, &text);
        assert!(sequences
            .iter()
            .all(|s| !s.contains("I think about gravity")));
        assert!(sequences
            .iter()
            .any(|s| s.ends_with("The Moon pulls water.")));

        let rewrite = shipped("rewrite");
        let Split::Separator(separator) = &rewrite.sampling.as_ref().unwrap().split else {
            panic!("rewrite should split on a separator");
        };
        let text = format!("Rewrite one.\n{separator}\nRewrite two.");
        let sequences = rewrite.training_sequences(&p, &text);
        assert!(
            sequences.iter().any(|s| s.ends_with("Rewrite two.")),
            "{sequences:?}"
        );

        let qa = shipped("self-qa");
        let sequences = qa.training_sequences(&p, "Question: Q one?\nAnswer: A one.");
        assert!(sequences
            .iter()
            .any(|s| s.ends_with("Question: Q one?\nAnswer: A one.")));
    }
}
