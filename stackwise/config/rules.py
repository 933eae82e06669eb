"""Rules that read several fields. Each names the fields it reads, so a rule still runs when an unrelated
field has an error, and is skipped (not misreported) when one of its own fields is invalid.

Errors are configs that cannot train correctly; warnings are legal but suspicious (a value outside a
guide's typical range, an option that only applies to another mode).

This file is longer than most on purpose: ARCHITECTURE.md asks that rules reading several fields live in
one place, and each rule here is a short, independent function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from . import derived
from .errors import Issue, dotted
from .fields import typical_range
from .schema import SECTIONS, StackwiseConfig
from .tokenizers import pretrained_width, tokenizer_vocab_size

Check = Callable[[StackwiseConfig], Iterable[Issue]]


@dataclass(frozen=True)
class Rule:
    """A named check over the fields it reads (dotted canonical paths)."""

    name: str
    reads: tuple[str, ...]
    check: Check


RULES: list[Rule] = []


def rule(*reads: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        RULES.append(Rule(fn.__name__, reads, fn))
        return fn

    return register


def error(path: str, message: str) -> Issue:
    return Issue(path, message, "error")


def warning(path: str, message: str) -> Issue:
    return Issue(path, message, "warning")


def is_set(cfg: StackwiseConfig, path: str) -> bool:
    """Whether the user gave `path` (a dotted canonical path) rather than leaving the default."""
    node: Any = cfg
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node, BaseModel) or part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return isinstance(node, BaseModel) and parts[-1] in node.model_fields_set


def is_given(cfg: StackwiseConfig, path: str) -> bool:
    """Whether the user gave `path` a value other than its default (an explicit default changes nothing)."""
    if not is_set(cfg, path):
        return False
    *parents, name = path.split(".")
    node: Any = cfg
    for part in parents:
        node = getattr(node, part)
    info = type(node).model_fields[name]
    default = info.get_default(call_default_factory=True)
    return getattr(node, name) != default


def set_fields(model: BaseModel, prefix: str) -> list[str]:
    """Dotted paths of every field the user gave below `model`, in schema order."""
    out = []
    for name in type(model).model_fields:
        if name not in model.model_fields_set:
            continue
        value = getattr(model, name)
        path = f"{prefix}.{name}"
        out.extend(set_fields(value, path) if isinstance(value, BaseModel) else [path])
    return out


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".") or a.startswith(b + "[") or b.startswith(a + "[")


def run_rules(cfg: StackwiseConfig, removed: Sequence[tuple] = ()) -> list[Issue]:
    """Every issue the rules find; rules reading a field in `removed` (paths with field errors) are skipped."""
    bad = [dotted(p) for p in removed]
    issues: list[Issue] = []
    for r in RULES:
        if any(_overlaps(read, b) for read in r.reads for b in bad):
            continue
        issues.extend(replace(issue, code=r.name) for issue in r.check(cfg))
    return issues


def _divisors_near(n: int, around: int) -> list[int]:
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return sorted(divs, key=lambda d: abs(d - around))[:3]


# -- model -------------------------------------------------------------------------------------------
@rule("model.d_model", "model.n_heads", "model.head_dim", "model.attention_type")
def heads_divide_width(cfg: StackwiseConfig) -> Iterable[Issue]:
    m = cfg.model
    if m.attention_type != "mla" and m.head_dim is None and m.d_model % m.n_heads:
        near = ", ".join(map(str, sorted(_divisors_near(m.d_model, m.n_heads))))
        yield error(
            "model.n_heads",
            f"d_model ({m.d_model}) must be divisible by n_heads ({m.n_heads}); nearby head counts that divide it: {near}",
        )


@rule("model.n_heads", "model.n_kv_heads", "model.attention_type")
def kv_heads_divide_heads(cfg: StackwiseConfig) -> Iterable[Issue]:
    m = cfg.model
    if m.n_kv_heads is not None and m.n_heads % m.n_kv_heads:
        yield error("model.n_kv_heads", f"n_heads ({m.n_heads}) must be divisible by n_kv_heads ({m.n_kv_heads})")
    if m.attention_type == "gqa" and (m.n_kv_heads is None or m.n_kv_heads == m.n_heads):
        yield error("model.n_kv_heads", "attention_type gqa needs n_kv_heads smaller than n_heads")
    if m.attention_type == "mla" and m.n_kv_heads is not None:
        yield warning(
            "model.n_kv_heads", "n_kv_heads is not used by mla attention (keys and values come from the latent)"
        )


@rule(
    "model.use_rope",
    "model.d_model",
    "model.n_heads",
    "model.head_dim",
    "model.attention_type",
    "model.mla.qk_rope_head_dim",
)
def rope_needs_even_dims(cfg: StackwiseConfig) -> Iterable[Issue]:
    m = cfg.model
    if m.attention_type == "mla":
        if m.mla.qk_rope_head_dim % 2:
            yield error(
                "model.mla.qk_rope_head_dim",
                f"qk_rope_head_dim ({m.mla.qk_rope_head_dim}) must be even: RoPE rotates pairs of dimensions",
            )
    elif m.head_dim is None and m.d_model % m.n_heads:
        return  # reported by heads_divide_width; there is no whole head dimension to check
    elif m.use_rope and m.resolved_head_dim % 2:
        where = "model.head_dim" if m.head_dim is not None else "model.n_heads"
        where = "model.use_rope" if is_set(cfg, "model.use_rope") else where
        source = "head_dim" if m.head_dim is not None else "d_model / n_heads"
        yield error(
            where,
            f"RoPE needs an even head dimension: RoPE rotates pairs of dimensions, but {source} = {m.resolved_head_dim}",
        )


@rule("model.attention_type", "model.mla", "model.kernel_type", "model.kernel_dim")
def attention_options_apply(cfg: StackwiseConfig) -> Iterable[Issue]:
    m = cfg.model
    if is_given(cfg, "model.mla") and m.attention_type != "mla":
        yield warning("model.mla", f"mla settings are ignored with attention_type {m.attention_type}")
    for name in ("kernel_type", "kernel_dim"):
        if is_given(cfg, f"model.{name}") and m.attention_type != "kernel":
            yield warning(f"model.{name}", f"{name} only applies to attention_type kernel")
    if m.kernel_dim is not None and m.kernel_type != "gaussian":
        yield warning("model.kernel_dim", "kernel_dim only applies to kernel_type gaussian (random features)")


@rule(
    "model.attention_kernel", "model.attention_dropout", "model.attention_type", "model.peer_kernel", "model.use_peer"
)
def kernel_choices_apply(cfg: StackwiseConfig) -> Iterable[Issue]:
    m = cfg.model
    if m.attention_kernel == "triton" and m.attention_dropout > 0:
        yield error(
            "model.attention_kernel",
            f"the Triton attention kernel has no attention dropout, but attention_dropout is {m.attention_dropout}; "
            "set attention_dropout: 0, or attention_kernel: auto (PyTorch's attention where dropout is on)",
        )
    if is_given(cfg, "model.attention_kernel") and m.attention_type == "kernel":
        yield warning(
            "model.attention_kernel", "attention_kernel applies to softmax attention (standard, gqa, mla), not kernel"
        )
    if is_given(cfg, "model.peer_kernel") and not m.use_peer:
        yield warning("model.peer_kernel", "peer_kernel only applies with use_peer: true")
    elif m.use_peer and m.peer_kernel == "triton":
        if len(m.peer.product_key_dim) != 2:
            yield error(
                "model.peer_kernel",
                f"the Triton PEER kernels take two sub-key sets, but product_key_dim has "
                f"{len(m.peer.product_key_dim)}; use peer_kernel: auto or torch",
            )
        if m.peer.num_experts_per_tok > 32:
            yield error(
                "model.peer_kernel",
                f"the Triton PEER kernels keep at most 32 experts per head, but num_experts_per_tok is "
                f"{m.peer.num_experts_per_tok}; use peer_kernel: auto or torch",
            )


@rule(
    "model.use_peer",
    "model.peer.num_experts",
    "model.peer.product_key_dim",
    "model.peer.query_dim",
    "model.peer.num_experts_per_tok",
    "model.peer_start_layer",
    "model.n_layers",
)
def peer_geometry(cfg: StackwiseConfig) -> Iterable[Issue]:
    m, p = cfg.model, cfg.model.peer
    if not m.use_peer:
        if is_given(cfg, "model.peer") or is_given(cfg, "model.peer_start_layer"):
            where = "model.peer" if is_given(cfg, "model.peer") else "model.peer_start_layer"
            yield warning(where, "PEER settings are given but use_peer is false, so they are ignored")
        return
    product = math.prod(p.product_key_dim)
    if p.num_experts != product:
        yield error(
            "model.peer.num_experts",
            f"num_experts ({p.num_experts}) must equal the product of product_key_dim {list(p.product_key_dim)} = {product}",
        )
    n_sub = len(p.product_key_dim)
    if p.query_dim % n_sub:
        yield error(
            "model.peer.query_dim", f"query_dim ({p.query_dim}) must be divisible by the number of sub-keys ({n_sub})"
        )
    if p.num_experts_per_tok > min(p.product_key_dim):
        yield error(
            "model.peer.num_experts_per_tok",
            f"num_experts_per_tok ({p.num_experts_per_tok}) is larger than the smallest sub-key count ({min(p.product_key_dim)}): top-k per sub-key cannot pick that many",
        )
    if m.peer_start_layer >= m.n_layers:
        yield error(
            "model.peer_start_layer",
            f"peer_start_layer ({m.peer_start_layer}) must be below n_layers ({m.n_layers}): no layer would use PEER",
        )


@rule("model.tokenizer_embedding", "model.tie_embeddings", "model.d_model")
def pretrained_embedding_width(cfg: StackwiseConfig) -> Iterable[Issue]:
    te = cfg.model.tokenizer_embedding
    if te is None:
        return
    width = pretrained_width(te.family, te.path)
    if width is not None and width != cfg.model.d_model and cfg.model.tie_embeddings:
        yield error(
            "model.tie_embeddings",
            f"the pretrained embeddings of `{te.path or te.family}` are {width} wide, not d_model ({cfg.model.d_model}): an adapter maps them, so the head cannot be tied; set tie_embeddings: false",
        )
    if te.adapter_hidden_dim is not None and width == cfg.model.d_model:
        yield warning(
            "model.tokenizer_embedding.adapter_hidden_dim",
            f"no adapter is needed: the pretrained width equals d_model ({width})",
        )


@rule("training.seq_len", "model.max_seq_len")
def seq_len_fits(cfg: StackwiseConfig) -> Iterable[Issue]:
    if cfg.training.seq_len > cfg.model.max_seq_len:
        yield error(
            "training.seq_len", f"seq_len ({cfg.training.seq_len}) is above model.max_seq_len ({cfg.model.max_seq_len})"
        )


@rule(
    "model.vocab_size",
    "data.tokenizer_path",
    "model.pretrained_name",
    "model.tokenizer_embedding",
    "training.mask_token_id",
    "training.objective",
    "training.time_step_masking",
    "model.attention_mode",
)
def vocab_covers_tokenizer(cfg: StackwiseConfig) -> Iterable[Issue]:
    vocab = cfg.model.vocab_size
    name = derived.tokenizer_name(cfg)
    size = tokenizer_vocab_size(name) if vocab is not None else None
    if size is not None and vocab < size and not cfg.data.use_dummy_data:  # type: ignore[operator]
        if name == "gpt2" and not cfg.data.tokenizer_path:
            yield warning(
                "model.vocab_size",
                f"vocab_size ({vocab}) is smaller than the default GPT-2 tokenizer ({size}); set data.tokenizer_path to the tokenizer this vocabulary belongs to",
            )
        else:
            yield error(
                "model.vocab_size",
                f"vocab_size ({vocab}) is smaller than the vocabulary of tokenizer `{name}` ({size}); token ids would be out of range",
            )
    mask = cfg.training.mask_token_id
    if (
        name == "gpt2"
        and size is not None
        and mask is None
        and vocab == size
        and derived.objective(cfg) == "masked_diffusion"
    ):
        yield error(
            "model.vocab_size",
            f"masked diffusion adds a mask token after GPT-2's {size} ids (id {size}), so vocab_size must be at "
            f"least {size + 1} (or null); or set training.mask_token_id to an existing id",
        )
    if vocab is not None and mask is not None and mask >= vocab:
        yield error("training.mask_token_id", f"mask_token_id ({mask}) must be below vocab_size ({vocab})")


# -- training schedule -------------------------------------------------------------------------------------
@rule("training.total_blocks", "training.block_size", "model.n_layers", "training.mode")
def blocks_cover_layers(cfg: StackwiseConfig) -> Iterable[Issue]:
    t, n = cfg.training, cfg.model.n_layers
    if t.mode == "layerwise" and t.block_size not in (None, 1):
        yield error(
            "training.block_size",
            f"mode layerwise means block_size: 1 (got {t.block_size}); for blocks of {t.block_size} layers use mode: blockwise",
        )
    elif t.mode == "layerwise" and t.total_blocks not in (None, n):
        yield error(
            "training.total_blocks",
            f"mode layerwise trains one layer per block, so total_blocks must be n_layers ({n}), not {t.total_blocks}; for blocks of several layers use mode: blockwise",
        )
    if t.total_blocks is not None and t.block_size is not None:
        if t.total_blocks * t.block_size != n:
            yield error(
                "training.total_blocks",
                f"total_blocks x block_size = {t.total_blocks} x {t.block_size} = {t.total_blocks * t.block_size}, but n_layers is {n}",
            )
    elif t.total_blocks is not None and n % t.total_blocks:
        yield error("training.total_blocks", f"n_layers ({n}) is not divisible by total_blocks ({t.total_blocks})")
    elif t.block_size is not None and n % t.block_size:
        yield error("training.block_size", f"n_layers ({n}) is not divisible by block_size ({t.block_size})")


@rule(
    "training.mode",
    "training.fusion_mode",
    "training.qlora_enabled",
    "training.quantization_enabled",
    "training.quantization_type",
    "training.qlora_lr",
    "training.total_blocks",
    "training.block_size",
    "training.epochs_per_layer",
    "training.progressive",
    "training.cache_activations",
)
def options_apply_to_mode(cfg: StackwiseConfig) -> Iterable[Issue]:
    t = cfg.training
    staged = t.mode != "end_to_end" or t.progressive.enabled
    if is_given(cfg, "training.fusion_mode") and t.mode != "fused":
        yield warning("training.fusion_mode", f"fusion_mode only applies to mode fused (mode is {t.mode})")
    trunk_adapters = t.mode == "fused" and t.fusion_mode == "trainable" and not t.progressive.enabled
    qlora_trunk = t.progressive.enabled and t.progressive.trunk_strategy == "qlora"
    for name in ("qlora_enabled", "quantization_enabled", "quantization_type", "qlora_lr"):
        if (
            is_given(cfg, f"training.{name}")
            and not trunk_adapters
            and not (name in ("qlora_lr", "quantization_type") and qlora_trunk)
        ):
            yield warning(
                f"training.{name}",
                f"{name} only applies to mode fused with fusion_mode trainable (a trainable, quantized trunk)"
                + (", or qlora_lr and quantization_type to a progressive qlora trunk" if t.progressive.enabled else ""),
            )
    if is_given(cfg, "training.current_block_lr") and not staged:
        yield warning(
            "training.current_block_lr",
            "current_block_lr is the learning rate of the block a stage adds; end-to-end training has no such block",
        )
    for name in ("total_blocks", "block_size", "epochs_per_layer", "cache_activations"):
        if is_given(cfg, f"training.{name}") and not staged:
            yield warning(
                f"training.{name}",
                f"{name} only applies to stage-wise training (mode layerwise, blockwise or fused, or progressive)",
            )


@rule(
    "training.time_step_masking",
    "training.num_time_steps",
    "training.time_step_mask_fractions",
    "training.min_mask_fraction",
    "training.max_mask_fraction",
    "training.objective",
    "training.mask_schedule_type",
    "model.attention_mode",
)
def masking_schedule(cfg: StackwiseConfig) -> Iterable[Issue]:
    t = cfg.training
    fractions = t.time_step_mask_fractions
    if (
        t.time_step_masking
        and fractions is not None
        and t.num_time_steps is not None
        and len(fractions) != t.num_time_steps
    ):
        yield error(
            "training.time_step_mask_fractions",
            f"{len(fractions)} mask fractions given for num_time_steps {t.num_time_steps}; give one per time step",
        )
    if t.min_mask_fraction >= t.max_mask_fraction:
        yield error(
            "training.min_mask_fraction",
            f"min_mask_fraction ({t.min_mask_fraction}) must be below max_mask_fraction ({t.max_mask_fraction})",
        )
    if not t.time_step_masking:
        for name in ("num_time_steps", "time_step_mask_fractions"):
            if is_given(cfg, f"training.{name}"):
                yield warning(f"training.{name}", f"{name} only applies with time_step_masking: true")
    if derived.objective(cfg) == "causal":
        if t.time_step_masking:
            yield error(
                "training.objective", "time_step_masking trains a masked-diffusion objective, but objective is causal"
            )
        for name in ("min_mask_fraction", "max_mask_fraction", "mask_schedule_type"):
            if is_given(cfg, f"training.{name}"):
                yield warning(f"training.{name}", f"{name} only applies to the masked_diffusion objective")


@rule("training.objective", "model.attention_mode", "training.time_step_masking")
def objective_fits_attention(cfg: StackwiseConfig) -> Iterable[Issue]:
    if cfg.training.objective == "causal" and cfg.model.attention_mode == "bidirectional":
        yield error(
            "training.objective",
            "a next-token (causal) objective with bidirectional attention lets every position see the token it must predict; use attention_mode: causal or objective: masked_diffusion",
        )
    if (
        derived.objective(cfg) == "masked_diffusion"
        and cfg.model.attention_mode == "causal"
        and is_set(cfg, "model.attention_mode")
    ):
        yield warning(
            "model.attention_mode",
            "masked diffusion with causal attention: a masked token can only use the context to its left",
        )


STACK_LORA = (
    "qlora_strategy",
    "qlora_rank",
    "qlora_alpha",
    "qlora_rank_pattern",
    "qlora_alpha_pattern",
    "qlora_configs",
)


@rule(
    "training.progressive.enabled",
    "training.progressive.qlora_strategy",
    "training.progressive.qlora_configs",
    "training.progressive.qlora_enabled",
    "training.progressive.qlora_rank",
    "training.progressive.qlora_rank_pattern",
    "training.progressive.trunk_strategy",
    "training.progressive.progressive_qlora",
    "training.total_blocks",
    "training.block_size",
    "training.mode",
    "training.fusion_mode",
    "training.qlora_enabled",
    "model.n_layers",
)
def progressive_adapters(cfg: StackwiseConfig) -> Iterable[Issue]:
    t, p = cfg.training, cfg.training.progressive
    n_stacks = derived.blocks(cfg)[0]
    # A fused trainable trunk's adapters take their ranks from the stack LoRA settings.
    fused_lora = t.mode == "fused" and t.fusion_mode == "trainable" and t.qlora_enabled and not p.enabled
    if not p.enabled:
        extra = [
            f
            for f in set_fields(p, "training.progressive")
            if f != "training.progressive.enabled"
            and is_given(cfg, f)
            and not (fused_lora and f.rsplit(".", 1)[-1] in STACK_LORA)
        ]
        if extra:
            yield warning(
                extra[0],
                "progressive settings are ignored while training.progressive.enabled is false"
                + (" (a fused trainable trunk reads only the stack LoRA ranks)" if fused_lora else ""),
            )
        if not fused_lora:
            return
    if p.qlora_strategy == "variable":
        if not p.qlora_configs:
            yield error(
                "training.progressive.qlora_strategy",
                "qlora_strategy variable needs qlora_configs: {stack index: {rank, alpha}}",
            )
        for k in sorted(p.qlora_configs or {}):
            if not 0 <= k < n_stacks:
                yield error(
                    f"training.progressive.qlora_configs[{k}]",
                    f"stack index {k} does not exist: this config has {n_stacks} stacks (0..{n_stacks - 1})",
                )
    elif p.qlora_configs:
        yield warning(
            "training.progressive.qlora_configs",
            f"qlora_configs only applies to qlora_strategy variable (strategy is {p.qlora_strategy})",
        )
    if p.qlora_strategy == "progressive" and (p.qlora_enabled or fused_lora):
        for k in range(n_stacks):
            rank = derived.pattern_value(p.qlora_rank, p.qlora_rank_pattern, k)
            if rank < 1:
                yield error(
                    "training.progressive.qlora_rank_pattern",
                    f"qlora_rank_pattern {p.qlora_rank_pattern} drives stack {k}'s rank below 1 ({p.qlora_rank} -> {rank:g}); raise qlora_rank or use fewer stacks",
                )
                break
    if p.enabled and p.trunk_strategy == "qlora" and not (p.progressive_qlora or p.qlora_enabled):
        yield error(
            "training.progressive.trunk_strategy",
            "trunk_strategy qlora quantizes the trunk, but no adapter could train it: enable progressive_qlora (trunk adapters) or qlora_enabled (stack adapters)",
        )


@rule(
    "training.progressive.enabled",
    "training.mode",
    "training.fusion_mode",
    "training.cache_activations",
    "training.objective",
    "training.time_step_masking",
    "model.attention_mode",
    "model.tie_embeddings",
)
def schedule_choice(cfg: StackwiseConfig) -> Iterable[Issue]:
    t = cfg.training
    # Progressive training is a fused schedule (each stack trains through the whole rack): `mode: fused`
    # may name it; the greedy modes cannot.
    if t.progressive.enabled and t.mode in ("layerwise", "blockwise"):
        yield error(
            "training.mode",
            f"progressive.enabled and mode {t.mode} are two different stage schedules; "
            "progressive training trains each stack through the whole rack (like mode fused): "
            "set mode: fused or end_to_end, or progressive.enabled: false",
        )
    if t.progressive.enabled and t.fusion_mode == "trainable":
        yield error(
            "training.fusion_mode",
            "with progressive.enabled the trunk is set by progressive.trunk_strategy (frozen or qlora), "
            "not fusion_mode; remove fusion_mode: trainable",
        )
    if not t.cache_activations:
        return
    if t.progressive.enabled or t.mode not in ("layerwise", "blockwise"):
        yield error(
            "training.cache_activations",
            "cache_activations needs a trunk whose output never changes, which only the greedy modes have: "
            "mode layerwise or blockwise (fused and progressive train the embeddings through the trunk)",
        )
    elif derived.objective(cfg) == "masked_diffusion":
        yield error(
            "training.cache_activations",
            "cache_activations cannot serve masked diffusion: every batch is masked afresh, so the trunk's input "
            "is new each step; set cache_activations: false",
        )
    elif cfg.model.tie_embeddings:
        yield error(
            "training.cache_activations",
            "with tie_embeddings the output head is the input embedding, which trains in every stage, so the "
            "trunk's output changes; set model.tie_embeddings: false or cache_activations: false",
        )


@rule(
    "training.mode",
    "training.fusion_mode",
    "training.qlora_enabled",
    "training.quantization_enabled",
    "training.progressive.trunk_strategy",
    "training.progressive.qlora_enabled",
    "training.progressive.progressive_qlora",
    "model.quantization",
)
def trunk_adapters(cfg: StackwiseConfig) -> Iterable[Issue]:
    t, p = cfg.training, cfg.training.progressive
    fused_trainable = t.mode == "fused" and t.fusion_mode == "trainable" and not p.enabled
    if fused_trainable and t.quantization_enabled and not t.qlora_enabled:
        yield error(
            "training.quantization_enabled",
            "a quantized trunk can only train through adapters: set qlora_enabled: true, or quantization_enabled: "
            "false to train the trunk's own weights",
        )
    if p.enabled and p.trunk_strategy == "frozen":
        for name in ("qlora_enabled", "progressive_qlora"):
            if getattr(p, name) and is_given(cfg, f"training.progressive.{name}"):
                yield warning(
                    f"training.progressive.{name}",
                    f"{name} adds adapters that train the trunk, but trunk_strategy is frozen: they are not "
                    "created; set trunk_strategy: qlora to use them",
                )
    adapted = (fused_trainable and (t.qlora_enabled or t.quantization_enabled)) or (
        p.enabled and p.trunk_strategy == "qlora"
    )
    if adapted and cfg.model.quantization is not None:
        yield error(
            "training.qlora_enabled" if not p.enabled else "training.progressive.trunk_strategy",
            "the model's layers are BitNet (model.quantization): their ternary weights can neither be stored in "
            "4-bit nor absorb LoRA adapters; train the trunk frozen (fusion_mode frozen / trunk_strategy frozen) "
            "or use a model without model.quantization",
        )


@rule(
    "training.max_steps",
    "training.total_blocks",
    "training.block_size",
    "training.time_step_masking",
    "training.num_time_steps",
    "training.time_step_mask_fractions",
    "training.mode",
    "training.progressive.enabled",
    "model.n_layers",
)
def stages_fit(cfg: StackwiseConfig) -> Iterable[Issue]:
    t = cfg.training
    if t.mode == "end_to_end" and not t.progressive.enabled:
        return
    n = derived.blocks(cfg)[0]
    if t.max_steps is not None and t.max_steps < n:
        yield error(
            "training.max_steps",
            f"max_steps ({t.max_steps}) is split over {n} stages, one per block, and each needs a step; "
            f"give at least {n}",
        )
    if t.time_step_masking:
        steps = len(derived.depth_mask_fractions(cfg))
        if steps % n and n % steps:
            yield error(
                "training.num_time_steps"
                if t.time_step_mask_fractions is None
                else "training.time_step_mask_fractions",
                f"{steps} time steps cannot be spread over {n} blocks: the number of time steps must be a multiple "
                "of the number of blocks (each block gets a run of them), or divide it",
            )


# -- optimisation and duration ------------------------------------------------------------------------------
# -- optimisation and duration ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _read_mixes(file: str, mtime: float) -> dict[str, Any] | None:
    """The mixes of a datasets.yaml (None when unreadable or invalid); cached while the file is unchanged."""
    from .sections import DataMixesFile
    from .yamlio import load_yaml_file

    try:
        return dict(DataMixesFile.model_validate(load_yaml_file(file).data).data_mixes)
    except (ValidationError, OSError):
        return None


def _mixes(file: str) -> dict[str, Any] | None:
    path = Path(file)
    return _read_mixes(str(path.resolve()), path.stat().st_mtime) if path.is_file() else None


def _mix_sources(cfg: StackwiseConfig) -> list[Any]:
    """The datasets of data.data_mix, read from data_mixes_file (empty when either is missing or invalid)."""
    d = cfg.data
    mixes = _mixes(d.data_mixes_file) if d.data_mix and d.data_mixes_file else None
    return list(mixes[d.data_mix].datasets) if mixes and d.data_mix in mixes else []


@rule(
    "training.max_steps",
    "training.num_train_epochs",
    "training.steps_per_epoch",
    "data.streaming",
    "data.datasets",
    "data.data_mix",
    "data.data_mixes_file",
)
def duration(cfg: StackwiseConfig) -> Iterable[Issue]:
    t, d = cfg.training, cfg.data
    streamed = [s for s in (*(d.datasets or ()), *_mix_sources(cfg)) if s.streaming]
    if t.max_steps is not None and t.num_train_epochs is not None:
        yield error(
            "training.num_train_epochs",
            f"give max_steps ({t.max_steps}) or num_train_epochs ({t.num_train_epochs}), not both",
        )
    elif t.max_steps is None and (d.streaming or streamed) and t.steps_per_epoch is None:
        where = "training.num_train_epochs" if t.num_train_epochs is not None else "data.streaming"
        if where == "data.streaming" and not d.streaming:
            where = "data.datasets" if d.datasets else "data.data_mix"
        yield error(
            where,
            "a streaming dataset has no length, so epochs cannot be counted: set training.max_steps, or steps_per_epoch with num_train_epochs",
        )
    if t.steps_per_epoch is not None and t.num_train_epochs is None:
        yield warning("training.steps_per_epoch", "steps_per_epoch only applies with num_train_epochs")


@rule("training.warmup_steps", "training.warmup_ratio", "training.max_steps")
def warmup(cfg: StackwiseConfig) -> Iterable[Issue]:
    t = cfg.training
    if t.warmup_steps is not None and t.warmup_ratio is not None:
        yield error(
            "training.warmup_ratio",
            f"give warmup_steps ({t.warmup_steps}) or warmup_ratio ({t.warmup_ratio}), not both",
        )
    elif t.warmup_steps is not None and t.max_steps is not None and t.warmup_steps >= t.max_steps:
        yield warning(
            "training.warmup_steps",
            f"warmup_steps ({t.warmup_steps}) is not below max_steps ({t.max_steps}): the learning rate never reaches its peak",
        )


@rule("training.min_lr", "training.learning_rate", "training.lr_scheduler_type", "training.decay_ratio")
def learning_rates(cfg: StackwiseConfig) -> Iterable[Issue]:
    t = cfg.training
    if t.min_lr > t.learning_rate:
        yield error("training.min_lr", f"min_lr ({t.min_lr:g}) is above learning_rate ({t.learning_rate:g})")
    if is_given(cfg, "training.decay_ratio") and t.lr_scheduler_type != "wsd":
        yield warning("training.decay_ratio", "decay_ratio only applies to lr_scheduler_type wsd")


# -- data ------------------------------------------------------------------------------------------------------
def _text_rules(source: Any, path: str) -> Iterable[Issue]:
    if source.text_field is not None and source.text_template is not None:
        yield error(f"{path}.text_template", "give text_field or text_template, not both")


@rule(
    "data.text_field",
    "data.text_template",
    "data.datasets",
    "data.dataset_path",
    "data.data_mix",
    "data.data_mixes_file",
    "data.use_dummy_data",
)
def data_sources(cfg: StackwiseConfig) -> Iterable[Issue]:
    d = cfg.data
    yield from _text_rules(d, "data")
    for i, source in enumerate(d.datasets or ()):
        yield from _text_rules(source, f"data.datasets[{i}]")
    given = [name for name in ("dataset_path", "datasets", "data_mix") if getattr(d, name) is not None]
    if len(given) > 1:
        yield error(f"data.{given[1]}", f"give one of dataset_path, datasets or data_mix, not {' and '.join(given)}")
    if d.data_mix is not None and d.data_mixes_file is None:
        yield error("data.data_mix", "data_mix names a mix in data_mixes_file, which is not set")
    if d.data_mixes_file is not None and d.data_mix is not None:
        yield from _mix_exists(d.data_mixes_file, d.data_mix)
    if d.use_dummy_data and given:
        yield warning("data.use_dummy_data", f"use_dummy_data replaces the real data, so {given[0]} is ignored")


def _mix_exists(file: str, mix: str) -> Iterable[Issue]:
    if not Path(file).is_file():
        yield warning("data.data_mixes_file", f"{file} not found here, so data_mix `{mix}` was not checked")
        return
    mixes = _mixes(file)
    if mixes is None:
        yield error("data.data_mixes_file", f"{file} is not a valid data-mix file; run `stackwise validate {file}`")
    elif mix not in mixes:
        yield error("data.data_mix", f"no mix `{mix}` in {file} (mixes: {', '.join(mixes) or 'none'})")


def check_data_mixes_doc(doc: Any) -> list[Issue]:
    """Validate a `datasets.yaml` file of named data mixes, with the location of each problem."""
    from .sections import DataMixesFile
    from .validation import pydantic_issue

    issues: list[Issue] = []
    try:
        parsed = DataMixesFile.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors():
            path, issue = pydantic_issue(err, doc.data)
            issues.append(issue.at(doc.loc(path)))
        return issues
    for name, mix in parsed.data_mixes.items():
        for i, source in enumerate(mix.datasets):
            for issue in _text_rules(source, f"data_mixes.{name}.datasets[{i}]"):
                issues.append(issue.at(doc.loc(("data_mixes", name, "datasets", i, "text_template"))))
    return issues


# -- distributed and distillation --------------------------------------------------------------------------------
@rule("distributed.strategy", "distributed.fsdp", "distributed.num_gpus", "distributed.num_nodes")
def distributed_strategy(cfg: StackwiseConfig) -> Iterable[Issue]:
    d = cfg.distributed
    if d.strategy != "fsdp" and is_given(cfg, "distributed.fsdp"):
        yield warning("distributed.fsdp", f"fsdp settings only apply to strategy fsdp (strategy is {d.strategy})")
    if d.strategy == "single" and d.num_gpus * d.num_nodes > 1:
        yield warning(
            "distributed.strategy",
            f"strategy single uses one device, but num_gpus x num_nodes = {d.num_gpus * d.num_nodes}",
        )


@rule("training.stage", "distillation.teacher")
def distillation_needs_teacher(cfg: StackwiseConfig) -> Iterable[Issue]:
    if cfg.training.stage in ("distillation", "layerwise_distillation") and not cfg.distillation.teacher.pretrained:
        yield error(
            "training.stage", f"stage {cfg.training.stage} distils from a teacher: set distillation.teacher.pretrained"
        )


# -- typical ranges ------------------------------------------------------------------------------------------------
@rule()
def typical_ranges(cfg: StackwiseConfig) -> Iterable[Issue]:
    for section in SECTIONS:
        model = getattr(cfg, section)
        for name in sorted(model.model_fields_set):
            info = type(model).model_fields[name]
            found = typical_range(info)
            value = getattr(model, name)
            if found is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            low, high, guide = found
            if not low <= value <= high:
                source = f" (guide {guide})" if guide else ""
                yield warning(
                    f"{section}.{name}",
                    f"{value:g} is outside the typical range {low:g}-{high:g}{source}; allowed, but check it",
                )
