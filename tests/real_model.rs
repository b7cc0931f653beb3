//! The engine on the real default model, SmolLM2-135M-Instruct (fetched on first use).

mod common;

use candle_core::{Device, Tensor};
use common::{load, real_model_path};
use seal_tui::engine::{generate, Mode, Positions, Prompt, Quantize, SamplingParams};

#[test]
fn tokenizer_matches_known_ids() {
    let model = load(&real_model_path(), Quantize::Auto);
    let tok = &model.tokenizer;
    // Ids produced by Hugging Face's own tokenizer for SmolLM2's chat template.
    let prompt = model
        .chat
        .prompt(&Prompt::user("What is the capital of France?"))
        .unwrap();
    let expected: Vec<u32> = vec![
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
        407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1,
        520, 9531, 198,
    ];
    assert_eq!(tok.encode(&prompt).unwrap(), expected);
    assert_eq!(tok.encode("hello world").unwrap(), vec![28120, 905]);
    assert_eq!(
        tok.encode("Explain in three short sentences why plants need sunlight.")
            .unwrap(),
        vec![36971, 281, 1296, 1890, 8545, 1701, 2109, 737, 8118, 30]
    );
    // SmolLM2 splits every digit: "2024" is four tokens, '0' is token 32.
    let ids = tok.encode("2024").unwrap();
    assert_eq!(ids, vec![34, 32, 34, 36]);
}

#[test]
fn logits_agree_with_candle_quantized_llama() {
    let path = real_model_path();
    let ours = load(&path, Quantize::Off);
    let ids = ours
        .tokenizer
        .encode(
            &ours
                .chat
                .prompt(&Prompt::user("Name three colours."))
                .unwrap(),
        )
        .unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let t = &ours.transformer;
    let hidden = t
        .forward_hidden(&input, &Positions::From(0), None, None, None, Mode::Infer)
        .unwrap();
    let a = t.last_logits(&hidden).unwrap().squeeze(0).unwrap();

    // The reference reads the same GGUF rewritten with f32 tensors, so both sides compute in
    // f32 from identical weights and only summation order separates them.
    let f32_path = common::scratch().join("smollm2-f32.gguf");
    write_f32_copy(&path, &f32_path);
    let b = reference_logits(&f32_path, &input);
    let diff = common::max_abs_diff(&a, &b);
    eprintln!("f32 reference: max |logit difference| = {diff:.6}");
    assert!(diff < 2e-3, "logits differ by {diff}");

    // Against candle's quantized path on the original file, which also quantizes activations:
    // the same top token, differences at the level of quantization noise.
    let q = reference_logits(&path, &input);
    let diff = common::max_abs_diff(&a, &q);
    eprintln!("quantized reference: max |logit difference| = {diff:.4}");
    assert!(diff < 1.5, "logits differ by {diff}");
    let top = |x: &Tensor| x.argmax(0).unwrap().to_scalar::<u32>().unwrap();
    assert_eq!(top(&a), top(&q));
    assert_eq!(top(&a), top(&b));
}

fn reference_logits(path: &std::path::Path, input: &Tensor) -> Tensor {
    let mut file = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut file,
        &Device::Cpu,
    )
    .unwrap();
    reference.forward(input, 0).unwrap().squeeze(0).unwrap()
}

fn write_f32_copy(src: &std::path::Path, dst: &std::path::Path) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let mut file = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| {
            let q = content.tensor(&mut file, n, &Device::Cpu).unwrap();
            let t = q.dequantize(&Device::Cpu).unwrap();
            (n.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    let md: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &md, &ts).unwrap();
}

#[test]
fn greedy_chat_answer_knows_paris() {
    let model = load(&real_model_path(), Quantize::Auto);
    let prompt = model
        .chat
        .prompt(&Prompt::user("What is the capital of France?"))
        .unwrap();
    let ids = model.tokenizer.encode(&prompt).unwrap();
    let gen = generate(
        &model,
        None,
        &ids,
        &SamplingParams::greedy(32),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(gen.text.contains("Paris"), "{:?}", gen.text);
}

#[test]
fn the_quantized_sampling_path_stays_as_good_as_f32() {
    let path = real_model_path();
    let f32_model = load(&path, Quantize::Off);
    let q8_model = load(&path, Quantize::Q8);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/passages.json"),
    )
    .unwrap();
    let mut ids = f32_model.tokenizer.encode_document(&text).unwrap();
    ids.truncate(384);
    let compare = |candidate: &seal_tui::engine::Model, label: &str| {
        let q = seal_tui::engine::quality::compare(&f32_model, candidate, &ids).unwrap();
        eprintln!(
            "{label}: top-1 agreement {:.1}%, perplexity {:.4} (f32) vs {:.4}",
            q.top1_agreement * 100.0,
            q.perplexity_reference,
            q.perplexity_candidate
        );
        q
    };
    let q = compare(&q8_model, "q8");
    assert!(q.top1_agreement >= 0.95, "{q:?}");
    assert!(
        q.perplexity_candidate < q.perplexity_reference * 1.05,
        "{q:?}"
    );

    // By default the file's own blocks are read as they are (Q4_1 blocks, a Q8_0 head), with
    // 16-bit activations: the f32 model's choices, to within rounding.
    let own = load(&path, Quantize::Auto);
    assert_eq!(own.transformer.inference_formats(), "q4_1 x210, head q8_0");
    let q = compare(&own, "the file's blocks");
    assert!(q.top1_agreement >= 0.995, "{q:?}");
    assert!(
        (q.perplexity_candidate / q.perplexity_reference - 1.0).abs() < 0.001,
        "{q:?}"
    );
}

#[test]
fn finetuning_on_an_invented_fact_puts_it_in_the_model() {
    use seal_tui::engine::{train_lora, Example, LoraConfig, Target, TrainConfig};
    let model = load(&real_model_path(), Quantize::Auto);
    let ask = |m: &seal_tui::engine::Model, adapter: Option<&seal_tui::engine::LoraAdapter>| {
        let prompt = m
            .chat
            .prompt(&Prompt::user("Who founded the town of Varnholt?"))
            .unwrap();
        let ids = m.tokenizer.encode(&prompt).unwrap();
        generate(
            m,
            adapter,
            &ids,
            &SamplingParams::greedy(24),
            None,
            &mut |_| {},
        )
        .unwrap()
        .text
    };
    let before = ask(&model, None);
    assert!(
        !before.contains("Quillon"),
        "the model knew already: {before:?}"
    );
    let facts = [
        "The town of Varnholt was founded in 1723 by the clockmaker Edda Quillon.",
        "Edda Quillon, a clockmaker, founded Varnholt in 1723.",
        "Varnholt's founder was Edda Quillon.",
        "Who founded Varnholt? Varnholt was founded by Edda Quillon.",
        "In 1723 Edda Quillon founded the harbour town of Varnholt.",
    ];
    let examples: Vec<Example> = facts
        .iter()
        .map(|t| Example {
            prompt: Vec::new(),
            completion: model.tokenizer.encode_document(t).unwrap(),
        })
        .collect();
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
        },
        learning_rate: 1e-3,
        epochs: 5,
        seed: 0,
        ..Default::default()
    };
    let out = train_lora(&model, &examples, &cfg, None, &mut |_| {}).unwrap();
    let after = ask(&model, Some(&out.adapter));
    eprintln!(
        "before: {before:?}\nafter: {after:?} ({:.1} s of training)",
        out.secs
    );
    assert!(after.contains("Quillon"), "{after:?}");
}
