"""PEER against a brute-force reference over every expert (float64), and its usage counters."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from stackwise.config import StackwiseConfig  # noqa: E402
from stackwise.models import build_model  # noqa: E402
from stackwise.models.peer import PEER, product_topk  # noqa: E402
from stackwise.models.summary import summarize  # noqa: E402


@pytest.mark.parametrize("sizes", [(7, 5), (4, 3, 5)])
def test_product_topk_equals_brute_force(sizes: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    scores = [torch.randn(3, n, dtype=torch.float64) for n in sizes]
    values, indices = product_topk(scores, k=4)
    for row in range(3):
        everything = {}
        for combo in itertools.product(*(range(n) for n in sizes)):
            flat = 0
            for i, n in zip(combo, sizes, strict=True):
                flat = flat * n + i
            everything[flat] = sum(scores[j][row, i].item() for j, i in enumerate(combo))
        best = sorted(everything.items(), key=lambda kv: -kv[1])[:4]
        assert indices[row].tolist() == [e for e, _ in best]
        torch.testing.assert_close(values[row], torch.tensor([v for _, v in best], dtype=torch.float64))


def reference(layer: PEER, x: torch.Tensor) -> torch.Tensor:
    """Score every expert of the product space, take the top k per head, run the chosen experts one by one."""
    B, T, D = x.shape
    q = layer.query(x).view(B, T, layer.num_heads, layer.query_dim)
    if layer.query_norm is not None:
        q = layer.query_norm(q)
    parts = q.chunk(len(layer.product_key_dim), dim=-1)
    out = torch.zeros_like(x)
    sizes = layer.product_key_dim
    for b, t, h in itertools.product(range(B), range(T), range(layer.num_heads)):
        sub = [parts[i][b, t, h] @ layer.keys[i][h].t() for i in range(len(sizes))]
        full = sub[0]
        for s in sub[1:]:
            full = (full.unsqueeze(-1) + s.unsqueeze(0)).flatten()
        top, experts = full.topk(layer.k)
        gates = top.softmax(-1)
        for g, e in zip(gates, experts, strict=True):
            u = layer.down.weight[e].view(layer.hidden, D)
            v = layer.up.weight[e].view(layer.hidden, D)
            out[b, t] += g * (torch.nn.functional.gelu(u @ x[b, t]) @ v)
    return out


@pytest.mark.parametrize("hidden,norm", [(1, True), (3, False)])
def test_forward_matches_brute_force(hidden: int, norm: bool) -> None:
    torch.manual_seed(0)
    layer = PEER(
        16,
        num_experts=48,
        num_experts_per_tok=3,
        num_heads=2,
        product_key_dim=(8, 6),
        query_dim=12,
        expert_hidden_size=hidden,
        query_norm=norm,
    ).double()
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(layer, x), rtol=1e-10, atol=1e-10)


def test_keys_learn_and_usage_is_counted() -> None:
    torch.manual_seed(0)
    layer = PEER(
        16, num_experts=16, num_experts_per_tok=2, num_heads=2, product_key_dim=(4, 4), query_dim=8, track_usage=True
    )
    x = torch.randn(3, 5, 16)
    layer(x).square().sum().backward()
    assert all(k.grad is not None and k.grad.abs().sum() > 0 for k in layer.keys)  # keys are parameters, not .data
    assert layer.usage.sum().item() == 3 * 5 * 2 * 2  # tokens x heads x k
    layer.usage.zero_()
    layer.usage[3] = 100
    layer.usage[5] = 1
    assert layer.hot_experts(5.0).tolist() == [3]
    layer.eval()
    layer(x)
    assert layer.usage.sum().item() == 101  # evaluation does not count


def test_builder_places_peer_from_start_layer_and_summary_agrees() -> None:
    cfg = StackwiseConfig.from_dict(
        {
            "model": {
                "d_model": 32,
                "n_layers": 3,
                "n_heads": 4,
                "use_peer": True,
                "peer_start_layer": 1,
                "peer": {
                    "num_experts": 64,
                    "product_key_dim": [8, 8],
                    "num_experts_per_tok": 4,
                    "num_heads": 2,
                    "query_dim": 16,
                    "expert_hidden_size": 2,
                },
            }
        }
    )
    model = build_model(cfg.model)
    assert not isinstance(model.layers[0].mlp, PEER)
    assert all(isinstance(layer.mlp, PEER) for layer in model.layers[1:])
    s = summarize(cfg)
    assert s.total == sum(p.numel() for p in model.parameters())
    peer = next(c for c in s.components if c.name.startswith("PEER"))
    assert peer.active_per_token < peer.params


def test_geometry_is_checked() -> None:
    with pytest.raises(ValueError, match="product"):
        PEER(16, num_experts=50, num_experts_per_tok=2, num_heads=1, product_key_dim=(8, 6), query_dim=12)
