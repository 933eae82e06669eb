"""`stackwise model summary` counts equal the built model's for every preset and example config.

Small models are built for real; large ones on the meta device (shapes only, no memory). Pretrained
embeddings are not loaded here (`load_weights=False`): only the architecture is compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from stackwise.config import load_config, load_mapping  # noqa: E402
from stackwise.config.presets import list_presets  # noqa: E402
from stackwise.models import build_model  # noqa: E402
from stackwise.models.summary import summarize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL_PRESETS = [p.option for p in list_presets() if p.group == "model"]
EXAMPLES = sorted(
    p
    for p in (ROOT / "examples").rglob("*.yaml")
    if load_config(p).kind == "config" and "tokenizer_embedding" not in p.read_text()
)


def _check(cfg) -> None:
    expected = summarize(cfg).total
    device = "cpu" if expected < 50_000_000 else "meta"
    with torch.device(device):
        model = build_model(cfg.model, load_weights=False)  # shapes only: no pretrained files needed
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_every_model_preset(preset: str) -> None:
    _check(load_mapping({}, [f"model={preset}"]).config)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.relative_to(ROOT / "examples").as_posix() for p in EXAMPLES])
def test_every_example_config(path: Path) -> None:
    _check(load_config(path).unwrap())
