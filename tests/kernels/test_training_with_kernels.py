"""Training with the Triton kernels chosen in the config: same losses as the PyTorch path, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from stackwise.kernels import KernelUnavailableError  # noqa: E402
from stackwise.train.trainer import Trainer  # noqa: E402
from tests.train.test_trainer import config, losses  # noqa: E402


def test_attention_kernel_triton_trains_like_torch(tmp_path: Path) -> None:
    runs = {}
    for choice in ("torch", "triton"):
        cfg = config(
            tmp_path / choice,
            model={"attention_kernel": choice, "n_kv_heads": 1},
            training={"max_steps": 3, "validation_interval": 3, "save_interval": 3},
        )
        trainer = Trainer(cfg).prepare()
        assert trainer.kernels == {"attention": choice}
        trainer.fit()
        runs[choice] = losses(tmp_path / choice / "runs" / "run")
    assert runs["triton"].keys() == runs["torch"].keys() == {1, 2, 3}
    for step, loss in runs["torch"].items():
        assert runs["triton"][step] == pytest.approx(loss, rel=1e-5)


def test_forced_triton_where_it_cannot_run_stops_before_training(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the CPU without the interpreter: no Triton here
    cfg = config(tmp_path, model={"attention_kernel": "triton"})
    with pytest.raises(
        KernelUnavailableError, match="model.attention_kernel is triton, but Triton kernels run on CUDA"
    ):
        Trainer(cfg).prepare()
    assert not (tmp_path / "runs" / "run" / "checkpoints").exists()


def test_the_config_refuses_triton_attention_with_dropout() -> None:
    from stackwise.config import ConfigError, StackwiseConfig

    with pytest.raises(ConfigError) as err:
        StackwiseConfig.from_dict({"model": {"attention_kernel": "triton", "attention_dropout": 0.1}})
    assert any(i.path == "model.attention_kernel" and "no attention dropout" in i.message for i in err.value.issues)
    cfg = StackwiseConfig.from_dict({"model": {"attention_kernel": "auto", "attention_dropout": 0.1}})
    assert cfg.model.attention_kernel == "auto"


def test_the_config_refuses_triton_peer_where_the_kernels_cannot_run() -> None:
    from stackwise.config import ConfigError, StackwiseConfig

    peer = {"num_experts": 64, "product_key_dim": [4, 4, 4], "num_experts_per_tok": 2, "query_dim": 12}
    with pytest.raises(ConfigError) as err:
        StackwiseConfig.from_dict({"model": {"use_peer": True, "peer": peer, "peer_kernel": "triton"}})
    assert any(i.path == "model.peer_kernel" and "two sub-key sets" in i.message for i in err.value.issues)
    cfg = StackwiseConfig.from_dict({"model": {"use_peer": True, "peer": peer, "peer_kernel": "auto"}})
    assert cfg.model.peer_kernel == "auto"


def test_peer_kernel_triton_trains_like_torch(tmp_path: Path) -> None:
    peer = {"num_experts": 64, "product_key_dim": [8, 8], "num_experts_per_tok": 2, "num_heads": 2, "query_dim": 8}
    runs = {}
    for choice in ("torch", "triton"):
        cfg = config(
            tmp_path / choice,
            model={"use_peer": True, "peer": peer, "peer_start_layer": 1, "peer_kernel": choice},
            training={"max_steps": 3, "validation_interval": 3, "save_interval": 3},
        )
        trainer = Trainer(cfg).prepare()
        assert trainer.kernels == {"attention": "torch", "peer": choice}
        trainer.fit()
        runs[choice] = losses(tmp_path / choice / "runs" / "run")
    for step, loss in runs["torch"].items():
        assert runs["triton"][step] == pytest.approx(loss, rel=1e-5)
