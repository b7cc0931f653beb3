//! Passages and their questions, and the loader for SQuAD-style files.
//!
//! Two layouts are recognised by their top level:
//! - an object with `data`: the official nested SQuAD v1.1 format
//!   (`data[].paragraphs[].qas[].answers[].text`), every distinct gold answer kept in order;
//! - an array: SEAL's flattened format `[{"title", "context", "questions": [{"question",
//!   "answer"}]}]`. A question may carry `answers` (a list) instead of `answer`, which is how a
//!   [`Passage`] serialises, so files we write read back.
//!
//! The file is walked by hand rather than deserialised straight into structs so that every
//! problem is reported with the file and the JSON location it sits at.
//!
//! Unlabeled text (passages with no gold questions, for runs whose questions the model writes)
//! comes in two further layouts, told apart by the path: a `.jsonl` file of `{"title", "text"}`
//! lines, or a folder of `.txt` files (the title is the file's stem).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub title: String,
    pub context: String,
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub question: String,
    /// Distinct gold answers, in file order; never empty.
    pub answers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: at {at}: {problem}", path.display())]
    Format {
        path: PathBuf,
        /// JSON location, such as `[3].questions[1]` or `data[0].paragraphs[2]`.
        at: String,
        problem: String,
    },
    #[error("{}: contains no passages", path.display())]
    Empty { path: PathBuf },
    #[error("{}: line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Whether every passage is unlabeled text: no gold questions to grade.
pub fn is_unlabeled(passages: &[Passage]) -> bool {
    passages.iter().all(|p| p.questions.is_empty())
}

/// Loads passages: a SQuAD-style JSON file in either supported layout, or unlabeled text (a
/// `.jsonl` file of `{"title", "text"}` lines, a folder of `.txt` files) whose passages have no
/// questions.
pub fn load_passages(path: &Path) -> Result<Vec<Passage>, LoadError> {
    let passages = if path.is_dir() {
        load_text_folder(path)?
    } else if path.extension().is_some_and(|e| e == "jsonl") {
        load_jsonl(path)?
    } else {
        load_json(path)?
    };
    if passages.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(passages)
}

/// One passage per non-blank line: `{"title": "...", "text": "..."}`.
fn load_jsonl(path: &Path) -> Result<Vec<Passage>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut passages = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let problem = |problem: String| LoadError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            problem,
        };
        let value: Value =
            serde_json::from_str(line).map_err(|e| problem(format!("not valid JSON: {e}")))?;
        let map = as_object(&value, "line").map_err(|(_, p)| problem(p))?;
        let title = string_field(map, "title", "line").map_err(|(_, p)| problem(p))?;
        let context = non_empty_string_field(map, "text", "line").map_err(|(_, p)| problem(p))?;
        passages.push(Passage {
            title,
            context,
            questions: Vec::new(),
        });
    }
    Ok(passages)
}

/// Every `.txt` file of a folder, in name order; the title is the file's stem.
fn load_text_folder(dir: &Path) -> Result<Vec<Passage>, LoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "txt") {
            files.push(path);
        }
    }
    files.sort();
    let mut passages = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        if text.trim().is_empty() {
            return Err(LoadError::Format {
                path,
                at: "the file".into(),
                problem: "it is empty".into(),
            });
        }
        let title = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        passages.push(Passage {
            title,
            context: text.trim().to_string(),
            questions: Vec::new(),
        });
    }
    Ok(passages)
}

fn load_json(path: &Path) -> Result<Vec<Passage>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    parse_passages(&value).map_err(|(at, problem)| LoadError::Format {
        path: path.to_path_buf(),
        at,
        problem,
    })
}

/// A problem and where it is: (JSON location, description).
type Problem = (String, String);

fn parse_passages(value: &Value) -> Result<Vec<Passage>, Problem> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_flat_passage(item, &format!("[{i}]")))
            .collect(),
        Value::Object(map) if map.contains_key("data") => parse_official(map),
        other => Err((
            "top level".to_string(),
            format!(
                "expected an array of passages (SEAL format) or an object with `data` \
                 (official SQuAD v1.1 format), found {}",
                kind_of(other)
            ),
        )),
    }
}

