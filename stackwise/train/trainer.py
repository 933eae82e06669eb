"""The training engine: `Trainer(cfg).fit()` trains the model a validated config describes.

`prepare()` does everything that can fail before the first step (unsupported settings, device, tokenizer,
data, model, checkpoint to resume), so a bad config fails in seconds, not after an hour. `fit()` is the loop:
for each step, a train step; then maybe log, maybe evaluate, maybe save. Ctrl-C or SIGTERM saves a
checkpoint and returns; a non-finite loss stops before the optimizer applies it, keeping the last good
checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import derived
from ..config.errors import ConfigError
from ..config.schema import StackwiseConfig
from ..config.support import unsupported_settings
from . import checkpoint as ckpt
from . import stages as schedule
from .metrics import MetricsLogger
from .objectives import Objective, evaluate, objective_for, training_loss
from .optim import build_optimizers, lr_at, set_lr, warmup_steps
from .rack import CachedModel, Rack, RackError, TrunkCache, merged_copy, trainable_count
from .runtime import Numerics, numerics
from .tokenizer import check_vocab, load_tokenizer, mask_token_id, token_byte_lengths

log = logging.getLogger("stackwise.train")


class TrainingError(RuntimeError):
    """Training cannot start or cannot go on (the message says why and what to change)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Progress:
    """Where a run is: optimizer steps taken, training samples and tokens consumed."""

    step: int = 0
    samples: int = 0
    tokens: int = 0
    last_checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def run_directory(cfg: StackwiseConfig) -> Path:
    """checkpoint_dir/run_id; with no run_id, a new timestamped directory (or, to resume `latest`, the newest run)."""
    t = cfg.training
    root = Path(t.checkpoint_dir).expanduser()
    if t.run_id:
        return root / t.run_id
    if t.resume_from_checkpoint == ckpt.LATEST:
        runs = [p for p in root.glob("*/checkpoints/latest")] if root.is_dir() else []
        if not runs:
            raise TrainingError(f"resume_from_checkpoint is `latest`, but {root} has no run with a checkpoint")
        return max(runs, key=lambda p: p.stat().st_mtime).parent.parent
    if t.resume_from_checkpoint:
        path = ckpt.resolve(t.resume_from_checkpoint, root)
        if path.parent.name != "checkpoints":
            raise TrainingError(
                f"checkpoint {path} is not inside a run directory (<run>/checkpoints/step_N); "
                "set training.run_id to the run directory this resumed run should write to"
            )
        return path.parent.parent
    return root / datetime.now().strftime("run-%Y%m%d-%H%M%S")


