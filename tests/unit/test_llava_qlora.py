"""QLoRA for LLaVA stages: recipe rules, the refusal where 4-bit weights cannot run, the 4-bit memory
accounting, and the 7B recipe on one 24 GB GPU."""

from __future__ import annotations

import importlib.util
import re
from typing import Any, cast

import pytest

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.planning.memory import estimate_memory, nf4_bytes_per_param
from vlmforge.runs.preflight import preflight

pytest.importorskip("transformers")
pytest.importorskip("peft")

QLORA = [
    "model.lora.rank=2",
    "model.lora.quantize=nf4",
    "model.llm.pretrained=lmsys/vicuna-7b-v1.5",
    "stages.1.trainable=lora",
]
GB = 1024**3


def _recipe(*overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", find_recipe("debug/llava-tiny"), list(overrides)))


# ------------------------------------------------------------------------------------ recipes
def test_quantized_base_needs_a_pretrained_llm() -> None:
    with pytest.raises(UserError, match=r"set model\.llm\.pretrained"):
        _recipe(*QLORA[:2], "stages.1.trainable=lora")


@pytest.mark.parametrize("trainable", ["projector+llm", "adapter"])
def test_stages_that_update_the_llm_weights_are_refused(trainable: str) -> None:
    extra = ["model.adapter.layers=1"] if trainable == "adapter" else []
    with pytest.raises(
        UserError, match=rf"stage 'instruct' trains '{re.escape(trainable)}'.*4-bit and frozen"
    ):
        _recipe(*QLORA, *extra, f"stages.1.trainable={trainable}")


def test_projector_and_lora_stages_are_allowed() -> None:
    recipe = _recipe(*QLORA[:3], "stages.1.trainable=projector+lora")
    assert recipe.model.lora is not None and recipe.model.lora.quantize == "nf4"


def test_preflight_refuses_on_cpu_with_the_reason() -> None:
    problems = preflight(_recipe(*QLORA))  # the tiny recipe trains on CPU
    assert any("QLoRA's 4-bit base weights need a CUDA GPU and bitsandbytes" in p.message for p in problems)


def test_missing_bitsandbytes_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmforge.models.llava_qlora import check_qlora_runnable

    find_spec = importlib.util.find_spec

    def without_bitsandbytes(name: str, *args: Any) -> Any:
        return None if name == "bitsandbytes" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_bitsandbytes)
    with pytest.raises(UserError) as caught:
        check_qlora_runnable(_recipe(*QLORA).model, on_gpu=True)
    assert "bitsandbytes" in caught.value.message and "vlmforge[qlora]" in (caught.value.hint or "")


def test_training_with_4_bit_weights_is_refused_rather_than_run_in_16_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vlmforge.models.llava_qlora import check_qlora_runnable

    find_spec = importlib.util.find_spec

    def with_bitsandbytes(name: str, *args: Any) -> Any:
        return object() if name == "bitsandbytes" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", with_bitsandbytes)
    with pytest.raises(UserError, match="does not load 4-bit base weights"):
        check_qlora_runnable(_recipe(*QLORA).model, on_gpu=True)
    check_qlora_runnable(_recipe().model, on_gpu=True)  # no quantization: nothing to refuse


# ----------------------------------------------------------------------------------- planning
def test_nf4_constants_cost_0_127_bits_per_parameter() -> None:
    # QLoRA paper (Dettmers et al. 2023, §3 "Double Quantization"): 8/64 + 32/(64*256) = 0.127 bits per
    # parameter for the quantization constants, on top of the 4-bit weights
    assert (nf4_bytes_per_param() * 8 - 4) == pytest.approx(0.127, abs=5e-4)


def test_quantized_weights_are_counted_at_4_bits() -> None:
    # by hand: 1e6 trainable fp32 weights (4 B) + 2e6 frozen 16-bit (2 B) + 8e6 NF4 weights at
    # (4 + 8/64 + 32/16384) / 8 = 0.515869140625 B = 4e6 + 4e6 + 4,126,953.125 bytes
    mem = estimate_memory(1_000_000, 10_000_000, 0, 1, "bf16-mixed", "ddp", 1, quantized_params=8_000_000)
    assert mem.weights_gb * GB == pytest.approx(12_126_953.125)
    assert mem.grads_gb * GB == pytest.approx(4e6) and mem.optimizer_gb * GB == pytest.approx(8e6)


def test_only_the_llm_decoder_linears_are_quantized() -> None:
    from vlmforge.models import llava
    from vlmforge.models.llava_qlora import quantized_weight_count

    cfg = _recipe(*QLORA).model
    model = llava.prepare_stage(llava.build_model(cfg.without_pretrained(), 64, device="meta"), cfg, "lora")
    # debug/llava-tiny LLM: hidden 64, MLP 128, 2 layers: (4 * 64 * 64 attention + 3 * 64 * 128 MLP) per
    # layer; the embeddings, the LM head, the vision encoder, the projector and the adapters stay 16-bit
    assert quantized_weight_count(model, cfg) == 2 * (4 * 64 * 64 + 3 * 64 * 128)
    plain = _recipe("model.lora.rank=2", "stages.1.trainable=lora").model
    assert quantized_weight_count(model, plain) == 0


@pytest.mark.slow  # a 7B on the meta device
def test_llava_7b_qlora_fits_one_24gb_gpu_and_16_bit_lora_does_not() -> None:
    from vlmforge.planning.fits import recipe_memory
    from vlmforge.planning.phases import recipe_model_costs
    from vlmforge.verbs import plan

    path = find_recipe("llava/llava-1.5-7b-qlora")
    qlora = load_recipe("finetune", path)
    row = plan.run(qlora, ["rtx-4090"], [1]).rows[0]
    assert row.fits and row.strategy == "ddp+ckpt / ddp+ckpt" and row.gb_per_gpu <= 24
    sixteen_bit = load_recipe("finetune", path, ["model.lora.quantize=none"])
    instruct = recipe_model_costs(qlora)[1]
    assert instruct.quantized_params == pytest.approx(6.48e9, rel=0.01)  # Vicuna-7B less embeddings, head
    assert recipe_memory(qlora, instruct, instruct.micro_batch).total_gb <= 24
    unquantized = recipe_model_costs(sixteen_bit)[1]
    assert recipe_memory(sixteen_bit, unquantized, unquantized.micro_batch).total_gb > 24
