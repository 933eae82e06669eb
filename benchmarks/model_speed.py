"""Forward+backward tokens/s of stackwise's GPT-2 small against `transformers`' GPT2LMHeadModel, same weights.

    python benchmarks/model_speed.py [--batch 4] [--seq 256] [--steps 6] [--device cpu]

Both models run in the same process, alternating step by step so that machine noise hits both alike;
the stackwise model is built from the Hugging Face one with `from_hf`, so they compute the same function.
Prints one JSON object; the ratio is stackwise / transformers (above 1 means stackwise is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import torch
import transformers

from stackwise.models import from_hf


def step(model, ids: torch.Tensor, hf: bool) -> float:
    start = time.perf_counter()
    logits = model(ids).logits if hf else model(ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    model.zero_grad(set_to_none=True)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=768, n_layer=12, n_head=12, n_positions=1024, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0
    )
    hf = transformers.GPT2LMHeadModel(config).to(args.device).train()
    ours = from_hf(hf.cpu()).to(args.device).train()
    hf.to(args.device)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=args.device)
    for _ in range(2):  # warm-up
        step(hf, ids, True)
        step(ours, ids, False)
    times: dict[str, list[float]] = {"stackwise": [], "transformers": []}
    for _ in range(args.steps):
        times["transformers"].append(step(hf, ids, True))
        times["stackwise"].append(step(ours, ids, False))
    tokens = args.batch * args.seq
    rate = {name: tokens / statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "GPT-2 small (124M) forward+backward, fp32, same weights",
                "device": args.device,
                "batch": args.batch,
                "seq_len": args.seq,
                "steps": args.steps,
                "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
                "ratio_stackwise_over_transformers": round(rate["stackwise"] / rate["transformers"], 3),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "threads": torch.get_num_threads(),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
