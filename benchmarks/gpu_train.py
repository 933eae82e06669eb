"""GPT-2 124M training tokens/s and MFU: stackwise's trainer step against a plain PyTorch baseline, one process.

    python benchmarks/gpu_train.py [--batch 16] [--seq 1024] [--steps 20] [--attention-kernel triton]
    python benchmarks/gpu_train.py --smoke     # a tiny model on the CPU: checks the script, measures nothing

stackwise: a `Trainer` prepared from a config (GPT-2 124M: 12 layers, d_model 768, 12 heads, LayerNorm, GELU,
learned positions, tied embeddings, vocab 50304), bf16 autocast, fused AdamW, `compile: true`, and
`model.attention_kernel`; each step is `Trainer.train_step`, the loop `stackwise train` runs, gradient
clipping included. Baseline: the same architecture written in plain PyTorch (SDPA attention, fused AdamW,
`torch.compile` of the whole model, bf16 autocast, the same clipping). Both draw the same random token
batches already on the GPU, so the data pipeline is not measured; they alternate in rounds.

MFU counts 6N + 12·L·d_model·T FLOPs per token (PaLM, appendix B; N = parameters without the position
embeddings), against the datasheet dense bf16 peak and against a measured bf16 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stackwise.config import StackwiseConfig
from stackwise.train.trainer import Trainer

# Dense bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s (without sparsity).
DATASHEET_BF16 = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}


def datasheet_peak(name: str) -> float | None:
    return next((peak for key, peak in DATASHEET_BF16.items() if key in name), None)


def matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """Measured bf16 matmul TFLOP/s (median over `reps`) for an n x n x n product."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


class BaselineLayer(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).unbind(2)  # (B, T, H, Dh)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Baseline(nn.Module):
    """GPT-2 in plain PyTorch (nanoGPT's shape): the yardstick."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, seq: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.layers = nn.ModuleList(BaselineLayer(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln(x))


def baseline_step(model, optimizer, batch: torch.Tensor, autocast: bool) -> float:
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def stackwise_trainer(args, workdir: Path, device: str) -> Trainer:
    (workdir / "docs").mkdir(parents=True, exist_ok=True)
    (workdir / "docs" / "a.txt").write_text("stackwise benchmark text. " * 400)  # the loader needs a corpus
    cfg = StackwiseConfig.from_dict(
        {
            "model": {
                "vocab_size": args.vocab,
                "d_model": args.d_model,
                "n_layers": args.layers,
                "n_heads": args.heads,
                "max_seq_len": args.seq,
                "norm_type": "layernorm",
                "ffn_activation": "gelu",
                "use_rope": False,
                "bias": True,
                "tie_embeddings": True,
                "attention_kernel": args.attention_kernel,
            },
            "training": {
                "seq_len": args.seq,
                "batch_size": args.batch,
                "max_steps": 10_000,
                "optimizer": "adamw",
                "max_grad_norm": 1.0,
                "precision": "bf16" if device == "cuda" else "fp32",
                "compile": device == "cuda",
                "device": device,
                "checkpoint_dir": str(workdir / "runs"),
            },
            "data": {"dataset_path": str(workdir / "docs"), "tokenizer_path": "bytes", "validation_fraction": 0.1},
            "logging": {"tensorboard": False},
        }
    )
    trainer = Trainer(cfg).prepare()
    trainer._enter(trainer.stages[0])  # what `fit` does before its first step
    trainer._set_lr()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    parser.add_argument("--attention-kernel", choices=["auto", "torch", "triton"], default="triton")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, to check the script runs")
    args = parser.parse_args()
    args.vocab, args.d_model, args.layers, args.heads = 50304, 768, 12, 12
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        args.batch, args.seq, args.steps, args.rounds, args.warmup = 2, 32, 2, 1, 1
        args.vocab, args.d_model, args.layers, args.heads, args.attention_kernel = 512, 64, 2, 4, "torch"
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or --smoke to check the script on the CPU)")
    torch.manual_seed(0)
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = stackwise_trainer(args, Path(tmp), device)
        base = Baseline(args.vocab, args.d_model, args.layers, args.heads, args.seq).to(dev)
        base_opt = torch.optim.AdamW(base.parameters(), lr=6e-4, weight_decay=0.1, fused=device == "cuda")
        base_fwd = torch.compile(base) if device == "cuda" else base
        gen = torch.Generator(device=dev).manual_seed(0)

        def batch() -> torch.Tensor:
            return torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=dev, generator=gen)

        def timed(step) -> float:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / args.steps

        ours_step = lambda: trainer.train_step(iter([batch()]))  # noqa: E731
        base_step = lambda: baseline_step(base_fwd, base_opt, batch(), device == "cuda")  # noqa: E731
        for _ in range(args.warmup):
            ours_step(), base_step()
        rounds = {"stackwise": [], "baseline": []}
        for _ in range(args.rounds):
            rounds["stackwise"].append(timed(ours_step))
            rounds["baseline"].append(timed(base_step))
        params = {
            "stackwise": sum(p.numel() for p in trainer.model.parameters()) - trainer.model.pos_embed.weight.numel(),
            "baseline": sum(p.numel() for p in base.parameters()) - base.wpe.weight.numel(),
        }
        kernels = dict(trainer.kernels)
    tokens = args.batch * args.seq
    peak_sheet = datasheet_peak(torch.cuda.get_device_name()) if device == "cuda" else None
    peak_measured = matmul_peak(dev) if device == "cuda" else None
    results = {}
    for name, times in rounds.items():
        rate = tokens / statistics.median(times)
        flops = rate * (6 * params[name] + 12 * args.layers * args.d_model * args.seq)
        results[name] = {
            "tokens_per_s": round(rate),
            "parameters_without_positions": params[name],
            "mfu_datasheet": round(flops / (peak_sheet * 1e12), 4) if peak_sheet else None,
            "mfu_measured_peak": round(flops / (peak_measured * 1e12), 4) if peak_measured else None,
        }
    print(
        json.dumps(
            {
                "benchmark": "GPT-2 124M training step, stackwise Trainer vs plain PyTorch (SDPA, fused AdamW, compile)",
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run: not a measurement)",
                "batch": args.batch,
                "seq_len": args.seq,
                "kernels": kernels,
                "results": results,
                "ratio_stackwise_over_baseline": round(
                    results["stackwise"]["tokens_per_s"] / results["baseline"]["tokens_per_s"], 3
                ),
                "peak_tflops": {"datasheet_bf16": peak_sheet, "measured_bf16_matmul": peak_measured},
                "torch": torch.__version__,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
