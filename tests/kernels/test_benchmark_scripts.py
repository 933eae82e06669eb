"""The GPU benchmark scripts run end to end in their CPU smoke mode (tiny shapes), so a GPU session can trust them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["attention_kernel.py", "gpu_train.py", "peer_kernel.py"])
def test_smoke_run_prints_json(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert "cpu" in report["device"] and report["date"]
