//! Finetuning flags shared by `finetune` and `eval`.

use anyhow::Result;
use clap::Args;
use seal_tui::engine::{LoraConfig, LossOn, Schedule, Target, TrainConfig};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// LoRA rank.
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 64.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Adapted projections, comma-separated: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,v")]
    pub targets: String,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, value_enum, default_value_t = Schedule::Constant)]
    pub schedule: Schedule,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Gradient clipping norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Which tokens the loss is taken over.
    #[arg(long, value_enum, default_value_t = LossOn::All)]
    pub loss: LossOn,
    #[arg(long, default_value_t = 0)]
    pub train_seed: u64,
    #[arg(long, default_value_t = 1024)]
    pub max_seq_len: usize,
}

impl TrainArgs {
    pub fn config(&self) -> Result<TrainConfig> {
        let cfg = TrainConfig {
            lora: LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                dropout: self.dropout,
                targets: Target::parse_list(&self.targets)?,
            },
            learning_rate: self.lr,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            max_grad_norm: self.max_grad_norm,
            weight_decay: 0.0,
            loss: self.loss,
            seed: self.train_seed,
            max_seq_len: self.max_seq_len,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
