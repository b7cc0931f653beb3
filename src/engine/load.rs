//! Loading a model: a GGUF file (weights and tokenizer in one) or a Hugging Face model folder.

use super::chat::{BuiltinFormat, ChatTemplate, Prompt, SpecialTokens};
use super::config::{Arch, ModelConfig};
use super::device::{default_dtype, describe};
use super::model::Transformer;
use super::ops::unpermute_qk_rows;
use super::qweight::{BlockFormat, QWeight};
use super::tokenizer::{GgufVocab, Tokenizer};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether to keep a quantized copy of the weights for inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// On CPU, where decoding is bound by memory bandwidth, the file's own Q4_0/Q4_1/Q8_0 blocks
    /// as they are and Q8_0 copies of other projections; none on a GPU.
    #[default]
    Auto,
    Off,
    /// Q8_0 copies of every projection, even where the file has its own blocks (CPU only).
    Q8,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: Option<DType>,
    pub quantize: Quantize,
    /// Gradient checkpointing in training: each layer recomputed in the backward.
    pub checkpoint_layers: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: None,
            quantize: Quantize::Auto,
            checkpoint_layers: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Hf,
}

/// What was loaded, for display and for pinning into a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub format: ModelFormat,
    pub name: String,
    pub arch: Arch,
    pub parameters: usize,
    pub chat: String,
    pub dtype: String,
    pub quantized: bool,
    /// Things the loader did that a person should know of (a built-in chat format stood in
    /// for a missing template, say).
    pub notices: Vec<String>,
}

/// A loaded model: the transformer, its tokenizer and its chat template.
#[derive(Clone)]
pub struct Model {
    pub transformer: Arc<Transformer>,
    pub tokenizer: Arc<Tokenizer>,
    pub chat: ChatTemplate,
    pub info: ModelInfo,
}

impl Model {
    /// The same model with other weights (after a policy update), sharing the tokenizer.
    pub fn with_transformer(&self, transformer: Transformer) -> Model {
        Model {
            transformer: Arc::new(transformer),
            tokenizer: self.tokenizer.clone(),
            chat: self.chat.clone(),
            info: self.info.clone(),
        }
    }

    /// The token ids of a prompt in this model's chat markup, ending where the reply begins.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.tokenizer.encode(&self.chat.prompt(prompt)?)
    }

    /// The token ids of a reply as trained on: the text, then what ends the model's turn (or
    /// its end-of-sequence token, for a model without turns), so it learns to stop.
    pub fn reply_ids(&self, text: &str) -> Result<Vec<u32>> {
        let eot = self.chat.end_of_turn();
        let mut ids = self.tokenizer.encode(&format!("{text}{eot}"))?;
        if eot.is_empty() {
            ids.extend(self.tokenizer.eos_ids.first());
        }
        Ok(ids)
    }
}

/// Where a model's chat template was found, with its text.
struct FoundTemplate {
    source: String,
    origin: String,
}

/// Loads a GGUF file or a Hugging Face model folder.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<Model> {
    if !path.exists() {
        bail!("{}: no such model file or folder", path.display());
    }
    if path.is_dir() {
        load_hf_folder(path, opts)
    } else {
        load_gguf(path, opts)
    }
}

/// What a loader read, before the common finishing steps.
struct Parts {
    transformer: Transformer,
    tokenizer: Tokenizer,
    chat_template: Option<FoundTemplate>,
    /// Quantized blocks the file holds that inference can read as they are, by Hugging Face name.
    blocks: HashMap<String, QWeight>,
}