class Trainer:
    """Trains the model of one config; `fit()` returns the run summary (also written to summary.json)."""

    def __init__(self, cfg: StackwiseConfig, *, on_progress: Callable[[int, int, dict], None] | None = None):
        issues = unsupported_settings(cfg)
        if issues:
            raise ConfigError(issues)
        self.cfg = cfg
        self.on_progress = on_progress
        self.progress = Progress()
        self._stop_signal: int | None = None
        self._saved_step: int | None = None  # the step this run last saved into its own run directory
        self.stage: schedule.Stage | None = None
        self.stage_log: list[dict[str, Any]] = []
        self.prepared = False

    # -- everything that can fail before the first step ------------------------------------------------
    def prepare(self) -> Trainer:
        from ..models.builders import build_model
        from .packing import build_data

        cfg, t = self.cfg, self.cfg.training
        _seed_everything(t.seed)
        if t.debug:
            torch.autograd.set_detect_anomaly(True)
        self.num: Numerics = numerics(t.device, t.precision, t.tf32)
        self.tokenizer = load_tokenizer(derived.tokenizer_name(cfg), cfg.data.special_tokens or (), cfg.data.cache_dir)
        kind = derived.objective(cfg)
        mask_id = mask_token_id(self.tokenizer, t.mask_token_id) if kind == "masked_diffusion" else None
        self.vocab_size = cfg.model.vocab_size or len(self.tokenizer)
        check_vocab(self.tokenizer, self.vocab_size, [mask_id] if mask_id is not None else [])
        self.objective: Objective = objective_for(
            kind, mask_id, None, t.min_mask_fraction, t.max_mask_fraction, t.mask_loss_weighting
        )
        self.run_dir = run_directory(cfg)
        self.resume_from = ckpt.resolve(t.resume_from_checkpoint, self.run_dir) if t.resume_from_checkpoint else None
        existing = ckpt.checkpoint_dirs(self.run_dir / "checkpoints")
        if self.resume_from is None and existing:
            raise TrainingError(
                f"run directory {self.run_dir} already has checkpoints; resume it with "
                "training.resume_from_checkpoint=latest, or choose another training.run_id"
            )
        if self.resume_from is not None and existing and self.resume_from.resolve() != existing[-1].resolve():
            raise TrainingError(
                f"resuming {self.resume_from} into {self.run_dir}, whose newest checkpoint is {existing[-1].name}, "
                "would mix two training histories in one run directory; resume into a new training.run_id"
            )

        eval_bs = cfg.evaluation.batch_size or t.batch_size
        self.eval_batch_size = eval_bs
        self.data = build_data(
            cfg,
            self.tokenizer,
            t.seq_len + self.objective.extra_tokens,
            eval_sequences=cfg.evaluation.max_batches * eval_bs,
        )
        try:
            self.stages = schedule.plan(cfg, steps_per_epoch(cfg, self.data))
        except schedule.StageError as err:
            raise TrainingError(str(err)) from err
        self.total_steps = self.stages[-1].end

        if cfg.model.pretrained_name:
            self.model = pretrained_model(cfg, self.vocab_size).to(self.num.device)
        else:
            self.model = build_model(cfg.model, self.vocab_size).to(self.num.device)
        if t.init_from:
            source = ckpt.resolve(t.init_from, Path(t.init_from))
            layout = ckpt.read_state(source).get("layout", {})
            if layout.get("adapters") or layout.get("base"):
                raise TrainingError(
                    f"init_from: {source} is a checkpoint of a stage-wise run with adapters or quantized layers; "
                    "initialise from its merged model instead: <run>/fused/stage_K (save_fused_checkpoints: true)"
                )
            ckpt.load_weights(source, self.model)
        self.kernels = self.model.use_kernels(
            cfg.model.attention_kernel, cfg.model.peer_kernel, device=self.num.device, dtype=self.num.dtype
        )
        if t.gradient_checkpointing:
            self.model.set_gradient_checkpointing(True)
        if t.compile:
            for layer in self.model.layers:  # regional compilation: one graph per layer, fast to compile
                layer.compile()
        self._check_stages()
        self.rack = Rack(self.model)
        self.cache = TrunkCache(self.model, _cache_budget()) if t.cache_activations else None
        self.scaler = self.num.grad_scaler()
        if self.scaler is None and any(s.compute == "fp16" for st in self.stages for s in st.stacks):
            self.scaler = torch.amp.GradScaler(self.num.device.type)  # a stack trained in half precision
        self.mask_generator = torch.Generator(device=self.num.device).manual_seed(t.seed + 1)
        bytes_table = token_byte_lengths(self.tokenizer, self.vocab_size)
        self.token_bytes = torch.from_numpy(bytes_table) if bytes_table.any() else None

        if self.resume_from is not None:
            state = ckpt.read_state(self.resume_from)
            stage = self.stages[min(state.get("stage", 0), len(self.stages) - 1)]
            saved = state.get("stage_steps", [stage.start, stage.end])
            # A one-stage run may be lengthened on resume; a stage schedule must stay as it was.
            if len(self.stages) > 1 and saved != [stage.start, stage.end]:
                raise TrainingError(
                    f"{self.resume_from} was saved in stage {stage.index + 1}, steps {saved[0] + 1}-{saved[1]}; with "
                    f"this config that stage is steps {stage.start + 1}-{stage.end}. The stage schedule must not "
                    "change on resume: keep max_steps, epochs_per_layer, total_blocks and block_size as they were"
                )
            self.stage_log = list(state.get("stage_log", []))
            self._enter(stage)
            ckpt.load_weights(self.resume_from, self.model)
            ckpt.load_optimizer_state(self.resume_from, self.optimizers, self.scaler)
        else:
            self._enter(self.stages[0])
        self.prepared = True
        return self

    def _check_stages(self) -> None:
        """Arrange every stage once on a meta-device copy, so a stage that cannot be built fails now, not hours in."""
        from .plan import trainable_per_stage

        try:
            self.stage_trainable = trainable_per_stage(self.cfg, self.stages, self.vocab_size)
        except (RackError, ValueError) as err:
            raise TrainingError(f"stage schedule: {err}") from err
        if any(s.base in ("nf4", "fp4") for st in self.stages for s in st.stacks):
            from ..models.quantize import _bitsandbytes

            try:
                _bitsandbytes()
            except ImportError as err:
                raise TrainingError(str(err)) from err

    def _enter(self, stage: schedule.Stage) -> None:
        """Arrange the model for `stage`, with a fresh optimizer over what it trains and its own schedule."""
        t = self.cfg.training
        try:
            groups = self.rack.apply(stage)
        except RackError as err:
            raise TrainingError(str(err)) from err
        self.optimizers = [
            opt
            for lr, named in groups
            for opt in build_optimizers(
                named,
                self.model,
                kind=t.optimizer,
                lr=lr,
                weight_decay=t.weight_decay,
                betas=t.betas,
                momentum=t.momentum,
                device=self.num.device,
            )
        ]
        self.params = [p for _, named in groups for _, p in named]
        self.trainable = trainable_count(groups)
        self.warmup = warmup_steps(stage.steps, t.warmup_steps, t.warmup_ratio)
        self.stage_objective = self.objective
        if stage.mask is not None:
            fractions = stage.mask
            self.stage_objective = replace(self.objective, low=min(fractions), high=max(fractions), fractions=fractions)
        self.train_model = self.model
        if self.cache is not None and stage.greedy and not stage.embeddings:  # stage 0 trains the embeddings
            self.cache.set_depth(len(stage.layers) - len(stage.new.layers))
            self.train_model = CachedModel(self.model, self.cache)
        self.stage = stage
        if len(self.stages) > 1:
            log.info(
                "stage %d/%d: layers %s, %d trainable parameters",
                stage.index + 1,
                len(self.stages),
                list(stage.layers),
                self.trainable,
            )

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        """What this run will do, for the summary printed before training."""
        t = self.cfg.training
        return {
            "run_dir": str(self.run_dir),
            "stage": t.stage,
            "model": f"{self.parameter_count / 1e6:.2f}M parameters, {self.cfg.model.n_layers} layers, "
            f"d_model {self.cfg.model.d_model}, vocab {self.vocab_size}",
            "objective": self.objective.kind,
            "data": self.data.description,
            "tokenizer": derived.tokenizer_name(self.cfg),
            "device": self.num.describe(),
            "steps": self.total_steps,
            "stages": len(self.stages),
            "mode": "progressive" if t.progressive.enabled else t.mode,
            "tokens": self.total_steps * self._tokens_per_step(),
            "optimizer": t.optimizer,
            "resume": str(self.resume_from) if self.resume_from else None,
        }

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        if not self.prepared:
            self.prepare()
        t = self.cfg.training
        resuming = self.resume_from is not None
        if resuming:
            state = ckpt.read_state(self.resume_from)
            self.progress = Progress(state["step"], state["samples"], state["tokens"], self.resume_from)
        # Sinks first: one that cannot start (W&B missing) fails before the run's files are touched.
        self.metrics = MetricsLogger(
            self.run_dir,
            self.cfg.logging,
            log_dir=Path(t.log_dir) if t.log_dir else self.run_dir / "logs",
            run_name=self.run_dir.name,
            run_id=self._wandb_id(resuming),
            config=self.cfg.to_dict(),
            resume_step=self.progress.step,
        )
        self._write_run_files()
        # The loader may draw from the global RNG when it starts; fork it so that a resumed run and an
        # uninterrupted one see the same random stream afterwards.
        with torch.random.fork_rng(devices=[]):
            batches = self.data.batches(self.progress.samples)
            first = next(batches)
        if resuming:
            ckpt.load_rng_state(self.resume_from, {"mask": self.mask_generator})
        batches = _chain(first, batches)
        status = "failed"
        started, window_tokens, window_start = time.perf_counter(), 0, time.perf_counter()
        losses: list[float] = []
        p = self.progress
        try:
            with _stop_on_signals(self):
                for stage in self.stages:
                    if stage.end <= p.step and stage is self.stage and stage is not self.stages[-1]:
                        if stage.index not in {row["stage"] for row in self.stage_log}:
                            self._finish_stage(stage, self.evaluate())  # resumed right after its last step
                    if stage.end <= p.step or self._stop_signal is not None:
                        continue
                    if stage is not self.stage:
                        self._enter(stage)
                    while p.step < stage.end and self._stop_signal is None:
                        lr = self._set_lr()
                        loss, grad_norm = self.train_step(batches)
                        losses.append(loss)
                        window_tokens += self._tokens_per_step()
                        if p.step % t.log_interval == 0 or p.step == stage.end:
                            elapsed = time.perf_counter() - window_start
                            row = {
                                "loss": sum(losses) / len(losses),
                                "lr": lr,
                                "grad_norm": grad_norm,
                                "tokens": p.tokens,
                                "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                            }
                            self._log(row)
                            losses, window_tokens, window_start = [], 0, time.perf_counter()
                        if p.step % t.validation_interval == 0 and p.step < stage.end:  # stage ends: below
                            self._log(self.evaluate())
                        if p.step % t.save_interval == 0 and p.step < self.total_steps:
                            self.save()
                    if p.step == stage.end and stage is not self.stages[-1]:
                        self._finish_stage(stage, self.evaluate())
                # Still under the signal handlers: the final checkpoint is written before the final evaluation.
                if self._saved_step != self.progress.step:
                    self.save()
                if self._stop_signal is not None:
                    status = "interrupted"
                else:
                    metrics = self.evaluate()
                    self._log(metrics)
                    if len(self.stages) > 1:
                        self._finish_stage(self.stages[-1], metrics, log_metrics=False)
                    status = "completed"
        except TrainingDiverged:
            status = "diverged"
            raise
        finally:
            summary = self._summary(status, time.perf_counter() - started)
            ckpt.write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            self.metrics.close()
        return summary

    def train_step(self, batches: Iterator[torch.Tensor]) -> tuple[float, float]:
        """One optimizer step over gradient_accumulation_steps micro-batches: (mean loss, gradient norm)."""
        t = self.cfg.training
        accum = t.gradient_accumulation_steps
        total = torch.zeros((), device=self.num.device)
        for _ in range(accum):
            batch = next(batches).to(self.num.device, non_blocking=True)
            with self.num.autocast():
                loss = training_loss(self.train_model, batch, self.stage_objective, self.mask_generator)
            scaled = loss / accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach()
        value = float(total) / accum
        if not math.isfinite(value):
            self._diverged(f"the loss is {value}")
        if self.scaler is not None:
            for opt in self.optimizers:
                self.scaler.unscale_(opt)
        if t.max_grad_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm))
        else:
            norm = float(
                torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params if p.grad is not None]))
            )
        if self.scaler is None and not math.isfinite(norm):  # with a scaler, inf gradients skip the step
            self._diverged(f"the gradient norm is {norm} (loss {value:.4g})")
        for opt in self.optimizers:
            self.scaler.step(opt) if self.scaler else opt.step()
        if self.scaler is not None:
            self.scaler.update()
        self._zero_grad()
        p = self.progress
        p.step += 1
        p.samples += t.batch_size * accum
        p.tokens += self._tokens_per_step()
        return value, norm

    def _diverged(self, what: str) -> None:
        self._zero_grad()
        t = self.cfg.training
        where = self.progress.last_checkpoint or "none was written yet"
        advice = ["lower training.learning_rate"]
        if t.max_grad_norm is None:
            advice.append("set training.max_grad_norm (e.g. 1.0)")
        if self.num.precision == "fp16":
            advice.append("use bf16 instead of fp16 where the hardware has it")
        raise TrainingDiverged(
            f"{what} at step {self.progress.step + 1}; training stopped before applying it. "
            f"Last good checkpoint: {where}. To go on: {', '.join(advice)}"
        )

    def evaluate(self) -> dict[str, float]:
        """Validation metrics on the fixed validation sequences (empty when there are none)."""
        if self.data.validation is None or len(self.data.validation) == 0:
            return {}
        return evaluate(
            self.model, self.data.validation, self.objective, self.eval_batch_size, self.token_bytes, self.num.autocast
        )

    def save(self) -> Path:
        """Write a checkpoint of the current step (atomically) and prune old ones."""
        p = self.progress
        state = {
            "samples": p.samples,
            "tokens": p.tokens,
            "arch": self.model.arch,
            "objective": self.objective.kind,
            "mask_token_id": self.objective.mask_token_id,
            "total_steps": self.total_steps,
            "stage": self.stage.index,
            "stage_steps": [self.stage.start, self.stage.end],
            "stage_log": self.stage_log,
            "layout": self.rack.layout(),
        }
        path = ckpt.save_checkpoint(
            self.run_dir / "checkpoints",
            p.step,
            self.model,
            self.optimizers,
            self.scaler,
            state,
            {"mask": self.mask_generator},
            keep=self.cfg.training.ckpt_keep,
        )
        p.last_checkpoint = path
        self._saved_step = p.step
        self.metrics.checkpoint_saved(path)
        return path

    # -- helpers -----------------------------------------------------------------------------------------
    def _tokens_per_step(self) -> int:
        t = self.cfg.training
        return t.batch_size * t.gradient_accumulation_steps * t.seq_len

    def _finish_stage(self, stage: schedule.Stage, metrics: dict[str, float], log_metrics: bool = True) -> None:
        """The end of a stage of a multi-stage schedule: record the rack's validation metrics, maybe save it merged."""
        self.stage_log.append(
            {"step": self.progress.step, "stage": stage.index, "trainable": self.trainable, **metrics}
        )
        if log_metrics:
            self._log(metrics)
        if self.cfg.training.save_fused_checkpoints:
            self.save_fused(stage)

    def save_fused(self, stage: schedule.Stage) -> Path:
        """The assembled model after `stage` (adapters merged, weights dequantized), loadable by generate/to_hf."""
        merged = merged_copy(self.model)
        layout = {"layers": list(self.rack.order), "n_built": self.rack.n_layers, "base": {}, "adapters": {}}
        state = {
            "step": self.progress.step,
            "stage": stage.index,
            "arch": merged.arch,
            "layout": layout,
            "objective": self.objective.kind,
            "mask_token_id": self.objective.mask_token_id,
        }
        return ckpt.save_weights(self.run_dir / "fused" / f"stage_{stage.index}", merged, state)

    def _set_lr(self) -> float:
        """Set each group's lr for this step (its own peak, decaying to min_lr); returns learning_rate's."""
        t, stage = self.cfg.training, self.stage

        def schedule(peak: float) -> float:
            return lr_at(
                self.progress.step - stage.start,
                total=stage.steps,
                warmup=self.warmup,
                peak=peak,
                floor=t.min_lr,
                kind=t.lr_scheduler_type,
                decay_ratio=t.decay_ratio,
            )

        set_lr(self.optimizers, schedule)
        return schedule(t.learning_rate)

    def _zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def _log(self, row: dict[str, float]) -> None:
        if not row:
            return
        self.progress.history.append({"step": self.progress.step, **row})
        self.metrics.log(self.progress.step, row)
        if self.on_progress is not None:
            self.on_progress(self.progress.step, self.total_steps, row)

    def _wandb_id(self, resuming: bool) -> str:
        """The W&B run id: kept in run.json so a resumed run continues the same W&B run; new for a fresh start."""
        meta = self.run_dir / "run.json"
        if resuming and meta.is_file():
            saved = json.loads(meta.read_text(encoding="utf-8")).get("wandb_id")
            if saved:
                self.wandb_id = saved
                return saved
        self.wandb_id = f"{self.run_dir.name}-{datetime.now().strftime('%Y%m%d%H%M%S')}".replace("/", "-")
        return self.wandb_id

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.to_yaml(self.run_dir / "config.yaml")
        self.tokenizer.save_pretrained(str(self.run_dir / "tokenizer"))
        meta = {
            "objective": self.objective.kind,
            "mask_token_id": self.objective.mask_token_id,
            "vocab_size": self.vocab_size,
            "seq_len": self.cfg.training.seq_len,
            "tokenizer": derived.tokenizer_name(self.cfg),
            "wandb_id": self.wandb_id,
        }
        ckpt.write_text_atomic(self.run_dir / "run.json", json.dumps(meta, indent=2) + "\n")

    def _summary(self, status: str, seconds: float) -> dict[str, Any]:
        p = self.progress
        last = {k: v for row in p.history for k, v in row.items() if k != "step"}
        return {
            "status": status,
            "step": p.step,
            "total_steps": self.total_steps,
            "tokens": p.tokens,
            "seconds": round(seconds, 2),
            "parameters": self.parameter_count,
            "stages": self.stage_log,
            "unigram_entropy": self.data.unigram_entropy,
            "last_checkpoint": str(p.last_checkpoint) if p.last_checkpoint else None,
            **{
                k: last[k]
                for k in ("loss", "val_loss", "val_ppl", "val_bits_per_token", "val_bits_per_byte")
                if k in last
            },
        }


