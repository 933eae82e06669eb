"""Stack-wise training end to end on tiny models: what changes in each stage and what stays bit-identical,
the 4-bit QLoRA trunk, merged export, masks per stage, fused checkpoints, resume across stages, the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from stackwise import Trainer
from stackwise.train.rack import merged_copy

from .test_trainer import config, losses, stop_at

pytest.importorskip("bitsandbytes")

MODEL = {"n_layers": 4, "tie_embeddings": False, "dropout": 0.0}
MASKED = {"attention_mode": "bidirectional"}


def stage_config(tmp_path: Path, model: dict | None = None, **training: Any):
    return config(tmp_path, model={**MODEL, **(model or {})}, training={"max_steps": 8, **training})


def snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every tensor of the model by a stage-independent name: `L<built layer>.<key>` or `<module>.<key>`."""
    out = {}
    for i, layer in enumerate(trainer.rack.all_layers):
        out.update({f"L{i}.{k}": v.detach().clone() for k, v in layer.state_dict().items()})
    for name, module in trainer.model.named_children():
        if name != "layers":
            out.update({f"{name}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
    return out


def record_stages(trainer: Trainer) -> list[tuple[int, dict, dict]]:
    """(stage, tensors at its start, tensors at its end) for each stage the trainer runs."""
    starts: list[tuple[int, dict]] = []
    ends: list[dict] = []
    real = trainer._enter

    def enter(stage):
        if starts:  # the previous stage ends here, before the next one quantizes or merges anything
            ends.append(snapshot(trainer))
        real(stage)
        starts.append((stage.index, snapshot(trainer)))

    trainer._enter = enter
    trainer.fit()
    ends.append(snapshot(trainer))
    return [(k, start, end) for (k, start), end in zip(starts, ends, strict=True)]


def changed(start: dict, end: dict) -> set[str]:
    return {k for k in start if k in end and not torch.equal(start[k], end[k])}


def layer_keys(start: dict, i: int, adapters_only: bool = False) -> set[str]:
    keys = {k for k in start if k.startswith(f"L{i}.")}
    return {k for k in keys if ".adapters." in k} if adapters_only else keys


# Which tensors each stage k of a 4-layer model must change, by mode: (layer -> "full" | "adapters"), and
# whether the embeddings train. Everything else must stay bit-identical through the stage.
EXPECTED = {
    "layerwise": (dict(mode="layerwise"), lambda k: ({k: "full"}, k == 0)),
    "blockwise": (dict(mode="blockwise", block_size=2), lambda k: ({2 * k: "full", 2 * k + 1: "full"}, k == 0)),
    "fused-frozen": (dict(mode="fused", block_size=2), lambda k: ({2 * k: "full", 2 * k + 1: "full"}, True)),
    "fused-qlora": (
        dict(
            mode="fused",
            fusion_mode="trainable",
            block_size=2,
            qlora_enabled=True,
            quantization_enabled=True,
            qlora_lr=1e-2,
            progressive={"qlora_rank": 2, "qlora_alpha": 4},
        ),
        lambda k: ({**{i: "adapters" for i in range(2 * k)}, 2 * k: "full", 2 * k + 1: "full"}, True),
    ),
    "progressive-frozen-prepend": (
        dict(total_blocks=4, progressive={"enabled": True, "building_mode": "prepend"}),
        lambda k: ({k: "full"}, True),
    ),
    "progressive-qlora": (
        dict(
            total_blocks=4,
            qlora_lr=1e-2,
            progressive={
                "enabled": True,
                "trunk_strategy": "qlora",
                "qlora_enabled": True,
                "qlora_rank": 2,
                "progressive_qlora": True,
                "progressive_qlora_rank": 2,
            },
        ),
        lambda k: ({**{i: "adapters" for i in range(k)}, k: "full"}, True),
    ),
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_each_stage_changes_what_it_trains_and_nothing_else(tmp_path: Path, mode: str) -> None:
    training, expected = EXPECTED[mode]
    trainer = Trainer(stage_config(tmp_path, **training))
    for k, start, end in record_stages(trainer):
        layers, embeddings = expected(k)
        should = {"head.weight", "norm.weight"} | ({"embed.weight"} if embeddings else set())
        for i, how in layers.items():
            should |= layer_keys(start, i, adapters_only=how == "adapters")
        got = changed(start, end)
        assert got == should, f"stage {k}: changed but frozen {got - should}; frozen but should train {should - got}"


def test_a_tied_head_keeps_the_embeddings_training_in_greedy_stages(tmp_path: Path) -> None:
    trainer = Trainer(stage_config(tmp_path, model={"tie_embeddings": True}, mode="layerwise"))
    assert all("embed.weight" in changed(start, end) for _, start, end in record_stages(trainer))


def exported_logits(model, folder: Path, x: torch.Tensor) -> torch.Tensor:
    """Logits of `model` written with to_hf and read back by transformers."""
    import transformers

    from stackwise.models.hf import to_hf

    to_hf(model, folder)
    with torch.no_grad():
        return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()(x).logits


def qlora_config(tmp_path: Path, model: dict | None = None, **training: Any):
    return stage_config(
        tmp_path,
        model=MASKED if model is None else model,
        total_blocks=2,
        qlora_lr=1e-2,
        save_fused_checkpoints=True,
        progressive={"enabled": True, "trunk_strategy": "qlora", "qlora_enabled": True, "qlora_rank": 4},
        **training,
    )


def test_the_qlora_trunk_is_4_bit_its_adapters_train_and_the_merged_export_matches(tmp_path: Path) -> None:
    import bitsandbytes as bnb

    from stackwise.models.adapters import LoRALinear

    trainer = Trainer(qlora_config(tmp_path, model={}))  # causal: transformers has no bidirectional Llama
    summary = trainer.fit()
    assert summary["status"] == "completed"
    trunk = [m for m in trainer.rack.all_layers[0].modules() if isinstance(m, LoRALinear)]
    assert trunk, "the trunk's linear layers carry adapters"
    for lora in trunk:
        assert isinstance(lora.base.weight, bnb.nn.Params4bit) and lora.base.weight.dtype == torch.uint8
        assert lora.base.weight.numel() * 2 == lora.in_features * lora.out_features  # two 4-bit codes a byte
        assert lora.adapters["stack"].B.abs().sum() > 0  # B starts at zero: it trained
    x = torch.randint(0, 256, (2, 16))
    trainer.model.eval()
    adapted = trainer.model(x)
    merged = merged_copy(trainer.model)
    torch.testing.assert_close(merged(x), adapted, atol=1e-4, rtol=1e-4)  # merged = dequantized + B A exactly
    torch.testing.assert_close(exported_logits(merged, tmp_path / "hf", x), adapted, atol=1e-4, rtol=1e-4)


def test_fused_checkpoints_hold_each_stage_and_load_with_generate_and_to_hf(tmp_path: Path) -> None:
    from stackwise.train.generate import generate_text, load_run

    cfg = stage_config(tmp_path, mode="fused", block_size=2, save_fused_checkpoints=True)
    trainer = Trainer(cfg)
    trainer.fit()
    run = tmp_path / "runs" / "run"
    assert sorted(p.name for p in (run / "fused").iterdir()) == ["stage_0", "stage_1"]
    first = load_run(run / "fused" / "stage_0")
    assert len(first.model.layers) == 2 and first.model.arch["n_layers"] == 2
    last = load_run(run / "fused" / "stage_1")
    x = torch.randint(0, 256, (2, 16))
    trainer.model.eval()
    torch.testing.assert_close(last.model(x), trainer.model(x))  # the saved model is the trained model
    torch.testing.assert_close(exported_logits(last.model, tmp_path / "hf", x), trainer.model(x), atol=1e-4, rtol=1e-4)
    assert isinstance(generate_text(first, "the ", max_new_tokens=4), str)
    latest = load_run(run)  # the run's own last checkpoint: same model
    torch.testing.assert_close(latest.model(x), trainer.model(x))


def test_a_qlora_run_resumed_across_a_stage_boundary_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    full = Trainer(qlora_config(tmp_path / "a")).fit()
    for stop in (3, 4):  # inside stage 0 (steps 1-4) and exactly at its end
        folder = tmp_path / f"b{stop}"
        first = Trainer(qlora_config(folder))
        stop_at(first, stop)
        assert first.fit()["status"] == "interrupted"
        resumed = Trainer(qlora_config(folder).updated({"training.resume_from_checkpoint": "latest"})).fit()
        a, b = losses(tmp_path / "a" / "runs" / "run"), losses(folder / "runs" / "run")
        assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]
        assert full["val_loss"] == resumed["val_loss"]


def test_masks_per_stage_follow_the_time_steps_and_are_fresh_each_batch(tmp_path: Path, monkeypatch) -> None:
    from stackwise.train import objectives

    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = objectives.mask_tokens

    def spy(batch, t, mask_token_id, generator):
        inputs, masked = real(batch, t, mask_token_id, generator)
        seen.append((batch, t, inputs, masked))
        return inputs, masked

    monkeypatch.setattr(objectives, "mask_tokens", spy)
    fractions = [0.1, 0.3, 0.6, 0.9]
    cfg = stage_config(
        tmp_path,
        model=MASKED,
        mode="layerwise",
        max_steps=8,
        time_step_masking=True,
        time_step_mask_fractions=fractions,
        validation_interval=100,
    )
    trainer = Trainer(cfg)
    trainer.fit()
    train_batches = seen[:8]  # the evaluation's masks come after, at the end of each stage
    by_step: list[float] = []
    for batch, t, inputs, masked in seen:
        if t.unique().numel() != 1:  # evaluation: stratified t per sequence
            continue
        by_step.append(float(t[0]))
        assert (inputs[masked] == trainer.objective.mask_token_id).all()  # masked inputs carry the mask token
        assert torch.equal(inputs[~masked], batch[~masked])  # the rest is the text
    assert by_step[:2] == pytest.approx([0.1, 0.1]) and by_step[-2:] == pytest.approx([0.9, 0.9])
    assert sorted(set(by_step)) == pytest.approx(fractions)
    masks = [m for _, _, _, m in train_batches]
    assert all(not torch.equal(masks[i], masks[i + 1]) for i in range(len(masks) - 1))


def test_the_loss_counts_only_masked_positions(tmp_path: Path) -> None:
    from stackwise.train.objectives import masked_diffusion_loss

    trainer = Trainer(stage_config(tmp_path, model=MASKED, mode="layerwise")).prepare()
    model, objective = trainer.model, trainer.stage_objective
    batch = torch.randint(0, 256, (2, 16))
    gen = torch.Generator().manual_seed(0)
    loss = masked_diffusion_loss(model, batch, objective, gen)
    gen = torch.Generator().manual_seed(0)
    from stackwise.train.objectives import draw_fractions, mask_tokens

    t = draw_fractions(objective, 2, batch.device, gen)
    inputs, masked = mask_tokens(batch, t, objective.mask_token_id, gen)
    logits = model(inputs)
    by_hand = torch.nn.functional.cross_entropy(logits[masked], batch[masked])
    torch.testing.assert_close(loss, by_hand)


def test_cached_trunk_activations_give_the_same_losses_and_are_reused(tmp_path: Path) -> None:
    plain = dict(mode="blockwise", block_size=2, max_steps=24, validation_interval=100)
    Trainer(stage_config(tmp_path / "a", **plain)).fit()
    cached = Trainer(stage_config(tmp_path / "b", cache_activations=True, **plain))
    cached.fit()
    a, b = losses(tmp_path / "a" / "runs" / "run"), losses(tmp_path / "b" / "runs" / "run")
    assert list(a.values()) == pytest.approx(list(b.values()), rel=1e-5)
    assert cached.cache.hits > 0  # the small corpus comes round again within a stage


def test_new_stack_precision_runs_the_new_stack_in_bfloat16(tmp_path: Path) -> None:
    cfg = stage_config(tmp_path, total_blocks=2, progressive={"enabled": True, "new_stack_precision": "bfloat16"})
    trainer = Trainer(cfg).prepare()
    assert [getattr(layer, "compute_dtype", None) for layer in trainer.model.layers] == [torch.bfloat16] * 2
    out = trainer.model.layers[0](torch.randn(1, 4, 32))
    assert out.dtype == torch.float32  # the residual stream keeps the run's dtype
    assert trainer.fit()["status"] == "completed"


def test_a_tied_embedding_reached_through_the_head_is_never_decayed(tmp_path: Path) -> None:
    trainer = Trainer(stage_config(tmp_path, model={"tie_embeddings": True}, mode="layerwise", weight_decay=0.1))
    trainer.prepare()
    trainer._enter(trainer.stages[1])  # the embeddings are frozen; the tied matrix trains as the head
    embed = trainer.model.embed.weight
    (group,) = [g for opt in trainer.optimizers for g in opt.param_groups if any(p is embed for p in g["params"])]
    assert group["weight_decay"] == 0.0


def test_every_group_decays_from_its_own_peak_to_min_lr(tmp_path: Path) -> None:
    cfg = stage_config(
        tmp_path, mode="layerwise", max_steps=16, warmup_steps=0, current_block_lr=1e-2, learning_rate=3e-3, min_lr=1e-4
    )
    trainer = Trainer(cfg).prepare()
    stage = trainer.stages[0]
    trainer.progress.step = stage.end - 1
    trainer._set_lr()
    lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
    assert len(lrs) >= 2 and lrs == pytest.approx([1e-4] * len(lrs))


def test_stage_results_survive_a_resume_and_a_changed_schedule_is_refused(tmp_path: Path) -> None:
    from stackwise.train.trainer import TrainingError

    first = Trainer(stage_config(tmp_path, mode="layerwise"))
    stop_at(first, 5)
    first.fit()
    resumed = Trainer(stage_config(tmp_path, mode="layerwise", resume_from_checkpoint="latest")).fit()
    assert [row["stage"] for row in resumed["stages"]] == [0, 1, 2, 3]
    longer = stage_config(tmp_path, mode="layerwise", max_steps=16, resume_from_checkpoint="latest", run_id="x")
    (tmp_path / "runs" / "x").mkdir()
    with pytest.raises(TrainingError, match="stage schedule must not change"):
        Trainer(longer.updated({"training.resume_from_checkpoint": str(first.progress.last_checkpoint)})).prepare()


def test_gradient_checkpointing_covers_a_frozen_trunk_that_gradients_pass_through(tmp_path: Path, monkeypatch) -> None:
    from stackwise.models import network

    calls = []
    real = network.checkpoint
    monkeypatch.setattr(network, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    trainer = Trainer(stage_config(tmp_path, mode="fused", max_steps=4, gradient_checkpointing=True)).prepare()
    trainer._enter(trainer.stages[3])  # three frozen layers below trained embeddings, one new layer
    trainer.model(torch.randint(0, 256, (1, 8))).sum().backward()
    assert len(calls) == 4


def test_adapters_on_bitnet_layers_are_refused_by_validation() -> None:
    from stackwise.config.loader import load_mapping

    result = load_mapping(
        {
            "model": {"n_layers": 4, "quantization": {}},
            "training": {"mode": "fused", "fusion_mode": "trainable", "qlora_enabled": True, "max_steps": 4},
        }
    )
    assert any(i.path == "training.qlora_enabled" and "BitNet" in i.message for i in result.errors)


def test_init_from_a_stagewise_checkpoint_with_adapters_points_to_the_merged_model(tmp_path: Path) -> None:
    from stackwise.train.trainer import TrainingError

    trainer = Trainer(qlora_config(tmp_path / "a"))
    trainer.fit()
    cfg = qlora_config(tmp_path / "b", init_from=str(trainer.progress.last_checkpoint))
    with pytest.raises(TrainingError, match="fused/stage_K"):
        Trainer(cfg).prepare()
    merged = str(tmp_path / "a" / "runs" / "run" / "fused" / "stage_1")
    assert Trainer(qlora_config(tmp_path / "c", init_from=merged)).prepare()
