"""Training objectives against hand computations in float64: the causal loss, masking, the masked-diffusion
loss under both weightings, and the fixed-mask evaluation (NELBO, bits per token / byte, perplexity).

Masks are never re-derived from the RNG here: models record the inputs they are given, so the mask a loss
used is read back from the mask tokens it put in, and the mask fractions are pinned by patching
`draw_fractions` where a test needs per-row values.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

from stackwise.models import transformer
from stackwise.train import objectives
from stackwise.train.objectives import (
    Objective,
    causal_loss,
    draw_fractions,
    evaluate,
    mask_tokens,
    masked_diffusion_loss,
    objective_for,
    training_loss,
)

V = 50
MASK = V - 1  # never drawn into a batch below (tokens are 0 .. V - 2)
CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tokens(*shape: int, seed: int = 0, high: int = V - 1) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen(seed))


def tiny(causal: bool, seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return transformer(
        vocab_size=V, d_model=32, n_layers=2, n_heads=2, max_seq_len=64, causal=causal, dropout=dropout
    ).double()


def log_softmax64(logits: torch.Tensor) -> torch.Tensor:
    """log softmax by hand, in float64."""
    x = logits.double()
    m = x.max(dim=-1, keepdim=True).values
    return x - m - (x - m).exp().sum(dim=-1, keepdim=True).log()


def ce64(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy (nats), float64, by hand."""
    return -log_softmax64(logits).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class Recording(nn.Module):
    """Wraps a model and keeps every input it sees (the corrupted sequences a loss built)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.head = model.head
        self.seen: list[torch.Tensor] = []

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(ids.clone())
        return self.model.hidden_states(ids)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(ids))


class TableModel(nn.Module):
    """Logits are a fixed table (B, T, V), whatever the input: position (b, i) predicts table[b, i]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.head = nn.Identity()
        self.seen: list[torch.Tensor] = []

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(ids.clone())
        return self.table[: ids.shape[0], : ids.shape[1]]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(ids))


class Uniform(nn.Module):
    """Uniform predictions over `vocab` ids: zero logits everywhere."""

    def __init__(self, vocab: int):
        super().__init__()
        self.head = nn.Linear(1, vocab, bias=False)
        nn.init.zeros_(self.head.weight)

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.ones(*ids.shape, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(ids))


def num(x: torch.Tensor) -> float:
    return float(x.detach())


def no_autocast():
    return contextlib.nullcontext()


# -- causal ---------------------------------------------------------------------------------------------


def test_causal_loss_is_the_mean_next_token_cross_entropy():
    model = tiny(causal=True)
    batch = tokens(3, 9, seed=1)
    with torch.no_grad():
        logits = model(batch[:, :-1])
    expected = ce64(logits, batch[:, 1:]).mean()
    loss = causal_loss(model, batch)
    assert loss.dim() == 0
    assert num(loss) == pytest.approx(float(expected), rel=1e-5)
    # the targets are the shifted batch: predicting the inputs themselves gives another number
    assert float(ce64(logits, batch[:, :-1]).mean()) != pytest.approx(float(expected), rel=1e-3)


def test_causal_loss_matches_a_table_of_logits():
    table = torch.randn(2, 5, V, generator=gen(3), dtype=torch.float64) * 3
    batch = tokens(2, 6, seed=4)
    loss = causal_loss(TableModel(table), batch)
    assert num(loss) == pytest.approx(float(ce64(table, batch[:, 1:]).mean()), rel=1e-5)


def test_training_loss_dispatches_on_the_kind():
    model = tiny(causal=True)
    batch = tokens(2, 9, seed=2)
    assert num(training_loss(model, batch, Objective("causal"), gen())) == num(causal_loss(model, batch))
    assert Objective("causal").extra_tokens == 1
    assert Objective("masked_diffusion", MASK).extra_tokens == 0


# -- masking --------------------------------------------------------------------------------------------


def test_mask_tokens_puts_the_mask_exactly_where_the_mask_is():
    batch = tokens(4, 32, seed=5)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    inputs, masked = mask_tokens(batch, t, MASK, gen(6))
    assert masked.dtype == torch.bool and masked.shape == batch.shape
    assert masked.any() and (~masked).any()
    assert torch.equal(inputs[masked], torch.full_like(inputs[masked], MASK))
    assert torch.equal(inputs[~masked], batch[~masked])
    assert torch.equal(inputs == MASK, masked)


