//! vLLM's runtime LoRA loading, client side (`openai::Client::load_lora_adapter`), against a
//! small OpenAI-compatible server of ours that really loads the adapter into our engine and
//! answers with it: an adapter written after the server started is served by name, its
//! answers are the adapted model's, and the served policy of a later round is the rounds'
//! updates stacked into one adapter.

mod common;

use common::{load, scratch, tiny_gguf};
use seal_tui::engine::sample::generate;
use seal_tui::engine::train::{train_lora, Example, TrainConfig};
use seal_tui::engine::SamplingParams;
use seal_tui::engine::{peft, Arch, LoraAdapter, LoraConfig, Model, Prompt, Quantize, Target};
use seal_tui::openai::{self, Ask, Client, Endpoint, Message, Sampling};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What the server saw: every request's path and body.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A minimal OpenAI-compatible server on our engine: `/v1/chat/completions` (plain or
/// streamed), `/v1/completions`, `/v1/load_lora_adapter` and `/v1/unload_lora_adapter`, with
/// vLLM's answers to them (a 404 for a model it does not serve, a 400 for an adapter it
/// cannot load).
struct TestServer {
    base_url: String,
    seen: Seen,
}

fn serve(model: Model, base_name: &str) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let adapters: Arc<Mutex<HashMap<String, LoraAdapter>>> = Arc::default();
    let base_name = base_name.to_string();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (model, adapters, log, base) = (
                model.clone(),
                adapters.clone(),
                log.clone(),
                base_name.clone(),
            );
            std::thread::spawn(move || handle(stream, &model, &adapters, &log, &base));
        }
    });
    TestServer { base_url, seen }
}

fn read_request(stream: &TcpStream) -> Option<(String, Value)> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn respond(mut stream: &TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

fn handle(
    stream: TcpStream,
    model: &Model,
    adapters: &Mutex<HashMap<String, LoraAdapter>>,
    log: &Mutex<Vec<(String, Value)>>,
    base: &str,
) {
    let Some((path, body)) = read_request(&stream) else {
        return;
    };
    log.lock().unwrap().push((path.clone(), body.clone()));
    let error = |status: &str, message: &str| {
        respond(
            &stream,
            status,
            "application/json",
            &json!({"error": {"message": message}}).to_string(),
        )
    };
    match path.as_str() {
        "/v1/load_lora_adapter" => {
            let name = body["lora_name"].as_str().unwrap_or("").to_string();
            let dir = body["lora_path"].as_str().unwrap_or("");
            match peft::load_adapter(Path::new(dir), model) {
                Ok(a) => {
                    adapters.lock().unwrap().insert(name.clone(), a);
                    respond(
                        &stream,
                        "200 OK",
                        "text/plain",
                        &format!("Success: LoRA adapter '{name}' added successfully."),
                    );
                }
                Err(e) => error("400 Bad Request", &format!("{e:#}")),
            }
        }
        "/v1/unload_lora_adapter" => {
            let name = body["lora_name"].as_str().unwrap_or("");
            match adapters.lock().unwrap().remove(name) {
                Some(_) => respond(&stream, "200 OK", "text/plain", "Success"),
                None => error(
                    "404 Not Found",
                    &format!("The lora adapter '{name}' cannot be found."),
                ),
            }
        }
        "/v1/chat/completions" | "/v1/completions" => {
            let name = body["model"].as_str().unwrap_or("");
            let adapter = if name == base {
                None
            } else {
                match adapters.lock().unwrap().get(name) {
                    Some(a) => Some(a.clone()),
                    None => {
                        return error(
                            "404 Not Found",
                            &format!("The model `{name}` does not exist."),
                        )
                    }
                }
            };
            let chat = path.ends_with("chat/completions");
            let ids = if chat {
                let messages = body["messages"].as_array().cloned().unwrap_or_default();
                let system = messages
                    .iter()
                    .find(|m| m["role"] == "system")
                    .and_then(|m| m["content"].as_str())
                    .map(str::to_string);
                let user = messages
                    .iter()
                    .find(|m| m["role"] == "user")
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or("")
                    .to_string();
                model.prompt_ids(&Prompt { system, user }).unwrap()
            } else {
                model
                    .tokenizer
                    .encode(body["prompt"].as_str().unwrap_or(""))
                    .unwrap()
            };
            let params = SamplingParams {
                temperature: body["temperature"].as_f64().unwrap_or(1.0),
                top_p: body["top_p"].as_f64().unwrap_or(1.0),
                max_tokens: body["max_tokens"].as_u64().unwrap_or(16) as usize,
                seed: body["seed"].as_u64().unwrap_or(0),
                stop: Vec::new(),
            };
            let mut pieces = Vec::new();
            let gen = generate(model, adapter.as_ref(), &ids, &params, None, &mut |p| {
                pieces.push(p.to_string())
            })
            .unwrap();
            if body["stream"] == true {
                let mut out = String::new();
                for p in &pieces {
                    let delta = if chat {
                        json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
                    } else {
                        json!({"choices": [{"index": 0, "text": p, "finish_reason": null}]})
                    };
                    out.push_str(&format!("data: {delta}\n\n"));
                }
                let usage =
                    json!({"choices": [], "usage": {"completion_tokens": gen.tokens.len()}});
                out.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
                respond(&stream, "200 OK", "text/event-stream", &out);
            } else {
                let choice = if chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": gen.text}})
                } else {
                    json!({"index": 0, "text": gen.text})
                };
                respond(
                    &stream,
                    "200 OK",
                    "application/json",
                    &json!({"choices": [choice]}).to_string(),
                );
            }
        }
        _ => error("404 Not Found", "no such route"),
    }
}

