"""Checkpoints: written atomically, pruned to the last `ckpt_keep`, found by path or `latest`, checked on load.

A checkpoint is a directory `checkpoints/step_00000100/` holding
- `model.safetensors`: the weights (tied tensors stored once);
- `optimizer.pt`: optimizer and grad-scaler states;
- `rng.pt`: the Python, NumPy, torch (CPU and CUDA) and masking generator states;
- `state.json`: step, samples and tokens consumed, the model's architecture, and the run's metadata.

It is written into a temporary sibling directory and renamed into place, then `checkpoints/latest` (a small
text file naming it) is replaced atomically. A crash mid-write leaves the previous checkpoints and `latest`
as they were.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LATEST = "latest"
NOT_ARCHITECTURE = ("dropout", "attention_dropout", "initializer_range")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, read, or used with this model."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rng_state(extra: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in (extra or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], extra: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for key, gen in (extra or {}).items():
        if key in state.get("generators", {}):
            gen.set_state(state["generators"][key])


def checkpoint_dirs(folder: Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"step_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
    state: dict[str, Any],
    generators: dict[str, torch.Generator] | None = None,
    keep: int | None = None,
) -> Path:
    """Write checkpoint `step` into `folder` atomically, point `latest` at it, and prune to `keep`."""

    def training_state(tmp: Path) -> None:
        torch.save(
            {"optimizers": [o.state_dict() for o in optimizers], "scaler": scaler.state_dict() if scaler else None},
            tmp / "optimizer.pt",
        )
        torch.save(rng_state(generators), tmp / "rng.pt")

    final = save_weights(folder / f"step_{step:08d}", model, {**state, "step": step}, training_state)
    write_text_atomic(folder / LATEST, final.name + "\n")
    if keep is not None:
        for old in checkpoint_dirs(folder)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def save_weights(
    path: Path, model: nn.Module, state: dict[str, Any], extra: Callable[[Path], None] | None = None
) -> Path:
    """Write model.safetensors and state.json (and what `extra` writes into the folder) to `path` atomically.

    Everything goes to a temporary sibling first and is renamed into place; an existing `path` (a resumed run
    saving the step it started from) is swapped out, then deleted.
    """
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    if extra is not None:
        extra(tmp)
    (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")
    for file in tmp.iterdir():
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def resolve(spec: str, run_dir: Path) -> Path:
    """The checkpoint `spec` names: `latest` (of `run_dir`), a checkpoint directory, or a run directory."""
    if spec == LATEST:
        pointer = run_dir / "checkpoints" / LATEST
        if not pointer.is_file():
            raise CheckpointError(
                f"`latest` names the newest checkpoint of a run, but {run_dir} has no checkpoint yet "
                f"({pointer} not found); set training.run_id to the run to resume"
            )
        path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    else:
        path = Path(spec).expanduser()
        if (path / "checkpoints" / LATEST).is_file():  # a run directory: its latest checkpoint
            path = path / "checkpoints" / (path / "checkpoints" / LATEST).read_text(encoding="utf-8").strip()
    if not (path / "model.safetensors").is_file() or not (path / "state.json").is_file():
        raise CheckpointError(f"{path} is not a stackwise checkpoint (model.safetensors and state.json expected)")
    return path


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def check_architecture(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """A clear error naming each architecture setting that differs between a checkpoint and this model."""
    saved, current = json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(current, default=str))
    for key in NOT_ARCHITECTURE:  # regularisation and init: a checkpoint fine-tunes with other values
        saved.pop(key, None)
        current.pop(key, None)
    diffs = [
        f"{key}: checkpoint {saved.get(key)!r}, config {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} is from another architecture; it cannot be loaded into this model:\n  "
            + "\n  ".join(diffs)
        )


def load_weights(path: Path, model: nn.Module) -> None:
    """Load `model.safetensors` into `model` (strict), after checking the architecture."""
    from safetensors.torch import load_model

    state = read_state(path)
    if "arch" in state and hasattr(model, "arch"):
        check_architecture(state["arch"], model.arch, path)
    try:
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(next(model.parameters()).device))
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {err}") from err


def load_optimizer_state(
    path: Path, optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler | None
) -> None:
    """Restore optimizer and grad-scaler states (a clear error when the optimizer setup changed)."""
    blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    if len(blob["optimizers"]) != len(optimizers):
        raise CheckpointError(
            f"checkpoint {path} has {len(blob['optimizers'])} optimizer state(s), this run has {len(optimizers)}: "
            "was training.optimizer changed? Use training.init_from to start a new run from its weights"
        )
    for opt, sd in zip(optimizers, blob["optimizers"], strict=True):
        try:
            opt.load_state_dict(sd)
        except ValueError as err:
            raise CheckpointError(
                f"checkpoint {path}: its optimizer state does not fit this run ({err}); was training.optimizer "
                "or the set of trainable parameters changed? Use training.init_from to start from its weights"
            ) from err
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])


def load_rng_state(path: Path, generators: dict[str, torch.Generator] | None = None) -> None:
    set_rng_state(torch.load(path / "rng.pt", map_location="cpu", weights_only=False), generators)


def load_training_state(
    path: Path,
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
    generators: dict[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Restore optimizer, scaler and RNG states; return state.json."""
    load_optimizer_state(path, optimizers, scaler)
    load_rng_state(path, generators)
    return read_state(path)
