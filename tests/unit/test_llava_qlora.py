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


def test_missing_bitsandbytes_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmforge.models.llava_qlora import check_qlora_runnable

    find_spec = importlib.util.find_spec

    def without_bitsandbytes(name: str, *args: Any) -> Any:
        return None if name == "bitsandbytes" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_bitsandbytes)
    with pytest.raises(UserError) as caught:
        check_qlora_runnable(_recipe(*QLORA).model)
    assert "bitsandbytes" in caught.value.message and "vlmforge[qlora]" in (caught.value.hint or "")
    check_qlora_runnable(_recipe().model)  # no quantization: nothing to install


# ------------------------------------------------------------------------------------ 4-bit layers
def test_quantized_layers_hold_4_bits_and_give_back_the_exact_16_bit_weights() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    from vlmforge.models import llava
    from vlmforge.models.llava_qlora import quantize_llm, restore_full_weights

    torch.manual_seed(0)
    cfg = _recipe(*QLORA).model
    model = llava.build_model(cfg.without_pretrained(), 64)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    ids = torch.randint(0, 60, (2, 12))
    expected = model.model.language_model(input_ids=ids).last_hidden_state
    assert quantize_llm(model) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    q_proj = model.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.dtype == torch.uint8
    assert q_proj.weight.numel() == 64 * 64 // 2  # two 4-bit weights per byte
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    assert not isinstance(model.model.multi_modal_projector.linear_1, bnb.nn.Linear4bit)
    got = model.model.language_model(input_ids=ids).last_hidden_state
    error = ((got - expected).norm() / expected.norm()).item()
    assert 0 < error < 0.25  # NF4 rounding changes the output, but only a little
    assert restore_full_weights(model) == 14
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)


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


def test_checkpoints_hold_the_adapters_not_the_4_bit_base() -> None:
    """A resumed QLoRA stage rebuilds its 4-bit layers from the start weights, then loads the checkpoint."""
    pytest.importorskip("bitsandbytes")
    import torch

    from vlmforge.models import llava
    from vlmforge.models.llava_qlora import quantize_llm

    cfg = _recipe(*QLORA).model

    def stage_model() -> torch.nn.Module:
        torch.manual_seed(0)
        model = llava.prepare_stage(llava.build_model(cfg.without_pretrained(), 64), cfg, "lora")
        quantize_llm(model)
        return model

    trained = stage_model()
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.add_(1.0)
    saved = trained.state_dict()
    assert not any(".base_layer." in key and "language_model" in key for key in saved)
    assert any("lora_B" in key for key in saved)
    resumed = stage_model()
    resumed.load_state_dict(saved, strict=True)
    ids = torch.randint(0, 60, (1, 8))
    trained.eval(), resumed.eval()  # no adapter dropout
    assert torch.equal(trained(input_ids=ids).logits, resumed(input_ids=ids).logits)


def test_align_recipes_refuse_a_4_bit_base() -> None:
    with pytest.raises(UserError, match=r"lora\.quantize nf4 \(QLoRA\) applies to finetune stages"):
        load_recipe("align", find_recipe("debug/llava-dpo-tiny"), ["lora.quantize=nf4"])