fn tiny() -> Model {
    load(&tiny_gguf(Arch::Qwen2), Quantize::Off)
}

/// An adapter fitted on one sentence, so the adapted model answers differently.
fn fitted_adapter(model: &Model, seed: u64) -> LoraAdapter {
    let example = Example {
        prompt: Vec::new(),
        completion: model
            .tokenizer
            .encode_document("Varnholt was founded in 1723 by Edda Quillon.")
            .unwrap(),
    };
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V],
        },
        learning_rate: 5e-2,
        epochs: 8,
        seed,
        ..Default::default()
    };
    train_lora(model, &[example], &cfg, None, &mut |_| {})
        .unwrap()
        .adapter
}

fn client(url: &str, model: &str) -> Client {
    Client::new(Endpoint {
        base_url: url.to_string(),
        model: model.to_string(),
        api_key_env: None,
        timeout_secs: 60,
        max_retries: 0,
    })
}

const GREEDY: Sampling = Sampling {
    temperature: 0.0,
    top_p: 1.0,
    max_tokens: 12,
    seed: None,
};

#[test]
fn an_adapter_loaded_at_run_time_answers_as_the_adapted_model() {
    let model = tiny();
    let server = serve(model.clone(), "base");
    let adapter = fitted_adapter(&model, 1);
    let dir = scratch().join("served-adapter");
    peft::save_adapter(&adapter, &dir, &model.info.name).unwrap();

    let question = [Message {
        role: "user",
        content: "Who founded Varnholt?".into(),
    }];
    let in_process = |adapter: Option<&LoraAdapter>| {
        let ids = model
            .prompt_ids(&Prompt::user("Who founded Varnholt?"))
            .unwrap();
        generate(
            &model,
            adapter,
            &ids,
            &SamplingParams::greedy(12),
            None,
            &mut |_| {},
        )
        .unwrap()
        .text
    };
    let base = client(&server.base_url, "base");
    // Before loading, the server does not know the adapter's name.
    let err = base
        .for_model("varnholt")
        .complete(&Ask::Chat(&question), &GREEDY)
        .unwrap_err();
    assert!(
        matches!(err, openai::Error::Status { status: 404, .. }),
        "{err}"
    );
    base.load_lora_adapter("varnholt", dir.to_str().unwrap())
        .unwrap();
    let adapted = base
        .for_model("varnholt")
        .complete(&Ask::Chat(&question), &GREEDY)
        .unwrap();
    assert_eq!(adapted, in_process(Some(&adapter)));
    let unadapted = base.complete(&Ask::Chat(&question), &GREEDY).unwrap();
    assert_eq!(unadapted, in_process(None));
    assert_ne!(adapted, unadapted, "the adapter changed nothing");
    // Streamed, the same answer arrives piece by piece.
    let mut pieces = Vec::new();
    let streamed = base
        .for_model("varnholt")
        .stream(&Ask::Chat(&question), &GREEDY, None, &mut |p| {
            pieces.push(p.to_string())
        })
        .unwrap();
    assert_eq!(streamed.text, adapted);
    assert_eq!(pieces.concat(), adapted);
    assert!(streamed.tokens >= pieces.len() && !pieces.is_empty());

    // A path the server cannot read is its error, said back; unloading forgets the name.
    let err = base
        .load_lora_adapter("broken", "/nonexistent/adapter")
        .unwrap_err();
    assert!(
        matches!(err, openai::Error::Status { status: 400, .. }),
        "{err}"
    );
    base.unload_lora_adapter("varnholt").unwrap();
    assert!(base
        .for_model("varnholt")
        .complete(&Ask::Chat(&question), &GREEDY)
        .is_err());
    let seen = server.seen.lock().unwrap();
    let load = seen
        .iter()
        .find(|(p, _)| p == "/v1/load_lora_adapter")
        .unwrap();
    assert_eq!(load.1["lora_name"], "varnholt");
    assert_eq!(load.1["lora_path"], dir.to_str().unwrap());
}

