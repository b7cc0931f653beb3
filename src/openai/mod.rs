//! The OpenAI-compatible HTTP protocol, as vLLM, llama.cpp's llama-server, mistral.rs and
//! OpenAI itself speak it: chat and plain completions, streamed as server-sent events or not,
//! and vLLM's runtime LoRA loading (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`), which
//! lets a server answer with an adapter written after it started.
//!
//! An API key is read from the environment variable the configuration names, at the moment of
//! each request, and is never kept in a value that could be saved or logged. Knows nothing of
//! SEAL.

mod sse;

use crate::record::config::{HttpJudge, InferenceSection};
use serde_json::{json, Value};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest stretch of an error body kept in an error message.
const ERROR_BODY_LIMIT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the API key variable `{var}` is not set or empty")]
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
    #[error("the request was cancelled")]
    Cancelled,
}

impl Error {
    /// Worth another attempt: the server was busy, failed, or could not be reached.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Transport { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Where a server is and how to talk to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The OpenAI base, ending in `/v1` (or wherever the server roots its API).
    pub base_url: String,
    pub model: String,
    pub api_key_env: Option<String>,
    pub timeout_secs: u64,
    pub max_retries: u32,
}

impl Endpoint {
    /// The base URL of a URL given either as the base or as a full endpoint
    /// (`.../v1/chat/completions`, `.../v1/completions`).
    pub fn base_of(url: &str) -> String {
        let url = url.trim().trim_end_matches('/');
        for suffix in ["/chat/completions", "/completions"] {
            if let Some(base) = url.strip_suffix(suffix) {
                return base.to_string();
            }
        }
        url.to_string()
    }

    pub fn from_inference(s: &InferenceSection) -> Endpoint {
        Endpoint {
            base_url: Endpoint::base_of(&s.url),
            model: s.model.clone(),
            api_key_env: s.api_key_env.clone(),
            timeout_secs: s.timeout_secs,
            max_retries: s.max_retries,
        }
    }

    pub fn from_judge(j: &HttpJudge) -> Endpoint {
        Endpoint {
            base_url: Endpoint::base_of(&j.url),
            model: j.model.clone(),
            api_key_env: j.api_key_env.clone(),
            timeout_secs: j.timeout_secs,
            max_retries: j.max_retries,
        }
    }
}

/// A chat turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// What is asked: a conversation (the server applies its chat template) or a prompt already in
/// the model's markup (sent as is).
#[derive(Clone, Debug, PartialEq)]
pub enum Ask<'a> {
    Chat(&'a [Message]),
    Completion(&'a str),
}

/// Sampling settings, as the API names them.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    /// Servers that honour it (vLLM, llama-server) then sample reproducibly.
    pub seed: Option<u64>,
}

/// A streamed reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Streamed {
    pub text: String,
    /// Tokens generated, as the server counted them (or the pieces received, if it did not).
    pub tokens: usize,
    pub finish_reason: Option<String>,
}