def test_mask_tokens_extremes():
    batch = tokens(2, 16, seed=7)
    inputs, masked = mask_tokens(batch, torch.tensor([0.0, 1.0]), MASK, gen(8))
    assert not masked[0].any() and torch.equal(inputs[0], batch[0])
    assert masked[1].all() and (inputs[1] == MASK).all()


def test_mask_fraction_follows_t_over_many_draws():
    batch = tokens(5, 4000, seed=9)
    t = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.9])
    _, masked = mask_tokens(batch, t, MASK, gen(10))
    frac = masked.double().mean(dim=1)
    # std of a row's fraction is sqrt(t(1-t)/4000) <= 0.008: 0.03 is > 3.5 sigma
    assert torch.allclose(frac, t.double(), atol=0.03)


def test_draw_fractions_uniform_between_low_and_high():
    obj = Objective("masked_diffusion", MASK, low=0.2, high=0.6)
    t = draw_fractions(obj, 20000, CPU, gen(11))
    assert t.shape == (20000,)
    assert float(t.min()) >= 0.2 and float(t.max()) <= 0.6
    assert float(t.mean()) == pytest.approx(0.4, abs=0.005)
    assert float(t.var()) == pytest.approx(0.4**2 / 12, rel=0.05)  # U(a, b) variance (b - a)^2 / 12


def test_draw_fractions_among_the_configured_choices():
    obj = Objective("masked_diffusion", MASK, fractions=(0.25, 0.5, 0.75))
    t = draw_fractions(obj, 3000, CPU, gen(12))
    values, counts = torch.unique(t, return_counts=True)
    assert torch.allclose(values, torch.tensor([0.25, 0.5, 0.75]))
    assert all(abs(int(c) - 1000) < 150 for c in counts)


def test_at_fraction_masks_at_exactly_that_fraction():
    obj = Objective("masked_diffusion", MASK, low=0.0, high=1.0, weighting="inverse_t").at_fraction(0.3)
    assert obj.weighting == "inverse_t" and obj.mask_token_id == MASK
    assert torch.equal(draw_fractions(obj, 7, CPU, gen(13)), torch.full((7,), 0.3))
    model = Recording(tiny(causal=False))
    batch = tokens(8, 64, seed=14)
    masked_diffusion_loss(model, batch, obj, gen(15))
    (inputs,) = model.seen
    frac = float((inputs == MASK).double().mean())
    assert frac == pytest.approx(0.3, abs=0.05)  # 512 positions: std 0.02


def test_objective_for():
    assert objective_for("causal", None, None, 0.0, 1.0, "mean") == Objective("causal")
    obj = objective_for("masked_diffusion", 7, [0.5, 0.25], 0.1, 0.9, "inverse_t")
    assert obj == Objective("masked_diffusion", 7, 0.1, 0.9, (0.5, 0.25), "inverse_t")
    assert objective_for("masked_diffusion", 7, None, 0.1, 0.9, "mean").fractions is None


# -- the masked-diffusion loss -------------------------------------------------------------------------