#[test]
fn the_served_policy_of_a_later_round_is_the_stacked_updates() {
    use seal_tui::record::config::{InferenceBackend, InferenceSection, OpenAiApi};
    use seal_tui::seal::served::Served;
    let model = tiny();
    let server = serve(model.clone(), "base");
    let session = scratch().join("served-session");
    // Two rounds' policy updates, saved where a run saves them.
    let updates: Vec<String> = (1..=2)
        .map(|round| {
            let rel = format!("policy/round-{round}");
            let a = fitted_adapter(&model, round);
            peft::save_adapter(&a, &session.join(&rel), &model.info.name).unwrap();
            rel
        })
        .collect();
    let mut served = Served::new(&InferenceSection {
        backend: InferenceBackend::Openai,
        url: server.base_url.clone(),
        model: "base".into(),
        api: OpenAiApi::Chat,
        policy_lora: true,
        ..Default::default()
    });
    let request = Prompt::user("Write notes on Varnholt.");
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 10,
        ..Default::default()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let sample = |n: usize, served: &mut Served| {
        served
            .sample(
                &session,
                &model,
                &updates[..n],
                &request,
                "",
                &params,
                &cancel,
                &mut |_| {},
            )
            .unwrap()
            .unwrap()
            .text
    };
    // Round 1 asks the base model; rounds 2 and 3 the stack of the updates so far.
    let first = sample(0, &mut served);
    let second = sample(1, &mut served);
    let third = sample(2, &mut served);
    let again = sample(2, &mut served);
    assert_eq!(third, again);
    let ids = model.prompt_ids(&request).unwrap();
    let merged = |n: usize| {
        let adapters: Vec<LoraAdapter> = updates[..n]
            .iter()
            .map(|rel| peft::load_adapter(&session.join(rel), &model).unwrap())
            .collect();
        let stack = LoraAdapter::stacked(&adapters).unwrap();
        generate(&model, Some(&stack), &ids, &params, None, &mut |_| {})
            .unwrap()
            .text
    };
    assert_eq!(second, merged(1));
    assert_eq!(third, merged(2));
    assert_ne!(first, third);
    let seen = server.seen.lock().unwrap();
    let loads: Vec<&Value> = seen
        .iter()
        .filter(|(p, _)| p == "/v1/load_lora_adapter")
        .map(|(_, b)| b)
        .collect();
    // Loaded once per round, the older stack unloaded.
    assert_eq!(loads.len(), 2, "{loads:?}");
    let stacked = Path::new(loads[1]["lora_path"].as_str().unwrap());
    assert!(stacked.ends_with("policy/round-2/stacked"));
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(stacked.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 8, "the stack's rank is the sum of the rounds'");
    assert!(seen.iter().any(|(p, _)| p == "/v1/unload_lora_adapter"));
    let asked: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| p == "/v1/chat/completions")
        .filter_map(|(_, b)| b["model"].as_str())
        .collect();
    assert_eq!(asked[0], "base");
    assert!(
        asked[1].ends_with("policy-1") && asked[2].ends_with("policy-2"),
        "{asked:?}"
    );
}
