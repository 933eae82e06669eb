"""How many tokens a named tokenizer has, without importing transformers (so `validate` stays fast).

Looks at a local directory or file (`tokenizer.json`, `vocab.json` + `added_tokens.json`), then the
Hugging Face hub cache, then a table of well-known tokenizers. Returns None when it cannot tell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

KNOWN_VOCAB = {
    "gpt2": 50257,
    "openai-community/gpt2": 50257,
    "llama-3-8b": 128256,
    "meta-llama/Meta-Llama-3-8B": 128256,
    "meta-llama/Llama-2-7b-hf": 32000,
    "mistral-7b": 32000,
    "mistralai/Mistral-7B-v0.1": 32000,
    "HuggingFaceTB/SmolLM2-135M": 49152,
}


def _from_tokenizer_json(path: Path) -> int | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    vocab = data.get("model", {}).get("vocab")
    if isinstance(vocab, list):  # unigram: list of [piece, score]
        ids = set(range(len(vocab)))
    elif isinstance(vocab, dict):
        ids = set(vocab.values())
    else:
        return None
    ids.update(t["id"] for t in data.get("added_tokens", []) if isinstance(t, dict) and "id" in t)
    return max(ids) + 1 if ids else None


def _from_directory(folder: Path) -> int | None:
    if (folder / "tokenizer.json").is_file():
        return _from_tokenizer_json(folder / "tokenizer.json")
    if (folder / "vocab.json").is_file():
        try:
            ids = set(json.loads((folder / "vocab.json").read_text(encoding="utf-8")).values())
            added = folder / "added_tokens.json"
            if added.is_file():
                ids.update(json.loads(added.read_text(encoding="utf-8")).values())
        except (OSError, ValueError, AttributeError):
            return None
        return max(ids) + 1 if ids else None
    return None


def _hub_cache_dirs(name: str) -> list[Path]:
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    cache = Path(os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub")))
    snapshots = cache / f"models--{name.replace('/', '--')}" / "snapshots"
    return sorted(snapshots.iterdir()) if snapshots.is_dir() else []


def tokenizer_vocab_size(name: str) -> int | None:
    """Number of token ids of the tokenizer `name` (a local path or hub id), or None when unknown."""
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if path.is_file() and path.name.endswith(".json"):
        return _from_tokenizer_json(path)
    for snapshot in _hub_cache_dirs(name):
        size = _from_directory(snapshot)
        if size is not None:
            return size
    return KNOWN_VOCAB.get(name)


FAMILY_MODELS = {"gpt2": "gpt2", "llama-3-8b": "meta-llama/Meta-Llama-3-8B", "mistral-7b": "mistralai/Mistral-7B-v0.1"}
FAMILY_WIDTH = {"gpt2": 768, "llama-3-8b": 4096, "mistral-7b": 4096}


def pretrained_width(family: str, path: str | None = None) -> int | None:
    """Embedding width of a pretrained model: from `path`'s config.json when given, else the family's."""
    if path:
        try:
            config = json.loads((Path(path).expanduser() / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    return FAMILY_WIDTH.get(family)
