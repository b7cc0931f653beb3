//! The LLM judge: the judge prompt (`prompts/judge.toml`), reading a yes/no reply, and a judge
//! behind any OpenAI-compatible `/v1/chat/completions` endpoint. A judge running on our own
//! engine uses [`JudgeTemplate::render`] and [`verdict_from_reply`] around its own sampling.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::grading::{Grader, Verdict};
use super::templates::{PromptFile, TemplateError, JUDGE_TEMPLATE_FILE};
use crate::engine::Prompt;

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("the judge replied neither yes nor no: {reply:?}")]
    Unparseable { reply: String },
    #[error("the judge's API key variable `{var}` is not set or empty")]
    MissingApiKey { var: String },
    #[error("{url}: no reply within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: request failed: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: malformed reply ({problem}): {body}")]
    MalformedReply {
        url: String,
        problem: String,
        body: String,
    },
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
pub fn parse_reply(reply: &str) -> Result<bool, JudgeError> {
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
        .ok_or_else(|| JudgeError::Unparseable {
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

/// Longest stretch of an error body kept in an error message.
const ERROR_BODY_LIMIT: usize = 500;

pub struct HttpJudge {
    config: HttpJudgeConfig,
    template: JudgeTemplate,
    agent: ureq::Agent,
}

impl HttpJudge {
    pub fn new(config: HttpJudgeConfig, template: JudgeTemplate) -> Self {
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(config.timeout_secs.max(1))))
            // Error statuses are read here, so their bodies can go into the error.
            .http_status_as_error(false);
        // A proxy from the environment is meant for the outside world; a judge served on this
        // machine must be reached directly, and ureq does not exempt loopback by itself.
        if is_loopback_url(&config.url) {
            builder = builder.proxy(None);
        }
        let agent = builder.build().new_agent();
        Self {
            config,
            template,
            agent,
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

    /// The whole time one judgement may take, retries and their pauses included.
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs(
            self.config.timeout_secs.max(1) * (u64::from(self.config.max_retries) + 1),
        )
    }

    /// Sends one chat completion, retrying transient failures (with a growing pause, inside
    /// [`Self::time_limit`]), and returns the reply text.
    pub fn complete(&self, prompt: &Prompt) -> Result<String, JudgeError> {
        let key = api_key(&self.config)?;
        let mut messages = Vec::new();
        if let Some(system) = &prompt.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt.user}));
        let body = json!({
            "model": self.config.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.template.chat.max_tokens,
            "stream": false,
        });
        let started = Instant::now();
        let limit = self.time_limit();
        let mut attempt = 0;
        loop {
            let left = limit.saturating_sub(started.elapsed());
            let result = self.send_once(&body, key.as_deref(), left.max(Duration::from_secs(1)));
            match result {
                Err(err) if attempt < self.config.max_retries && is_transient(&err) => {
                    let pause = Duration::from_millis(500 << attempt.min(4));
                    if started.elapsed() + pause >= limit {
                        return Err(err);
                    }
                    tracing::warn!(
                        "judge attempt {} of {} failed: {err}; trying again in {:.1} s",
                        attempt + 1,
                        self.config.max_retries + 1,
                        pause.as_secs_f64()
                    );
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn send_once(
        &self,
        body: &Value,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<String, JudgeError> {
        let url = &self.config.url;
        let shown_url = redact_url(url);
        let timeout = timeout.min(Duration::from_secs(self.config.timeout_secs.max(1)));
        let mut request = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .send_json(body)
            .map_err(|err| self.transport_error(err, key))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|err| self.transport_error(err, key))?;
        // A server may echo the key (or the whole Authorization header) in an error body; what
        // goes into an error may be recorded, so the key never does.
        let shown = redact(&truncate(&text), key);
        if !(200..300).contains(&status) {
            return Err(JudgeError::Status {
                url: shown_url,
                status,
                body: shown,
            });
        }
        let malformed = |problem: &str| JudgeError::MalformedReply {
            url: shown_url.clone(),
            problem: problem.to_string(),
            body: shown.clone(),
        };
        let reply: Value = serde_json::from_str(&text).map_err(|_| malformed("not JSON"))?;
        reply
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| malformed("no `choices[0].message.content` string"))
    }

    fn transport_error(&self, err: ureq::Error, key: Option<&str>) -> JudgeError {
        match err {
            ureq::Error::Timeout(_) => JudgeError::Timeout {
                url: redact_url(&self.config.url),
                secs: self.config.timeout_secs.max(1),
            },
            other => JudgeError::Transport {
                url: redact_url(&self.config.url),
                message: redact(&other.to_string(), key),
            },
        }
    }
}

/// The API key from the variable the configuration names (none when it names none). Read at
/// call time and dropped right after, so the key lives in no struct that could be saved.
fn api_key(config: &HttpJudgeConfig) -> Result<Option<String>, JudgeError> {
    let Some(var) = &config.api_key_env else {
        return Ok(None);
    };
    std::env::var(var)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .map(Some)
        .ok_or_else(|| JudgeError::MissingApiKey { var: var.clone() })
}

/// Checks, before a run starts, that the judge's key variable (if one is named) is set.
pub fn check_api_key(config: &HttpJudgeConfig) -> Result<(), JudgeError> {
    api_key(config).map(|_| ())
}

/// What is shown in place of a secret.
const REDACTED: &str = "[redacted]";

/// `text` with the key, and any bearer token, replaced by [`REDACTED`].
fn redact(text: &str, key: Option<&str>) -> String {
    let mut out = match key {
        // A very short "key" would blank out ordinary words; such a key is no secret anyway.
        Some(k) if k.len() >= 4 => text.replace(k, REDACTED),
        _ => text.to_string(),
    };
    let mut from = 0;
    while let Some(i) = out[from..].find("Bearer ").map(|i| i + from) {
        let start = i + "Bearer ".len();
        let end = out[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}'))
            .map_or(out.len(), |e| start + e);
        if end > start && &out[start..end] != REDACTED {
            out.replace_range(start..end, REDACTED);
            from = start + REDACTED.len();
        } else {
            from = end;
        }
    }
    out
}

/// The URL with any `user:password@` part hidden.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_transient(err: &JudgeError) -> bool {
    match err {
        JudgeError::Timeout { .. } | JudgeError::Transport { .. } => true,
        JudgeError::Status { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(ERROR_BODY_LIMIT) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

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
        assert!(matches!(err, JudgeError::Unparseable { .. }));
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

    #[test]
    fn secrets_are_redacted_from_what_errors_carry() {
        let body = r#"{"error":"invalid key sk-live-123456","header":"Bearer sk-live-123456"}"#;
        let shown = redact(body, Some("sk-live-123456"));
        assert!(!shown.contains("sk-live-123456"), "{shown}");
        assert!(shown.contains("invalid key [redacted]"), "{shown}");
        let shown = redact(
            "got Authorization: Bearer abc.def-ghi, expected another",
            None,
        );
        assert_eq!(
            shown,
            "got Authorization: Bearer [redacted], expected another"
        );
        assert_eq!(redact("Bearer ", None), "Bearer ");
        assert_eq!(
            redact_url("http://me:pw@127.0.0.1:8/v1/chat/completions"),
            "http://[redacted]@127.0.0.1:8/v1/chat/completions"
        );
        assert_eq!(redact_url("http://h/x@y"), "http://h/x@y");
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
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:8000/v1/chat/completions"));
        assert!(is_loopback_url("http://localhost/v1/chat/completions"));
        assert!(is_loopback_url("http://[::1]:8080/v1/chat/completions"));
        assert!(!is_loopback_url(
            "https://judge.example/v1/chat/completions"
        ));
        assert!(!is_loopback_url("not a url"));
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
