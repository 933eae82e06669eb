"""Stage schedules: what each stage of a training mode trains, with which adapters, learning rates, steps and masks.

A schedule is a list of `Stage`s worked out from the config alone (no torch), so `stackwise plan`, the
trainer and the tests read the same table. The modes (guide 000), with blocks B_0..B_{K-1} of `block_size`
layers (a progressive "stack" is a block):

- `end_to_end`: one stage, every layer trained.
- `layerwise` / `blockwise` (greedy): stage k has B_0..B_k; B_k and the shared head (final norm and output
  layer) train, everything below is frozen, including the embeddings after stage 0. With an untied head the
  frozen trunk gets no gradient, so it builds no autograd graph, and its outputs can be cached
  (`cache_activations`). A tied head is the input embedding, which then trains in every stage, so gradients
  pass through the frozen trunk as in `fused`.
- `fused`: stage k has B_0..B_k and trains through the whole current model: the embeddings and the head train
  in every stage (their gradients pass through the trunk). `fusion_mode: frozen` freezes the trunk;
  `trainable` trains it: through LoRA adapters (`qlora_enabled`, ranks from the progressive section's stack
  LoRA settings) on a base quantized to `quantization_type` when `quantization_enabled`, or, with no
  adapters, fully.
- progressive (`progressive.enabled`): as fused, with the new stack appended after the trunk or prepended
  before it, trained in `new_stack_precision`. `trunk_strategy: qlora` quantizes the trunk (nf4 unless
  `quantization_type` says otherwise) and trains it through dual LoRA: the stack LoRA each stack keeps for
  good (`qlora_enabled`; rank and alpha by `qlora_strategy`), and the progressive QLoRA added to the whole
  trunk at each new stage (`progressive_qlora`), whose previous adapters are merged into the (re-quantized)
  base when the next stack arrives.

Budgets: `max_steps` is the run's total, split evenly over the stages (the remainder goes to the last
ones). `epochs_per_layer` gives each stage that many passes over the training data; with `max_steps` as
well, it caps each stage's share. Each stage has its own warmup and decay and a fresh optimizer; the data
position runs on across stages, so a stack-wise run reads the same samples as an end-to-end run of the
same length.

Mask fractions (masked diffusion): with `time_step_masking`, the time steps are spread over the blocks
(block k draws t among its time steps' fractions); without it, block k trains at entry k of the
`min_mask_fraction`..`max_mask_fraction` schedule over depth. End-to-end draws t among all time steps, or
uniformly between the two fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import derived
from ..config.schema import StackwiseConfig

PRECISION = {"full": "fp32", "half": "fp16", "bfloat16": "bf16", "nvfp4": "nvfp4"}


class StageError(ValueError):
    """A config whose stage schedule cannot be built (too few steps for its stages, time steps that do not fit)."""


@dataclass(frozen=True)
class Adapter:
    """A named LoRA adapter on every linear layer of a stack: the update is (alpha / rank) B A."""

    name: str
    rank: int
    alpha: float


@dataclass(frozen=True)
class StackState:
    """One stack (block) as it is in a stage.

    train: `full` (every weight), `adapters` (only its LoRA adapters) or `frozen`.
    base: storage of its linear weights: `fp32` (as built) or a quantized format (nf4, fp4, fp8, fp16).
    compute: autocast dtype of its forward, or None for the run's precision.
    """

    index: int
    layers: tuple[int, ...]
    role: str  # new | trunk | all
    train: str
    base: str = "fp32"
    adapters: tuple[Adapter, ...] = ()
    compute: str | None = None
    lr: float | None = None


@dataclass(frozen=True)
class Stage:
    """One phase of a schedule: its stacks in forward order, what trains, for how many steps, at which masks."""

    index: int
    stacks: tuple[StackState, ...]
    embeddings: bool  # the token (and position) embeddings train
    head: bool  # the final norm and output layer train
    lr: float  # peak learning rate of the embeddings and head
    steps: int
    start: int  # global optimizer step at which the stage begins
    mask: tuple[float, ...] | None  # mask fractions t is drawn among; None: causal, or U(min, max)
    greedy: bool  # no gradient reaches below the new stack: the trunk's outputs may be cached
    merge: tuple[tuple[int, str], ...] = ()  # (stack, adapter) folded into the base when the stage begins

    @property
    def end(self) -> int:
        return self.start + self.steps

    @property
    def layers(self) -> tuple[int, ...]:
        """Layer indices (of the built model) in forward order."""
        return tuple(i for s in self.stacks for i in s.layers)

    @property
    def new(self) -> StackState | None:
        return next((s for s in self.stacks if s.role == "new"), None)


def staged(cfg: StackwiseConfig) -> bool:
    return cfg.training.mode != "end_to_end" or cfg.training.progressive.enabled


def n_stages(cfg: StackwiseConfig) -> int:
    return derived.blocks(cfg)[0] if staged(cfg) else 1


def budgets(cfg: StackwiseConfig, steps_per_epoch: int | None) -> list[int]:
    """Optimizer steps of each stage (see the module docstring)."""
    t, n = cfg.training, n_stages(cfg)
    cap = t.epochs_per_layer * steps_per_epoch if t.epochs_per_layer and steps_per_epoch and n > 1 else None
    if t.max_steps is not None:
        total = t.max_steps
    elif cap is not None:
        return [cap] * n
    else:
        total = (t.num_train_epochs or 1) * (steps_per_epoch or 0)
    share, extra = divmod(total, n)
    steps = [share + (1 if k >= n - extra else 0) for k in range(n)]
    if cap is not None:
        steps = [min(s, cap) for s in steps]
    if min(steps) < 1:
        raise StageError(
            f"{total} training steps cannot be split over {n} stages (each needs at least one step); "
            f"raise training.max_steps to at least {n} or use fewer blocks"
        )
    return steps


def time_step_fractions(cfg: StackwiseConfig, k: int, n: int) -> tuple[float, ...]:
    """The mask fractions block k of n draws t among, with time_step_masking."""
    steps = derived.depth_mask_fractions(cfg)
    if n == 1:
        return steps
    if len(steps) % n == 0:
        per = len(steps) // n
        return steps[k * per : (k + 1) * per]
    if n % len(steps) == 0:
        return (steps[k * len(steps) // n],)
    raise StageError(
        f"{len(steps)} time steps cannot be spread over {n} blocks: num_time_steps (or the number of "
        "time_step_mask_fractions) must be a multiple of the number of blocks, or divide it"
    )


def stage_mask(cfg: StackwiseConfig, k: int, n: int) -> tuple[float, ...] | None:
    if derived.objective(cfg) != "masked_diffusion":
        return None
    if cfg.training.time_step_masking:
        return time_step_fractions(cfg, k, n)
    if n == 1:
        return None
    return (derived.depth_mask_fractions(cfg, n)[k],)


def trunk_treatment(cfg: StackwiseConfig, j: int) -> tuple[str, str, tuple[Adapter, ...]]:
    """(train, base, adapters) of stack j once it is part of the trunk."""
    t, p = cfg.training, cfg.training.progressive
    if p.enabled:
        if p.trunk_strategy == "frozen":
            return "frozen", "fp32", ()
        adapters = []
        if p.qlora_enabled:
            rank, alpha = derived.stack_lora(cfg, j)
            adapters.append(Adapter("stack", rank, alpha))
        if p.progressive_qlora:
            adapters.append(Adapter("progressive", p.progressive_qlora_rank, p.progressive_qlora_alpha))
        return "adapters", t.quantization_type, tuple(adapters)
    if t.mode == "fused" and t.fusion_mode == "trainable":
        base = t.quantization_type if t.quantization_enabled else "fp32"
        if t.qlora_enabled:
            rank, alpha = derived.stack_lora(cfg, j)
            return "adapters", base, (Adapter("stack", rank, alpha),)
        return "full", base, ()
    return "frozen", "fp32", ()


def plan(cfg: StackwiseConfig, steps_per_epoch: int | None = None) -> list[Stage]:
    """The stage schedule of a validated config. `steps_per_epoch` is needed when budgets come from epochs."""
    t, p = cfg.training, cfg.training.progressive
    total_blocks, size = derived.blocks(cfg)
    steps = budgets(cfg, steps_per_epoch)
    base_lr = t.learning_rate
    if not staged(cfg):
        everything = StackState(0, tuple(range(cfg.model.n_layers)), "all", "full", lr=base_lr)
        return [Stage(0, (everything,), True, True, base_lr, steps[0], 0, stage_mask(cfg, 0, 1), False)]

    block_layers = [tuple(range(k * size, (k + 1) * size)) for k in range(total_blocks)]
    greedy = not p.enabled and t.mode in ("layerwise", "blockwise")
    new_lr = t.current_block_lr or base_lr
    adapter_lr = t.qlora_lr or base_lr
    compute = PRECISION[p.new_stack_precision] if p.enabled and p.new_stack_precision != "full" else None
    stages, start = [], 0
    for k in range(total_blocks):
        trunk = []
        for j in range(k):
            train, base, adapters = trunk_treatment(cfg, j)
            lr = adapter_lr if train == "adapters" else base_lr if train == "full" else None
            trunk.append(StackState(j, block_layers[j], "trunk", train, base, adapters, None, lr))
        new = StackState(k, block_layers[k], "new", "full", compute=compute, lr=new_lr)
        order = [new, *reversed(trunk)] if p.enabled and p.building_mode == "prepend" else [*trunk, new]
        # Progressive QLoRA: the adapters a trunk stack carried through the previous stage are folded into
        # its base before fresh ones are added.
        merge = tuple((j, a.name) for j in range(k - 1) for a in trunk_treatment(cfg, j)[2] if a.name == "progressive")
        stages.append(
            Stage(
                index=k,
                stacks=tuple(order),
                embeddings=not greedy or k == 0,
                head=True,
                lr=base_lr,
                steps=steps[k],
                start=start,
                mask=stage_mask(cfg, k, total_blocks),
                greedy=greedy,
                merge=merge,
            )
        )
        start += steps[k]
    return stages


def describe_stack(s: StackState) -> str:
    """`0-3` or `4` for a stack's layers."""
    return f"{s.layers[0]}-{s.layers[-1]}" if len(s.layers) > 1 else str(s.layers[0])
