"""Checkpoints: what a save writes, exact weight round trips, pruning, crash safety (a failure mid-write leaves
the previous checkpoint and `latest` alone), finding a checkpoint, the architecture check, and restoring
optimizer, grad-scaler and RNG states so that a resumed step equals an uninterrupted one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stackwise.models import transformer
from stackwise.train import checkpoint as ckpt
from stackwise.train.checkpoint import (
    CheckpointError,
    checkpoint_dirs,
    load_training_state,
    load_weights,
    read_state,
    resolve,
    save_checkpoint,
)

FILES = {"model.safetensors", "optimizer.pt", "rng.pt", "state.json"}


def tiny(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    args = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=2, max_seq_len=64, causal=True)
    return transformer(**{**args, **kw})


def adamw(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-2)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int = 1) -> None:
    batch = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(seed))
    loss = nn.functional.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()


def save(folder: Path, step: int, model: nn.Module, opt=None, keep=None, scaler=None, generators=None) -> Path:
    return save_checkpoint(
        folder,
        step,
        model,
        [opt] if opt is not None else [],
        scaler,
        {"arch": model.arch, "samples": 8 * step, "tokens": 64 * step},
        generators,
        keep=keep,
    )


def visible_steps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("step_"))


def latest(folder: Path) -> str:
    return (folder / "latest").read_text(encoding="utf-8").strip()


def snapshot(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in path.iterdir()}


# -- saving ---------------------------------------------------------------------------------------------


def test_save_writes_every_file_and_points_latest(tmp_path):
    model = tiny()
    opt = adamw(model)
    train_step(model, opt)
    folder = tmp_path / "run" / "checkpoints"
    path = save(folder, 3, model, opt)
    assert path == folder / "step_00000003"
    assert {f.name for f in path.iterdir()} == FILES
    assert latest(folder) == "step_00000003"
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    assert state["step"] == 3 and state["samples"] == 24 and state["tokens"] == 192
    assert state["arch"]["d_model"] == 32
    assert read_state(path) == state
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    path = save(folder, 5, model, opt)
    assert latest(folder) == "step_00000005"
    assert checkpoint_dirs(folder) == [folder / "step_00000003", folder / "step_00000005"]


def test_load_weights_round_trips_exactly(tmp_path):
    model = tiny(seed=0)
    path = save(tmp_path, 1, model)
    other = tiny(seed=1)
    assert not torch.equal(other.embed.weight, model.embed.weight)
    load_weights(path, other)
    a, b = model.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert other.head.weight is other.embed.weight  # still tied
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(2))
    assert torch.equal(model(ids), other(ids))


def test_untied_weights_round_trip(tmp_path):
    model = tiny(seed=0, tie_embeddings=False, bias=True)
    other = tiny(seed=3, tie_embeddings=False, bias=True)
    load_weights(save(tmp_path, 1, model), other)
    a, b = model.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_prunes_to_the_last_checkpoints(tmp_path):
    model = tiny()
    opt = adamw(model)
    for step in (1, 2, 10, 11):
        save(tmp_path, step, model, opt, keep=2)
    assert visible_steps(tmp_path) == ["step_00000010", "step_00000011"]
    assert latest(tmp_path) == "step_00000011"
    assert all({f.name for f in p.iterdir()} == FILES for p in checkpoint_dirs(tmp_path))
    save(tmp_path, 12, model, opt)  # keep=None keeps everything
    assert len(visible_steps(tmp_path)) == 3


def test_resaving_a_step_replaces_it(tmp_path):
    model = tiny()
    first = save(tmp_path, 4, model)
    with torch.no_grad():
        model.norm.weight.fill_(2.0)
    again = save(tmp_path, 4, model)
    assert again == first and visible_steps(tmp_path) == ["step_00000004"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    other = tiny(seed=5)
    load_weights(again, other)
    assert torch.equal(other.norm.weight, torch.full((32,), 2.0))


def test_a_failure_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny()
    opt = adamw(model)
    train_step(model, opt)
    good = save(tmp_path, 1, model, opt)
    before = snapshot(good)
    train_step(model, opt, seed=2)

    calls: list[Path] = []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(Path(f))
        assert (Path(f).parent / "model.safetensors").is_file()  # the weights were already written
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path, 2, model, opt)
    assert len(calls) == 1
    monkeypatch.undo()

    assert visible_steps(tmp_path) == ["step_00000001"]
    assert checkpoint_dirs(tmp_path) == [good]
    assert latest(tmp_path) == "step_00000001"
    assert snapshot(good) == before
    assert resolve(str(tmp_path / "step_00000001"), tmp_path) == good

    # the next save succeeds and cleans up the temporary directory of the failed one
    path = save(tmp_path, 2, model, opt)
    assert latest(tmp_path) == "step_00000002" and {f.name for f in path.iterdir()} == FILES
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- finding a checkpoint -------------------------------------------------------------------------------


def test_resolve_latest_a_run_directory_and_a_checkpoint_directory(tmp_path):
    run = tmp_path / "run"
    model = tiny()
    save(run / "checkpoints", 1, model)
    second = save(run / "checkpoints", 2, model)
    assert resolve("latest", run) == second
    assert resolve(str(run), tmp_path / "elsewhere") == second
    first = run / "checkpoints" / "step_00000001"
    assert resolve(str(first), tmp_path / "elsewhere") == first


def test_resolve_refuses_what_is_not_a_checkpoint(tmp_path):
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="latest"):
        resolve("latest", empty)
    with pytest.raises(CheckpointError, match="not a stackwise checkpoint"):
        resolve(str(empty), tmp_path)
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="state.json"):
        resolve(str(half), tmp_path)
    with pytest.raises(CheckpointError):
        resolve(str(tmp_path / "missing"), tmp_path)


# -- the architecture check -----------------------------------------------------------------------------


def test_another_architecture_is_refused_with_the_differences(tmp_path):
    path = save(tmp_path, 1, tiny(d_model=32))
    wider = tiny(d_model=48)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(path, wider)
    msg = str(info.value)
    assert "d_model: checkpoint 32, config 48" in msg
    assert "n_layers" not in msg and "vocab_size" not in msg  # only what differs
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())  # nothing was loaded


def test_settings_that_do_not_change_the_weights_are_not_an_architecture_mismatch(tmp_path):
    # dropout and the init range change no tensor: a checkpoint's weights fit exactly (e.g. training.init_from
    # to fine-tune with dropout), so loading must not be refused as "another architecture"
    model = tiny(dropout=0.0)
    path = save(tmp_path, 1, model)
    other = tiny(seed=1, dropout=0.1, attention_dropout=0.1, initializer_range=0.01)
    load_weights(path, other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))


def test_shapes_that_do_not_fit_are_refused_without_an_arch_record(tmp_path):
    model = tiny()
    path = save_checkpoint(tmp_path, 1, model, [], None, {"samples": 0})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(path, tiny(vocab_size=60))


# -- training state -------------------------------------------------------------------------------------


def test_load_training_state_restores_the_optimizer_and_rng(tmp_path):
    model = tiny()
    opt = adamw(model)
    train_step(model, opt)
    mask = torch.Generator().manual_seed(11)
    torch.rand(3, generator=mask)
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    path = save(tmp_path, 1, model, opt, generators={"mask": mask})
    expected = (torch.rand(5), random.random(), np.random.rand(), torch.rand(4, generator=mask))
    resumed_reference = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, opt, seed=3)  # the uninterrupted run's next step
    after_step = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(999)
    random.seed(0)
    np.random.seed(0)
    fresh = tiny(seed=7)
    load_weights(path, fresh)
    assert all(torch.equal(resumed_reference[k], v) for k, v in fresh.state_dict().items())
    fresh_opt = adamw(fresh)
    fresh_mask = torch.Generator().manual_seed(0)
    state = load_training_state(path, [fresh_opt], None, {"mask": fresh_mask})
    assert state["step"] == 1 and state["samples"] == 8

    got = (torch.rand(5), random.random(), np.random.rand(), torch.rand(4, generator=fresh_mask))
    assert torch.equal(got[0], expected[0])
    assert got[1] == expected[1] and got[2] == expected[2]
    assert torch.equal(got[3], expected[3])

    # AdamW state restored, parameter by parameter
    saved = torch.load(path / "optimizer.pt", weights_only=False)["optimizers"][0]["state"]
    restored = [fresh_opt.state[p] for p in fresh_opt.param_groups[0]["params"]]
    assert len(restored) == len(saved) > 0
    for i, st in enumerate(restored):
        assert torch.equal(st["exp_avg"], saved[i]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], saved[i]["exp_avg_sq"])
        assert float(st["step"]) == 1.0
    assert any(st["exp_avg"].abs().sum() > 0 for st in restored)

    # and the resumed step is the uninterrupted one
    train_step(fresh, fresh_opt, seed=3)
    assert all(torch.equal(after_step[k], v) for k, v in fresh.state_dict().items())


def test_load_training_state_restores_the_grad_scaler(tmp_path):
    model = tiny()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(torch.tensor(1.0))
    scaler.update(new_scale=2.0**7)
    assert scaler.get_scale() == 2.0**7
    path = save(tmp_path, 1, model, adamw(model), scaler=scaler)
    fresh = torch.amp.GradScaler("cpu")
    assert fresh.get_scale() == 2.0**16
    load_training_state(path, [adamw(model)], fresh)
    assert fresh.get_scale() == 2.0**7
    assert fresh.state_dict() == scaler.state_dict()


def test_a_different_number_of_optimizers_is_refused(tmp_path):
    model = tiny()
    path = save(tmp_path, 1, model, adamw(model))
    with pytest.raises(CheckpointError, match="optimizer"):
        load_training_state(path, [adamw(model), adamw(model)], None)
