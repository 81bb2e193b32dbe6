"""Planner: FLOP counts against formulas, measured activations, memory by strategy, plans, published runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmforge.config.load import load_recipe, read_yaml
from vlmforge.config.schema import recipe_verb
from vlmforge.config.shipped import find_recipe, list_recipes
from vlmforge.models.contrastive import build_model, synthetic_loss
from vlmforge.planning import estimate as planning_estimate
from vlmforge.planning.accelerators import catalog_name_for
from vlmforge.planning.flops import StepCount, count_on_meta
from vlmforge.planning.memory import estimate_memory, is_weight
from vlmforge.planning.prior import load_prior
from vlmforge.runs.lifecycle import estimate_and_confirm, start_run
from vlmforge.verbs import plan

WIDTH, LAYERS, SIDE, PATCH, CTX = 256, 4, 64, 8, 32
CATALOG_HEADER = (
    "name,bf16_tflops,fp16_tflops,fp32_tflops,memory_gb,interconnect,usd_per_hour,price_date,price_source\n"
)


def _recipe(*overrides: str):
    base = [
        f"model.vision.width={WIDTH}",
        f"model.vision.layers={LAYERS}",
        f"model.vision.image_size={SIDE}",
        f"model.vision.patch_size={PATCH}",
        "model.vision.head_width=64",
        f"model.text.width={WIDTH}",
        f"model.text.layers={LAYERS}",
        "model.text.heads=4",
        f"model.text.context_length={CTX}",
        f"data.image_size={SIDE}",
        "model.vision.pool_type=tok",
    ]
    return load_recipe("pretrain", find_recipe("debug/clip-tiny"), [*base, *overrides])


def _block_forward_flops(tokens: int, width: int) -> int:
    """A transformer block, forward: QKV + out projections 8·T·d², MLP (ratio 4) 16·T·d², attention 4·T²·d."""
    return 24 * tokens * width**2 + 4 * tokens**2 * width


def _training_step_count(cfg: object, frozen: tuple[str, ...] = ()) -> StepCount:
    """One sample through the model's planning loss, forward and backward; ``frozen`` parameter prefixes
    get no gradient."""

    def build() -> torch.nn.Module:
        model = build_model(cfg, 100, device="meta")
        for name, param in model.named_parameters():
            param.requires_grad_(not name.startswith(frozen))
        return model

    return count_on_meta(build, lambda model: synthetic_loss(cfg, model, 1, "meta", 100))


def test_vision_tower_flops_match_the_formula() -> None:
    cfg = _recipe().model
    tokens = (SIDE // PATCH) ** 2 + 1
    expected = LAYERS * _block_forward_flops(tokens, WIDTH) + 2 * (tokens - 1) * 3 * PATCH**2 * WIDTH

    def step(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model.encode_image(torch.empty(1, 3, SIDE, SIDE, device="meta")).sum()

    counted = count_on_meta(lambda: build_model(cfg, 100, device="meta"), step).forward
    assert counted == pytest.approx(expected, rel=0.05)


def test_text_tower_flops_match_the_formula() -> None:
    cfg = _recipe().model

    def step(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model.encode_text(torch.zeros(1, CTX, dtype=torch.long, device="meta")).sum()

    counted = count_on_meta(lambda: build_model(cfg, 100, device="meta"), step).forward
    assert counted == pytest.approx(LAYERS * _block_forward_flops(CTX, WIDTH), rel=0.05)


def test_training_flops_follow_6nd_and_respond_to_masking_and_freezing() -> None:
    cfg = _recipe().model
    full = _training_step_count(cfg)
    assert full.backward == pytest.approx(2 * full.forward, rel=0.05)  # backward = 2 x forward
    block_params = 12 * WIDTH**2  # per block: attention 4d² + MLP 8d²
    tokens = (SIDE // PATCH) ** 2 + 1 + CTX
    rule = 6 * LAYERS * block_params * tokens  # 6·N·D (Kaplan et al. 2020, eq. 2.1), attention left out
    assert full.train == pytest.approx(rule, rel=0.15)  # the rest: attention scores + patch embedding

    frozen = _training_step_count(cfg, frozen=("visual.",))
    assert frozen.forward == full.forward and frozen.backward < full.backward
    masked_cfg = _recipe("model.patch_dropout=0.5").model
    masked = _training_step_count(masked_cfg)
    assert masked.train < 0.8 * full.train


def test_activation_bytes_on_meta_equal_a_real_cpu_step() -> None:
    cfg = _recipe().model

    def step(model: torch.nn.Module) -> torch.Tensor:
        device = next(model.parameters()).device
        i, t, _ = model(
            torch.zeros(2, 3, SIDE, SIDE, device=device), torch.ones(2, CTX, dtype=torch.long, device=device)
        )
        return (i * t).sum()

    meta = count_on_meta(lambda: build_model(cfg, 100, device="meta"), step).saved_bytes
    real_total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal real_total
        if not is_weight(tensor):
            real_total += tensor.numel() * tensor.element_size()
        return tensor

    model = build_model(cfg, 100)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(model)
    assert meta > 0
    assert meta == pytest.approx(real_total, rel=0.1)  # real runs may save a few views twice


def test_memory_shrinks_with_sharding() -> None:
    args = {
        "trainable_params": 10**9,
        "frozen_params": 0,
        "activation_bytes_per_sample": 10**8,
        "micro_batch": 8,
        "precision": "bf16-mixed",
        "world": 8,
    }
    ddp = estimate_memory(strategy="ddp", **args)
    zero2 = estimate_memory(strategy="zero2", **args)
    fsdp = estimate_memory(strategy="fsdp", **args)
    assert ddp.total_gb > zero2.total_gb > fsdp.total_gb
    assert ddp.optimizer_gb == pytest.approx(8e9 / 1024**3)  # autocast: fp32 Adam moments, 8 bytes/param
    assert fsdp.optimizer_gb == pytest.approx(ddp.optimizer_gb / 8)
    assert zero2.optimizer_gb == pytest.approx(
        12e9 / 8 / 1024**3
    )  # DeepSpeed: fp32 master + moments, sharded


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name.startswith("llava/") else name  # a 7B on meta
        for name, path in list_recipes().items()
        if recipe_verb(read_yaml(path)) in ("pretrain", "finetune", "align")
    ],
)
def test_every_shipped_recipe_plans(name: str) -> None:
    path = list_recipes()[name]
    recipe = load_recipe(recipe_verb(read_yaml(path)), path)
    result = plan.run(recipe, ["a100-80gb"], [8])
    assert result.flops_per_sample > 0
    assert [row.count for row in result.rows] == [8]  # the counts asked for
    if recipe_verb(read_yaml(path)) == "pretrain":  # samples seen: steps x global batch
        assert result.samples_seen == recipe.train.max_steps * recipe.data.batch_size
    if name.startswith(("debug/", "demo/")) and "method" not in read_yaml(path):  # tiny models fit anywhere
        assert all(row.fits for row in result.rows)


def test_cost_and_time_scale_as_expected() -> None:
    result = plan.run(_recipe(), ["a100-80gb", "h100-sxm"], [1, 8])
    rows = {(r.accelerator, r.count): r for r in result.rows}
    one, eight = rows[("a100-80gb", 1)], rows[("a100-80gb", 8)]
    # compute splits over 8 GPUs; gradient all-reduce and per-step overhead do not, so 8 GPUs cost more
    assert one.wall_hours / 8 < eight.wall_hours < one.wall_hours
    assert eight.usd > one.usd
    assert rows[("h100-sxm", 1)].wall_hours < one.wall_hours
    assert result.cheapest is not None and result.fastest is not None and result.pick is not None


def test_impossible_plan_is_reported_not_crashed(tmp_path: Path) -> None:
    catalog = tmp_path / "tiny.csv"
    catalog.write_text(CATALOG_HEADER + "toy-1gb,10,10,5,1,pcie,0.1,2025-01,test\n")
    result = plan.run(
        load_recipe("pretrain", find_recipe("clip/vit-b-16")), ["toy-1gb"], [8], catalog_path=catalog
    )
    assert not result.rows[0].fits and "GB/GPU" in result.rows[0].reason
    assert result.cheapest is None


@pytest.mark.slow
def test_bundled_prior_matches_a_fresh_fit() -> None:
    from vlmforge.planning.prior import fit_bundled

    fresh = fit_bundled()
    stored = load_prior()
    assert fresh["parameters"] == pytest.approx(stored["parameters"], rel=1e-3, abs=1e-9)
    assert fresh["leave_one_out_median_abs_pct_error"] <= 25  # the planner's accuracy goal on published runs


@pytest.mark.parametrize(
    ("device", "memory_gb", "expected"),
    [
        ("NVIDIA A100-SXM4-80GB", 79.3, "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", 39.4, "a100-40gb"),
        ("NVIDIA H100 80GB HBM3", 79.1, "h100-sxm"),
        ("NVIDIA H100 PCIe", 79.1, "h100-pcie"),
        ("NVIDIA L40S", 44.5, "l40s"),
        ("NVIDIA L4", 22.0, "l4"),
        ("Some Future Chip", 100.0, None),
    ],
)
def test_cuda_device_names_map_to_the_catalog(device: str, memory_gb: float, expected: str | None) -> None:
    assert catalog_name_for(device, memory_gb) == expected


def test_expensive_run_asks_first_and_a_no_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlmforge.errors import UserError

    h100 = ("NVIDIA H100 80GB HBM3", "h100-sxm")
    monkeypatch.setattr(planning_estimate, "present_accelerator", lambda recipe: h100)
    recipe = load_recipe(
        "pretrain",
        find_recipe("clip/vit-b-16-laion400m"),
        [f"output_dir={tmp_path}", "data.path=" + str(tmp_path)],
    )
    questions: list[str] = []

    def refuse(question: str) -> bool:
        questions.append(question)
        return False

    estimate = estimate_and_confirm(recipe, None)  # no terminal: print, never ask
    assert estimate["usd"] > recipe.plan.confirm_above_usd and estimate["accelerator"] == "h100-sxm"
    with pytest.raises(UserError, match="cancelled"):
        start_run(recipe, "never", refuse)  # asks before the run directory is made
    assert questions and "confirm_above_usd" in questions[0]
    assert not list(tmp_path.glob("clip-vit-b-16-laion400m*"))


def test_layouts_escalate_from_ddp_to_sharding_checkpointing_and_offload(tmp_path: Path) -> None:
    catalog = tmp_path / "gpus.csv"
    sizes = {"huge": 1000, "mid": 8, "small": 4, "tiny": 1.5}
    catalog.write_text(
        CATALOG_HEADER + "".join(f"{n},100,100,50,{gb},nvlink,1,2025-01,test\n" for n, gb in sizes.items())
    )
    recipe = load_recipe("pretrain", find_recipe("clip/vit-b-16-laion400m"), ["model.arch=ViT-L-14"])
    result = plan.run(recipe, list(sizes), [64], catalog_path=catalog)
    rows = {row.accelerator: row for row in result.rows}
    assert rows["huge"].strategy == "ddp" and rows["huge"].micro_batch == recipe.data.batch_size // 64
    chosen = [rows[name].strategy for name in ("mid", "small", "tiny") if rows[name].fits]
    assert chosen and all(s != "ddp" for s in chosen)  # less memory forces sharding, recompute or offload
    for row in result.rows:
        if row.fits:
            assert row.gb_per_gpu <= row.capacity_gb
            if "ckpt" in (row.strategy or ""):
                assert row.compute_factor == pytest.approx(4 / 3)
                assert row.accel_hours == pytest.approx(rows["huge"].accel_hours * 4 / 3)
        else:
            assert "GB/GPU" in row.reason


def test_cpu_offload_takes_optimizer_states_off_the_gpu() -> None:
    args = {
        "trainable_params": 10**9,
        "frozen_params": 0,
        "activation_bytes_per_sample": 0,
        "micro_batch": 1,
        "precision": "bf16-mixed",
        "strategy": "zero3",
        "world": 8,
    }
    on_gpu, offloaded = estimate_memory(**args), estimate_memory(**args, cpu_offload=True)
    assert offloaded.optimizer_gb == 0 and on_gpu.optimizer_gb > 0
    assert offloaded.grads_gb < on_gpu.grads_gb  # the fp32 gradient partition moves to the CPU too


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_model_states_match_deepspeeds_estimator(stage: int) -> None:
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    params, largest_layer, gpus = 10**9, 10**8, 8
    ours = estimate_memory(params, 0, 0, 1, "bf16-mixed", f"zero{stage}", gpus)
    states = (ours.weights_gb + ours.grads_gb + ours.optimizer_gb) * 1024**3
    if stage == 2:
        _, theirs = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus, cpu_offload=False)
        assert states == pytest.approx(theirs, rel=0.01)
    else:
        _, theirs, _ = estimate_zero3_model_states_mem_needs(
            params, largest_layer, num_gpus_per_node=gpus, cpu_offload=False, cpu_offload_params=False
        )
        assert states == pytest.approx(theirs, rel=0.10)  # DeepSpeed adds the largest layer, gathered whole


@pytest.mark.parametrize(
    ("half_step", "per_sample", "overhead"),
    [
        (0.6, 0.05, 0.2),  # 16 samples in 1.0 s, 8 in 0.6 s: 0.05 s per sample on top of 0.2 s per step
        (1.2, 0.0, 1.0),  # the half batch timed slower (noise): all of the step is overhead
        (0.4, 1.0 / 16, 0.0),  # the line would pass below the origin: all of the step is per sample
    ],
)
def test_calibration_fits_overhead_and_per_sample_time(
    monkeypatch: pytest.MonkeyPatch, half_step: float, per_sample: float, overhead: float
) -> None:
    from vlmforge.planning import calibrate as calibration

    timings = {16: 1.0, 8: half_step}
    monkeypatch.setattr(
        calibration,
        "time_training_steps",
        lambda recipe, phase, micro, steps, device: (timings[micro], None, "synthetic"),
    )
    fitted = calibration.calibrate(_recipe(), micro_batch=16)
    assert fitted.seconds_per_sample == pytest.approx(per_sample)
    assert fitted.overhead_seconds == pytest.approx(overhead)
    assert fitted.predict_step_seconds(32) == pytest.approx(overhead + 32 * per_sample)
