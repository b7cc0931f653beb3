//! Self-edits sampled from a served policy (`[inference] backend = "openai"`): vLLM,
//! llama.cpp's llama-server or any OpenAI-compatible server, the reply streamed into the log
//! piece by piece as the engine's own sampling is.
//!
//! A server holds the base model; the policy updates of later rounds reach it as one LoRA
//! adapter (the rounds' updates stacked, see [`LoraAdapter::stacked`]) loaded at run time with
//! vLLM's `/v1/load_lora_adapter` and asked for by its name (`policy_lora = true`).

use crate::engine::sample::SamplingParams;
use crate::engine::{peft, LoraAdapter, Model, Prompt};
use crate::openai::{self, Ask, Client, Endpoint, Message, Sampling};
use crate::record::config::{InferenceSection, OpenAiApi};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// A self-edit as the server wrote it.
#[derive(Debug)]
pub struct Sample {
    pub text: String,
    pub tokens: usize,
}

pub struct Served {
    client: Client,
    api: OpenAiApi,
    policy_lora: bool,
    /// The stacked policy adapter loaded on the server: (updates in it, its name there).
    loaded: Option<(usize, String)>,
}

impl Served {
    pub fn new(s: &InferenceSection) -> Served {
        Served {
            client: Client::new(Endpoint::from_inference(s)),
            api: s.api,
            policy_lora: s.policy_lora,
            loaded: None,
        }
    }

    /// The messages of a request, as the chat API takes them.
    pub fn messages(prompt: &Prompt) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some(system) = &prompt.system {
            out.push(Message {
                role: "system",
                content: system.clone(),
            });
        }
        out.push(Message {
            role: "user",
            content: prompt.user.clone(),
        });
        out
    }

    /// The client that asks for the current policy: the served base model while no update has
    /// been made, else the stacked updates, written beside the last one and loaded once.
    fn policy_client(&mut self, dir: &Path, model: &Model, updates: &[String]) -> Result<Client> {
        if !self.policy_lora || updates.is_empty() {
            return Ok(self.client.for_model(&self.client.endpoint().model));
        }
        if let Some((n, name)) = &self.loaded {
            if *n == updates.len() {
                return Ok(self.client.for_model(name));
            }
        }
        let adapters = updates
            .iter()
            .map(|rel| peft::load_adapter(&dir.join(rel), model))
            .collect::<Result<Vec<_>>>()?;
        let stack = LoraAdapter::stacked(&adapters)?;
        let last = updates.last().map(|r| dir.join(r)).unwrap_or_default();
        let path = std::path::absolute(last.join("stacked"))?;
        peft::save_adapter(&stack, &path, &model.info.name)?;
        let session = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("seal-{session}-policy-{}", updates.len());
        self.client
            .load_lora_adapter(&name, &path.display().to_string())
            .with_context(|| format!("loading the updated policy into the server as {name}"))?;
        if let Some((_, old)) = self.loaded.take() {
            // The server keeps every adapter it loads; the last round's is no longer asked for.
            let _ = self.client.unload_lora_adapter(&old);
        }
        self.loaded = Some((updates.len(), name.clone()));
        Ok(self.client.for_model(&name))
    }

    /// Streams one self-edit. `rendered` is the request in the policy's markup (sent as is to
    /// the completions API). `None`: cancelled.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &mut self,
        dir: &Path,
        model: &Model,
        updates: &[String],
        request: &Prompt,
        rendered: &str,
        params: &SamplingParams,
        cancel: &AtomicBool,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<Option<Sample>> {
        let client = self.policy_client(dir, model, updates)?;
        let messages = Served::messages(request);
        let ask = match self.api {
            OpenAiApi::Chat => Ask::Chat(&messages),
            OpenAiApi::Completions => Ask::Completion(rendered),
        };
        let sampling = Sampling {
            temperature: params.temperature,
            top_p: params.top_p,
            max_tokens: params.max_tokens,
            seed: Some(params.seed),
        };
        match client.stream(&ask, &sampling, Some(cancel), on_piece) {
            Ok(s) => Ok(Some(Sample {
                text: s.text,
                tokens: s.tokens,
            })),
            Err(openai::Error::Cancelled) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context("sampling a self-edit from the server")),
        }
    }
}
