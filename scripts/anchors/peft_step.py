"""The PyTorch + PEFT reference for a LoRA training step, as scripts/bench-anchors runs it.

Loads the same GGUF through transformers' GGUF loader (dequantized to f32, as seal-tui trains),
wraps it with PEFT, and times full optimizer steps (forward, loss, backward, gradient clipping,
AdamW) at batch 1 on a sequence of the given length. Prints one JSON line per setting.
"""

import argparse
import json
import os
import resource
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a GGUF file")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="measured steps after one warm-up")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--settings", default="r16-qkvo,r32-qv")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder, name = os.path.split(os.path.abspath(args.model))
    settings = {
        "r16-qkvo": (16, 32, ["q_proj", "k_proj", "v_proj", "o_proj"]),
        "r32-qv": (32, 64, ["q_proj", "v_proj"]),
    }
    # A fixed sequence of ordinary token ids: the content does not change the work.
    ids = torch.tensor([[(i * 7919) % 40000 + 100 for i in range(args.seq_len)]])
    for key in args.settings.split(","):
        rank, alpha, targets = settings[key]
        base = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, torch_dtype=torch.float32
        )
        model = get_peft_model(
            base,
            LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets),
        )
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        times = []
        for step in range(args.steps + 1):
            start = time.perf_counter()
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step > 0:
                times.append(time.perf_counter() - start)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        print(
            json.dumps(
                {
                    "setting": key,
                    "ms_per_step": statistics.median(times) * 1000,
                    "steps": times,
                    "peak_gb": peak_gb,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )
        del model, base, opt


if __name__ == "__main__":
    main()