def _table_and_batch(seed: int, b: int = 4, t: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    table = torch.randn(b, t, V, generator=gen(seed), dtype=torch.float64) * 2
    return table, tokens(b, t, seed=seed + 1)


def test_mean_weighted_loss_is_the_mean_cross_entropy_over_masked_positions():
    table, batch = _table_and_batch(20)
    obj = Objective("masked_diffusion", MASK, fractions=(0.5,))
    model = TableModel(table)
    loss = masked_diffusion_loss(model, batch, obj, gen(21))
    masked = model.seen[0] == MASK
    assert 0 < int(masked.sum()) < masked.numel()
    ce = ce64(table, batch)
    assert num(loss) == pytest.approx(float(ce[masked].mean()), rel=1e-5)
    assert num(loss) != pytest.approx(float(ce.mean()), rel=1e-3)  # not every position


def test_masked_loss_ignores_logits_at_unmasked_positions():
    table, batch = _table_and_batch(22)
    obj = Objective("masked_diffusion", MASK, fractions=(0.5,))
    base = TableModel(table)
    loss = masked_diffusion_loss(base, batch, obj, gen(23))
    masked = base.seen[0] == MASK
    (b0, i0), (b1, i1) = (~masked).nonzero()[0].tolist(), masked.nonzero()[0].tolist()

    moved = table.clone()
    moved[b0, i0] = torch.randn(V, generator=gen(24), dtype=torch.float64) * 10  # an unmasked position
    other = TableModel(moved)
    same = masked_diffusion_loss(other, batch, obj, gen(23))  # same generator seed: same mask
    assert torch.equal(other.seen[0], base.seen[0])
    assert num(same) == num(loss)
    assert num(same) == pytest.approx(float(ce64(moved, batch)[masked].mean()), rel=1e-5)

    moved[b1, i1, batch[b1, i1]] -= 5.0  # a masked position: its target gets less likely
    changed = masked_diffusion_loss(TableModel(moved), batch, obj, gen(23))
    assert num(changed) > num(loss)
    assert num(changed) == pytest.approx(float(ce64(moved, batch)[masked].mean()), rel=1e-5)


def test_masked_loss_with_the_real_model_equals_a_manual_computation():
    model = Recording(tiny(causal=False))
    batch = tokens(3, 16, seed=25)
    obj = Objective("masked_diffusion", MASK, low=0.2, high=0.8)
    loss = masked_diffusion_loss(model, batch, obj, gen(26))
    (inputs,) = model.seen
    masked = inputs == MASK
    with torch.no_grad():
        logits = model.model(inputs)  # the full head on every position, then only masked ones counted
    assert num(loss) == pytest.approx(float(ce64(logits, batch)[masked].mean()), rel=1e-5)


def test_inverse_t_weighting_is_the_nelbo_estimator(monkeypatch):
    table, batch = _table_and_batch(27, b=4, t=16)
    t = torch.tensor([0.2, 0.5, 0.9, 0.6])
    monkeypatch.setattr(objectives, "draw_fractions", lambda objective, n, device, generator: t[:n].clone())
    obj = Objective("masked_diffusion", MASK, weighting="inverse_t")
    model = TableModel(table)
    loss = masked_diffusion_loss(model, batch, obj, gen(28))
    masked = model.seen[0] == MASK
    assert (masked.sum(dim=1) > 0).all()
    ce = ce64(table, batch)
    expected = sum(float(ce[r][masked[r]].sum()) / float(t[r]) for r in range(4)) / batch.numel()
    assert num(loss) == pytest.approx(expected, rel=1e-5)
    # and not the `mean` weighting of the same mask
    mean = masked_diffusion_loss(TableModel(table), batch, Objective("masked_diffusion", MASK), gen(28))
    assert num(mean) == pytest.approx(float(ce[masked].mean()), rel=1e-5)
    assert num(mean) != pytest.approx(expected, rel=1e-3)


def test_masked_loss_with_nothing_masked_is_zero_and_finite():
    table, batch = _table_and_batch(29)
    for weighting in ("mean", "inverse_t"):
        obj = Objective("masked_diffusion", MASK, fractions=(0.0,), weighting=weighting)
        loss = masked_diffusion_loss(TableModel(table), batch, obj, gen(30))
        assert num(loss) == 0.0


def test_masked_loss_backpropagates_only_through_masked_positions():
    table, batch = _table_and_batch(31)
    model = TableModel(table)
    loss = masked_diffusion_loss(model, batch, Objective("masked_diffusion", MASK, fractions=(0.5,)), gen(32))
    loss.backward()
    masked = model.seen[0] == MASK
    grad_norm = model.table.grad.abs().sum(dim=-1)
    assert (grad_norm[masked] > 0).all()
    assert (grad_norm[~masked] == 0).all()


# -- evaluation -----------------------------------------------------------------------------------------


def test_causal_evaluate_matches_a_hand_computation():
    model = tiny(causal=True)
    seqs = tokens(5, 9, seed=40)  # 5 sequences in batches of 2: an uneven last batch
    token_bytes = torch.randint(1, 5, (V,), generator=gen(41))
    metrics = evaluate(model, seqs, Objective("causal"), 2, token_bytes, no_autocast)
    with torch.no_grad():
        logits = model(seqs[:, :-1])
    ce = ce64(logits, seqs[:, 1:])
    loss = float(ce.mean())  # per predicted token over all sequences, not a mean of batch means
    n_bytes = int(token_bytes[seqs[:, 1:]].sum())
    assert metrics["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val_bits_per_token"] == pytest.approx(loss / math.log(2), rel=1e-5)
    assert metrics["val_ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert metrics["val_bits_per_byte"] == pytest.approx(float(ce.sum()) / math.log(2) / n_bytes, rel=1e-5)


def test_causal_evaluate_without_a_byte_table_has_no_bits_per_byte():
    metrics = evaluate(tiny(causal=True), tokens(2, 9, seed=42), Objective("causal"), 4, None, no_autocast)
    assert set(metrics) == {"val_loss", "val_bits_per_token", "val_ppl"}


def test_masked_evaluate_is_the_nelbo_over_stratified_fixed_fractions():
    n, length = 6, 20
    model = Recording(tiny(causal=False))
    seqs = tokens(n, length, seed=43)
    token_bytes = torch.randint(1, 4, (V,), generator=gen(44))
    obj = Objective("masked_diffusion", MASK, weighting="mean")  # evaluation ignores the training weighting
    metrics = evaluate(model, seqs, obj, 4, token_bytes, no_autocast)
    inputs = torch.cat(model.seen)
    masked = inputs == MASK
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert masked.any(dim=1).sum() >= n - 1  # (the first row, t = 1/12, may have no mask)
    with torch.no_grad():
        logits = model.model(inputs)
    ce = ce64(logits, seqs)
    nats = sum(float(ce[j][masked[j]].sum()) / float(t[j]) for j in range(n))
    loss = nats / (n * length)
    assert set(metrics) == {"val_loss", "val_bits_per_token", "val_bits_per_byte"}
    assert metrics["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val_bits_per_token"] == pytest.approx(loss / math.log(2), rel=1e-5)
    assert metrics["val_bits_per_byte"] == pytest.approx(nats / math.log(2) / int(token_bytes[seqs].sum()), rel=1e-5)


def test_masked_evaluate_fractions_rise_with_the_sequence_index():
    n, length = 8, 2000
    model = Recording(Uniform(V))
    evaluate(model, tokens(n, length, seed=45), Objective("masked_diffusion", MASK), 3, None, no_autocast)
    frac = (torch.cat(model.seen) == MASK).double().mean(dim=1)
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert torch.allclose(frac, t, atol=0.04)  # std <= 0.012 per row


def test_evaluate_is_deterministic_and_leaves_the_global_rng_alone():
    model = tiny(causal=False, dropout=0.2)
    model.train()
    seqs = tokens(6, 16, seed=46)
    obj = Objective("masked_diffusion", MASK)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = evaluate(model, seqs, obj, 4, None, no_autocast)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # another global seed: the eval masks do not depend on it
    second = evaluate(model, seqs, obj, 4, None, no_autocast)
    assert first == second
    assert model.training  # the mode is restored


def test_every_model_is_scored_on_the_same_corrupted_inputs():
    seqs = tokens(5, 16, seed=47)
    obj = Objective("masked_diffusion", MASK)
    a, b = Recording(tiny(causal=False, seed=1)), Recording(tiny(causal=False, seed=2))
    ma = evaluate(a, seqs, obj, 2, None, no_autocast)
    mb = evaluate(b, seqs, obj, 2, None, no_autocast)
    assert len(a.seen) == len(b.seen) == 3
    assert all(torch.equal(x, y) for x, y in zip(a.seen, b.seen, strict=True))
    assert ma["val_loss"] != mb["val_loss"]


@pytest.mark.parametrize("kind", ["causal", "masked_diffusion"])
def test_evaluate_does_not_depend_on_the_batch_size(kind):
    # The eval batch size is a memory knob: the same sequences must get the same score (and, for masked
    # diffusion, the same fixed masks) however they are batched.
    model = tiny(causal=kind == "causal")
    seqs = tokens(8, 17 if kind == "causal" else 16, seed=50)
    obj = Objective("causal") if kind == "causal" else Objective("masked_diffusion", MASK)
    losses = [evaluate(model, seqs, obj, bs, None, no_autocast)["val_loss"] for bs in (2, 3, 8)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[2] == pytest.approx(losses[0], rel=1e-6)


def test_uniform_predictions_have_a_nelbo_of_log_v_per_token():
    # each masked CE is log V, weighted by 1/t and masked w.p. t: log V per token in expectation.
    # With N = 256 stratified rows of 32 tokens the relative std is about 3%, so 12% is > 4 sigma.
    n, length = 256, 32
    seqs = tokens(n, length, seed=48)
    metrics = evaluate(Uniform(V), seqs, Objective("masked_diffusion", MASK), 64, None, no_autocast)
    assert metrics["val_loss"] == pytest.approx(math.log(V), rel=0.12)
    assert metrics["val_bits_per_token"] == pytest.approx(math.log2(V), rel=0.12)


def test_uniform_predictions_have_a_causal_loss_of_log_v():
    metrics = evaluate(Uniform(V), tokens(3, 9, seed=49), Objective("causal"), 2, None, no_autocast)
    assert metrics["val_loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert metrics["val_ppl"] == pytest.approx(V, rel=1e-5)
