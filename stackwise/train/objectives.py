"""Training objectives and their evaluation: next-token prediction and masked diffusion (time-step masking).

Masked diffusion (as in MDLM / LLaDA): a sequence x is corrupted at mask fraction t by replacing each
position with the mask token with probability t; the model predicts the original tokens at the masked
positions. The negative ELBO per sequence is E_t[(1/t) sum_{masked} -log p(x_i | x_t)], t ~ U(0, 1).

Training weights the masked cross-entropy either by its mean over masked positions (`mean`) or by 1/t per
sequence, normalised by the number of positions (`inverse_t`, the NELBO estimator itself). Evaluation always
reports the NELBO, over fixed masks (a constant seed, not the training seed), so every run and every arm of
an experiment is scored on the same corrupted inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EVAL_MASK_SEED = 20260101


@dataclass(frozen=True)
class Objective:
    """What a batch of token sequences is trained on.

    kind: `causal` (sequences are seq_len + 1 long: inputs and shifted targets) or `masked_diffusion`.
    fractions: mask fractions to draw t from (uniformly among them); None draws t ~ U(low, high).
    """

    kind: str
    mask_token_id: int | None = None
    low: float = 0.0
    high: float = 1.0
    fractions: tuple[float, ...] | None = None
    weighting: str = "mean"

    @property
    def extra_tokens(self) -> int:
        """Tokens a training sequence has beyond seq_len (the causal target shift)."""
        return 1 if self.kind == "causal" else 0

    def at_fraction(self, fraction: float) -> Objective:
        """The same objective with every sequence masked at exactly `fraction` (a stage's time step)."""
        return Objective(self.kind, self.mask_token_id, fraction, fraction, (fraction,), self.weighting)


def causal_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over a (B, T + 1) batch."""
    logits = model(batch[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())


def draw_fractions(objective: Objective, n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """One mask fraction per sequence, (n,)."""
    if objective.fractions is not None and len(objective.fractions) > 1:
        choices = torch.tensor(objective.fractions, device=device)
        return choices[torch.randint(len(choices), (n,), device=device, generator=generator)]
    if objective.fractions is not None:
        return torch.full((n,), objective.fractions[0], device=device)
    u = torch.rand(n, device=device, generator=generator)
    return objective.low + (objective.high - objective.low) * u


def mask_tokens(
    batch: torch.Tensor, t: torch.Tensor, mask_token_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs with masked positions replaced by the mask token, boolean mask (B, T)); position masked w.p. t."""
    u = torch.rand(batch.shape, device=batch.device, generator=generator)
    masked = u < t[:, None]  # (B, T)
    return torch.where(masked, torch.full_like(batch, mask_token_id), batch), masked


def masked_cross_entropy(
    model: nn.Module, batch: torch.Tensor, inputs: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy (nats) at each masked position, (n_masked,); the head runs on masked positions only."""
    hidden = model.hidden_states(inputs)  # (B, T, D)
    logits = model.head(hidden[masked])  # (n_masked, V)
    return F.cross_entropy(logits.float(), batch[masked], reduction="none")


def masked_diffusion_loss(
    model: nn.Module, batch: torch.Tensor, objective: Objective, generator: torch.Generator
) -> torch.Tensor:
    """The masked-diffusion training loss over a (B, T) batch, with fresh masks."""
    t = draw_fractions(objective, batch.shape[0], batch.device, generator)  # (B,)
    inputs, masked = mask_tokens(batch, t, objective.mask_token_id, generator)
    ce = masked_cross_entropy(model, batch, inputs, masked)
    if objective.weighting == "inverse_t":
        rows = masked.nonzero()[:, 0]
        return (ce / t[rows]).sum() / batch.numel()
    return ce.sum() / masked.sum().clamp(min=1)


def training_loss(
    model: nn.Module, batch: torch.Tensor, objective: Objective, generator: torch.Generator
) -> torch.Tensor:
    if objective.kind == "causal":
        return causal_loss(model, batch)
    return masked_diffusion_loss(model, batch, objective, generator)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    sequences: torch.Tensor,
    objective: Objective,
    batch_size: int,
    token_bytes: torch.Tensor | None,
    autocast,
) -> dict[str, float]:
    """Validation metrics over fixed sequences (N, L).

    causal: `val_loss` (nats per predicted token), `val_ppl`, and bits per byte of the predicted text.
    masked_diffusion: `val_loss` = NELBO in nats per token, `val_bits_per_token`, `val_bits_per_byte`, over
    fixed masks: sequence j is masked at t_j = (j + 0.5) / N (stratified over (0, 1)) with a mask drawn from
    a constant seed, so every evaluation of every run sees the same corrupted inputs.
    """
    modes = {m: m.training for m in model.modules()}  # per module: a stage keeps its frozen layers in eval
    model.eval()
    device = next(model.parameters()).device
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    n = sequences.shape[0]
    if token_bytes is not None:
        token_bytes = token_bytes.to(device)
    if objective.kind != "causal":  # one draw for all sequences: the masks do not depend on the batch size
        u_all = torch.rand(sequences.shape, generator=torch.Generator().manual_seed(EVAL_MASK_SEED))
        t_all = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # (N,) stratified over (0, 1)
    for start in range(0, n, batch_size):
        batch = sequences[start : start + batch_size].to(device)
        if objective.kind == "causal":
            targets = batch[:, 1:]
            with autocast():
                logits = model(batch[:, :-1])
            nats = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        else:
            targets = batch
            t = t_all[start : start + batch.shape[0]].to(device)
            masked = (u_all[start : start + batch.shape[0]] < t_all[start : start + batch.shape[0], None]).to(device)
            inputs = torch.where(masked, torch.full_like(batch, objective.mask_token_id), batch)
            with autocast():
                ce = masked_cross_entropy(model, batch, inputs, masked)
            nats = (ce.double() / t[masked.nonzero()[:, 0]]).sum()
        total_nats += float(nats)
        total_tokens += targets.numel()
        if token_bytes is not None:
            total_bytes += int(token_bytes[targets].sum())
    for module, mode in modes.items():
        module.training = mode
    loss = total_nats / max(total_tokens, 1)
    metrics = {"val_loss": loss, "val_bits_per_token": loss / math.log(2)}
    if objective.kind == "causal":
        metrics["val_ppl"] = math.exp(min(loss, 50.0))
    if total_bytes:
        metrics["val_bits_per_byte"] = total_nats / math.log(2) / total_bytes
    return metrics


def objective_for(
    kind: str,
    mask_token_id: int | None,
    fractions: Sequence[float] | None,
    low: float,
    high: float,
    weighting: str,
) -> Objective:
    """The end-to-end objective: t from the configured time-step fractions, else U(low, high)."""
    if kind == "causal":
        return Objective("causal")
    return Objective(kind, mask_token_id, low, high, tuple(fractions) if fractions else None, weighting)