def pretrained_model(cfg: StackwiseConfig, vocab_size: int) -> torch.nn.Module:
    """The model of `model.pretrained_name` (a local directory or a cached hub id; never downloaded), with its
    weights. The model section must describe the same architecture: the config stays the truth about the model."""
    from transformers import AutoModelForCausalLM

    from ..models.builders import model_arguments
    from ..models.hf import from_hf

    name = cfg.model.pretrained_name
    try:
        hf = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, cache_dir=cfg.data.cache_dir)
    except Exception as err:  # OSError / ValueError / a backend error for a broken file
        raise TrainingError(
            f"model.pretrained_name `{name}` could not be loaded without a download: {err}. "
            "Give a local directory written by save_pretrained, or a hub id already in the Hugging Face cache"
        ) from err
    model = from_hf(hf)
    expected = model_arguments(cfg.model, vocab_size)
    names = {
        "d_model": "d_model",
        "n_layers": "n_layers",
        "n_heads": "n_heads",
        "n_kv_heads": "n_kv_heads",
        "head_dim": "head_dim",
        "d_ff": "d_ff",
        "activation": "ffn_activation",
        "norm": "norm_type",
        "max_seq_len": "max_seq_len",
        "use_rope": "use_rope",
        "rope_theta": "rope_theta",
        "tie_embeddings": "tie_embeddings",
        "bias": "bias",
        "vocab_size": "vocab_size",
        "attention": "attention_type",
        "norm_eps": "norm_eps",
        "dropout": "dropout",
        "attention_dropout": "attention_dropout",
    }
    wrong = []
    for key, config_key in names.items():
        have, want = model.arch.get(key), expected.get(key)
        if key == "n_kv_heads":
            have, want = have or model.arch["n_heads"], want or expected["n_heads"]
        if key == "head_dim":  # null means d_model / n_heads on both sides
            have = have or model.arch["d_model"] // model.arch["n_heads"]
            want = want or expected["d_model"] // expected["n_heads"]
        if key in ("rope_theta",) and not model.arch.get("use_rope"):
            continue
        if key in expected and have != want:
            wrong.append(f"model.{config_key}: {want!r} in the config, {have!r} in {name}")
    if wrong:
        raise TrainingError(
            f"model.pretrained_name `{name}` has another architecture than the model section describes; "
            "set these to the pretrained values:\n  " + "\n  ".join(wrong)
        )
    return model


