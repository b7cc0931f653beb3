//! LoRA training on the tiny model: gradients are right and reach every adapter tensor,
//! adapters save in PEFT layout, load back and merge, and divergence stops cleanly.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{load, max_abs, max_abs_diff, tiny_gguf, tiny_hf};
use seal_tui::engine::train::batch_loss;
use seal_tui::engine::{
    load_model, peft, train_lora, Arch, Example, LoadOptions, LoraAdapter, LoraConfig, LossOn,
    Mode, Model, Positions, Quantize, Target, TrainConfig, TrainEvent,
};

fn examples(model: &Model) -> Vec<Example> {
    [
        "the sea is wide and deep",
        "a whale sings in the sea",
        "ships sail at dawn",
    ]
    .iter()
    .map(|t| Example {
        prompt: model.tokenizer.encode("fact:").unwrap(),
        completion: model.tokenizer.encode(t).unwrap(),
    })
    .collect()
}

fn logits(model: &Model, adapter: Option<&LoraAdapter>, text: &str) -> Tensor {
    let t = &model.transformer;
    let ids = model.tokenizer.encode(text).unwrap();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = t
        .forward_hidden(&x, &Positions::From(0), None, None, adapter, Mode::Infer)
        .unwrap();
    t.logits(&h, Mode::Infer).unwrap()
}

