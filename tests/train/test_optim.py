"""Optimisers and the learning-rate schedule: parameter groups (decay / no decay, Muon's hidden matrices),
the three optimizer kinds taking real steps, and the schedule shapes checked step by step against their
formulas."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from stackwise.models import transformer
from stackwise.train.optim import build_optimizers, hidden_matrices, lr_at, set_lr, split_decay, warmup_steps

CPU = torch.device("cpu")
PEAK, FLOOR = 1e-3, 1e-4


def tiny(**kw) -> nn.Module:
    torch.manual_seed(0)
    args = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=2, max_seq_len=64, causal=True)
    return transformer(**{**args, **kw})


def build(model: nn.Module, kind: str, lr: float = 1e-2, weight_decay: float = 0.1) -> list[torch.optim.Optimizer]:
    return build_optimizers(
        list(model.named_parameters()),
        model,
        kind=kind,
        lr=lr,
        weight_decay=weight_decay,
        betas=(0.9, 0.95),
        momentum=0.95,
        device=CPU,
    )


def ids(params) -> set[int]:
    return {id(p) for p in params}


def group_ids(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for g in opt.param_groups for p in g["params"]}


def schedule(kind: str, total: int, warmup: int, decay_ratio: float = 0.2) -> list[float]:
    return [
        lr_at(s, total=total, warmup=warmup, peak=PEAK, floor=FLOOR, kind=kind, decay_ratio=decay_ratio)
        for s in range(total)
    ]


def nonincreasing(xs: list[float]) -> bool:
    return all(b <= a for a, b in pairwise(xs))


def layer_linear_weights(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.layers.modules() if isinstance(m, nn.Linear)}


def one_step(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    batch = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    logits = model(batch[:, :-1])
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    loss.backward()
    for opt in optimizers:
        opt.step()
        opt.zero_grad()


# -- the schedule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant", "wsd"])
def test_warmup_rises_linearly_to_the_peak(kind):
    lrs = schedule(kind, total=100, warmup=10)
    warm = lrs[:11]
    assert warm[0] > 0
    steps = [b - a for a, b in pairwise(warm)]
    assert all(d > 0 for d in steps)
    assert max(steps) - min(steps) < 1e-15  # linear
    for s in range(10):
        assert lrs[s] == pytest.approx(PEAK * (s + 1) / 11, rel=1e-12)
    assert lrs[10] == pytest.approx(PEAK, rel=1e-12)
    assert max(lrs) == pytest.approx(PEAK, rel=1e-12)


def test_cosine_follows_its_formula_and_ends_at_the_floor():
    total, warmup = 111, 10
    lrs = schedule("cosine", total, warmup)
    last = total - 1
    for s in range(warmup, total):
        progress = (s - warmup) / (last - warmup)
        expected = FLOOR + (PEAK - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lrs[s] == pytest.approx(expected, rel=1e-12)
    assert lrs[60] == pytest.approx((PEAK + FLOOR) / 2, rel=1e-12)  # half way: the midpoint
    assert lrs[-1] == pytest.approx(FLOOR, rel=1e-12, abs=0)
    assert nonincreasing(lrs[warmup:])
    assert min(lrs[warmup:]) >= FLOOR


def test_linear_decays_in_equal_steps_to_the_floor():
    total, warmup = 111, 10
    lrs = schedule("linear", total, warmup)
    assert lrs[warmup] == pytest.approx(PEAK, rel=1e-12)
    assert lrs[60] == pytest.approx((PEAK + FLOOR) / 2, rel=1e-12)
    assert lrs[-1] == pytest.approx(FLOOR, rel=1e-12, abs=0)
    diffs = [b - a for a, b in pairwise(lrs[warmup:])]
    assert all(d == pytest.approx((FLOOR - PEAK) / 100, rel=1e-9) for d in diffs)
    assert nonincreasing(lrs[warmup:])


def test_constant_stays_at_the_peak():
    lrs = schedule("constant", total=50, warmup=5)
    assert all(lr == PEAK for lr in lrs[5:])


def test_wsd_is_flat_then_decays_linearly_over_the_final_fraction():
    total, warmup, ratio = 100, 5, 0.2
    lrs = schedule("wsd", total, warmup, decay_ratio=ratio)
    start = total - round(ratio * total)  # 80
    assert all(lr == PEAK for lr in lrs[warmup:start])
    assert lrs[start] < PEAK
    assert lrs[-1] == pytest.approx(FLOOR, rel=1e-12, abs=0)
    decay = lrs[start - 1 :]  # from the last flat step to the floor: equal steps
    diffs = [b - a for a, b in pairwise(decay)]
    assert len(diffs) == 20
    assert all(d == pytest.approx((FLOOR - PEAK) / 20, rel=1e-9) for d in diffs)
    assert nonincreasing(lrs[warmup:])


@pytest.mark.parametrize("kind", ["cosine", "linear", "wsd"])
def test_the_schedule_follows_the_total(kind):
    short, long = schedule(kind, 40, 4), schedule(kind, 200, 4)
    assert short[-1] == pytest.approx(FLOOR, rel=1e-12)
    assert long[-1] == pytest.approx(FLOOR, rel=1e-12)
    assert long[39] > FLOOR * 1.5  # the longer run is still far from its floor at the short run's end
    assert short[35] < long[35]


def test_no_warmup_starts_at_the_peak():
    for kind in ("cosine", "linear", "constant", "wsd"):
        assert schedule(kind, total=20, warmup=0)[0] == pytest.approx(PEAK, rel=1e-12)


def test_warmup_steps_from_steps_or_ratio():
    assert warmup_steps(100, 7, None) == 7
    assert warmup_steps(100, None, 0.1) == 10
    assert warmup_steps(100, 3, 0.5) == 3  # explicit steps win over a ratio
    assert warmup_steps(100, None, None) == 0
    assert warmup_steps(100, 500, None) == 99  # never the whole run
    assert warmup_steps(10, None, 1.0) == 9
    assert warmup_steps(0, 5, None) == 0


def test_warmup_ratio_is_not_truncated_by_float_error():
    # 0.29 * 100 is 28.999999999999996 in floating point: the warmup is 29 steps, not 28
    assert warmup_steps(100, None, 0.29) == 29
    assert warmup_steps(100, None, 0.57) == 57
    assert warmup_steps(1000, None, 0.009) == 9


def test_set_lr_scales_every_group_by_its_peak():
    model = tiny()
    optimizers = build(model, "muon", lr=0.02)
    optimizers[1].add_param_group({"params": [nn.Parameter(torch.zeros(3))], "lr": 0.5, "peak_lr": 0.5})
    set_lr(optimizers, 0.25)
    lrs = [(g["peak_lr"], g["lr"]) for opt in optimizers for g in opt.param_groups]
    assert len(lrs) == 3  # Muon's group, AdamW's no-decay group (a tied model decays nothing else), the added one
    assert all(lr == pytest.approx(peak * 0.25, rel=1e-15) for peak, lr in lrs)
    assert sorted({lr for _, lr in lrs}) == pytest.approx([0.005, 0.125])
    set_lr(optimizers, 1.0)
    assert all(g["lr"] == g["peak_lr"] for opt in optimizers for g in opt.param_groups)


# -- parameter groups -----------------------------------------------------------------------------------


def test_split_decay_keeps_norms_biases_and_embeddings_undecayed():
    model = tiny(bias=True, use_rope=False, tie_embeddings=True)
    named = list(model.named_parameters(remove_duplicate=False))
    assert [n for n, _ in named].count("head.weight") == 1  # the tied head is listed under a second name
    decay, no_decay = split_decay(named)
    assert len(decay) + len(no_decay) == len(ids(model.parameters()))  # every tensor once
    assert len(ids(decay) | ids(no_decay)) == len(decay) + len(no_decay)
    assert not ids(decay) & ids(no_decay)
    expect_no = {id(model.embed.weight), id(model.pos_embed.weight), id(model.norm.weight)}
    for layer in model.layers:
        expect_no |= ids([layer.norm1.weight, layer.norm2.weight])
        expect_no |= {id(m.bias) for m in layer.modules() if isinstance(m, nn.Linear)}
    assert ids(no_decay) == expect_no
    assert ids(decay) == layer_linear_weights(model)
    assert model.head.weight is model.embed.weight


def test_split_decay_decays_an_untied_head_and_skips_frozen_parameters():
    model = tiny(tie_embeddings=False)
    model.layers[0].attn.q_proj.weight.requires_grad_(False)
    decay, no_decay = split_decay(model.named_parameters())
    assert id(model.head.weight) in ids(decay)
    assert id(model.embed.weight) in ids(no_decay)
    assert id(model.layers[0].attn.q_proj.weight) not in ids(decay) | ids(no_decay)


def test_split_decay_recognises_a_nested_embedding():
    wrapper = nn.Module()
    wrapper.inner = tiny()
    decay, no_decay = split_decay(wrapper.named_parameters())
    assert id(wrapper.inner.embed.weight) in ids(no_decay)


def test_adamw_groups():
    model = tiny()
    (opt,) = build(model, "adamw", lr=3e-3, weight_decay=0.05)
    assert type(opt) is torch.optim.AdamW
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(g["lr"] == g["peak_lr"] == 3e-3 and g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    assert ids(decay["params"]) == layer_linear_weights(model)
    assert group_ids(opt) == ids(model.parameters())


def test_muon_takes_the_layer_matrices_and_adamw_the_rest():
    model = tiny(tie_embeddings=False)
    optimizers = build(model, "muon", lr=0.02, weight_decay=0.1)
    assert [type(o) for o in optimizers] == [torch.optim.Muon, torch.optim.AdamW]
    muon, adamw = optimizers
    hidden = layer_linear_weights(model)
    assert len(hidden) == 2 * 7  # q, k, v, o, up, gate, down per layer
    assert hidden_matrices(model) == hidden
    assert group_ids(muon) == hidden
    rest = ids(model.parameters()) - hidden
    assert group_ids(adamw) == rest
    assert {id(model.embed.weight), id(model.head.weight), id(model.norm.weight)} <= rest
    assert muon.param_groups[0]["peak_lr"] == 0.02
    assert muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    one_step(model, optimizers)
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    assert all(len(muon.state[p]) > 0 for g in muon.param_groups for p in g["params"])


def test_muon_with_a_tied_head_and_no_layers():
    model = tiny(tie_embeddings=True)
    muon, adamw = build(model, "muon")
    assert id(model.head.weight) in group_ids(adamw) and id(model.head.weight) not in group_ids(muon)
    assert hidden_matrices(nn.Linear(4, 4)) == set()
    only = build(nn.Linear(4, 4), "muon")
    assert [type(o) for o in only] == [torch.optim.AdamW]


def test_adamw_8bit_keeps_8bit_state_and_learns():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    model = nn.Linear(64, 128)  # 8192 weights: above bitsandbytes' 4096-element minimum for 8-bit state
    (opt,) = build(model, "adamw_8bit", lr=1e-2, weight_decay=0.0)
    assert isinstance(opt, bnb.optim.AdamW8bit)
    assert [g["peak_lr"] for g in opt.param_groups] == [1e-2, 1e-2]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 64, generator=g)
    y = x @ (torch.randn(128, 64, generator=g) * 0.1).T
    losses = []
    for _ in range(8):
        loss = ((model(x) - y) ** 2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]
    assert all(b < a for a, b in pairwise(losses))
    state = opt.state[model.weight]
    assert {k for k, v in state.items() if torch.is_tensor(v) and v.dtype == torch.uint8} >= {"state1", "state2"}
    assert state["state1"].shape == model.weight.shape
