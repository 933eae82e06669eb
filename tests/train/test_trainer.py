"""The training engine end to end, on tiny models and text files the tests write: resume exactness, faults,
precision, the run directory, and agreement between `validate` and `train`."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from stackwise import StackwiseConfig, Trainer
from stackwise.config.errors import ConfigError
from stackwise.train import checkpoint as ckpt
from stackwise.train.trainer import TrainingDiverged, TrainingError

WORDS = "the quick brown fox jumps over the lazy dog while a cat sleeps on the warm mat".split()


def corpus(folder: Path, docs: int = 40) -> Path:
    """A directory of small text documents with a learnable pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        words = [WORDS[(i + j) % len(WORDS)] for j in range(30 + i % 7)]
        (folder / f"doc{i:03d}.txt").write_text(" ".join(words) + ".\n", encoding="utf-8")
    return folder


def config(tmp_path: Path, **sections: dict[str, Any]) -> StackwiseConfig:
    data = {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 64, "vocab_size": 258, "dropout": 0.1},
        "training": {
            "seq_len": 16,
            "batch_size": 4,
            "max_steps": 8,
            "learning_rate": 3e-3,
            "warmup_steps": 2,
            "log_interval": 1,
            "validation_interval": 4,
            "save_interval": 4,
            "device": "cpu",
            "checkpoint_dir": str(tmp_path / "runs"),
            "run_id": "run",
        },
        "data": {"dataset_path": str(corpus(tmp_path / "docs")), "tokenizer_path": "bytes", "validation_fraction": 0.1},
        "evaluation": {"max_batches": 2},
        "logging": {"tensorboard": False},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return StackwiseConfig.from_dict(data)


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def poison_loss_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the training loss NaN on its `call`-th evaluation (1-based)."""
    from stackwise.train import trainer as trainer_module

    real = trainer_module.training_loss
    calls = {"n": 0}

    def poisoned(model, batch, objective, generator):
        calls["n"] += 1
        loss = real(model, batch, objective, generator)
        return loss * float("nan") if calls["n"] == call else loss

    monkeypatch.setattr(trainer_module, "training_loss", poisoned)


def stop_at(trainer: Trainer, step: int) -> None:
    """Deliver a real SIGINT to this process when training reaches `step`."""

    def on_progress(done: int, total: int, row: dict) -> None:
        if done == step and "loss" in row:
            os.kill(os.getpid(), signal.SIGINT)

    trainer.on_progress = on_progress


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"training": {"gradient_accumulation_steps": 2, "optimizer": "muon"}},
        {"model": {"attention_mode": "bidirectional"}, "training": {"objective": "masked_diffusion"}},
    ],
    ids=["causal", "accumulation-muon", "masked-diffusion"],
)
def test_a_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path: Path, variant: dict) -> None:
    full = Trainer(config(tmp_path / "a", **variant)).fit()
    assert full["status"] == "completed" and full["step"] == 8

    first = Trainer(config(tmp_path / "b", **variant))
    stop_at(first, 3)
    summary = first.fit()
    assert summary["status"] == "interrupted" and summary["step"] == 3
    assert Path(summary["last_checkpoint"]).name == "step_00000003"
    resumed = Trainer(config(tmp_path / "b", **variant).updated({"training.resume_from_checkpoint": "latest"})).fit()
    assert resumed["status"] == "completed"

    a, b = losses(tmp_path / "a" / "runs" / "run"), losses(tmp_path / "b" / "runs" / "run")
    assert sorted(b) == list(range(1, 9))  # the resumed run's metrics continue, no step twice
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]  # exactly, in fp32 on the CPU
    assert full["val_loss"] == resumed["val_loss"]


def test_sigint_saves_a_checkpoint_and_stops_cleanly(tmp_path: Path) -> None:
    trainer = Trainer(config(tmp_path, training={"max_steps": 50, "save_interval": 100}))
    stop_at(trainer, 2)
    summary = trainer.fit()
    assert summary["status"] == "interrupted" and summary["step"] == 2
    run = tmp_path / "runs" / "run"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    poison_loss_at(monkeypatch, 5)
    trainer = Trainer(config(tmp_path, training={"save_interval": 2}))
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    assert "nan at step 5" in str(err.value) and "step_00000004" in str(err.value)
    run = tmp_path / "runs" / "run"
    assert [p.name for p in ckpt.checkpoint_dirs(run / "checkpoints")][-1] == "step_00000004"
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the NaN step was never applied


def test_fp16_trains_with_a_grad_scaler(tmp_path: Path) -> None:
    trainer = Trainer(config(tmp_path, training={"precision": "fp16", "max_steps": 4}))
    summary = trainer.fit()
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    assert math.isfinite(summary["loss"])
    saved = torch.load(Path(summary["last_checkpoint"]) / "optimizer.pt", weights_only=False)
    assert saved["scaler"]["scale"] > 0


def test_bf16_and_fp32_use_no_scaler(tmp_path: Path) -> None:
    assert Trainer(config(tmp_path, training={"precision": "bf16"})).prepare().scaler is None
    assert Trainer(config(tmp_path / "x", training={"precision": "fp32"})).prepare().scaler is None


def test_the_run_directory_holds_what_a_user_reads(tmp_path: Path) -> None:
    summary = Trainer(config(tmp_path, logging={"tensorboard": True}, training={"ckpt_keep": 1})).fit()
    run = tmp_path / "runs" / "run"
    assert StackwiseConfig.from_yaml(run / "config.yaml").training.max_steps == 8
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(rows[0])
    assert any("val_loss" in r and "val_bits_per_byte" in r for r in rows)
    assert [p.name for p in ckpt.checkpoint_dirs(run / "checkpoints")] == ["step_00000008"]  # ckpt_keep 1
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["tokens"] == 8 * 4 * 16
    if any(True for _ in (run / "logs").glob("events.out.tfevents.*")):
        return
    pytest.importorskip("tensorboard")
    pytest.fail("tensorboard is installed but no event file was written")


def test_validation_loss_falls_below_the_unigram_entropy(tmp_path: Path) -> None:
    summary = Trainer(
        config(
            tmp_path,
            training={
                "max_steps": 80,
                "batch_size": 16,
                "seq_len": 32,
                "learning_rate": 1e-2,
                "validation_interval": 80,
            },
            model={"dropout": 0.0, "d_model": 64},
        )
    ).fit()
    assert summary["val_loss"] < 0.5 * summary["unigram_entropy"], summary


def test_an_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    Trainer(config(tmp_path, training={"max_steps": 2})).fit()
    with pytest.raises(TrainingError, match="already has checkpoints"):
        Trainer(config(tmp_path, training={"max_steps": 2})).prepare()


def test_resuming_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    Trainer(config(tmp_path, training={"max_steps": 2})).fit()
    other = config(tmp_path, model={"d_model": 48}, training={"max_steps": 4, "resume_from_checkpoint": "latest"})
    with pytest.raises(ckpt.CheckpointError, match="d_model: checkpoint 32, config 48"):
        Trainer(other).prepare()


def test_unsupported_settings_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Trainer(config(tmp_path, distributed={"strategy": "ddp"}))
    assert any(i.path == "distributed.strategy" and "not supported yet" in i.message for i in err.value.issues)


@pytest.mark.parametrize("optimizer", ["adamw_8bit", "muon"])
def test_each_optimizer_trains(tmp_path: Path, optimizer: str) -> None:
    pytest.importorskip("bitsandbytes") if optimizer == "adamw_8bit" else None
    summary = Trainer(config(tmp_path, training={"optimizer": optimizer, "max_steps": 6})).fit()
    rows = losses(tmp_path / "runs" / "run")
    assert summary["status"] == "completed" and rows[6] < rows[1]


def test_init_from_starts_a_new_run_from_saved_weights(tmp_path: Path) -> None:
    first = Trainer(config(tmp_path, training={"max_steps": 2}))
    first.fit()
    second = Trainer(
        config(tmp_path, training={"run_id": "second", "init_from": str(tmp_path / "runs" / "run")})
    ).prepare()
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_pretrained_name_loads_a_local_transformers_model(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=258, n_embd=32, n_layer=2, n_head=2, n_positions=64))
    hf.save_pretrained(tmp_path / "gpt2-tiny")
    model = {
        "pretrained_name": str(tmp_path / "gpt2-tiny"),
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "d_ff": 128,
        "max_seq_len": 64,
        "ffn_activation": "gelu",
        "norm_type": "layernorm",
        "norm_eps": 1e-5,
        "use_rope": False,
        "bias": True,
        "dropout": 0.1,
        "attention_dropout": 0.1,
    }
    trainer = Trainer(config(tmp_path, model=model)).prepare()
    ids = torch.randint(0, 258, (2, 16))
    hf.eval()
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model(ids), hf(ids).logits, atol=1e-4)
    wrong = config(tmp_path / "w", model={**model, "d_ff": 64})
    with pytest.raises(TrainingError, match="model.d_ff: 64 in the config, 128 in"):
        Trainer(wrong).prepare()


def test_wandb_offline_writes_a_local_run(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_cfg = {"enabled": True, "mode": "offline", "project": "stackwise-test"}
    summary = Trainer(config(tmp_path, logging={"wandb": wandb_cfg}, training={"max_steps": 2})).fit()
    assert summary["status"] == "completed"
    runs = list((tmp_path / "runs" / "run" / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))


def test_compile_trains_to_the_same_losses_as_eager(tmp_path: Path) -> None:
    # Regional compilation (each layer) on the CPU backend: slow to compile (~30 s), so one short run.
    settings = {"max_steps": 2, "validation_interval": 100}
    eager = Trainer(config(tmp_path / "e", training=settings, model={"dropout": 0.0})).fit()
    compiled = Trainer(config(tmp_path / "c", training={**settings, "compile": True}, model={"dropout": 0.0})).fit()
    a, b = losses(tmp_path / "e" / "runs" / "run"), losses(tmp_path / "c" / "runs" / "run")
    assert a.keys() == b.keys() and all(abs(a[s] - b[s]) < 1e-4 for s in a), (a, b)
    assert compiled["status"] == eager["status"] == "completed"


# -- what a run directory keeps when things go wrong ---------------------------------------------------------
def test_a_checkpoint_outside_a_run_directory_needs_a_run_id(tmp_path: Path) -> None:
    import shutil

    Trainer(config(tmp_path, training={"max_steps": 2, "save_interval": 2})).fit()
    shutil.copytree(tmp_path / "runs" / "run" / "checkpoints" / "step_00000002", tmp_path / "saved" / "best")
    cfg = config(tmp_path, training={"run_id": None, "resume_from_checkpoint": str(tmp_path / "saved" / "best")})
    with pytest.raises(TrainingError, match="set training.run_id"):
        Trainer(cfg).prepare()
    resumed = Trainer(cfg.updated({"training.run_id": "from-best", "training.max_steps": 3})).fit()
    assert resumed["status"] == "completed"
    assert (tmp_path / "runs" / "from-best" / "checkpoints" / "step_00000003").is_dir()


def test_the_final_checkpoint_is_written_before_the_final_evaluation(tmp_path: Path, monkeypatch) -> None:
    trainer = Trainer(config(tmp_path, training={"max_steps": 3, "save_interval": 100, "validation_interval": 100}))
    real = Trainer.evaluate

    def interrupted_evaluation(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the final evaluation runs
        return real(self)

    monkeypatch.setattr(Trainer, "evaluate", interrupted_evaluation)
    summary = trainer.fit()
    assert (tmp_path / "runs" / "run" / "checkpoints" / "step_00000003").is_dir()
    assert summary["step"] == 3


def test_resuming_an_older_checkpoint_into_its_run_is_refused(tmp_path: Path) -> None:
    Trainer(config(tmp_path, training={"save_interval": 4})).fit()
    old = tmp_path / "runs" / "run" / "checkpoints" / "step_00000004"
    with pytest.raises(TrainingError, match="mix two training histories"):
        Trainer(config(tmp_path, training={"resume_from_checkpoint": str(old)})).prepare()


def test_a_crash_is_recorded_as_failed_not_completed(tmp_path: Path, monkeypatch) -> None:
    def broken(self, batches):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(RuntimeError):
        Trainer(config(tmp_path)).fit()
    assert json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())["status"] == "failed"


def test_a_finished_run_resumed_into_a_new_run_id_gets_its_own_checkpoint(tmp_path: Path) -> None:
    Trainer(config(tmp_path, training={"max_steps": 4})).fit()
    source = str(tmp_path / "runs" / "run")
    summary = Trainer(
        config(tmp_path, training={"max_steps": 4, "run_id": "copy", "resume_from_checkpoint": source})
    ).fit()
    assert summary["status"] == "completed"
    assert (tmp_path / "runs" / "copy" / "checkpoints" / "step_00000004").is_dir()


def test_a_fresh_start_in_a_run_without_checkpoints_does_not_repeat_metric_steps(tmp_path: Path, monkeypatch) -> None:
    poison_loss_at(monkeypatch, 3)
    with pytest.raises(TrainingDiverged):
        Trainer(config(tmp_path, training={"save_interval": 100})).fit()
    monkeypatch.undo()
    Trainer(config(tmp_path, training={"max_steps": 4})).fit()
    assert sorted(losses(tmp_path / "runs" / "run")) == [1, 2, 3, 4]


def test_infinite_gradients_without_a_scaler_stop_before_the_step(tmp_path: Path, monkeypatch) -> None:
    trainer = Trainer(config(tmp_path, training={"max_steps": 4, "max_grad_norm": None})).prepare()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    hook = trainer.model.head.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(TrainingDiverged, match="gradient norm is"):
        trainer.fit()
    hook.remove()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_an_optimizer_change_on_resume_fails_before_the_run_files_change(tmp_path: Path) -> None:
    Trainer(config(tmp_path, training={"max_steps": 2, "optimizer": "muon"})).fit()
    saved = (tmp_path / "runs" / "run" / "config.yaml").read_text()
    cfg = config(tmp_path, training={"max_steps": 4, "optimizer": "adamw", "resume_from_checkpoint": "latest"})
    with pytest.raises(ckpt.CheckpointError, match="training.optimizer"):
        Trainer(cfg).prepare()
    assert (tmp_path / "runs" / "run" / "config.yaml").read_text() == saved
