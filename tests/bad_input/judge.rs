//! HTTP judges that misbehave, served by a real local server: a refused key (echoed back), a
//! refused connection, a judge that never replies, errors then success, malformed replies.
//! A judge that cannot grade stops a headless run with a non-zero exit and grades nothing; a
//! key never reaches the log, the diagnostic log or the terminal.

use super::fixtures::{config_with, events, gguf, s};
use super::lab::{case, Case, Lab};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the stand-in judge does with one request.
#[derive(Clone)]
enum Reply {
    Http(&'static str, String),
    /// Reads the request and never answers.
    Silent,
    /// Reads the request and closes the connection.
    Hangup,
}

fn http(status: &'static str, body: &str) -> Reply {
    Reply::Http(status, body.to_string())
}

fn chat(content: &str) -> Reply {
    http(
        "200 OK",
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
            .to_string(),
    )
}

/// A judge on 127.0.0.1 answering request n with `script[n]`, and the last entry for every
/// request after. Returns its URL and a request counter.
fn serve(script: Vec<Reply>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let reply = script[n.min(script.len() - 1)].clone();
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = reader.into_inner();
            match reply {
                Reply::Http(status, body) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                // Kept open, so the client waits for its own time limit.
                Reply::Silent => held.push(stream),
                Reply::Hangup => drop(stream),
            }
        }
    });
    (url, count)
}

/// A judge grader table for the configuration.
fn grader(url: &str, key_env: Option<&str>, retries: u32) -> String {
    let key = key_env.map_or(String::new(), |k| format!(", api_key_env = \"{k}\""));
    format!(
        "{{ kind = \"judge-http\", url = \"{url}\", model = \"judge\", timeout_secs = 1, max_retries = {retries}{key} }}"
    )
}

fn judged_run(lab: &Lab, grader: &str, key: Option<(&str, &str)>) -> super::lab::Out {
    let cfg = config_with(lab, &[("knowledge.grader", Some(grader))]);
    let mut run = lab
        .cmd(&["run", "--headless", "--config", &s(&cfg)])
        .timeout(90);
    if let Some((k, v)) = key {
        run = run.env(k, v);
    }
    run.go()
}

/// A run stopped by its judge: non-zero, the reason said, nothing graded in the log.
fn stopped_by_judge(lab: &Lab, out: &super::lab::Out, phrases: &[&str]) {
    let mut all = vec!["grading failed"];
    all.extend_from_slice(phrases);
    out.fails(&all).says(&["continue with: seal-tui resume"]);
    let log = std::fs::read_to_string(events(&lab.session())).unwrap();
    assert!(
        !log.contains("\"baseline_scored\""),
        "something was graded:\n{log}"
    );
    assert!(log.contains("\"failed\""), "no failure recorded:\n{log}");
}

