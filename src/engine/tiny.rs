//! A tiny random-weight model, written to disk in both GGUF and Hugging Face folder form, so that
//! tests and demos exercise every loader path without downloading anything. Its text is
//! gibberish; its shapes, files and code paths are real.

use super::config::Arch;
use super::rng::SplitMix64;
use super::tokenizer::{GgufVocab, Tokenizer};
use anyhow::{Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 12] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("r", "e"),
    ("Ġ", "s"),
    ("a", "t"),
    ("Ġ", "w"),
    ("e", "n"),
];

#[derive(Clone, Debug)]
pub struct TinySpec {
    pub arch: Arch,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub tie_embeddings: bool,
    pub seed: u64,
    /// GGUF only: store the matrices in these blocks (as llama.cpp's quantized files do) instead
    /// of f32.
    pub gguf_blocks: Option<GgmlDType>,
}

impl TinySpec {
    pub fn new(arch: Arch) -> TinySpec {
        TinySpec {
            arch,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 128,
            max_positions: 2048,
            // The Qwen2 variant keeps a separate output head so both paths are exercised.
            tie_embeddings: arch == Arch::Llama,
            seed: 42,
            gguf_blocks: None,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// GPT-2's reversible map from bytes to printable characters, which byte-level BPE vocabularies
/// are written in.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u32| {
        ('!' as u32..='~' as u32).contains(&b)
            || ('¡' as u32..='¬' as u32).contains(&b)
            || ('®' as u32..='ÿ' as u32).contains(&b)
    };
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(code).unwrap_or('?')
        })
        .collect()
}

/// The tiny vocabulary: special tokens, the 256 byte characters, and a few merges.
pub fn vocabulary() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3; SPECIALS.len()];
    for c in byte_alphabet() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let mut merges = Vec::new();
    for (a, b) in MERGES {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    (tokens, merges, types)
}

pub fn tokenizer() -> Result<Tokenizer> {
    let (tokens, merges, types) = vocabulary();
    Tokenizer::from_gguf(GgufVocab {
        model: "gpt2",
        pre: Some("smollm"),
        tokens,
        merges,
        token_types: Some(types),
        bos_id: Some(1),
        eos_id: Some(2),
        pad_id: Some(0),
        add_bos: Some(false),
    })
}

fn vocab_size() -> usize {
    SPECIALS.len() + 256 + MERGES.len()
}

/// Random weights under their Hugging Face names, in the Hugging Face row layout.
fn weights(spec: &TinySpec) -> Result<Vec<(String, Tensor)>> {
    let mut rng = SplitMix64::new(spec.seed);
    let mut rand = |shape: &[usize], scale: f64| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect();
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    };
    let (h, hd) = (spec.hidden, spec.head_dim());
    let v = vocab_size();
    let mut out = vec![("model.embed_tokens.weight".to_string(), rand(&[v, h], 0.5)?)];
    for i in 0..spec.layers {
        let p = format!("model.layers.{i}");
        let norm = |rng_t: Tensor| -> Result<Tensor> { Ok((rng_t + 1.0)?) };
        out.push((
            format!("{p}.input_layernorm.weight"),
            norm(rand(&[h], 0.1)?)?,
        ));
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            norm(rand(&[h], 0.1)?)?,
        ));
        let s = 1.0 / (h as f64).sqrt();
        out.push((
            format!("{p}.self_attn.q_proj.weight"),
            rand(&[spec.heads * hd, h], s)?,
        ));
        out.push((
            format!("{p}.self_attn.k_proj.weight"),
            rand(&[spec.kv_heads * hd, h], s)?,
        ));
        out.push((
            format!("{p}.self_attn.v_proj.weight"),
            rand(&[spec.kv_heads * hd, h], s)?,
        ));
        out.push((
            format!("{p}.self_attn.o_proj.weight"),
            rand(&[h, spec.heads * hd], s)?,
        ));
        if spec.arch.has_qkv_bias() {
            out.push((
                format!("{p}.self_attn.q_proj.bias"),
                rand(&[spec.heads * hd], 0.1)?,
            ));
            out.push((
                format!("{p}.self_attn.k_proj.bias"),
                rand(&[spec.kv_heads * hd], 0.1)?,
            ));
            out.push((
                format!("{p}.self_attn.v_proj.bias"),
                rand(&[spec.kv_heads * hd], 0.1)?,
            ));
        }
        out.push((
            format!("{p}.mlp.gate_proj.weight"),
            rand(&[spec.intermediate, h], s)?,
        ));
        out.push((
            format!("{p}.mlp.up_proj.weight"),
            rand(&[spec.intermediate, h], s)?,
        ));
        let sd = 1.0 / (spec.intermediate as f64).sqrt();
        out.push((
            format!("{p}.mlp.down_proj.weight"),
            rand(&[h, spec.intermediate], sd)?,
        ));
    }
    out.push(("model.norm.weight".to_string(), (rand(&[h], 0.1)? + 1.0)?));
    if !spec.tie_embeddings {
        out.push(("lm_head.weight".to_string(), rand(&[v, h], 0.5)?));
    }
    Ok(out)
}

