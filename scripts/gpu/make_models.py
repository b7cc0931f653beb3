#!/usr/bin/env python3
"""Random-weight Hugging Face folders in the shapes of Llama-3.2-1B and Qwen2.5-7B, written by
this machine's own transformers (save_pretrained: safetensors shards, config.json as this
version writes it, chat_template.jinja), around a tokenizer exported by `seal-tui dev
export-tokenizer` (SmolLM2's: its 49,152 tokens sit inside both vocabularies).

    make_models.py TOKENIZER_DIR OUT_DIR [--only llama-1b,qwen-7b] [--device cuda]

The tiny-llama and tiny-qwen shapes are for `scripts/gpu-check rehearse` on a CPU.
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

def llama(tok, **dims):
    """Llama 3.2's structure: grouped key/value heads, tied embeddings, llama3 RoPE."""
    return LlamaConfig(
        rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=tok["bos"], eos_token_id=tok["eos"], **dims)


def qwen(tok, **dims):
    """Qwen2.5's structure: grouped key/value heads, q/k/v biases, an untied head."""
    return Qwen2Config(
        rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1000000.0,
        bos_token_id=tok["bos"], eos_token_id=tok["eos"], **dims)


# The rehearsal's models on a CPU: a few million parameters, a vocabulary just holding the
# tokenizer's 49,152 tokens, and weights 15x the usual spread, so that the loss depends on the
# details: at 0.02 the logits are nearly uniform, and a wrong RoPE base moved the loss by 1e-4;
# at 0.3, by 0.04 (in f32 seal-tui and PyTorch agree to ~1e-6).
TINY = dict(vocab_size=49152, initializer_range=0.3, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32768)

SHAPES = {
    # Llama-3.2-1B: 16 layers, 32 heads over 8 key/value heads.
    "llama-1b": lambda tok: llama(
        tok, vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64,
        max_position_embeddings=131072),
    # Qwen2.5-7B: 28 layers, 28 heads over 4 key/value heads.
    "qwen-7b": lambda tok: qwen(
        tok, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768),
    "tiny-llama": lambda tok: llama(tok, hidden_size=64, intermediate_size=176, head_dim=16, **TINY),
    "tiny-qwen": lambda tok: qwen(tok, hidden_size=56, intermediate_size=152, **TINY),
}


def token_ids(tokenizer_dir):
    with open(os.path.join(tokenizer_dir, "tokenizer.json")) as f:
        tok = json.load(f)
    with open(os.path.join(tokenizer_dir, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    vocab = dict(tok["model"]["vocab"])
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    return {"bos": vocab.get(cfg.get("bos_token")), "eos": vocab.get(cfg.get("eos_token"))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("tokenizer_dir")
    p.add_argument("out_dir")
    p.add_argument("--only", default="llama-1b,qwen-7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    ids = token_ids(args.tokenizer_dir)
    made = {}
    for name in args.only.split(","):
        start = time.time()
        config = SHAPES[name](ids)
        with torch.device(args.device):
            try:
                model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            except TypeError:  # transformers < 5 names it torch_dtype
                model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
        out = os.path.join(args.out_dir, name)
        model.save_pretrained(out, max_shard_size="4GB")
        for f in os.listdir(args.tokenizer_dir):
            shutil.copy(os.path.join(args.tokenizer_dir, f), out)
        made[name] = {
            "path": out,
            "parameters": sum(t.numel() for t in model.parameters()),
            "secs": round(time.time() - start, 1),
        }
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                      "models": made}))


if __name__ == "__main__":
    sys.exit(main())