pub fn cases() -> Vec<Case> {
    vec![
        case("a judge that refuses the key and echoes it back", |lab| {
            let secret = "sk-test-0123456789abcdef";
            let (url, count) = serve(vec![http(
                "401 Unauthorized",
                &format!("{{\"error\":\"Incorrect API key provided: {secret}\"}}"),
            )]);
            let out = judged_run(
                lab,
                &grader(&url, Some("SEAL_TEST_JUDGE_KEY"), 2),
                Some(("SEAL_TEST_JUDGE_KEY", secret)),
            );
            stopped_by_judge(lab, &out, &["HTTP 401", "[redacted]"]);
            out.never_says(&[secret]);
            // A 401 is not retried.
            assert_eq!(count.load(Ordering::SeqCst), 1);
            let dir = lab.session();
            for file in ["events.jsonl", "seal.log", "header.json"] {
                let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                assert!(!text.contains(secret), "{file} holds the key:\n{text}");
            }
        }),
        case("a judge that refuses connections", |lab| {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
            let out = judged_run(lab, &grader(&url, None, 1), None);
            stopped_by_judge(lab, &out, &["request failed", &format!("127.0.0.1:{port}")]);
        }),
        case("a judge that never replies (bounded time)", |lab| {
            let (url, count) = serve(vec![Reply::Silent]);
            let out = judged_run(lab, &grader(&url, None, 1), None);
            stopped_by_judge(lab, &out, &["no reply within 1 s"]);
            out.within(60.0);
            assert_eq!(count.load(Ordering::SeqCst), 2, "one try and one retry");
        }),
        case("a judge that hangs up without replying", |lab| {
            let (url, _) = serve(vec![Reply::Hangup]);
            let out = judged_run(lab, &grader(&url, None, 0), None);
            stopped_by_judge(lab, &out, &["request failed"]);
        }),
        case("a judge that fails twice with 500, then answers", |lab| {
            let (url, count) = serve(vec![
                http("500 Internal Server Error", "{\"error\":\"busy\"}"),
                http("500 Internal Server Error", "{\"error\":\"busy\"}"),
                chat("Yes"),
            ]);
            judged_run(lab, &grader(&url, None, 2), None).ok();
            assert!(count.load(Ordering::SeqCst) > 3);
            let log = std::fs::read_to_string(events(&lab.session())).unwrap();
            assert!(log.contains("\"run_finished\""));
            assert!(
                log.contains("\"raw\":\"Yes\""),
                "the judge's verdicts are recorded"
            );
        }),
        case("a judge that is always rate-limited", |lab| {
            let (url, count) = serve(vec![http(
                "429 Too Many Requests",
                "{\"error\":\"slow down\"}",
            )]);
            let out = judged_run(lab, &grader(&url, None, 1), None);
            stopped_by_judge(lab, &out, &["HTTP 429", "slow down"]);
            assert_eq!(count.load(Ordering::SeqCst), 2);
        }),
        case("a judge that replies with HTML", |lab| {
            let (url, _) = serve(vec![http("200 OK", "<html>gateway</html>")]);
            let out = judged_run(lab, &grader(&url, None, 1), None);
            stopped_by_judge(lab, &out, &["malformed reply", "not JSON"]);
        }),
        case("a judge whose reply has no choices", |lab| {
            let (url, _) = serve(vec![http("200 OK", "{\"choices\": []}")]);
            let out = judged_run(lab, &grader(&url, None, 1), None);
            stopped_by_judge(lab, &out, &["choices[0].message.content"]);
        }),
        case(
            "a judge that answers neither yes nor no (graded wrong, reply kept)",
            |lab| {
                let (url, _) = serve(vec![chat("Perhaps.")]);
                judged_run(lab, &grader(&url, None, 0), None).ok();
                let log = std::fs::read_to_string(events(&lab.session())).unwrap();
                assert!(log.contains("\"raw\":\"Perhaps.\""), "{log}");
            },
        ),
        case("a judge key variable that is set but empty", |lab| {
            let out = judged_run(
                lab,
                &grader(
                    "http://127.0.0.1:9/v1/chat/completions",
                    Some("SEAL_TEST_EMPTY_KEY"),
                    0,
                ),
                Some(("SEAL_TEST_EMPTY_KEY", "  ")),
            );
            out.fails(&["SEAL_TEST_EMPTY_KEY", "not set or empty"]);
            assert!(lab.session_dirs().is_empty());
        }),
        case("eval with a judge that refuses the key", |lab| {
            let (url, _) = serve(vec![http("401 Unauthorized", "{\"error\":\"no\"}")]);
            let results = lab.path("results.json");
            lab.cmd(&[
                "eval",
                "-m",
                &s(&gguf()),
                "--passages",
                "1",
                "--conditions",
                "base",
                "--grader",
                "judge-http",
                "--judge-url",
                &url,
                "--judge-model",
                "judge",
                "--judge-key-env",
                "SEAL_TEST_JUDGE_KEY",
                "--out",
                &s(&results),
            ])
            .env("SEAL_TEST_JUDGE_KEY", "sk-abc-123456")
            .go()
            .fails(&["grading failed", "HTTP 401"])
            .never_says(&["sk-abc-123456"]);
            assert!(!results.exists(), "results were written");
        }),
        case("eval with a judge key variable that is unset", |lab| {
            lab.run(&[
                "eval",
                "-m",
                &s(&gguf()),
                "--grader",
                "judge-http",
                "--judge-url",
                "http://127.0.0.1:9/v1/chat/completions",
                "--judge-model",
                "judge",
                "--judge-key-env",
                "SEAL_TEST_NEVER_SET_KEY",
            ])
            .fails(&["--judge-key-env", "SEAL_TEST_NEVER_SET_KEY", "not set"]);
        }),
    ]
}
