"""Kernel (linear-time) attention against its quadratic definition, in float64."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from stackwise.config import StackwiseConfig  # noqa: E402
from stackwise.models import build_model  # noqa: E402
from stackwise.models.layers import KernelAttention, RotaryEmbedding, apply_rope  # noqa: E402
from stackwise.models.summary import summarize  # noqa: E402

D, H, HKV, DH = 32, 4, 2, 8


def quadratic_reference(a: KernelAttention, x: torch.Tensor, causal: bool, rope: bool) -> torch.Tensor:
    """out_t = sum_s A_ts v_s / sum_s B_ts, A from (rotated) features, B from unrotated ones; explicit T x T."""
    B, T, _ = x.shape
    q = a.q_proj(x).view(B, T, H, DH).transpose(1, 2)
    k = a.k_proj(x).view(B, T, HKV, DH).transpose(1, 2).repeat_interleave(H // HKV, 1)
    v = a.v_proj(x).view(B, T, HKV, DH).transpose(1, 2).repeat_interleave(H // HKV, 1)
    fq, fk = a.features(q), a.features(k)
    nq, nk = fq, fk
    if rope:
        cos, sin = a.rope(T)
        nq, nk = apply_rope(fq, cos, sin), apply_rope(fk, cos, sin)
    numerator, denominator = nq @ nk.transpose(-1, -2), fq @ fk.transpose(-1, -2)  # (B, H, T, T)
    if causal:
        future = ~torch.tril(torch.ones(T, T, dtype=torch.bool))
        numerator, denominator = numerator.masked_fill(future, 0), denominator.masked_fill(future, 0)
    out = (numerator @ v) / (denominator.sum(-1, keepdim=True) + a.eps)
    return a.o_proj(out.transpose(1, 2).reshape(B, T, H * DH))


@pytest.mark.parametrize("feature_map", ["elu", "relu", "gaussian"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("rope", [False, True], ids=["no-rope", "rope"])
def test_matches_quadratic_definition(feature_map: str, causal: bool, rope: bool) -> None:
    torch.manual_seed(0)
    features = 10 if feature_map == "gaussian" else DH
    a = KernelAttention(
        D,
        H,
        HKV,
        feature_map=feature_map,
        feature_dim=10 if feature_map == "gaussian" else None,
        causal=causal,
        rope=RotaryEmbedding(features, 16) if rope else None,
    ).double()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    torch.testing.assert_close(a(x), quadratic_reference(a, x, causal, rope), rtol=1e-10, atol=1e-10)


def test_causal_output_ignores_the_future() -> None:
    torch.manual_seed(0)
    a = KernelAttention(D, H, HKV, causal=True).double()
    x = torch.randn(1, 8, D, dtype=torch.float64)
    changed = x.clone()
    changed[:, 5:] = torch.randn(1, 3, D, dtype=torch.float64)
    torch.testing.assert_close(a(x)[:, :5], a(changed)[:, :5])
    assert not torch.allclose(a(x)[:, 5:], a(changed)[:, 5:])


def test_gaussian_features_estimate_the_softmax_kernel() -> None:
    # E[phi(q).phi(k)] = exp(q.k / sqrt(Dh)) for positive random features; with many features the estimate is close.
    torch.manual_seed(1)
    a = KernelAttention(D, H, feature_map="gaussian", feature_dim=20000).double()
    q, k = torch.randn(2, DH, dtype=torch.float64).mul(0.5).unbind(0)
    estimate = (a.features(q) * a.features(k)).sum()
    exact = torch.exp(q @ k / DH**0.5)
    assert abs(estimate.item() / exact.item() - 1) < 0.05


def test_builder_and_summary_agree() -> None:
    cfg = StackwiseConfig.from_dict(
        {
            "model": {
                "d_model": 64,
                "n_layers": 2,
                "n_heads": 4,
                "attention_type": "kernel",
                "kernel_type": "gaussian",
                "kernel_dim": 16,
            }
        }
    )
    model = build_model(cfg.model)
    assert isinstance(model.layers[0].attn, KernelAttention) and model.layers[0].attn.projection.shape == (16, 16)
    assert summarize(cfg).total == sum(p.numel() for p in model.parameters())
    assert model(torch.randint(0, 100, (2, 5))).shape == (2, 5, 50257)


def test_unknown_feature_map() -> None:
    with pytest.raises(ValueError, match="feature map"):
        KernelAttention(D, H, feature_map="laplacian")