fn parse_flat_passage(value: &Value, at: &str) -> Result<Passage, Problem> {
    let map = as_object(value, at)?;
    let title = string_field(map, "title", at)?;
    let context = non_empty_string_field(map, "context", at)?;
    let items = array_field(map, "questions", at)?;
    if items.is_empty() {
        return Err((at.to_string(), "passage has no questions".to_string()));
    }
    let questions = items
        .iter()
        .enumerate()
        .map(|(j, item)| parse_flat_question(item, &format!("{at}.questions[{j}]")))
        .collect::<Result<_, _>>()?;
    Ok(Passage {
        title,
        context,
        questions,
    })
}

fn parse_flat_question(value: &Value, at: &str) -> Result<Question, Problem> {
    let map = as_object(value, at)?;
    let question = non_empty_string_field(map, "question", at)?;
    let answers = match (map.get("answer"), map.get("answers")) {
        (Some(_), Some(_)) => {
            return Err((
                at.to_string(),
                "has both `answer` and `answers`; keep one".to_string(),
            ))
        }
        (Some(_), None) => vec![non_empty_string_field(map, "answer", at)?],
        (None, Some(_)) => {
            let items = array_field(map, "answers", at)?;
            items
                .iter()
                .enumerate()
                .map(|(k, item)| non_empty_string(item, &format!("{at}.answers[{k}]")))
                .collect::<Result<Vec<_>, _>>()?
        }
        (None, None) => return Err((at.to_string(), "field `answer` is missing".to_string())),
    };
    Ok(Question {
        question,
        answers: distinct_answers(answers, at)?,
    })
}

fn parse_official(root: &Map<String, Value>) -> Result<Vec<Passage>, Problem> {
    let articles = array_field(root, "data", "top level")?;
    let mut passages = Vec::new();
    for (a, article) in articles.iter().enumerate() {
        let at = format!("data[{a}]");
        let article = as_object(article, &at)?;
        let title = string_field(article, "title", &at)?;
        for (p, paragraph) in array_field(article, "paragraphs", &at)?.iter().enumerate() {
            let at = format!("{at}.paragraphs[{p}]");
            let paragraph = as_object(paragraph, &at)?;
            let context = non_empty_string_field(paragraph, "context", &at)?;
            let qas = array_field(paragraph, "qas", &at)?;
            if qas.is_empty() {
                return Err((at, "paragraph has no questions".to_string()));
            }
            let questions = qas
                .iter()
                .enumerate()
                .map(|(q, qa)| parse_official_question(qa, &format!("{at}.qas[{q}]")))
                .collect::<Result<_, _>>()?;
            passages.push(Passage {
                title: title.clone(),
                context,
                questions,
            });
        }
    }
    Ok(passages)
}

