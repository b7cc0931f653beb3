//! Tokenizers for the models we load: byte-level BPE, built either from a GGUF file's metadata
//! or from a Hugging Face `tokenizer.json`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// Qwen2's pre-tokenizer pattern: letters, single digits, punctuation runs, newlines, spaces.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's: the same, but digits in groups of up to three.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    /// Whether plain (non-chat) text should start with the BOS token.
    pub add_bos: bool,
}

/// What a GGUF file says about its tokenizer.
pub struct GgufVocab<'a> {
    pub model: &'a str,
    pub pre: Option<&'a str>,
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub token_types: Option<Vec<i32>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: Option<bool>,
}

impl Tokenizer {
    /// Builds a byte-level BPE tokenizer from GGUF metadata. The pre-tokenizer follows
    /// `tokenizer.ggml.pre`, the name llama.cpp gives each family's splitting rules.
    pub fn from_gguf(v: GgufVocab<'_>) -> Result<Tokenizer> {
        if v.model != "gpt2" {
            bail!(
                "tokenizer model {:?} is not supported; seal-tui reads byte-level BPE (\"gpt2\") \
                 tokenizers, as Llama 3, Qwen2 and SmolLM2 use",
                v.model
            );
        }
        let vocab: tokenizers::models::bpe::Vocab = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = v
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| anyhow!("malformed merge {m:?} (expected two tokens)"))
            })
            .collect::<Result<Vec<_>>>()?;
        let pre = v.pre.unwrap_or("default");
        let llama3 = matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe");
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(llama3)
            .build()
            .map_err(|e| anyhow!("cannot build the BPE model: {e}"))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level_only = ByteLevel::new(false, false, false);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            // SmolLM's tokenizer splits every digit on its own before byte-level BPE.
            "smollm" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            "qwen2" => {
                inner.with_normalizer(Some(NFC));
                split_then_byte_level(QWEN2_PATTERN, byte_level_only)?
            }
            _ if llama3 => split_then_byte_level(LLAMA3_PATTERN, byte_level_only)?,
            // GPT-2's own regex, which ByteLevel applies when use_regex is on.
            "default" | "gpt2" | "gpt-2" => ByteLevel::new(false, true, true).into(),
            // Another family's rules would split text differently from how the model was
            // trained; a guess would give plausible but wrong token ids.
            other => bail!(
                "pre-tokenizer {other:?} (tokenizer.ggml.pre) is not supported; seal-tui knows \
                 smollm, qwen2, llama-bpe/llama3/smaug-bpe and gpt2. A Hugging Face folder of the \
                 same model (tokenizer.json) works"
            ),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        if let Some(types) = &v.token_types {
            // Types 3 (control) and 4 (user-defined) are the chat markup tokens; they must
            // match as wholes, never be split into bytes.
            let special: Vec<AddedToken> = types
                .iter()
                .enumerate()
                .filter(|(_, &t)| t == 3 || t == 4)
                .filter_map(|(i, _)| v.tokens.get(i))
                .map(|t| AddedToken::from(t.clone(), true))
                .collect();
            inner.add_special_tokens(&special);
        }
        let n = v.tokens.len() as u32;
        for (name, id) in [("bos", v.bos_id), ("eos", v.eos_id), ("padding", v.pad_id)] {
            if let Some(id) = id {
                if id >= n {
                    bail!("{name} token id {id} is outside the vocabulary of {n} tokens");
                }
            }
        }
        Ok(Tokenizer {
            inner,
            bos_id: v.bos_id,
            eos_ids: v.eos_id.into_iter().collect(),
            pad_id: v.pad_id,
            add_bos: v.add_bos.unwrap_or(false),
        })
    }

    /// Loads `tokenizer.json` from a Hugging Face model folder, with the special tokens named in
    /// `tokenizer_config.json` and `generation_config.json` when present.
    pub fn from_hf_folder(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            bail!(
                "{}: tokenizer.json is missing; a model folder needs its tokenizer",
                dir.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("{}: not a valid tokenizer: {e}", path.display()))?;
        let config = read_json_if_exists(&dir.join("tokenizer_config.json"))?;
        let generation = read_json_if_exists(&dir.join("generation_config.json"))?;
        let token_id = |value: Option<&serde_json::Value>| -> Option<u32> {
            let name = match value? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o.get("content")?.as_str()?.to_string(),
                _ => return None,
            };
            inner.token_to_id(&name)
        };
        let bos_id = token_id(config.as_ref().and_then(|c| c.get("bos_token")));
        let mut eos_ids: Vec<u32> = token_id(config.as_ref().and_then(|c| c.get("eos_token")))
            .into_iter()
            .collect();
        match generation.as_ref().and_then(|g| g.get("eos_token_id")) {
            Some(serde_json::Value::Number(n)) => eos_ids.extend(n.as_u64().map(|x| x as u32)),
            Some(serde_json::Value::Array(a)) => {
                eos_ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
            }
            _ => {}
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let pad_id = token_id(config.as_ref().and_then(|c| c.get("pad_token")));
        // Whether the tokenizer's own post-processor prepends BOS decides plain-text encoding.
        let add_bos = match config.as_ref().and_then(|c| c.get("add_bos_token")) {
            Some(v) => v.as_bool().unwrap_or(false),
            None => match (bos_id, inner.encode_fast("a", true)) {
                (Some(bos), Ok(enc)) => enc.get_ids().first() == Some(&bos),
                _ => false,
            },
        };
        Ok(Tokenizer {
            inner,
            bos_id,
            eos_ids,
            pad_id,
            add_bos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text; special tokens written in the text (chat markup) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes plain text as a sequence start, with BOS where the model expects it.
    pub fn encode_document(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Decodes ids to text, keeping special tokens out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("cannot decode tokens: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Writes `tokenizer.json`, so a merged model saved as a folder carries its tokenizer.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }
}

fn split_then_byte_level(pattern: &str, byte_level: ByteLevel) -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(pattern.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("bad pre-tokenizer pattern: {e}"))?;
    Ok(Sequence::new(vec![split.into(), byte_level.into()]).into())
}

fn read_json_if_exists(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", path.display()))?;
    Ok(Some(value))
}

/// Turns a stream of token ids into text pieces as they arrive. Byte-level BPE can split a
/// UTF-8 character across tokens, so text is released only once it decodes cleanly.
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> StreamDecoder {
        StreamDecoder {
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a token and returns the new text it completes, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return Ok(String::new());
        }
        let piece = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        Ok(piece)
    }

    /// Whatever text has not been released yet, even if it ends mid-character.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let text = tokenizer.decode(&self.ids)?;
        let rest = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        Ok(rest)
    }

    pub fn text(&self, tokenizer: &Tokenizer) -> Result<String> {
        tokenizer.decode(&self.ids)
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
