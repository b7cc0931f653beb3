//! The engine on the tiny random-weight model: every loader path, both architectures, the
//! KV cache, batching and the sampler.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{load, max_abs, max_abs_diff, scratch, tiny_gguf, tiny_hf};
use seal_tui::engine::{
    generate, generate_batch, load_model, Arch, LoadOptions, Mode, Model, Positions, Quantize,
    SamplingParams, StopReason,
};
use std::sync::atomic::AtomicBool;

fn full_logits(model: &Model, ids: &[u32]) -> Tensor {
    let t = &model.transformer;
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = t
        .forward_hidden(&input, &Positions::From(0), None, None, None, Mode::Infer)
        .unwrap();
    t.logits(&hidden, Mode::Infer).unwrap().squeeze(0).unwrap()
}

/// Prefills `ids[..split]` through the cache, then feeds the rest one token at a time, returning
/// the logits of each of those positions.
fn cached_decode_logits(
    model: &Model,
    ids: &[u32],
    split: usize,
    capacity: usize,
) -> Vec<(usize, Tensor)> {
    let t = &model.transformer;
    let mut cache = seal_tui::engine::KvCache::new(t.config.num_layers, capacity);
    let first = Tensor::new(&ids[..split], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    t.forward_hidden(
        &first,
        &Positions::From(0),
        None,
        Some(&mut cache),
        None,
        Mode::Infer,
    )
    .unwrap();
    ids.iter()
        .enumerate()
        .skip(split)
        .map(|(i, &id)| {
            let x = Tensor::new(&[id], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let h = t
                .forward_hidden(
                    &x,
                    &Positions::From(i),
                    None,
                    Some(&mut cache),
                    None,
                    Mode::Infer,
                )
                .unwrap();
            (i, t.last_logits(&h).unwrap().squeeze(0).unwrap())
        })
        .collect()
}

#[test]
fn gguf_and_hf_folder_give_the_same_logits_for_both_architectures() {
    for arch in [Arch::Llama, Arch::Qwen2] {
        let g = load(&tiny_gguf(arch), Quantize::Off);
        let h = load(&tiny_hf(arch), Quantize::Off);
        assert_eq!(g.transformer.config.arch, arch);
        let ids = g.tokenizer.encode("the cat sat on the mat 123").unwrap();
        assert_eq!(
            ids,
            h.tokenizer.encode("the cat sat on the mat 123").unwrap()
        );
        let a = full_logits(&g, &ids);
        let b = full_logits(&h, &ids);
        // The GGUF stores llama q/k rows permuted; equality proves the un-permutation.
        assert!(
            max_abs_diff(&a, &b) < 1e-4,
            "{arch:?}: {}",
            max_abs_diff(&a, &b)
        );
        assert_eq!(g.chat.describe(), "jinja");
        assert_eq!(h.chat.describe(), "jinja");
    }
}

/// A folder as current transformers' `save_pretrained` writes it: the chat template in
/// `chat_template.jinja`, not in `tokenizer_config.json`.
#[test]
fn a_folder_with_chat_template_jinja_gets_its_template() {
    use seal_tui::engine::tiny::CHAT_TEMPLATE;
    use seal_tui::engine::Prompt;
    let dir = scratch().join("tiny-jinja-hf");
    seal_tui::engine::tiny::write_hf_folder(
        &dir,
        &seal_tui::engine::tiny::TinySpec::new(Arch::Qwen2),
        false,
    )
    .unwrap();
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&config_path, config.to_string()).unwrap();
    std::fs::write(dir.join("chat_template.jinja"), CHAT_TEMPLATE).unwrap();

    let model = load(&dir, Quantize::Off);
    assert_eq!(model.chat.describe(), "jinja");
    assert!(model.info.notices.is_empty(), "{:?}", model.info.notices);
    let prompt = model.chat.prompt(&Prompt::user("Hi")).unwrap();
    // What the template itself produces for this conversation.
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The same prompt, token for token, as the GGUF of the same model (template in metadata).
    let gguf = load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    assert_eq!(
        model.prompt_ids(&Prompt::user("Hi")).unwrap(),
        gguf.prompt_ids(&Prompt::user("Hi")).unwrap()
    );

    // Without any template, the built-in format is used and said aloud.
    std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
    let bare = load(&dir, Quantize::Off);
    assert_eq!(bare.chat.describe(), "built-in chatml");
    assert!(
        bare.info
            .notices
            .iter()
            .any(|n| n.contains("no chat template")),
        "{:?}",
        bare.info.notices
    );
}

#[test]
fn half_precision_on_the_cpu_is_said_to_be_slow() {
    let dir = tiny_hf(Arch::Llama);
    let open = |dtype| {
        load_model(
            &dir,
            &LoadOptions {
                dtype,
                quantize: Quantize::Off,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let slow = |m: &Model| m.info.notices.iter().any(|n| n.contains("slower than f32"));
    assert!(!slow(&open(None)) && !slow(&open(Some(DType::F32))));
    for dtype in [DType::BF16, DType::F16] {
        let model = open(Some(dtype));
        assert!(slow(&model), "{dtype:?}: {:?}", model.info.notices);
    }
}

#[test]
fn kv_cache_decoding_matches_the_full_forward() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let ids = model.tokenizer.encode("hello there, general").unwrap();
    let full = full_logits(&model, &ids);
    // A deliberately small cache, so it has to grow.
    for (i, step) in cached_decode_logits(&model, &ids, 5, 4) {
        let expected = full.get(i).unwrap();
        assert!(max_abs_diff(&step, &expected) < 1e-4, "position {i}");
    }
}

#[test]
fn quantized_decoding_after_a_dense_prefill_tracks_the_dense_model() {
    // Prefill (many rows) runs on the dense weights, decoding (one row) on the Q8 copy: the two
    // must agree, or every answer after the first token drifts.
    let dense = load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    let quant = load(&tiny_gguf(Arch::Qwen2), Quantize::Q8);
    let ids = dense
        .tokenizer
        .encode("a prompt long enough to be prefilled densely")
        .unwrap();
    assert_cached_decode_tracks(&dense, &quant, &ids, 20, 0.05, "");
}

/// Decoding `quant` through the cache after a prefill of `ids[..split]` gives, at every later
/// position, the logits of `dense` on the whole sequence to within `tolerance` of their scale.
fn assert_cached_decode_tracks(
    dense: &Model,
    quant: &Model,
    ids: &[u32],
    split: usize,
    tolerance: f32,
    label: &str,
) {
    let full = full_logits(dense, ids);
    for (i, step) in cached_decode_logits(quant, ids, split, 64) {
        let expected = full.get(i).unwrap();
        let scale = max_abs(&expected);
        let diff = max_abs_diff(&step, &expected);
        assert!(
            diff < tolerance * scale,
            "{label}position {i}: {diff} (scale {scale})"
        );
    }
}

#[test]
fn a_quantized_gguf_is_read_in_its_own_blocks_and_decodes_like_its_dequantized_weights() {
    use candle_core::quantized::GgmlDType;
    // Both architectures: llama's q/k rows are re-ordered at load, and the blocks must follow.
    for (arch, blocks, formats) in [
        (Arch::Llama, GgmlDType::Q4_1, "q4_1 x14, head q4_1"),
        (Arch::Qwen2, GgmlDType::Q4_0, "q4_0 x14, head q4_0"),
        (Arch::Llama, GgmlDType::Q8_0, "q8_0 x14, head q8_0"),
    ] {
        let mut spec = seal_tui::engine::tiny::TinySpec::new(arch);
        spec.gguf_blocks = Some(blocks);
        let path = scratch().join(format!("tiny-{arch:?}-{blocks:?}.gguf"));
        seal_tui::engine::tiny::write_gguf(&path, &spec).unwrap();
        let dense = load(&path, Quantize::Off);
        let quant = load(&path, Quantize::Auto);
        assert_eq!(quant.transformer.inference_formats(), formats);
        assert_eq!(dense.transformer.inference_formats(), "");
        // `q8` re-quantizes every projection to Q8_0 and leaves the head dense.
        let q8 = load(&path, Quantize::Q8);
        assert_eq!(q8.transformer.inference_formats(), "q8_0 x14, head f32");
        let ids = dense
            .tokenizer
            .encode("the blocks are the weights, so decoding matches")
            .unwrap();
        // Only the activations' 16-bit rounding separates the two.
        let label = format!("{arch:?} {blocks:?} ");
        assert_cached_decode_tracks(&dense, &quant, &ids, 3, 1e-3, &label);
    }
}

#[test]
fn train_mode_forward_equals_infer_mode() {
    let model = load(&tiny_hf(Arch::Qwen2), Quantize::Off);
    let t = &model.transformer;
    let ids = model
        .tokenizer
        .encode("differentiable paths agree")
        .unwrap();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let a = t
        .forward_hidden(&x, &Positions::From(0), None, None, None, Mode::Infer)
        .unwrap();
    let b = t
        .forward_hidden(&x, &Positions::From(0), None, None, None, Mode::Train)
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4);
}

#[test]
fn quantized_sampling_weights_stay_close_to_f32() {
    let f = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let q = load(&tiny_gguf(Arch::Llama), Quantize::Q8);
    assert!(q.info.quantized && !f.info.quantized);
    let ids = f.tokenizer.encode("quantization error is small").unwrap();
    let a = full_logits(&f, &ids);
    let b = full_logits(&q, &ids);
    let scale = max_abs(&a);
    assert!(
        max_abs_diff(&a, &b) < 0.05 * scale,
        "{} vs {scale}",
        max_abs_diff(&a, &b)
    );
}

#[test]
fn batched_greedy_generation_equals_one_by_one() {
    let model = load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    // Without a shared prefix, and with one (prefilled once, then copied to every row).
    for set in [
        vec!["a", "the longer prompt here", "in the sea at"],
        vec![
            "topic: sea. a",
            "topic: sea. the longer prompt here",
            "topic: sea.",
        ],
    ] {
        let prompts: Vec<Vec<u32>> = set
            .iter()
            .map(|p| model.tokenizer.encode(p).unwrap())
            .collect();
        let params = SamplingParams::greedy(12);
        let batch = generate_batch(&model, None, &prompts, &params, None).unwrap();
        for (p, b) in prompts.iter().zip(&batch) {
            let single = generate(&model, None, p, &params, None, &mut |_| {}).unwrap();
            assert_eq!(single.tokens, b.tokens, "batching changed a row's output");
        }
    }
}

#[test]
fn sampling_streams_pieces_is_seeded_and_cancellable() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Auto);
    let prompt = model.tokenizer.encode("once upon a time").unwrap();
    let params = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        max_tokens: 20,
        seed: 11,
        stop: vec![],
    };
    let mut streamed = String::new();
    let a = generate(&model, None, &prompt, &params, None, &mut |p| {
        streamed.push_str(p)
    })
    .unwrap();
    assert_eq!(streamed, a.text);
    let b = generate(&model, None, &prompt, &params, None, &mut |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens, "same seed, same sample");
    let other = SamplingParams {
        seed: 12,
        ..params.clone()
    };
    let c = generate(&model, None, &prompt, &other, None, &mut |_| {}).unwrap();
    assert_ne!(a.tokens, c.tokens, "another seed, another sample");

    let cancel = AtomicBool::new(true);
    let d = generate(&model, None, &prompt, &params, Some(&cancel), &mut |_| {}).unwrap();
    assert_eq!(d.stop, StopReason::Cancelled);
    assert!(d.tokens.is_empty());
}