fn finish(
    parts: Parts,
    path: &Path,
    format: ModelFormat,
    name: String,
    opts: &LoadOptions,
) -> Result<Model> {
    let Parts {
        mut transformer,
        tokenizer,
        chat_template,
        mut blocks,
    } = parts;
    let vocab = tokenizer.vocab_size();
    if vocab > transformer.config.vocab_size {
        bail!(
            "{}: the tokenizer has {vocab} tokens but the model's embedding has only {} rows; \
             wrong tokenizer for this model?",
            path.display(),
            transformer.config.vocab_size
        );
    }
    let mut notices = Vec::new();
    let name_of = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let special = SpecialTokens {
        bos: name_of(tokenizer.bos_id),
        eos: name_of(tokenizer.eos_ids.first().copied()),
    };
    let chat = match chat_template {
        Some(found) => ChatTemplate::from_jinja(&found.source, special, &found.origin)?,
        None => {
            let format =
                BuiltinFormat::from_vocabulary(&|t: &str| tokenizer.token_to_id(t).is_some());
            notices.push(format!(
                "{}: the model ships no chat template; using the built-in {} format",
                path.display(),
                format.name()
            ));
            ChatTemplate::builtin(format)
        }
    };
    transformer.checkpoint_layers = opts.checkpoint_layers;
    match (opts.quantize, opts.device.is_cpu()) {
        (Quantize::Off, _) | (Quantize::Auto, false) => {}
        (Quantize::Q8, false) => notices.push(format!(
            "{}: quantized weights are read on the CPU only; on {} the dense weights are used",
            path.display(),
            describe(&opts.device)
        )),
        (Quantize::Auto, true) => transformer.quantize_for_inference(&mut blocks)?,
        (Quantize::Q8, true) => transformer.quantize_for_inference(&mut HashMap::new())?,
    }
    let dtype = format!("{:?}", transformer.dtype).to_lowercase();
    if opts.device.is_cpu() && matches!(transformer.dtype, DType::BF16 | DType::F16) {
        // A config written for a GPU box keeps its bf16 when `auto` falls back to the CPU.
        notices.push(format!(
            "{}: {dtype} on the CPU is slower than f32 (a LoRA step on SmolLM2 took 1.8x as long \
             in bf16; candle's CPU has no fast half-precision product); leave `dtype` unset on a \
             CPU",
            path.display(),
        ));
    }
    let info = ModelInfo {
        path: path.to_path_buf(),
        format,
        name,
        arch: transformer.config.arch,
        parameters: transformer.num_parameters(),
        chat: chat.describe(),
        dtype,
        quantized: transformer.is_quantized(),
        notices,
    };
    for notice in &info.notices {
        tracing::warn!("{notice}");
    }
    Ok(Model {
        transformer: Arc::new(transformer),
        tokenizer: Arc::new(tokenizer),
        chat,
        info,
    })
}

struct GgufMeta<'a> {
    md: &'a HashMap<String, gguf_file::Value>,
    arch: &'a str,
    path: &'a Path,
}

impl GgufMeta<'_> {
    fn get(&self, key: &str) -> Option<&gguf_file::Value> {
        self.md.get(key)
    }

    fn arch_usize(&self, key: &str) -> Result<Option<usize>> {
        let full = format!("{}.{key}", self.arch);
        match self.get(&full) {
            None => Ok(None),
            Some(v) => {
                let n = v
                    .to_u32()
                    .map(|x| x as usize)
                    .or_else(|_| v.to_u64().map(|x| x as usize))
                    .map_err(|_| {
                        anyhow!(
                            "{}: metadata `{full}` is not an integer",
                            self.path.display()
                        )
                    })?;
                Ok(Some(n))
            }
        }
    }

    fn arch_f64(&self, key: &str) -> Result<Option<f64>> {
        let full = format!("{}.{key}", self.arch);
        match self.get(&full) {
            None => Ok(None),
            Some(v) => Ok(Some(v.to_f32().map(|x| x as f64).map_err(|_| {
                anyhow!("{}: metadata `{full}` is not a number", self.path.display())
            })?)),
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    fn u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(|v| v.to_u32().ok())
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let v = self
            .get(key)
            .with_context(|| format!("{}: metadata `{key}` is missing", self.path.display()))?;
        let items = v
            .to_vec()
            .map_err(|_| anyhow!("{}: metadata `{key}` is not an array", self.path.display()))?;
        items
            .iter()
            .map(|x| {
                x.to_string().cloned().map_err(|_| {
                    anyhow!(
                        "{}: metadata `{key}` holds a non-string",
                        self.path.display()
                    )
                })
            })
            .collect()
    }
}

fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Model> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let file_len = file.metadata()?.len();
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow!("{shown}: not a readable GGUF file ({e})"))?;
    // A download cut short still has a complete header; catch it before reading tensors.
    let needed = content
        .tensor_infos
        .values()
        .map(|t| {
            let bytes = t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size();
            content.tensor_data_offset + t.offset + bytes as u64
        })
        .max()
        .unwrap_or(0);
    if needed > file_len {
        bail!(
            "{shown}: the file is truncated: its tensors need {needed} bytes but it has {file_len} \
             (an interrupted download?)"
        );
    }
    let arch_name = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .with_context(|| format!("{shown}: metadata `general.architecture` is missing"))?
        .clone();
    let arch = Arch::parse(&arch_name).with_context(|| {
        format!(
            "{shown}: architecture {arch_name:?} is not supported; seal-tui runs llama and qwen2"
        )
    })?;
    let meta = GgufMeta {
        md: &content.metadata,
        arch: &arch_name,
        path,
    };
    let need = |v: Option<usize>, key: &str| {
        v.with_context(|| format!("{shown}: metadata `{arch_name}.{key}` is missing"))
    };
    let hidden = need(meta.arch_usize("embedding_length")?, "embedding_length")?;
    let heads = need(
        meta.arch_usize("attention.head_count")?,
        "attention.head_count",
    )?;
    let embed_info = content
        .tensor_infos
        .get("token_embd.weight")
        .with_context(|| format!("{shown}: tensor `token_embd.weight` is missing"))?;
    let rope_factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
        true => Some(
            content
                .tensor(&mut file, "rope_freqs.weight", &Device::Cpu)
                .and_then(|t| t.dequantize(&Device::Cpu))
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| anyhow!("{shown}: tensor `rope_freqs.weight`: {e}"))?,
        ),
        false => None,
    };
    let config = ModelConfig {
        arch,
        vocab_size: embed_info.shape.dims()[0],
        hidden_size: hidden,
        intermediate_size: need(
            meta.arch_usize("feed_forward_length")?,
            "feed_forward_length",
        )?,
        num_layers: need(meta.arch_usize("block_count")?, "block_count")?,
        num_heads: heads,
        num_kv_heads: meta.arch_usize("attention.head_count_kv")?.unwrap_or(heads),
        head_dim: meta
            .arch_usize("attention.key_length")?
            .or(meta.arch_usize("rope.dimension_count")?)
            .unwrap_or(hidden / heads.max(1)),
        rope_theta: meta.arch_f64("rope.freq_base")?.unwrap_or(10_000.0),
        rope_scaling: None,
        rope_freq_factors: rope_factors,
        rms_norm_eps: meta
            .arch_f64("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5),
        max_position_embeddings: meta.arch_usize("context_length")?.unwrap_or(4096),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
    };
    config
        .validate()
        .with_context(|| format!("{shown}: inconsistent model metadata"))?;

    let device = &opts.device;
    let dtype = opts.dtype.unwrap_or_else(|| default_dtype(device));
    let mut tensors = HashMap::new();
    let mut blocks = HashMap::new();
    for (gguf_name, info) in &content.tensor_infos {
        let Some(hf_name) = hf_name_for_gguf(gguf_name) else {
            continue;
        };
        let q = info
            .read(&mut file, content.tensor_data_offset, device)
            .map_err(|e| anyhow!("{shown}: tensor `{gguf_name}`: {e}"))?;
        let mut t = q
            .dequantize(device)
            .map_err(|e| anyhow!("{shown}: tensor `{gguf_name}` cannot be dequantized: {e}"))?;
        // Only `Quantize::Auto` on a CPU reads the file's blocks as they are.
        let keep = device.is_cpu() && opts.quantize == Quantize::Auto;
        let mut kept = match (BlockFormat::from_ggml(q.dtype()), t.dims2()) {
            (Some(format), Ok((rows, cols))) if keep => {
                let data = q
                    .data()
                    .map_err(|e| anyhow!("{shown}: tensor `{gguf_name}`: {e}"))?
                    .into_owned();
                QWeight::from_blocks(format, rows, cols, data).ok()
            }
            _ => None,
        };
        // llama.cpp interleaves the rotary halves of llama q/k rows; our forward (and any PEFT
        // adapter) uses the Hugging Face layout.
        let heads = match gguf_name {
            n if n.ends_with("attn_q.weight") => Some(config.num_heads),
            n if n.ends_with("attn_k.weight") => Some(config.num_kv_heads),
            _ => None,
        };
        if let (Arch::Llama, Some(heads)) = (arch, heads) {
            t = unpermute_qk_rows(&t, heads)?;
            kept = match kept {
                Some(k) => Some(k.permute_rows(&unpermuted_row_order(k.rows(), heads)?)),
                None => None,
            };
        }
        if let Some(k) = kept {
            blocks.insert(hf_name.clone(), k);
        }
        tensors.insert(hf_name, t.to_dtype(dtype)?);
    }
    let transformer =
        Transformer::from_tensors(config, tensors, device, dtype, &shown.to_string(), &|hf| {
            gguf_name_for_hf(hf).unwrap_or_else(|| hf.to_string())
        })?;

    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let merges = meta.strings("tokenizer.ggml.merges").unwrap_or_default();
    let token_types = meta
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.iter().map(|x| x.to_i32().unwrap_or(1)).collect());
    let tokenizer = Tokenizer::from_gguf(GgufVocab {
        model: meta.string("tokenizer.ggml.model").unwrap_or("gpt2"),
        pre: meta.string("tokenizer.ggml.pre"),
        tokens,
        merges,
        token_types,
        bos_id: meta.u32("tokenizer.ggml.bos_token_id"),
        eos_id: meta.u32("tokenizer.ggml.eos_token_id"),
        pad_id: meta.u32("tokenizer.ggml.padding_token_id"),
        add_bos: meta
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok()),
    })
    .with_context(|| format!("{shown}: bad tokenizer metadata"))?;
    let template = meta
        .string("tokenizer.chat_template")
        .map(|t| FoundTemplate {
            source: t.to_string(),
            origin: format!("{shown}: tokenizer.chat_template"),
        });
    let name = meta
        .string("general.name")
        .map(str::to_string)
        .unwrap_or_else(|| file_stem(path));
    finish(
        Parts {
            transformer,
            tokenizer,
            chat_template: template,
            blocks,
        },
        path,
        ModelFormat::Gguf,
        name,
        opts,
    )
}

