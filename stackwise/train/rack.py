"""The rack: a built model's layers arranged, quantized, adapted and frozen as a stage of the schedule says.

`Rack(model)` keeps every layer the model was built with; `apply(stage)` puts the stage's layers into
`model.layers` in forward order (so the model that trains, evaluates and is saved is exactly the current
rack, with its own head, norms and positions), folds adapters the stage merges, quantizes trunk stacks and
attaches their LoRA adapters (transforms from `stackwise.models.quantize` / `.adapters`, applied once per
layer), sets `requires_grad` and train/eval modes, and returns the stage's parameter groups with their
learning rates. Frozen layers run in eval mode (no dropout), so a frozen trunk is a fixed function.

`layout()` describes the current structure for a checkpoint's state; `apply_layout()` rebuilds it on a
fresh model before the checkpoint's weights are loaded (quantized bases are stored as fp32 and
re-quantize on load, which gives back the same 4-bit weights).

Parameter names follow the arranged model (`layers.<position>`), so two stages name a layer differently;
a stage's optimizer is built after `apply`, and checkpoints hold the stage index and layout they need.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.adapters import LoRALinear, attach_lora, merge_all
from ..models.quantize import quantize_linears
from .stages import Stage

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class RackError(RuntimeError):
    """A stage cannot be arranged on this model or machine (e.g. nvfp4 without the hardware)."""


class Rack:
    """The layers of one model and how the current stage arranges them."""

    def __init__(self, model: nn.Module, *, quantize: bool = True):
        self.model = model
        self.quantize = quantize  # False on the meta device (`stackwise plan`): record formats, convert nothing
        self.all_layers: list[nn.Module] = list(model.layers)
        self.n_layers = len(self.all_layers)
        self.base: dict[int, str] = {}  # layer -> quantized format of its linear weights
        self.adapters: dict[int, dict[str, tuple[int, float]]] = {}  # layer -> adapter name -> (rank, alpha)
        self.order: list[int] = list(range(self.n_layers))
        # Parameters frozen by the model config itself (e.g. tokenizer_embedding.freeze_embeddings) stay frozen.
        self.always_frozen = {id(p) for p in model.parameters() if not p.requires_grad}

    # -- structure -------------------------------------------------------------------------------------
    def _arrange(self, order: list[int]) -> None:
        self.order = list(order)
        self.model.layers = nn.ModuleList(self.all_layers[i] for i in order)
        if hasattr(self.model, "arch"):
            self.model.arch["n_layers"] = len(order)

    def _quantize(self, i: int, kind: str) -> None:
        if kind == "fp32" or self.base.get(i) == kind:
            return
        if self.quantize:
            # Per-block absmax kept in fp32 (no double quantization): a save/load cycle then gives back the same
            # 4-bit weights bit for bit, so a resumed run matches an uninterrupted one. It costs 0.37 bit/weight.
            quantize_linears(self.all_layers[i], kind, double_quant=False)
        self.base[i] = kind

    def _attach(self, i: int, name: str, rank: int, alpha: float) -> None:
        if name in self.adapters.setdefault(i, {}):
            return
        try:
            attach_lora(self.all_layers[i], name, rank, alpha)
        except ValueError as err:  # e.g. BitNet layers
            raise RackError(f"layer {i}: {err}") from err
        self.adapters[i][name] = (rank, alpha)

    def _merge(self, i: int, name: str) -> None:
        if name not in self.adapters.get(i, {}):
            return
        for module in self.all_layers[i].modules():
            if isinstance(module, LoRALinear) and name in module.adapters:
                module.merge_adapter(name)
        del self.adapters[i][name]

    def apply(self, stage: Stage) -> list[tuple[float, list[tuple[str, nn.Parameter]]]]:
        """Arrange the model for `stage`; returns [(peak lr, named trainable parameters)] per group."""
        for j, name in stage.merge:
            for s in stage.stacks:
                if s.index == j:
                    for i in s.layers:
                        self._merge(i, name)
        for s in stage.stacks:
            for i in s.layers:
                self._quantize(i, s.base)
                for a in s.adapters:
                    self._attach(i, a.name, a.rank, a.alpha)
                layer = self.all_layers[i]
                if hasattr(layer, "compute_dtype"):
                    if s.compute == "nvfp4":
                        raise RackError("new_stack_precision nvfp4 needs NVIDIA FP4 hardware (Blackwell); use bfloat16")
                    layer.compute_dtype = DTYPES[s.compute] if s.compute else None
        self._arrange(list(stage.layers))
        return self._set_trainable(stage)

    def _set_trainable(self, stage: Stage) -> list[tuple[float, list[tuple[str, nn.Parameter]]]]:
        model = self.model
        model.requires_grad_(False)
        lr_of: dict[int, float] = {}

        def train(module: nn.Module, lr: float, only_adapters: bool = False) -> None:
            for name, p in module.named_parameters():
                if id(p) in self.always_frozen or (only_adapters and "adapters." not in name):
                    continue
                p.requires_grad_(True)
                lr_of[id(p)] = lr

        for s in stage.stacks:
            for i in s.layers:
                layer = self.all_layers[i]
                layer.train(s.train != "frozen")
                if s.train == "full":
                    train(layer, s.lr)
                elif s.train == "adapters":
                    train(layer, s.lr, only_adapters=True)
        for name, module in model.named_children():
            if name == "layers":
                continue
            trainable = stage.head if name in ("norm", "head") else stage.embeddings
            module.train(trainable)
            if trainable:
                train(module, stage.lr)
        # In the model's own order and names: a tied head is the embedding matrix (`embed.weight`, never
        # decayed), which trains whenever the head does; the order is end-to-end training's, so its checkpoints
        # and optimizer states carry over.
        groups: dict[float, list[tuple[str, nn.Parameter]]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault(lr_of[id(p)], []).append((name, p))
        return list(groups.items())

    # -- description and rebuilding -------------------------------------------------------------------
    def layout(self) -> dict[str, Any]:
        """The current structure, JSON-serialisable (stored in each checkpoint's state)."""
        return {
            "layers": list(self.order),
            "n_built": self.n_layers,
            "base": {str(i): k for i, k in self.base.items() if i in self.order},
            "adapters": {str(i): [[n, r, a] for n, (r, a) in ads.items()] for i, ads in self.adapters.items() if ads},
        }

    def apply_layout(self, layout: dict[str, Any]) -> None:
        """Rebuild a saved structure (on a freshly built model, before loading the checkpoint's weights)."""
        for i, kind in layout.get("base", {}).items():
            self._quantize(int(i), kind)
        for i, ads in layout.get("adapters", {}).items():
            for name, rank, alpha in ads:
                self._attach(int(i), name, rank, alpha)
        self._arrange(layout["layers"])


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain copy of the current rack: adapters folded in, quantized weights dequantized (for export)."""
    import copy

    clone = copy.deepcopy(model)
    merge_all(clone)
    for layer in clone.layers:
        if hasattr(layer, "compute_dtype"):
            layer.compute_dtype = None
    clone.requires_grad_(True)
    return clone


def trainable_count(groups: list[tuple[float, list[tuple[str, nn.Parameter]]]]) -> int:
    return sum(p.numel() for _, named in groups for _, p in named)


class TrunkCache:
    """Outputs of a frozen trunk (the embeddings and the first `depth` layers) by sequence content.

    Greedy stages train one block on a trunk that does not change, so the trunk's output for a sequence is
    a fixed tensor: computed once, kept on the CPU, and reused whenever the sequence comes back (another
    pass over the data, or the next stage, which then runs only the one layer block added since).
    """

    def __init__(self, model: nn.Module, limit_bytes: int):
        self.model = model
        self.depth = 0
        self.entries: dict[bytes, tuple[int, torch.Tensor]] = {}
        self.limit = limit_bytes
        self.size = 0
        self.hits = 0
        self.lookups = 0

    def set_depth(self, depth: int) -> None:
        self.depth = depth

    @torch.no_grad()
    def trunk(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, D) output of the frozen trunk for each row of input_ids."""
        keys = [row.tobytes() for row in input_ids.cpu().numpy()]
        out: list[torch.Tensor | None] = [None] * len(keys)
        todo: dict[int, list[int]] = {}  # depth reached so far -> rows
        for r, key in enumerate(keys):
            self.lookups += 1
            depth, value = self.entries.get(key, (-1, None))
            if depth == self.depth:
                self.hits += 1
                out[r] = value.to(input_ids.device)
            else:
                todo.setdefault(depth, []).append(r)
        layers = self.model.layers
        for depth, rows in todo.items():
            if depth < 0:
                x = self.model.embed_tokens(input_ids[rows])
                depth = 0
            else:
                x = torch.stack([self.entries[keys[r]][1] for r in rows]).to(input_ids.device)
            for layer in layers[depth : self.depth]:
                x = layer(x)
            for r, value in zip(rows, x, strict=True):
                out[r] = value
                self._store(keys[r], value)
        return torch.stack(out)  # type: ignore[arg-type]

    def _store(self, key: bytes, value: torch.Tensor) -> None:
        old = self.entries.get(key)
        if old is None and self.size + value.numel() * value.element_size() > self.limit:
            return  # full: later sequences are recomputed
        if old is None:
            self.size += value.numel() * value.element_size()
        self.entries[key] = (self.depth, value.detach().to("cpu", copy=True))


class CachedModel:
    """The model's forward with the frozen trunk read from a `TrunkCache` (what the objectives call)."""

    def __init__(self, model: nn.Module, cache: TrunkCache):
        self.model, self.cache, self.head = model, cache, model.head

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.cache.trunk(input_ids)
        for layer in self.model.layers[self.cache.depth :]:
            x = layer(x)
        return self.model.norm(x)

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.hidden_states(input_ids))