pub struct Client {
    endpoint: Endpoint,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(endpoint.timeout_secs.max(1))))
            // Error statuses are read here, so their bodies can go into the error.
            .http_status_as_error(false);
        // A proxy from the environment is meant for the outside world; a server on this machine
        // must be reached directly, and ureq does not exempt loopback by itself.
        if is_loopback_url(&endpoint.base_url) {
            builder = builder.proxy(None);
        }
        Client {
            agent: builder.build().new_agent(),
            endpoint,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.endpoint.base_url.trim_end_matches('/'))
    }

    fn body(&self, ask: &Ask<'_>, sampling: &Sampling, model: &str, stream: bool) -> Value {
        let mut body = match ask {
            Ask::Chat(messages) => json!({
                "model": model,
                "messages": messages
                    .iter()
                    .map(|m| json!({"role": m.role, "content": m.content}))
                    .collect::<Vec<_>>(),
            }),
            Ask::Completion(prompt) => json!({"model": model, "prompt": prompt}),
        };
        body["temperature"] = json!(sampling.temperature);
        body["top_p"] = json!(sampling.top_p);
        body["max_tokens"] = json!(sampling.max_tokens);
        body["stream"] = json!(stream);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(seed) = sampling.seed {
            // JSON readers of some servers take seeds as signed 64-bit numbers.
            body["seed"] = json!(seed & (i64::MAX as u64));
        }
        body
    }

    fn path_of(ask: &Ask<'_>) -> &'static str {
        match ask {
            Ask::Chat(_) => "chat/completions",
            Ask::Completion(_) => "completions",
        }
    }

    /// Sends one POST; returns the response of a 2xx status, an error for any other. An error
    /// never carries the key: a server may echo it (or the whole Authorization header) in its
    /// body, and errors are recorded.
    fn post(&self, path: &str, body: &Value) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let url = self.url(path);
        let shown_url = redact_url(&url);
        let key = api_key(self.endpoint.api_key_env.as_deref())?;
        let mut request = self.agent.post(&url);
        if let Some(key) = &key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .send_json(body)
            .map_err(|e| self.transport(&shown_url, e, key.as_deref()))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(Error::Status {
                url: shown_url,
                status,
                body: redact(&truncate(&text), key.as_deref()),
            });
        }
        Ok(response)
    }

    fn transport(&self, url: &str, err: ureq::Error, key: Option<&str>) -> Error {
        match err {
            ureq::Error::Timeout(_) => Error::Timeout {
                url: url.to_string(),
                secs: self.endpoint.timeout_secs.max(1),
            },
            other => Error::Transport {
                url: url.to_string(),
                message: redact(&other.to_string(), key),
            },
        }
    }

    /// The whole time one request may take, its retries and their pauses included.
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs(
            self.endpoint.timeout_secs.max(1) * (u64::from(self.endpoint.max_retries) + 1),
        )
    }

    /// Repeats `f` after transient failures, with a growing pause, up to the endpoint's retries
    /// and within [`Self::time_limit`]: a server that is down ends in an error in bounded time,
    /// never in a silent wait.
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        let started = std::time::Instant::now();
        let limit = self.time_limit();
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if attempt < self.endpoint.max_retries && e.is_transient() => {
                    let pause = Duration::from_millis(500 << attempt.min(4));
                    if started.elapsed() + pause >= limit {
                        return Err(e);
                    }
                    tracing::warn!(
                        "attempt {} of {} failed: {e}; trying again in {:.1} s",
                        attempt + 1,
                        self.endpoint.max_retries + 1,
                        pause.as_secs_f64()
                    );
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// A whole reply at once (the judge's use).
    pub fn complete(&self, ask: &Ask<'_>, sampling: &Sampling) -> Result<String, Error> {
        let body = self.body(ask, sampling, &self.endpoint.model, false);
        let path = Self::path_of(ask);
        self.retrying(|| {
            let url = redact_url(&self.url(path));
            let text = self
                .post(path, &body)?
                .body_mut()
                .read_to_string()
                .map_err(|e| self.transport(&url, e, None))?;
            let malformed = |problem: &str| Error::MalformedReply {
                url: url.clone(),
                problem: problem.to_string(),
                body: truncate(&text),
            };
            let reply: Value = serde_json::from_str(&text).map_err(|_| malformed("not JSON"))?;
            let pointer = match ask {
                Ask::Chat(_) => "/choices/0/message/content",
                Ask::Completion(_) => "/choices/0/text",
            };
            reply
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| match ask {
                    Ask::Chat(_) => malformed("no `choices[0].message.content` string"),
                    Ask::Completion(_) => malformed("no `choices[0].text` string"),
                })
        })
    }

    /// A reply streamed as it is generated: `on_piece` sees each piece of text as it arrives.
    /// Failures before the first piece are retried; `cancel` stops reading between pieces.
    pub fn stream(
        &self,
        ask: &Ask<'_>,
        sampling: &Sampling,
        cancel: Option<&AtomicBool>,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<Streamed, Error> {
        let body = self.body(ask, sampling, &self.endpoint.model, true);
        let path = Self::path_of(ask);
        let url = redact_url(&self.url(path));
        let response = self.retrying(|| self.post(path, &body))?;
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut events = sse::Events::default();
        let mut out = Streamed {
            text: String::new(),
            tokens: 0,
            finish_reason: None,
        };
        let mut pieces = 0;
        let mut line = String::new();
        loop {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::Cancelled);
            }
            line.clear();
            let n = reader.read_line(&mut line).map_err(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    Error::Timeout {
                        url: url.clone(),
                        secs: self.endpoint.timeout_secs,
                    }
                } else {
                    Error::Transport {
                        url: url.clone(),
                        message: e.to_string(),
                    }
                }
            })?;
            let data = if n == 0 {
                // A stream may end without the blank line that closes its last event.
                match events.finish() {
                    Some(d) => d,
                    None => break,
                }
            } else {
                match events.push_line(&line) {
                    Some(d) => d,
                    None => continue,
                }
            };
            if data.trim() == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(&data).map_err(|_| Error::MalformedReply {
                url: url.clone(),
                problem: "an event that is not JSON".into(),
                body: truncate(&data),
            })?;
            if let Some(err) = chunk.get("error") {
                return Err(Error::Status {
                    url: url.clone(),
                    status: 500,
                    body: truncate(&err.to_string()),
                });
            }
            let choice = chunk.pointer("/choices/0");
            let piece = choice.and_then(|c| match ask {
                Ask::Chat(_) => c.pointer("/delta/content").and_then(Value::as_str),
                Ask::Completion(_) => c.get("text").and_then(Value::as_str),
            });
            if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                pieces += 1;
                out.text.push_str(piece);
                on_piece(piece);
            }
            if let Some(reason) = choice
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str)
            {
                out.finish_reason = Some(reason.to_string());
            }
            if let Some(n) = chunk
                .pointer("/usage/completion_tokens")
                .and_then(Value::as_u64)
            {
                out.tokens = n as usize;
            }
            if n == 0 {
                break;
            }
        }
        if out.tokens == 0 {
            out.tokens = pieces;
        }
        Ok(out)
    }

    /// vLLM's runtime LoRA loading: the server reads the PEFT adapter folder at `path` (a path
    /// the server can see) and serves it as the model `name`.
    pub fn load_lora_adapter(&self, name: &str, path: &str) -> Result<(), Error> {
        let body = json!({"lora_name": name, "lora_path": path});
        self.retrying(|| self.post("load_lora_adapter", &body).map(|_| ()))
    }

    pub fn unload_lora_adapter(&self, name: &str) -> Result<(), Error> {
        let body = json!({"lora_name": name});
        self.retrying(|| self.post("unload_lora_adapter", &body).map(|_| ()))
    }

    /// This client, asking for another model the server serves (a loaded adapter's name).
    pub fn for_model(&self, model: &str) -> Client {
        Client {
            endpoint: Endpoint {
                model: model.to_string(),
                ..self.endpoint.clone()
            },
            agent: self.agent.clone(),
        }
    }
}

