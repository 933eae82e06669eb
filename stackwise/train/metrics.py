"""Metric sinks of a run: JSON lines, TensorBoard events (when installed), Weights & Biases (online or offline).

Each sink is optional and independent; a missing optional package is said once and skipped, except W&B,
which a config enables explicitly, so its absence is an error before training starts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("stackwise.train")


class MetricsError(RuntimeError):
    """A metrics sink the config asks for cannot start."""


def _truncate_after(path: Path, step: int) -> None:
    """Drop records after `step` (left by the run a resume continues, or by a failed attempt), so no step repeats."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:
            continue
    path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


class MetricsLogger:
    """`log(step, metrics)` to every enabled sink; `close()` at the end."""

    def __init__(
        self,
        run_dir: Path,
        logging_cfg: Any,
        *,
        log_dir: Path,
        run_name: str,
        run_id: str,
        config: dict[str, Any],
        resume_step: int = 0,
    ):
        self.jsonl: Path | None = None
        self.tb = None
        self.wandb = None
        if logging_cfg.jsonl:
            self.jsonl = run_dir / "metrics.jsonl"
            run_dir.mkdir(parents=True, exist_ok=True)
            _truncate_after(self.jsonl, resume_step)  # a fresh start (0) clears what an earlier attempt left
        if logging_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step)
            except ImportError:
                log.info("TensorBoard is not installed; skipping its events (pip install tensorboard)")
        w = logging_cfg.wandb
        if w.enabled and w.mode != "disabled":
            try:
                import wandb
            except ImportError as err:
                raise MetricsError("logging.wandb.enabled needs the wandb package: pip install wandb") from err
            self.wandb = wandb.init(
                project=w.project,
                entity=w.entity,
                name=w.name or run_name,
                mode=w.mode,
                tags=list(w.tags),
                dir=str(run_dir),
                config=config,
                resume="allow",
                id=run_id,
            )
        self.log_model = w.log_model if self.wandb is not None else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.jsonl is not None:
            with open(self.jsonl, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def checkpoint_saved(self, path: Path) -> None:
        """Upload a checkpoint as a W&B artifact when `log_model` asks for it."""
        if self.wandb is None or self.log_model is None:
            return
        import wandb

        artifact = wandb.Artifact(f"{self.wandb.id}-model", type="model")
        artifact.add_dir(str(path))
        self.wandb.log_artifact(artifact, aliases=[path.name, "latest"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
