//! The LLM judge: the judge prompt (`prompts/judge.toml`), reading a yes/no reply, and a judge
//! behind any OpenAI-compatible `/v1/chat/completions` endpoint. A judge running on our own
//! engine uses [`JudgeTemplate::render`] and [`verdict_from_reply`] around its own sampling.

use std::path::Path;

use crate::openai::{Ask, Client, Endpoint, Message, Sampling};

use super::grading::{Grader, Verdict};
use super::templates::{PromptFile, TemplateError, JUDGE_TEMPLATE_FILE};
use crate::engine::Prompt;

/// A judge that could not be asked; see [`crate::openai::Error`].
pub type JudgeError = crate::openai::Error;

/// A reply that is neither yes nor no.
#[derive(Debug, thiserror::Error)]
#[error("the judge replied neither yes nor no: {reply:?}")]
pub struct Unparseable {
    pub reply: String,
}

/// The judge prompt: `{question}`, `{gold_answers}` (one per line, `- ` first) and `{answer}`.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeTemplate {
    pub chat: PromptFile,
}

const JUDGE_PLACEHOLDERS: &[&str] = &["question", "gold_answers", "answer"];
const JUDGE_REQUIRED: &[(&str, &str)] = &[
    ("question", "the judge would not know what was asked"),
    (
        "gold_answers",
        "the judge would have nothing to compare with",
    ),
    ("answer", "the judge would not see the answer it grades"),
];

impl JudgeTemplate {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        Ok(Self {
            chat: PromptFile::load(path, JUDGE_PLACEHOLDERS, JUDGE_REQUIRED)?,
        })
    }

    /// Loads `judge.toml` from a prompts directory.
    pub fn find(dir: &Path) -> Result<Self, TemplateError> {
        Self::load(&dir.join(JUDGE_TEMPLATE_FILE))
    }

    pub fn render<S: AsRef<str>>(&self, question: &str, golds: &[S], answer: &str) -> Prompt {
        let gold_answers: Vec<String> = golds
            .iter()
            .map(|g| format!("- {}", g.as_ref().trim()))
            .collect();
        let gold_answers = gold_answers.join("\n");
        self.chat.render(&[
            ("question", question.trim()),
            ("gold_answers", gold_answers.as_str()),
            ("answer", answer.trim()),
        ])
    }
}

/// Reads a judge reply as yes (`true`) or no (`false`): the first word that is `yes` or `no`,
/// in any case and whatever punctuation or markdown surrounds it. Reasoning inside
/// `<think>...</think>` is skipped, since it may mention either word before the verdict.
pub fn parse_reply(reply: &str) -> Result<bool, Unparseable> {
    let verdict_part = match reply.rfind("</think>") {
        Some(i) => &reply[i + "</think>".len()..],
        None => reply,
    };
    verdict_part
        .split(|c: char| !c.is_alphanumeric())
        .find_map(|word| {
            if word.eq_ignore_ascii_case("yes") {
                Some(true)
            } else if word.eq_ignore_ascii_case("no") {
                Some(false)
            } else {
                None
            }
        })
        .ok_or_else(|| Unparseable {
            reply: reply.to_string(),
        })
}

/// The verdict for a judge's reply; a reply that is neither yes nor no counts as incorrect, and
/// the reply is kept in `raw` so a human can see why.
pub fn verdict_from_reply(grader: &str, reply: &str) -> Verdict {
    let correct = parse_reply(reply).unwrap_or(false);
    Verdict {
        grader: grader.to_string(),
        correct,
        score: if correct { 1.0 } else { 0.0 },
        raw: reply.to_string(),
    }
}

pub use crate::record::config::HttpJudge as HttpJudgeConfig;

/// Checks, before a run starts, that the judge's key variable (if one is named) is set.
pub fn check_api_key(config: &HttpJudgeConfig) -> Result<(), JudgeError> {
    crate::openai::api_key(config.api_key_env.as_deref()).map(|_| ())
}

pub struct HttpJudge {
    config: HttpJudgeConfig,
    template: JudgeTemplate,
    client: Client,
}

impl HttpJudge {
    pub fn new(config: HttpJudgeConfig, template: JudgeTemplate) -> Self {
        let client = Client::new(Endpoint::from_judge(&config));
        Self {
            config,
            template,
            client,
        }
    }

    pub fn config(&self) -> &HttpJudgeConfig {
        &self.config
    }