#[test]
fn lora_gradients_match_finite_differences() {
    // f64 throughout, so central differences are accurate to ~1e-8.
    let model = load_model(
        &tiny_hf(Arch::Qwen2),
        &LoadOptions {
            dtype: Some(DType::F64),
            quantize: Quantize::Off,
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
    };
    let t = &model.transformer;
    let (adapter, vars) = LoraAdapter::init_with(
        &cfg,
        &t.projection_shapes(),
        3,
        &Device::Cpu,
        DType::F64,
        0.05,
    )
    .unwrap();
    let ex = examples(&model);
    let rows: Vec<&Example> = ex.iter().collect();
    let loss_of = |a: &LoraAdapter| -> f64 {
        batch_loss(&model, a, &rows, LossOn::Completion, 0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let loss = batch_loss(&model, &adapter, &rows, LossOn::Completion, 0).unwrap();
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (k, var) in vars.iter().enumerate() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("adapter tensor {k} received no gradient"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            g.iter().any(|x| x.abs() > 0.0),
            "adapter tensor {k} has an all-zero gradient"
        );
        // Spot-check two elements of every tensor.
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for idx in [0, base.len() / 2 + 1] {
            let eps = 1e-5;
            let shifted = |delta: f64| {
                let mut v = base.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let l = loss_of(&adapter);
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                l
            };
            let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
            let analytic = g[idx];
            let tol = 1e-6 + 1e-4 * numeric.abs().max(analytic.abs());
            assert!(
                (numeric - analytic).abs() < tol,
                "tensor {k} element {idx}: analytic {analytic}, numeric {numeric}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, vars.len() * 2);
    assert_eq!(vars.len(), 2 * 7 * t.config.num_layers);
}

/// Loss and gradients of every adapter tensor with the fused ops on or off and each layer
/// checkpointed or not.
fn loss_and_grads(
    model: &Model,
    cfg: &LoraConfig,
    fused: bool,
    checkpoint: bool,
) -> (f32, Vec<Tensor>) {
    let mut t = (*model.transformer).clone();
    t.fused_training = fused;
    t.checkpoint_layers = checkpoint;
    let (adapter, vars) = LoraAdapter::init_with(
        cfg,
        &t.projection_shapes(),
        5,
        &Device::Cpu,
        DType::F32,
        0.05,
    )
    .unwrap();
    let model = model.with_transformer(t);
    let ex = examples(&model);
    let rows: Vec<&Example> = ex.iter().collect();
    let loss = batch_loss(&model, &adapter, &rows, LossOn::All, 0).unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).unwrap().clone())
        .collect();
    let loss = loss
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (loss, g)
}

fn assert_same(
    what: &str,
    (l_a, g_a): &(f32, Vec<Tensor>),
    (l_b, g_b): &(f32, Vec<Tensor>),
    rel: f32,
) {
    assert!((l_a - l_b).abs() < 1e-4, "{what}: loss {l_a} vs {l_b}");
    assert_eq!(g_a.len(), g_b.len(), "{what}: gradient count");
    for (k, (a, b)) in g_a.iter().zip(g_b).enumerate() {
        let scale = max_abs(b).max(1e-6);
        let diff = max_abs_diff(a, b);
        assert!(
            diff < rel * scale + 1e-6,
            "{what}: gradient {k} differs by {diff} (scale {scale})"
        );
    }
}

/// Small adapters on every projection and on SEAL's q,v only.
fn all_and_seal_targets() -> [LoraConfig; 2] {
    [Target::ALL.to_vec(), vec![Target::Q, Target::V]].map(|targets| LoraConfig {
        rank: 3,
        alpha: 6.0,
        dropout: 0.0,
        targets,
    })
}

#[test]
fn fused_training_ops_match_the_composed_formulation() {
    // Same loss and same gradients, with and without the fused CPU ops, on both architectures
    // (Qwen2 adds q/k/v biases) and with a batch whose rows differ in length; and the same
    // again with every layer checkpointed (recomputed in the backward), with all projections
    // adapted and with SEAL's q,v only.
    for arch in [Arch::Llama, Arch::Qwen2] {
        let model = load(&tiny_hf(arch), Quantize::Off);
        for cfg in all_and_seal_targets() {
            let targets = &cfg.targets;
            let fused = loss_and_grads(&model, &cfg, true, false);
            let composed = loss_and_grads(&model, &cfg, false, false);
            let checkpointed = loss_and_grads(&model, &cfg, true, true);
            let what = format!("{arch:?} {targets:?}");
            assert_same(
                &format!("{what} fused vs composed"),
                &fused,
                &composed,
                1e-3,
            );
            assert_same(
                &format!("{what} checkpointed vs fused"),
                &checkpointed,
                &fused,
                1e-5,
            );
        }
    }
}

#[test]
fn half_precision_training_is_the_gpu_formulation_and_agrees_with_f32() {
    // In bf16 the fused ops run as candle's ops on the CPU exactly as on a GPU (a bf16 base, an
    // f32 adapter, sums and softmax statistics in f32). Measured against the f32 model: losses
    // within 6e-4 of their size and gradients within 2.1e-2 of theirs, as the composed ops in
    // bf16 are (1.5e-2 to 2.0e-2); a layer checkpointed gives the same bits.
    for arch in [Arch::Llama, Arch::Qwen2] {
        let exact = load(&tiny_hf(arch), Quantize::Off);
        let half = load_model(
            &tiny_hf(arch),
            &LoadOptions {
                dtype: Some(DType::BF16),
                quantize: Quantize::Off,
                ..Default::default()
            },
        )
        .unwrap();
        let probe = Tensor::zeros(1, DType::BF16, &Device::Cpu).unwrap();
        assert!(seal_tui::engine::fused::supported(&probe));
        for cfg in all_and_seal_targets() {
            let targets = &cfg.targets;
            let (loss, grads) = loss_and_grads(&half, &cfg, true, false);
            let (loss_f32, grads_f32) = loss_and_grads(&exact, &cfg, true, false);
            let what = format!("{arch:?} {targets:?}");
            assert!(
                (loss - loss_f32).abs() < 3e-3 * loss_f32.abs(),
                "{what}: bf16 loss {loss} against f32 {loss_f32}"
            );
            assert_eq!(grads.len(), grads_f32.len());
            for (k, (g, g32)) in grads.iter().zip(&grads_f32).enumerate() {
                let scale = max_abs(g32);
                assert!(scale > 0.0, "{what}: gradient {k} is zero");
                let diff = max_abs_diff(g, g32);
                assert!(
                    diff < 6e-2 * scale,
                    "{what}: bf16 gradient {k} differs by {diff} (scale {scale})"
                );
            }
            let checkpointed = loss_and_grads(&half, &cfg, true, true);
            assert_same(
                &format!("{what} bf16 checkpointed vs not"),
                &checkpointed,
                &(loss, grads),
                1e-6,
            );
        }
    }
}

#[test]
fn padding_never_counts_in_the_loss() {
    // A batch's loss is the mean over its counted tokens: exactly the token-weighted mean of
    // each row's own loss, however much padding the shorter row carries.
    let model = load(&tiny_hf(Arch::Qwen2), Quantize::Off);
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec![Target::Q, Target::V],
    };
    let t = &model.transformer;
    let (adapter, _) = LoraAdapter::init_with(
        &cfg,
        &t.projection_shapes(),
        9,
        &Device::Cpu,
        DType::F32,
        0.05,
    )
    .unwrap();
    let short = Example {
        prompt: model.tokenizer.encode("q:").unwrap(),
        completion: model.tokenizer.encode("ab").unwrap(),
    };
    let long = Example {
        prompt: model.tokenizer.encode("question:").unwrap(),
        completion: model.tokenizer.encode("a much longer answer here").unwrap(),
    };
    for loss_on in [LossOn::All, LossOn::Completion] {
        let one = |e: &Example| {
            batch_loss(&model, &adapter, &[e], loss_on, 0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let counted = |e: &Example| match loss_on {
            LossOn::All => e.len() - 1,
            LossOn::Completion => e.completion.len(),
        } as f64;
        let both = batch_loss(&model, &adapter, &[&short, &long], loss_on, 7)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let expected = (one(&short) * counted(&short) + one(&long) * counted(&long))
            / (counted(&short) + counted(&long));
        assert!(
            (both - expected).abs() < 1e-4,
            "{loss_on:?}: {both} vs {expected}"
        );
    }
}

#[test]
fn training_lowers_the_loss_and_reports_progress() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V, Target::Up],
        },
        learning_rate: 1e-2,
        epochs: 8,
        batch_size: 2,
        ..Default::default()
    };
    let mut steps = Vec::new();
    let mut started = false;
    let out = train_lora(&model, &examples(&model), &cfg, None, &mut |e| match e {
        TrainEvent::Started { total_steps, .. } => {
            started = true;
            assert_eq!(*total_steps, 16);
        }
        TrainEvent::Step(p) => steps.push(p.clone()),
        TrainEvent::Truncated { .. } => {}
        TrainEvent::Failed { .. } => panic!("unexpected failure"),
    })
    .unwrap();
    assert!(started);
    assert_eq!(steps.len(), 16);
    assert_eq!(out.steps, 16);
    let last = steps.last().unwrap();
    assert_eq!(last.step, 16);
    assert!((last.epoch - 8.0).abs() < 1e-9);
    assert!(last.tokens_per_sec > 0.0 && last.eta_secs == 0.0);
    assert!(
        out.losses[15] < out.losses[0] * 0.7,
        "loss did not fall: {:?}",
        out.losses
    );
}

