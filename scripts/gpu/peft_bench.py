#!/usr/bin/env python3
"""The PyTorch + PEFT reference for seal-tui's LoRA step, on the same model folder with the same
settings: batch 1, the same text repeated to each sequence length, LoRA on the given modules
with f32 adapter weights and AdamW state over a bf16 base, loss on every token, SDPA attention.
Prints one JSON line: ms per step (median after warm-up), tokens/s, peak allocated memory.

    peft_bench.py MODEL_DIR [--seq-lens 1024,2048] [--rank 32] [--alpha 64] [--targets q_proj,v_proj]
                  [--device cuda] [--dtype bfloat16]

`--device cpu --dtype float32` is for `scripts/gpu-check rehearse`: the same code path, no GPU
figures, and a base loss exact enough to compare with seal-tui's.
"""
import argparse
import json
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT = ("The lighthouse stood on a rock at the edge of the bay, and every night its keeper "
        "climbed the ninety-nine steps to light the lamp. Ships passed in the dark, and the "
        "beam swept over the water like a slow hand. ")


def now_ms():
    return int(time.time() * 1000)


class Device:
    """The GPU's synchronisation and peak-memory counters, or nothing on a CPU."""

    def __init__(self, name):
        self.cuda = name.startswith("cuda")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self):
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def release(self):
        if self.cuda:
            torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seq-lens", default="1024,2048")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, default=64)
    p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = p.parse_args()
    device = Device(args.device)
    start = time.time()
    load_start = now_ms()
    kwargs = dict(attn_implementation="sdpa")
    dtype = getattr(torch, args.dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, **kwargs)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=dtype,
                                                     **kwargs)
    model = model.to(args.device)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=args.targets.split(","), bias="none"))
    for _, param in model.named_parameters():
        if param.requires_grad:
            param.data = param.data.float()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    tok = AutoTokenizer.from_pretrained(args.model)
    base_ids = tok(TEXT)["input_ids"]
    out = {"model": args.model, "torch": torch.__version__, "device": args.device,
           "dtype": args.dtype,
           "load_secs": time.time() - start,
           "load": {"start_ms": load_start, "end_ms": now_ms()}, "train": []}
    model.train()
    for seq in [int(s) for s in args.seq_lens.split(",")]:
        phase_start = now_ms()
        ids = (base_ids * (seq // len(base_ids) + 1))[:seq]
        ids = torch.tensor([ids], device=args.device)
        times, losses = [], []
        try:
            # The base model's loss on these ids (the adapter off: later lengths start from an
            # adapter the earlier ones trained), to set beside seal-tui's first loss, whose
            # adapter starts at zero.
            with torch.no_grad(), model.disable_adapter():
                base_loss = model(input_ids=ids, labels=ids).loss.item()
            device.reset_peak()
            for _ in range(args.warmup + args.steps):
                device.sync()
                t0 = time.perf_counter()
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
                device.sync()
                times.append(time.perf_counter() - t0)
            ms = statistics.median(times[args.warmup:]) * 1000
            out["train"].append({
                "seq_len": seq, "ms_per_step": ms, "tokens_per_sec": seq / (ms / 1000),
                "step_ms": [t * 1000 for t in times[args.warmup:]],
                "base_loss": base_loss, "first_loss": losses[0], "last_loss": losses[-1],
                "peak_allocated_gb": device.peak_gb(),
                "start_ms": phase_start, "end_ms": now_ms()})
        except torch.cuda.OutOfMemoryError as e:
            out["train"].append({"seq_len": seq, "error": f"out of memory: {e}"[:300]})
            opt.zero_grad(set_to_none=True)
            device.release()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