#[test]
fn tokens_stream_through_a_channel_and_cancel_between_tokens() {
    use seal_tui::engine::sample::{stream, SampleEvent};
    let model = load(&tiny_gguf(Arch::Qwen2), Quantize::Off);
    let prompt = model.tokenizer.encode("stream this").unwrap();
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    let rx = stream(
        model.clone(),
        None,
        prompt.clone(),
        SamplingParams::greedy(20),
        cancel,
    );
    let mut text = String::new();
    let done = loop {
        match rx.recv().unwrap() {
            SampleEvent::Piece(p) => text.push_str(&p),
            SampleEvent::Done(g) => break g,
            SampleEvent::Failed(e) => panic!("{e}"),
        }
    };
    assert_eq!(text, done.text);
    assert_eq!(done.tokens.len(), 20);

    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    let rx = stream(
        model,
        None,
        prompt,
        SamplingParams::greedy(100_000),
        cancel.clone(),
    );
    assert!(matches!(rx.recv().unwrap(), SampleEvent::Piece(_)));
    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let stopped = loop {
        if let SampleEvent::Done(g) = rx.recv().unwrap() {
            break g;
        }
    };
    assert_eq!(stopped.stop, StopReason::Cancelled);
}

#[test]
fn stop_strings_end_generation_before_the_string() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let prompt = model.tokenizer.encode("x").unwrap();
    let free = generate(
        &model,
        None,
        &prompt,
        &SamplingParams::greedy(30),
        None,
        &mut |_| {},
    )
    .unwrap();
    // Stop on a piece of what greedy decoding produces anyway.
    let text = free.text.clone();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 6, "{text:?}");
    let stop: String = chars[3..5].iter().collect();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..SamplingParams::greedy(30)
    };
    let cut = generate(&model, None, &prompt, &params, None, &mut |_| {}).unwrap();
    assert_eq!(cut.stop, StopReason::StopString);
    assert_eq!(cut.text, text[..text.find(&stop).unwrap()]);
}

#[test]
fn tokenizer_splits_digits_and_keeps_chat_markup_whole() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let tok = &model.tokenizer;
    let ids = tok.encode("<|im_start|>user\n2024<|im_end|>").unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    let digits: Vec<String> = ids[ids.len() - 5..ids.len() - 1]
        .iter()
        .map(|&i| tok.id_to_token(i).unwrap())
        .collect();
    assert_eq!(digits, vec!["2", "0", "2", "4"]);
    assert_eq!(
        tok.decode(&tok.encode("héllo wörld ✓").unwrap()).unwrap(),
        "héllo wörld ✓"
    );
}