/// Writes a Hugging Face model folder: config.json, model.safetensors (split into two shards
/// with an index when `sharded`), tokenizer.json and tokenizer_config.json.
pub fn write_hf_folder(dir: &Path, spec: &TinySpec, sharded: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = serde_json::json!({
        "architectures": [spec.arch.hf_architecture()],
        "model_type": spec.arch.hf_model_type(),
        "vocab_size": vocab_size(),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": spec.max_positions,
        "tie_word_embeddings": spec.tie_embeddings,
        "hidden_act": "silu",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let tensors = weights(spec)?;
    if sharded {
        let (first, second) = tensors.split_at(tensors.len() / 2);
        let mut weight_map = serde_json::Map::new();
        for (i, part) in [first, second].iter().enumerate() {
            let file = format!("model-0000{}-of-00002.safetensors", i + 1);
            let map: HashMap<String, Tensor> = part.iter().cloned().collect();
            candle_core::safetensors::save(&map, dir.join(&file))?;
            for (name, _) in part.iter() {
                weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
            }
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
    } else {
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
    }
    tokenizer()?.save_json(&dir.join("tokenizer.json"))?;
    let tok_config = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": false,
        "chat_template": CHAT_TEMPLATE,
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tok_config)?,
    )?;
    Ok(())
}

/// Writes a GGUF file as llama.cpp's converter would: llama.cpp tensor names, llama q/k rows
/// permuted into the interleaved rotary layout, and the tokenizer in the metadata.
pub fn write_gguf(path: &Path, spec: &TinySpec) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let arch = spec.arch.hf_model_type();
    let (tokens, merges, types) = vocabulary();
    let strings = |v: Vec<String>| {
        gguf_file::Value::Array(v.into_iter().map(gguf_file::Value::String).collect())
    };
    let u32v = |x: usize| gguf_file::Value::U32(x as u32);
    let metadata: Vec<(String, gguf_file::Value)> = vec![
        (
            "general.architecture".into(),
            gguf_file::Value::String(arch.into()),
        ),
        (
            "general.name".into(),
            gguf_file::Value::String(format!("tiny-{arch}")),
        ),
        (format!("{arch}.block_count"), u32v(spec.layers)),
        (format!("{arch}.context_length"), u32v(spec.max_positions)),
        (format!("{arch}.embedding_length"), u32v(spec.hidden)),
        (
            format!("{arch}.feed_forward_length"),
            u32v(spec.intermediate),
        ),
        (format!("{arch}.attention.head_count"), u32v(spec.heads)),
        (
            format!("{arch}.attention.head_count_kv"),
            u32v(spec.kv_heads),
        ),
        (
            format!("{arch}.rope.freq_base"),
            gguf_file::Value::F32(10000.0),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            gguf_file::Value::F32(1e-5),
        ),
        (
            format!("{arch}.rope.dimension_count"),
            u32v(spec.head_dim()),
        ),
        (
            "tokenizer.ggml.model".into(),
            gguf_file::Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            gguf_file::Value::String("smollm".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        (
            "tokenizer.ggml.token_type".into(),
            gguf_file::Value::Array(types.into_iter().map(gguf_file::Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            gguf_file::Value::U32(1),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            gguf_file::Value::U32(2),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            gguf_file::Value::U32(0),
        ),
        (
            "tokenizer.ggml.add_bos_token".into(),
            gguf_file::Value::Bool(false),
        ),
        (
            "tokenizer.chat_template".into(),
            gguf_file::Value::String(CHAT_TEMPLATE.into()),
        ),
    ];
    let mut tensors = Vec::new();
    for (name, t) in weights(spec)? {
        let gguf_name = gguf_name_for_hf(&name).context("unmapped tensor name")?;
        let t = if spec.arch == Arch::Llama && name.ends_with("q_proj.weight") {
            permute_qk_rows(&t, spec.heads)?
        } else if spec.arch == Arch::Llama && name.ends_with("k_proj.weight") {
            permute_qk_rows(&t, spec.kv_heads)?
        } else {
            t
        };
        let dtype = match spec.gguf_blocks {
            Some(blocks) if t.rank() == 2 => blocks,
            _ => GgmlDType::F32,
        };
        tensors.push((gguf_name, QTensor::quantize(&t, dtype)?));
    }
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    gguf_file::write(&mut file, &md, &ts)?;
    Ok(())
}

/// llama.cpp's permutation of HF q/k rows into the interleaved rotary layout.
fn permute_qk_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    Ok(w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

fn gguf_name_for_hf(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}