    /// Judges one answer. A reply that is neither yes nor no is a verdict of incorrect; only a
    /// failure to get a reply at all is an error.
    pub fn judge<S: AsRef<str>>(
        &self,
        question: &str,
        golds: &[S],
        answer: &str,
    ) -> Result<Verdict, JudgeError> {
        let prompt = self.template.render(question, golds, answer);
        let reply = self.complete(&prompt)?;
        let grader = Grader::JudgeHttp(self.config.clone()).label();
        Ok(verdict_from_reply(&grader, &reply))
    }

    /// Sends one chat completion, retrying transient failures with a growing pause inside a
    /// bounded total time (see [`crate::openai::Client`]), and returns the reply text.
    pub fn complete(&self, prompt: &Prompt) -> Result<String, JudgeError> {
        let mut messages = Vec::new();
        if let Some(system) = &prompt.system {
            messages.push(Message {
                role: "system",
                content: system.clone(),
            });
        }
        messages.push(Message {
            role: "user",
            content: prompt.user.clone(),
        });
        let sampling = Sampling {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: self.template.chat.max_tokens,
            seed: None,
        };
        self.client.complete(&Ask::Chat(&messages), &sampling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    fn template() -> JudgeTemplate {
        JudgeTemplate::find(&Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts")).unwrap()
    }

    #[test]
    fn the_judge_prompt_shows_question_golds_and_answer() {
        let prompt = template().render(
            "Who won Super Bowl 50?",
            &["Denver Broncos", "the Broncos"],
            " Denver ",
        );
        assert!(prompt.system.is_some());
        assert!(prompt.user.contains("Who won Super Bowl 50?"));
        assert!(prompt.user.contains("- Denver Broncos\n- the Broncos"));
        assert!(prompt.user.contains("Denver"));
        assert!(!prompt.user.contains('{'), "{}", prompt.user);
    }

    #[test]
    fn replies_are_read_robustly() {
        for reply in [
            "yes",
            "Yes.",
            "YES",
            "**Yes**",
            " yes, it does",
            "Answer: yes",
        ] {
            assert!(parse_reply(reply).unwrap(), "{reply}");
        }
        for reply in [
            "no",
            "No.",
            "**No**",
            "NO - it names another team",
            "no, yes",
        ] {
            assert!(!parse_reply(reply).unwrap(), "{reply}");
        }
        // Words that merely start with yes/no do not count.
        assert!(parse_reply("Nope, yesterday").is_err());
        assert!(parse_reply("<think>no idea, maybe</think>\nYes").unwrap());
        let err = parse_reply("I cannot tell.").unwrap_err();
        assert_eq!(err.reply, "I cannot tell.");
        assert!(err.to_string().contains("I cannot tell."));
        assert!(parse_reply("").is_err());
    }

    #[test]
    fn an_unparseable_reply_is_an_incorrect_verdict() {
        let verdict = verdict_from_reply("judge-local", "Maybe.");
        assert!(!verdict.correct);
        assert_eq!(verdict.score, 0.0);
        assert_eq!(verdict.raw, "Maybe.");
        assert!(verdict_from_reply("judge-local", "Yes").correct);
    }

    /// A stand-in server: answers each connection with the next canned response, then stops.
    /// Each request (head and body) is sent back on the channel.
    fn serve(responses: Vec<String>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        );
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for response in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut content_length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            content_length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; content_length];
                let _ = reader.read_exact(&mut body);
                let _ = sender.send(head + &String::from_utf8_lossy(&body));
                let mut stream = reader.into_inner();
                let _ = stream.write_all(response.as_bytes());
                let _ = stream.flush();
            }
        });
        (url, receiver)
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn chat_reply(content: &str) -> String {
        let body = json!({
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
        });
        http_response("200 OK", &body.to_string())
    }

    fn judge(url: &str, api_key_env: Option<&str>, max_retries: u32) -> HttpJudge {
        let config = HttpJudgeConfig {
            url: url.to_string(),
            model: "judge-model".to_string(),
            api_key_env: api_key_env.map(String::from),
            timeout_secs: 2,
            max_retries,
        };
        HttpJudge::new(config, template())
    }

    const GOLDS: &[&str] = &["Denver Broncos"];

    #[test]
    fn http_judge_yes_sends_the_key_from_the_environment() {
        let var = "SEAL_TUI_TEST_JUDGE_KEY_YES_4F2A";
        std::env::set_var(var, "sk-test-4f2a");
        let (url, requests) = serve(vec![chat_reply("Yes.")]);
        let judge = judge(&url, Some(var), 0);
        let verdict = judge.judge("Who won?", GOLDS, "the Broncos").unwrap();
        assert!(verdict.correct);
        assert_eq!(verdict.score, 1.0);
        assert_eq!(verdict.raw, "Yes.");
        assert_eq!(verdict.grader, "judge-http:judge-model");

        let request = requests.recv().unwrap();
        assert!(
            request.starts_with("POST /v1/chat/completions "),
            "{request}"
        );
        let auth = request
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .expect("no Authorization header");
        assert_eq!(
            auth.split_once(':').unwrap().1.trim(),
            "Bearer sk-test-4f2a"
        );
        let body: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["model"], "judge-model");
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("the Broncos"));
        // The config, which may be saved or logged, names the variable and holds no key.
        let saved = serde_json::to_string(judge.config()).unwrap();
        assert!(!saved.contains("sk-test-4f2a"));
    }

    #[test]
    fn http_judge_no_is_incorrect_and_no_key_sends_no_header() {
        let (url, requests) = serve(vec![chat_reply("**No**")]);
        let verdict = judge(&url, None, 0)
            .judge("Who won?", GOLDS, "Panthers")
            .unwrap();
        assert!(!verdict.correct);
        assert_eq!(verdict.raw, "**No**");
        let request = requests.recv().unwrap();
        assert!(!request.to_ascii_lowercase().contains("authorization:"));
    }

    #[test]
    fn http_judge_missing_key_variable_is_an_error() {
        let err = judge(
            "http://127.0.0.1:9/x",
            Some("SEAL_TUI_TEST_UNSET_KEY_9C1D"),
            0,
        )
        .judge("q", GOLDS, "a")
        .unwrap_err();
        assert!(
            matches!(&err, JudgeError::MissingApiKey { var } if var == "SEAL_TUI_TEST_UNSET_KEY_9C1D")
        );
    }

    #[test]
    fn http_judge_server_error_is_retried_then_reported() {
        let error = http_response("500 Internal Server Error", r#"{"error":"model crashed"}"#);
        let (url, requests) = serve(vec![error.clone(), error]);
        let err = judge(&url, None, 1).judge("q", GOLDS, "a").unwrap_err();
        match &err {
            JudgeError::Status { status, body, .. } => {
                assert_eq!(*status, 500);
                assert!(body.contains("model crashed"));
            }
            other => panic!("expected an HTTP status error, got {other:?}"),
        }
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        assert_eq!(requests.try_iter().count(), 2);
    }

    #[test]
    fn http_judge_client_error_is_not_retried() {
        let (url, requests) = serve(vec![http_response(
            "400 Bad Request",
            r#"{"error":"unknown model"}"#,
        )]);
        let err = judge(&url, None, 3).judge("q", GOLDS, "a").unwrap_err();
        assert!(
            matches!(&err, JudgeError::Status { status: 400, body, .. } if body.contains("unknown model")),
            "{err:?}"
        );
        assert_eq!(requests.try_iter().count(), 1);
    }

    #[test]
    fn a_key_echoed_in_a_401_is_not_in_the_error() {
        let var = "SEAL_TUI_TEST_JUDGE_KEY_ECHO_7B1E";
        std::env::set_var(var, "sk-echo-7b1e-secret");
        let (url, _requests) = serve(vec![http_response(
            "401 Unauthorized",
            r#"{"error":"Incorrect API key provided: sk-echo-7b1e-secret"}"#,
        )]);
        let err = judge(&url, Some(var), 3)
            .judge("q", GOLDS, "a")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("HTTP 401") && !text.contains("sk-echo-7b1e-secret"),
            "{text}"
        );
    }

    #[test]
    fn http_judge_malformed_reply_is_an_error() {
        let (url, _requests) = serve(vec![
            http_response("200 OK", "<html>not json</html>"),
            http_response("200 OK", r#"{"choices":[]}"#),
        ]);
        let judge = judge(&url, None, 0);
        let err = judge.judge("q", GOLDS, "a").unwrap_err();
        assert!(
            matches!(&err, JudgeError::MalformedReply { problem, .. } if problem == "not JSON"),
            "{err:?}"
        );
        let err = judge.judge("q", GOLDS, "a").unwrap_err();
        assert!(
            err.to_string().contains("choices[0].message.content"),
            "{err}"
        );
    }

    #[test]
    fn http_judge_times_out_on_a_silent_server() {
        // Bound but never accepting: the connection opens and no reply ever comes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        );
        let mut config = judge(&url, None, 0).config().clone();
        config.timeout_secs = 1;
        let started = std::time::Instant::now();
        let err = HttpJudge::new(config, template())
            .judge("q", GOLDS, "a")
            .unwrap_err();
        assert!(
            matches!(err, JudgeError::Timeout { secs: 1, .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener);
    }
}