def needs_epoch_length(cfg: StackwiseConfig) -> bool:
    """Whether the run's length depends on how many steps one pass over the data takes."""
    t = cfg.training
    return t.max_steps is None or bool(t.epochs_per_layer and schedule.staged(cfg))


def steps_per_epoch(cfg: StackwiseConfig, data: Any) -> int | None:
    """Optimizer steps in one pass over the training data (None when max_steps alone sets the length)."""
    t = cfg.training
    if not needs_epoch_length(cfg):
        return None
    per_step = t.batch_size * t.gradient_accumulation_steps
    per_epoch = t.steps_per_epoch or (data.samples_per_epoch or 0) // per_step
    if per_epoch == 0:
        raise TrainingError(
            f"the training data has {data.samples_per_epoch} sequences of {t.seq_len} tokens, "
            f"less than one step of {per_step} (batch_size x gradient_accumulation_steps); "
            "use more data, a shorter training.seq_len or a smaller batch"
        )
    return per_epoch


def _cache_budget() -> int:
    """Bytes the trunk cache may hold: a quarter of the machine's memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest


class _stop_on_signals:
    """While training, SIGINT / SIGTERM ask the loop to save and stop; a second signal stops at once."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer._stop_signal is not None:
            raise KeyboardInterrupt
        self.trainer._stop_signal = signum
        log.warning("signal %s received: saving a checkpoint after this step, then stopping", signum)

    def __enter__(self) -> _stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run(cfg: StackwiseConfig | str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train from a config object or YAML path (the same engine as `stackwise train`); returns the summary."""
    if not isinstance(cfg, StackwiseConfig):
        cfg = StackwiseConfig.from_yaml(cfg, overrides or [])
    elif overrides:
        cfg = cfg.updated(overrides)
    return Trainer(cfg).fit()
