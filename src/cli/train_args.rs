//! Finetuning flags shared by `finetune` and `eval`.

use anyhow::{bail, Context, Result};
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
    /// Longer rows are cut to it: their ends, or under `--loss completion` their prompts' starts.
    #[arg(long, default_value_t = 1024)]
    pub max_seq_len: usize,
}

impl TrainArgs {
    /// The flags as a trainer configuration; a bad value is refused naming its flag.
    pub fn config(&self) -> Result<TrainConfig> {
        let positive = [("--lr", self.lr), ("--alpha", self.alpha)];
        for (flag, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                bail!("{flag} {value}: must be a positive number");
            }
        }
        let at_least_one = [
            ("--rank", self.rank),
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--grad-accum", self.grad_accum),
        ];
        for (flag, value) in at_least_one {
            if value == 0 {
                bail!("{flag} 0: must be at least 1");
            }
        }
        if self.max_seq_len < 2 {
            bail!("--max-seq-len {}: must be at least 2", self.max_seq_len);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("--dropout {}: must be at least 0 and below 1", self.dropout);
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bail!(
                "--max-grad-norm {}: must be 0 (no clipping) or positive",
                self.max_grad_norm
            );
        }
        let targets = Target::parse_list(&self.targets)
            .with_context(|| format!("--targets {:?}", self.targets))?;
        let cfg = TrainConfig {
            lora: LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                dropout: self.dropout,
                targets,
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
