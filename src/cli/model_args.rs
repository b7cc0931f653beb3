//! The flags every model-using subcommand shares.

use anyhow::Result;
use clap::Args;
use seal_tui::engine::{self, device, fetch, LoadOptions, Model, Quantize};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file or a Hugging Face model folder (default: SmolLM2-135M-Instruct, fetched if
    /// missing).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Weight precision: f32, bf16 or f16 (default: f32 on CPU, bf16 on GPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Keep a quantized copy of the weights for sampling: auto (q8 on CPU), off or q8.
    #[arg(long, default_value = "auto")]
    pub quantize: String,
}

impl ModelArgs {
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => fetch::ensure_default_model(&mut |m| eprintln!("{m}")),
        }
    }

    pub fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: device::select_device(&self.device)?,
            dtype: self.dtype.as_deref().map(device::parse_dtype).transpose()?,
            quantize: Quantize::parse(&self.quantize)?,
        })
    }

    pub fn load(&self) -> Result<Model> {
        let path = self.path()?;
        engine::load_model(&path, &self.options()?)
    }
}