#[test]
fn adapters_save_in_peft_layout_load_back_and_merge() {
    let model = load(&tiny_hf(Arch::Llama), Quantize::Off);
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::K, Target::V, Target::O, Target::Down],
        },
        learning_rate: 5e-2,
        epochs: 2,
        ..Default::default()
    };
    let out = train_lora(&model, &examples(&model), &cfg, None, &mut |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    peft::save_adapter(&out.adapter, dir.path(), "tiny").unwrap();

    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 16.0);
    let tensors =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(tensors.len(), 2 * 5 * 2);
    let a = &tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    let b = &tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"];
    assert_eq!(a.dims(), &[4, 64]);
    assert_eq!(b.dims(), &[64, 4]);

    let loaded = peft::load_adapter(dir.path(), &model).unwrap();
    assert_eq!(loaded.config, out.adapter.config);
    let text = "merging keeps the function";
    let with_adapter = logits(&model, Some(&loaded), text);
    let base = logits(&model, None, text);
    assert!(
        max_abs_diff(&with_adapter, &base) > 1e-3,
        "the adapter changes nothing"
    );
    let merged = model.with_transformer(model.transformer.merged(&loaded).unwrap());
    let merged_logits = logits(&merged, None, text);
    let diff = max_abs_diff(&with_adapter, &merged_logits);
    assert!(diff < 1e-4, "base+adapter and merged differ by {diff}");

    // The merged model saves as a folder that loads back to the same function.
    let saved = dir.path().join("merged");
    seal_tui::engine::load::save_hf_folder(&merged, &saved).unwrap();
    let reloaded = load(&saved, Quantize::Off);
    assert!(max_abs_diff(&logits(&reloaded, None, text), &merged_logits) < 1e-5);
}

#[test]
fn a_diverging_run_stops_with_an_error_and_leaves_the_base_untouched() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let before = logits(&model, None, "unchanged");
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
        },
        // The final RMSNorm keeps logits bounded, so only an absurd rate overflows to inf/NaN.
        learning_rate: 1e30,
        max_grad_norm: 0.0,
        epochs: 50,
        ..Default::default()
    };
    let mut failed = None;
    let result = train_lora(&model, &examples(&model), &cfg, None, &mut |e| {
        if let TrainEvent::Failed { message, .. } = e {
            failed = Some(message.clone());
        }
    });
    let err = result.err().expect("training with lr 1e30 must diverge");
    assert!(err.to_string().contains("diverged"), "{err}");
    let message = failed.expect("a Failed event");
    assert!(message.contains("diverged at step 1"), "{message}");
    assert!(max_abs_diff(&before, &logits(&model, None, "unchanged")) == 0.0);
}

#[test]
fn weights_that_blow_up_stop_the_run_though_the_loss_stays_finite() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V],
        },
        learning_rate: 1.0,
        epochs: 20,
        ..Default::default()
    };
    let mut losses = Vec::new();
    let result = train_lora(&model, &examples(&model), &cfg, None, &mut |e| {
        if let TrainEvent::Step(p) = e {
            losses.push(p.loss);
        }
    });
    let err = result.err().expect("lr 1.0 on LoRA must be stopped");
    assert!(
        matches!(err, seal_tui::engine::train::TrainError::Diverged { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("times the weight"), "{err}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
}

#[test]
fn training_can_be_cancelled_between_steps() {
    let model = load(&tiny_gguf(Arch::Llama), Quantize::Off);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut seen = 0;
    let result = train_lora(
        &model,
        &examples(&model),
        &TrainConfig::default(),
        Some(&cancel),
        &mut |e| {
            if let TrainEvent::Step(_) = e {
                seen += 1;
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        },
    );
    assert!(matches!(
        result,
        Err(seal_tui::engine::train::TrainError::Cancelled)
    ));
    assert_eq!(seen, 1);
}
