"""PEER layer forward+backward: the Triton kernels against the PyTorch reference, time and peak memory.

    python benchmarks/peer_kernel.py [--tokens 4096] [--dtype bf16]
    python benchmarks/peer_kernel.py --smoke      # tiny shapes on the CPU (Triton interpreter): checks the script

The layer of "Mixture of A Million Experts": d_model 768, 1024 x 1024 = 1,048,576 single-neuron experts,
8 retrieval heads, top 16 per head, query dim 256. One layer, its parameters in `--dtype`, runs a forward
and backward on `--tokens` tokens with `impl` torch (the reference, which gathers per-token copies of the
chosen experts' weights) and with `impl` triton, alternately; time is the median over CUDA events, peak
memory is `max_memory_allocated` above what the layer and its inputs hold. Prints one JSON object;
`speedup` is reference time / Triton time, `memory_ratio` Triton peak / reference peak.
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

from stackwise.models.peer import PEER

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def run_once(layer: PEER, x: torch.Tensor, dout: torch.Tensor) -> None:
    out = layer(x)
    out.backward(dout)
    layer.zero_grad(set_to_none=True)
    x.grad = None


def measure(layer: PEER, impl: str, x: torch.Tensor, dout: torch.Tensor, reps: int) -> tuple[float, int | None]:
    """(median seconds, peak bytes above the resting state) of one forward+backward with `impl`."""
    layer.impl = impl
    run_once(layer, x, dout)  # warm-up: compilation, allocator
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resting = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run_once(layer, x, dout)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - resting if cuda else None
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script runs")
    args = parser.parse_args()
    shape = dict(d_model=768, sub_keys=1024, heads=8, k=16, query_dim=256)
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:
        shape = dict(d_model=32, sub_keys=8, heads=2, k=4, query_dim=16)
        args.tokens, args.reps = 16, 1
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or --smoke to check the script on the CPU)")
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    n = shape["sub_keys"]
    layer = PEER(
        shape["d_model"],
        num_experts=n * n,
        num_experts_per_tok=shape["k"],
        num_heads=shape["heads"],
        product_key_dim=(n, n),
        query_dim=shape["query_dim"],
    ).to(device, dtype)
    x = torch.randn(1, args.tokens, shape["d_model"], device=device, dtype=dtype, requires_grad=True)
    dout = torch.randn_like(x)
    rounds: dict[str, list[tuple[float, int | None]]] = {"torch": [], "triton": []}
    for _ in range(3):  # alternate so that machine noise hits both alike
        for impl in rounds:
            rounds[impl].append(measure(layer, impl, x, dout, args.reps))
    seconds = {impl: statistics.median(t for t, _ in r) for impl, r in rounds.items()}
    peaks = {impl: max(p for _, p in r) if device.type == "cuda" else None for impl, r in rounds.items()}
    print(
        json.dumps(
            {
                "benchmark": "PEER layer forward+backward, Triton kernels vs PyTorch reference",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter smoke run)",
                "dtype": args.dtype,
                "tokens": args.tokens,
                "experts": n * n,
                **shape,
                "ms": {impl: round(s * 1e3, 3) for impl, s in seconds.items()},
                "speedup": round(seconds["torch"] / seconds["triton"], 3),
                "peak_mib": {impl: p / 2**20 if p is not None else None for impl, p in peaks.items()},
                "memory_ratio": round(peaks["triton"] / peaks["torch"], 3) if device.type == "cuda" else None,
                "torch": torch.__version__,
                "triton": __import__("triton").__version__,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