fn parse_official_question(value: &Value, at: &str) -> Result<Question, Problem> {
    let map = as_object(value, at)?;
    let question = non_empty_string_field(map, "question", at)?;
    let answers = array_field(map, "answers", at)?
        .iter()
        .enumerate()
        .map(|(k, answer)| {
            let at = format!("{at}.answers[{k}]");
            non_empty_string_field(as_object(answer, &at)?, "text", &at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Question {
        question,
        answers: distinct_answers(answers, at)?,
    })
}

fn distinct_answers(answers: Vec<String>, at: &str) -> Result<Vec<String>, Problem> {
    if answers.is_empty() {
        // SQuAD v2.0 marks unanswerable questions this way; we cannot grade those.
        return Err((at.to_string(), "question has no gold answers".to_string()));
    }
    let mut distinct: Vec<String> = Vec::with_capacity(answers.len());
    for answer in answers {
        if !distinct.contains(&answer) {
            distinct.push(answer);
        }
    }
    Ok(distinct)
}

fn as_object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Problem> {
    value.as_object().ok_or_else(|| {
        (
            at.to_string(),
            format!("expected an object, found {}", kind_of(value)),
        )
    })
}

fn field<'a>(map: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a Value, Problem> {
    map.get(name)
        .ok_or_else(|| (at.to_string(), format!("field `{name}` is missing")))
}

fn string_field(map: &Map<String, Value>, name: &str, at: &str) -> Result<String, Problem> {
    match field(map, name, at)? {
        Value::String(s) => Ok(s.clone()),
        other => Err((
            at.to_string(),
            format!("field `{name}` must be a string, found {}", kind_of(other)),
        )),
    }
}

fn non_empty_string_field(
    map: &Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<String, Problem> {
    let s = string_field(map, name, at)?;
    if s.trim().is_empty() {
        return Err((at.to_string(), format!("field `{name}` is empty")));
    }
    Ok(s)
}

fn non_empty_string(value: &Value, at: &str) -> Result<String, Problem> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err((at.to_string(), "answer is empty".to_string())),
        other => Err((
            at.to_string(),
            format!("expected a string, found {}", kind_of(other)),
        )),
    }
}

