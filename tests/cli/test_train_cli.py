"""`stackwise train`, `generate` and `tokenizer train` as a user runs them: exit codes and what they print."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stackwise.cli import app
from tests.helpers import write

TINY = """
model:
  d_model: 32
  n_layers: 2
  n_heads: 2
  max_seq_len: 64
  vocab_size: 258
  attention_mode: {mode}
data:
  tokenizer_path: bytes
  num_samples: 30            # the first 30 files of the built-in corpus
training:
  seq_len: 32
  batch_size: 4
  max_steps: {steps}
  learning_rate: 3.0e-3
  log_interval: 1
  validation_interval: 100
  save_interval: 100
  device: cpu
  checkpoint_dir: {runs}
  run_id: {run_id}
logging:
  tensorboard: false
evaluation:
  max_batches: 2
"""


def tiny(tmp_path: Path, *, steps: int = 4, mode: str = "causal", run_id: str = "tiny", extra: str = "") -> Path:
    text = TINY.format(steps=steps, mode=mode, runs=tmp_path / "runs", run_id=run_id) + extra
    return write(tmp_path / f"{run_id}.yaml", text)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_prints_the_plan_trains_and_ends_with_a_sample(tmp_path: Path) -> None:
    result = invoke("train", tiny(tmp_path))
    assert result.exit_code == 0, result.output
    for text in ("parameters", "built-in corpus", "cpu, fp32", "done: status completed", "sample"):
        assert text in result.output
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["step"] == 4 and summary["status"] == "completed"


def test_generate_samples_from_a_run_directory(tmp_path: Path) -> None:
    assert invoke("train", tiny(tmp_path), "--no-sample").exit_code == 0
    result = invoke("generate", tmp_path / "runs" / "tiny", "--prompt", "def ", "-n", "12", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("def ") and len(result.output) > len("def ")
    again = invoke("generate", tmp_path / "runs" / "tiny", "--prompt", "def ", "-n", "12", "--seed", "1")
    assert again.output == result.output  # seeded
    ckpt = tmp_path / "runs" / "tiny" / "checkpoints" / "step_00000004"
    assert invoke("generate", ckpt, "--prompt", "x", "-n", "3").exit_code == 0


def test_generate_unmasks_for_a_masked_diffusion_run(tmp_path: Path) -> None:
    config = tiny(tmp_path, mode="bidirectional", run_id="mdm")
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    assert "masked_diffusion" in result.output and "val_bits_per_byte" in result.output
    out = invoke("generate", tmp_path / "runs" / "mdm", "--prompt", "import ", "-n", "10", "--steps", "5")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("import ")


def test_a_refused_setting_names_the_file_and_key(tmp_path: Path) -> None:
    config = tiny(tmp_path)
    config.write_text(config.read_text() + "distributed:\n  strategy: ddp\n")
    result = invoke("train", config)
    assert result.exit_code == 1
    assert "tiny.yaml" in result.output and "distributed.strategy" in result.output
    assert "not supported yet" in result.output
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_an_invalid_config_is_reported_like_validate(tmp_path: Path) -> None:
    result = invoke("train", tiny(tmp_path), "training.batch_size=0")
    assert result.exit_code == 1
    assert "training.batch_size" in result.output


def test_a_missing_dataset_is_a_clear_error_before_training(tmp_path: Path) -> None:
    result = invoke("train", tiny(tmp_path), f"data.dataset_path={tmp_path / 'nowhere.jsonl'}")
    assert result.exit_code == 1
    assert "data.dataset_path" in result.output and "nowhere.jsonl" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny" / "checkpoints").exists()


def test_an_unreadable_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "tok"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json", encoding="utf-8")
    result = invoke("train", tiny(tmp_path), f"data.tokenizer_path={bad}")
    assert result.exit_code == 1
    assert "tokenizer" in result.output and "Traceback" not in result.output


def test_tokenizer_train_writes_a_tokenizer_the_trainer_uses(tmp_path: Path) -> None:
    out = tmp_path / "bpe"
    result = invoke("tokenizer", "train", tiny(tmp_path), "--output", out, "--vocab-size", "300")
    assert result.exit_code == 0, result.output
    from stackwise.train.tokenizer import load_tokenizer

    tok = load_tokenizer(str(out))
    assert len(tok) == 300 and tok.eos_token == "<|endoftext|>"
    run = invoke("train", tiny(tmp_path, run_id="bpe"), f"data.tokenizer_path={out}", "model.vocab_size=300")
    assert run.exit_code == 0, run.output


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    config = tiny(tmp_path, steps=100000)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from stackwise.cli import main; main()", "train", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    metrics = tmp_path / "runs" / "tiny" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    assert metrics.exists(), proc.communicate()[0].decode()
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "--resume latest" in output
    latest = (tmp_path / "runs" / "tiny" / "checkpoints" / "latest").read_text().strip()
    step = int(latest.split("_")[1])
    assert step >= 2 and json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())["step"] == step


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    from stackwise import StackwiseConfig, Trainer

    cfg = StackwiseConfig.from_yaml(tiny(tmp_path, steps=1000))
    trainer = Trainer(cfg)

    def on_progress(step: int, total: int, row: dict) -> None:
        if step == 3 and "loss" in row:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.on_progress = on_progress
    assert trainer.fit()["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_kernel_that_cannot_run_here_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the CPU without Triton's interpreter
    config = tiny(tmp_path)
    config.write_text(config.read_text().replace("model:\n", "model:\n  attention_kernel: triton\n"))
    result = invoke("train", config)
    assert result.exit_code == 1
    assert "model.attention_kernel is triton, but" in result.output and "use auto or torch" in result.output
    assert "Traceback" not in result.output