/// The API key from the variable `var` names (none when it names none). Read at the moment of
/// use and dropped right after, so the key lives in no value that could be saved.
pub fn api_key(var: Option<&str>) -> Result<Option<String>, Error> {
    let Some(var) = var else {
        return Ok(None);
    };
    std::env::var(var)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .map(Some)
        .ok_or_else(|| Error::MissingApiKey { var: var.into() })
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

pub fn is_loopback_url(url: &str) -> bool {
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

fn truncate(text: &str) -> String {
    match text.char_indices().nth(ERROR_BODY_LIMIT) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_from_either_form() {
        for url in [
            "http://h:1/v1",
            "http://h:1/v1/",
            "http://h:1/v1/chat/completions",
            "http://h:1/v1/completions",
        ] {
            assert_eq!(Endpoint::base_of(url), "http://h:1/v1", "{url}");
        }
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
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:8000/v1/chat/completions"));
        assert!(is_loopback_url("http://localhost/v1"));
        assert!(is_loopback_url("http://[::1]:8080/v1"));
        assert!(!is_loopback_url("https://judge.example/v1"));
        assert!(!is_loopback_url("not a url"));
    }

    #[test]
    fn request_bodies_name_the_model_and_the_sampling() {
        let client = Client::new(Endpoint {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api_key_env: None,
            timeout_secs: 1,
            max_retries: 0,
        });
        let sampling = Sampling {
            temperature: 0.5,
            top_p: 0.9,
            max_tokens: 7,
            seed: Some(u64::MAX),
        };
        let messages = [Message {
            role: "user",
            content: "hi".into(),
        }];
        let chat = client.body(&Ask::Chat(&messages), &sampling, "m", true);
        assert_eq!(chat["messages"][0]["content"], "hi");
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["seed"], json!(i64::MAX as u64));
        let plain = client.body(&Ask::Completion("<p>"), &sampling, "m", false);
        assert_eq!(plain["prompt"], "<p>");
        assert!(plain.get("stream_options").is_none());
        assert_eq!(Client::path_of(&Ask::Completion("x")), "completions");
    }
}
