"""Attention forward+backward TFLOP/s: stackwise's Triton kernel against PyTorch SDPA's flash backend.

    python benchmarks/attention_kernel.py [--dtype bf16] [--tokens 16384] [--width 2048]
    python benchmarks/attention_kernel.py --smoke      # tiny shapes on the CPU (Triton interpreter): checks the script

For head dims 64 and 128 and sequence lengths 1024 and 4096, causal and bidirectional, with batch =
tokens / T and heads = width / Dh (FlashAttention-2's benchmark set-up). The two implementations run
alternately in one process, each timed over CUDA events (median of `--reps`); FLOPs are FlashAttention's
count: 4·B·H·T²·Dh forward, 2.5x that backward, halved when causal. Prints one JSON object; `ratio` is
ours / SDPA (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone

if __name__ == "__main__" and "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: kernels then run on the CPU

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from stackwise.kernels.attention_triton import flash_attention

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, reps: int, device: torch.device) -> float:
    """Median seconds of `fn()` over `reps` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sdpa_flash(q, k, v, causal: bool) -> torch.Tensor:
    if q.device.type != "cuda":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # only the flash backend: an error rather than a fallback
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def forward_backward(attn, q, k, v, dout, causal: bool):
    def run() -> None:
        out = attn(q, k, v, causal=causal)
        torch.autograd.grad(out, (q, k, v), dout)

    return run


def case(batch: int, heads: int, seq: int, dim: int, causal: bool, dtype, device, reps: int) -> dict:
    shape = (batch, seq, heads, dim)  # the layout a projection produces, seen as (B, H, T, Dh)
    q, k, v, dout = (torch.randn(shape, device=device, dtype=dtype).transpose(1, 2) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    flops = 4 * batch * heads * seq * seq * dim * 3.5 * (0.5 if causal else 1.0)
    ours_fn = forward_backward(lambda *a, causal: flash_attention(*a, causal=causal), q, k, v, dout, causal)
    sdpa_fn = forward_backward(sdpa_flash, q, k, v, dout, causal)
    ours, sdpa = [], []
    for _ in range(3):  # alternate so that machine noise hits both alike
        ours.append(timed(ours_fn, reps, device))
        sdpa.append(timed(sdpa_fn, reps, device))
    t_ours, t_sdpa = statistics.median(ours), statistics.median(sdpa)
    return {
        "head_dim": dim,
        "seq_len": seq,
        "batch": batch,
        "heads": heads,
        "causal": causal,
        "tflops": {"stackwise": round(flops / t_ours / 1e12, 1), "sdpa_flash": round(flops / t_sdpa / 1e12, 1)},
        "ratio": round(t_sdpa / t_ours, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--tokens", type=int, default=16384, help="batch x sequence length")
    parser.add_argument("--width", type=int, default=2048, help="heads x head dim")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script runs")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or --smoke to check the script on the CPU)")
    dims, seqs, tokens, width, reps = ((64, 128), (1024, 4096), args.tokens, args.width, args.reps)
    if args.smoke:
        dims, seqs, tokens, width, reps = (16,), (24,), 24, 32, 1
    torch.manual_seed(0)
    results = [
        case(max(1, tokens // seq), width // dim, seq, dim, causal, DTYPES[args.dtype], device, reps)
        for dim in dims
        for seq in seqs
        for causal in (True, False)
    ]
    print(
        json.dumps(
            {
                "benchmark": "attention forward+backward, stackwise Triton kernel vs SDPA flash backend",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter smoke run)",
                "dtype": args.dtype,
                "results": results,
                "min_ratio": min(r["ratio"] for r in results),
                "torch": torch.__version__,
                "triton": __import__("triton").__version__,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
