//! The candle engine: model loading, sampling, LoRA training. It knows nothing of SEAL.

mod adamw;
pub mod attend;
pub mod chat;
pub mod config;
pub mod constraint;
pub mod device;
pub mod elementwise;
pub mod exp_rows;
pub mod fetch;
pub mod fused;
pub mod gemm;
pub mod load;
pub mod lora;
pub mod lora_cpu;
pub mod model;
pub mod ops;
pub mod peft;
pub mod pool;
pub mod quality;
pub mod qweight;
pub mod rng;
pub mod sample;
#[cfg(test)]
mod testing;
pub mod tiny;
pub mod tokenizer;
pub mod train;
pub mod train_attention;

pub use chat::{BuiltinFormat, ChatTemplate, Message, Prompt, Role};
pub use config::{Arch, ModelConfig};
pub use constraint::{Constraint, PrefixState};
pub use load::{load_model, LoadOptions, Model, ModelInfo, Quantize};
pub use lora::{LoraAdapter, LoraConfig, Target};
pub use model::{KvCache, Positions, Transformer};
pub use ops::Mode;
pub use sample::{
    generate, generate_batch, generate_constrained, Generation, SamplingParams, StopReason,
};
pub use train::{train_lora, Example, LossOn, Schedule, TrainConfig, TrainEvent, TrainOutcome};