/// Which row of the file each row of [`unpermute_qk_rows`]'s result comes from: the same
/// function applied to the row numbers, so the two cannot disagree.
fn unpermuted_row_order(rows: usize, heads: usize) -> Result<Vec<usize>> {
    let index: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    let t = unpermute_qk_rows(&Tensor::from_vec(index, (rows, 1), &Device::Cpu)?, heads)?;
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|r| r as usize)
        .collect())
}

/// Maps llama.cpp tensor names to Hugging Face names; `None` for tensors the model does not use.
/// The GGUF name of a tensor named the Hugging Face way (the inverse of [`hf_name_for_gguf`]).
fn gguf_name_for_hf(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let (module, kind) = part.rsplit_once('.')?;
    let gguf = GGUF_MODULES.iter().find(|(_, hf)| *hf == module)?.0;
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// GGUF block module names and their Hugging Face paths.
const GGUF_MODULES: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

fn hf_name_for_gguf(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let hf = GGUF_MODULES.iter().find(|(g, _)| *g == module)?.1;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

fn load_hf_folder(dir: &Path, opts: &LoadOptions) -> Result<Model> {
    let config = ModelConfig::from_hf_json(&dir.join("config.json"))?;
    let (files, source) = safetensors_files(dir)?;
    let device = &opts.device;
    let dtype = opts.dtype.unwrap_or_else(|| default_dtype(device));
    let mut tensors = HashMap::new();
    for file in &files {
        // Safety: the files are only read, and the map lives while its tensors are copied out.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
            .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", file.display()))?;
        for (name, _) in st.tensors() {
            let t = st
                .load(&name, &Device::Cpu)
                .map_err(|e| anyhow!("{}: tensor `{name}`: {e}", file.display()))?;
            tensors.insert(name, t.to_dtype(dtype)?.to_device(device)?);
        }
    }
    let transformer = Transformer::from_tensors(config, tensors, device, dtype, &source, &|hf| {
        hf.to_string()
    })?;
    let tokenizer = Tokenizer::from_hf_folder(dir)?;
    let template = chat_template(dir)?;
    finish(
        Parts {
            transformer,
            tokenizer,
            chat_template: template,
            blocks: HashMap::new(),
        },
        dir,
        ModelFormat::Hf,
        file_stem(dir),
        opts,
    )
}

/// The safetensors files of a folder (every shard of an index), and the name to report
/// problems against.
fn safetensors_files(dir: &Path) -> Result<(Vec<PathBuf>, String)> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed JSON", index.display()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: `weight_map` is missing", index.display()))?;
        let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        let files: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        for f in &files {
            if !f.exists() {
                bail!("{}: shard {} is missing", index.display(), f.display());
            }
        }
        return Ok((files, index.display().to_string()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    match files.as_slice() {
        [] => bail!("{}: no *.safetensors weights in this folder", dir.display()),
        [one] => {
            let shown = one.display().to_string();
            Ok((files, shown))
        }
        _ => Ok((files, dir.display().to_string())),
    }
}

/// A folder's chat template: `tokenizer_config.json`'s `chat_template` (a string, or a list of
/// named templates whose `default` one chat uses), else `chat_template.jinja` beside it, where
/// transformers saves it now.
fn chat_template(dir: &Path) -> Result<Option<FoundTemplate>> {
    let path = dir.join("tokenizer_config.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed JSON", path.display()))?;
        let found = match value.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .find(|i| i.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or(items.first())
                .and_then(|i| i.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        if let Some(source) = found {
            return Ok(Some(FoundTemplate {
                source,
                origin: format!("{}: chat_template", path.display()),
            }));
        }
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let source = std::fs::read_to_string(&jinja)
            .with_context(|| format!("cannot read {}", jinja.display()))?;
        return Ok(Some(FoundTemplate {
            source,
            origin: jinja.display().to_string(),
        }));
    }
    Ok(None)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .or(path.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

/// Saves a model as a Hugging Face folder (config, safetensors weights, tokenizer, chat template)
/// that this loader, transformers and PEFT can read back.
pub fn save_hf_folder(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let t = &model.transformer;
    let tensors: Vec<(String, Tensor)> = t
        .named_tensors()
        .into_iter()
        .map(|(n, x)| Ok((n, x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors.into_iter().collect::<HashMap<_, _>>(), &weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    write_json(&dir.join("config.json"), &t.config.to_hf_json())?;
    save_tokenizer_files(model, dir)
}

/// The tokenizer, its special tokens and the chat template as a Hugging Face folder holds them
/// (`tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`, `generation_config.json`).
pub fn save_tokenizer_files(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    model.tokenizer.save_json(&dir.join("tokenizer.json"))?;
    let tok = &model.tokenizer;
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let cfg = serde_json::json!({
        "add_bos_token": tok.add_bos,
        "bos_token": name(tok.bos_id),
        "eos_token": name(tok.eos_ids.first().copied()),
        "pad_token": name(tok.pad_id),
    });
    write_json(&dir.join("tokenizer_config.json"), &cfg)?;
    if let Some(template) = model.chat.source() {
        // Where current transformers saves it, so the folder loads the same in both.
        let path = dir.join("chat_template.jinja");
        std::fs::write(&path, template)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    write_json(
        &dir.join("generation_config.json"),
        &serde_json::json!({ "eos_token_id": tok.eos_ids }),
    )?;
    Ok(())
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_and_hf_tensor_names_map_both_ways() {
        for gguf in [
            "token_embd.weight",
            "output.weight",
            "blk.3.attn_q.weight",
            "blk.0.ffn_down.weight",
            "blk.1.attn_norm.weight",
        ] {
            let hf = hf_name_for_gguf(gguf).unwrap();
            assert_eq!(gguf_name_for_hf(&hf).as_deref(), Some(gguf), "{hf}");
        }
        assert_eq!(gguf_name_for_hf("model.layers.0.mlp.wings.weight"), None);
    }

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(
            hf_name_for_gguf("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name_for_gguf("blk.0.attn_k.bias").as_deref(),
            Some("model.layers.0.self_attn.k_proj.bias")
        );
        assert_eq!(
            hf_name_for_gguf("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name_for_gguf("rope_freqs.weight"), None);
    }
}
