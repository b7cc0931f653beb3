//! The candle engine: model loading, sampling, LoRA training.
