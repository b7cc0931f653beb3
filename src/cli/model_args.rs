//! The flags every model-using subcommand shares.

use anyhow::Result;
use clap::Args;
use seal_tui::engine::{self, fetch, LoadOptions, Model};
use seal_tui::record::config::{Device, Dtype, ModelSection, Quantize};
use seal_tui::seal::settings;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face model folder, or the name of a model seal-tui fetches
    /// (`seal-tui fetch-model --list`; default: SmolLM2-135M-Instruct, fetched if missing).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Weight precision (default: f32 on CPU, bf16 on GPU).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Quantized weights for sampling (auto: on CPU, the file's own 4/8-bit blocks, else Q8_0).
    #[arg(long, value_enum, default_value_t = Quantize::Auto)]
    pub quantize: Quantize,
    /// Gradient checkpointing in training: recompute each layer in the backward instead of
    /// keeping its intermediates (for long sequences or large models on a GPU).
    #[arg(long)]
    pub checkpoint_layers: bool,
}

impl ModelArgs {
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(p) => fetch::resolve_model(p, &mut |m| errln!("{m}")),
            None => fetch::ensure_default_model(&mut |m| errln!("{m}")),
        }
    }

    /// The model section these flags describe, as a run configuration would hold it.
    pub fn section(&self) -> ModelSection {
        ModelSection {
            path: self.model.clone(),
            device: self.device,
            dtype: self.dtype,
            quantize: self.quantize,
            checkpoint_layers: self.checkpoint_layers,
        }
    }

    /// Load options; a device fallback is said on stderr.
    pub fn options(&self) -> Result<LoadOptions> {
        let (options, notice) = settings::load_options(&self.section())?;
        if let Some(n) = notice {
            errln!("warning: {n}");
        }
        Ok(options)
    }

    pub fn load(&self) -> Result<Model> {
        let path = self.path()?;
        let model = engine::load_model(&path, &self.options()?)?;
        for notice in &model.info.notices {
            errln!("warning: {notice}");
        }
        Ok(model)
    }
}
