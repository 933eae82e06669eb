"""Sampling from a trained model: left-to-right for a causal model, iterative unmasking for a masked-diffusion one.

`load_run(path)` reads a run directory (or one of its checkpoints) with no network: the config and tokenizer
the run saved, and the weights of its latest (or the given) checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config.schema import StackwiseConfig
from . import checkpoint as ckpt


class GenerateError(RuntimeError):
    """The run directory cannot be sampled from."""


@dataclass
class LoadedRun:
    model: nn.Module
    tokenizer: Any
    config: StackwiseConfig
    objective: str
    mask_token_id: int | None
    checkpoint: Path


def load_run(path: str | Path, device: str = "cpu") -> LoadedRun:
    """The model, tokenizer and config of a run directory (latest checkpoint) or of one checkpoint directory."""
    from transformers import AutoTokenizer

    from ..models.adapters import merge_all
    from ..models.builders import build_model
    from .rack import Rack

    path = Path(path).expanduser()
    run_dir = path if (path / "run.json").is_file() else path.parent.parent
    if not (run_dir / "run.json").is_file():
        raise GenerateError(f"{path} is not a stackwise run directory or checkpoint (no run.json found)")
    try:
        checkpoint = ckpt.resolve(str(path), run_dir)  # a run directory resolves to its latest checkpoint
    except ckpt.CheckpointError as err:
        raise GenerateError(str(err)) from err
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    cfg = StackwiseConfig.from_yaml(run_dir / "config.yaml")
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"), local_files_only=True)
    model = build_model(cfg.model, meta["vocab_size"], load_weights=False).to(device)
    layout = ckpt.read_state(checkpoint).get("layout")
    if layout is not None:  # a stage of a stack-wise run: rebuild its rack, load, then fold the adapters in
        Rack(model).apply_layout(layout)
    ckpt.load_weights(checkpoint, model)
    merge_all(model)
    model.eval()
    return LoadedRun(model, tokenizer, cfg, meta["objective"], meta.get("mask_token_id"), checkpoint)


def _filter(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Probabilities after temperature and top-k; temperature 0 is greedy."""
    if temperature <= 0:
        out = torch.zeros_like(logits)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits.float(), dim=-1)


@torch.no_grad()
def sample_causal(
    model: nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = 50,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Append up to `max_new_tokens` sampled tokens to `prompt` (1-D); stops at EOS."""
    ids = prompt.clone()
    window = int(model.arch.get("max_seq_len", 2048))
    for _ in range(max_new_tokens):
        logits = model(ids[-window:][None])[0, -1]  # (V,)
        token = torch.multinomial(_filter(logits, temperature, top_k), 1, generator=generator)
        ids = torch.cat([ids, token])
        if eos_token_id is not None and int(token) == eos_token_id:
            break
    return ids


@torch.no_grad()
def sample_masked(
    model: nn.Module,
    prompt: torch.Tensor,
    length: int,
    mask_token_id: int,
    *,
    steps: int = 32,
    temperature: float = 0.8,
    top_k: int | None = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill `length` masked positions after `prompt` in `steps` rounds: each round samples every masked position
    and keeps the most confident ones (an equal share of the remaining positions per round), as in LLaDA."""
    ids = torch.cat([prompt, torch.full((length,), mask_token_id, dtype=prompt.dtype, device=prompt.device)])
    for step in range(steps):
        masked = ids == mask_token_id
        remaining = int(masked.sum())
        if remaining == 0:
            break
        logits = model(ids[None])[0]  # (T, V)
        logits[:, mask_token_id] = float("-inf")
        probs = _filter(logits[masked], temperature, top_k)  # (remaining, V)
        tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
        confidence = probs.gather(-1, tokens[:, None])[:, 0]
        keep = math.ceil(remaining / (steps - step))
        chosen = torch.topk(confidence, keep).indices
        positions = masked.nonzero()[:, 0]
        ids[positions[chosen]] = tokens[chosen]
    return ids


def generate_text(
    run: LoadedRun,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    steps: int = 32,
    seed: int = 0,
) -> str:
    """The prompt and its continuation as text."""
    device = next(run.model.parameters()).device
    ids = run.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    prompt_ids = torch.tensor(ids, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    if run.objective == "masked_diffusion":
        # Bidirectional: the prompt and every generated position fit in one window of max_seq_len.
        window = int(run.model.arch.get("max_seq_len", 2048))
        prompt_ids = prompt_ids[-(window // 2) :]
        max_new_tokens = min(max_new_tokens, window - prompt_ids.numel())
        out = sample_masked(
            run.model,
            prompt_ids,
            max_new_tokens,
            run.mask_token_id,
            steps=steps,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
        )
    else:
        if prompt_ids.numel() == 0:
            prompt_ids = torch.tensor([run.tokenizer.eos_token_id], device=device)
        out = sample_causal(
            run.model,
            prompt_ids,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            eos_token_id=run.tokenizer.eos_token_id,
            generator=generator,
        )
    return run.tokenizer.decode(out.tolist(), skip_special_tokens=True)