fn array_field<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<&'a Vec<Value>, Problem> {
    match field(map, name, at)? {
        Value::Array(items) => Ok(items),
        other => Err((
            at.to_string(),
            format!("field `{name}` must be an array, found {}", kind_of(other)),
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "squad.json", text);
        let err = load_passages(&path).expect_err("expected a load error");
        let message = err.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "error does not name the file: {message}"
        );
        message
    }

    #[test]
    fn a_serialised_passage_loads_back() {
        let passages = vec![Passage {
            title: "Tides".to_string(),
            context: "The Moon pulls the oceans.".to_string(),
            questions: vec![Question {
                question: "What pulls the oceans?".to_string(),
                answers: vec!["The Moon".to_string(), "Moon".to_string()],
            }],
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "ours.json",
            &serde_json::to_string(&passages).unwrap(),
        );
        assert_eq!(load_passages(&path).unwrap(), passages);
    }

    #[test]
    fn official_answers_are_deduplicated_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"data":[{"title":"T","paragraphs":[{"context":"C","qas":[
            {"id":"1","question":"Q?","answers":[
                {"text":"b","answer_start":0},{"text":"a","answer_start":0},
                {"text":"b","answer_start":3}]}]}]}]}"#;
        let path = write(&dir, "official.json", text);
        let passages = load_passages(&path).unwrap();
        assert_eq!(passages[0].questions[0].answers, ["b", "a"]);
    }

    #[test]
    fn not_json_is_a_clear_error() {
        let message = load_error("title,context\nfoo,bar\n");
        assert!(message.contains("not valid JSON"), "{message}");
    }

    #[test]
    fn unreadable_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.json");
        let message = load_passages(&path).unwrap_err().to_string();
        assert!(message.contains("absent.json: cannot read"), "{message}");
    }

    #[test]
    fn missing_field_names_the_passage() {
        let message = load_error(
            r#"[{"title":"A","context":"c","questions":[{"question":"q","answer":"a"}]},
                {"title":"B","questions":[]}]"#,
        );
        assert!(
            message.ends_with("squad.json: at [1]: field `context` is missing"),
            "{message}"
        );
    }

    #[test]
    fn missing_answer_names_the_question() {
        let message = load_error(r#"[{"title":"A","context":"c","questions":[{"question":"q"}]}]"#);
        assert!(
            message.ends_with("at [0].questions[0]: field `answer` is missing"),
            "{message}"
        );
    }

    #[test]
    fn wrong_types_are_clear_errors() {
        let message = load_error(r#"[{"title":"A","context":7,"questions":[]}]"#);
        assert!(
            message.ends_with("at [0]: field `context` must be a string, found a number"),
            "{message}"
        );
        let message = load_error(r#"[{"title":"A","context":"c","questions":"none"}]"#);
        assert!(
            message.contains("field `questions` must be an array"),
            "{message}"
        );
        let message = load_error(r#"["just a string"]"#);
        assert!(
            message.ends_with("at [0]: expected an object, found a string"),
            "{message}"
        );
        let message = load_error(r#"{"version":"1.1"}"#);
        assert!(
            message.contains("at top level: expected an array"),
            "{message}"
        );
        let message = load_error(
            r#"{"data":[{"title":"T","paragraphs":[{"context":"C","qas":[
                {"question":"Q?","answers":[{"text":3}]}]}]}]}"#,
        );
        assert!(
            message.ends_with(
                "at data[0].paragraphs[0].qas[0].answers[0]: field `text` must be a string, found a number"
            ),
            "{message}"
        );
    }

    #[test]
    fn unlabeled_jsonl_loads_without_questions() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "texts.jsonl",
            "{\"title\":\"Tides\",\"text\":\"The Moon pulls the oceans.\"}\n\n\
             {\"title\":\"\",\"text\":\"Untitled text.\"}\n",
        );
        let passages = load_passages(&path).unwrap();
        assert_eq!(passages.len(), 2);
        assert_eq!(passages[0].title, "Tides");
        assert_eq!(passages[1].context, "Untitled text.");
        assert!(is_unlabeled(&passages));
    }

    #[test]
    fn malformed_jsonl_is_a_clear_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "{\"title\":\"a\",\"text\":\"b\"}\n{\"title\": \"x\", \"text\": ",
                "line 2: not valid JSON",
            ),
            ("{\"title\":\"a\"}\n", "line 1: field `text` is missing"),
            ("[1,2]\n", "line 1: expected an object, found an array"),
            (
                "{\"title\":\"a\",\"text\":\"  \"}\n",
                "line 1: field `text` is empty",
            ),
            (
                "{\"title\":3,\"text\":\"b\"}\n",
                "line 1: field `title` must be a string",
            ),
            ("\n\n", "contains no passages"),
        ];
        for (text, expected) in cases {
            let path = write(&dir, "bad.jsonl", text);
            let message = load_passages(&path).unwrap_err().to_string();
            assert!(
                message.contains("bad.jsonl") && message.contains(expected),
                "{message}"
            );
        }
    }

    #[test]
    fn a_folder_of_text_files_loads_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir, "b-second.txt", "Second passage.\n");
        write(&dir, "a-first.txt", "  First passage.  ");
        write(&dir, "notes.md", "not a passage");
        std::fs::create_dir(dir.path().join("sub.txt")).unwrap();
        let passages = load_passages(dir.path()).unwrap();
        let titles: Vec<&str> = passages.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["a-first", "b-second"]);
        assert_eq!(passages[0].context, "First passage.");
        assert!(is_unlabeled(&passages));
        write(&dir, "c-empty.txt", "\n");
        let message = load_passages(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("c-empty.txt") && message.contains("empty"),
            "{message}"
        );
        let empty = tempfile::tempdir().unwrap();
        let message = load_passages(empty.path()).unwrap_err().to_string();
        assert!(message.contains("contains no passages"), "{message}");
    }

    #[test]
    fn empty_lists_are_clear_errors() {
        assert!(load_error("[]").ends_with("squad.json: contains no passages"));
        assert!(load_error(r#"{"data":[]}"#).ends_with("contains no passages"));
        let message = load_error(r#"[{"title":"A","context":"c","questions":[]}]"#);
        assert!(
            message.ends_with("at [0]: passage has no questions"),
            "{message}"
        );
        let message = load_error(
            r#"{"data":[{"title":"T","paragraphs":[{"context":"C","qas":[
                {"question":"Q?","answers":[],"is_impossible":true}]}]}]}"#,
        );
        assert!(
            message.ends_with("at data[0].paragraphs[0].qas[0]: question has no gold answers"),
            "{message}"
        );
        let message = load_error(
            r#"[{"title":"A","context":"c","questions":[{"question":"q","answer":"  "}]}]"#,
        );
        assert!(message.ends_with("field `answer` is empty"), "{message}");
    }
}
