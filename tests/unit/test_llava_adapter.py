"""LLaMA-Adapter V2-style adapters on the LLaVA LLM: zero-init (the model starts as the frozen one), only
prompts, gates, biases, scales and norms train, the scales fold exactly into the weights, the gated prompt
attention against a hand computation, pretrained Llama weights load around the new parameters, and the
export that transformers cannot hold is refused."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
import torch

from vlmforge.config.llava import LlavaModel
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError

pytest.importorskip("transformers")

RECIPE = find_recipe("debug/llava-adapter-tiny")
VOCAB, IMAGE_ID = 40, 39


def _cfg(*overrides: str) -> LlavaModel:
    return cast(FinetuneRecipe, load_recipe("finetune", RECIPE, list(overrides))).model  # type: ignore[return-value]


def _without_adapter(cfg: LlavaModel) -> LlavaModel:
    return cfg.model_copy(update={"adapter": None})


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, IMAGE_ID - 1, (2, 30), generator=generator)
    ids[:, 1:17] = IMAGE_ID  # 16 patch tokens of a 16 px image at 4 px patches
    return {"input_ids": ids, "pixel_values": torch.randn(2, 3, 16, 16, generator=generator)}


def test_gated_prompt_attention_by_hand() -> None:
    from vlmforge.models.llava_adapter import gated_prompt_attention

    query = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # [B=1, H=2, T=1, D=2]
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [H, P=2, D]
    values = torch.tensor([[[2.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [3.0, 3.0]]])
    gate = torch.tensor([0.5, 0.0])
    # head 0: scores (1, 0)/sqrt(2) -> softmax p = (e^a, 1)/(e^a + 1), a = 1/sqrt(2); gated by 0.5
    a = 2**-0.5
    p0 = torch.tensor([a, 0.0]).softmax(0)
    expected0 = 0.5 * (p0[0] * torch.tensor([2.0, 0.0]) + p0[1] * torch.tensor([0.0, 4.0]))
    out = gated_prompt_attention(query, keys, values, gate)
    assert torch.allclose(out[0, 0, 0], expected0)
    assert torch.equal(out[0, 1, 0], torch.zeros(2))  # a zero gate adds nothing


def test_adapters_start_as_the_frozen_model_train_few_parameters_and_merge_exactly() -> None:
    from vlmforge.models import llava

    cfg = _cfg()
    torch.manual_seed(0)
    model = llava.build_model(cfg, VOCAB, image_id=IMAGE_ID)
    batch = _batch()
    plain = llava.build_model(_without_adapter(cfg), VOCAB, image_id=IMAGE_ID)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    with torch.no_grad():  # zero gates and zero biases: exactly the LLM without adapters
        assert torch.allclose(model(**batch).logits, plain(**batch).logits, atol=1e-6)

    staged = llava.prepare_stage(model, cfg, "adapter")
    trainable = {name for name, param in staged.named_parameters() if param.requires_grad}
    assert trainable and all(".language_model." in f".{name}" for name in trainable)
    assert any(name.endswith("adaption.gate") for name in trainable)
    assert any(name.endswith("adapter_scale") for name in trainable)
    assert not any("embed_tokens" in name or name.endswith("proj.weight") for name in trainable)
    share = sum(p.numel() for p in staged.parameters() if p.requires_grad) / sum(
        p.numel() for p in staged.parameters()
    )
    assert 0 < share < 0.05

    optimizer = torch.optim.SGD([p for p in staged.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        staged(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        trained = staged(**batch).logits
        merged = llava.plain_model(staged)
        assert not any("adapter_scale" in name for name, _ in merged.named_parameters())
        assert torch.allclose(merged(**batch).logits, trained, atol=1e-5)  # s(Wx + b) = (sW)x + sb
    gates = [p for name, p in merged.named_parameters() if name.endswith("adaption.gate")]
    assert cfg.adapter is not None
    assert len(gates) == cfg.adapter.layers and all(g.abs().sum() > 0 for g in gates)


def test_pretrained_llama_loads_around_the_adapter_parameters(tmp_path: Path) -> None:
    from vlmforge.models import llava

    cfg = _cfg()
    tf = llava.transformers_module()
    donor = llava.build_model(_without_adapter(cfg), VOCAB, image_id=IMAGE_ID)
    llm = tf.LlamaForCausalLM(donor.config.text_config)
    llm.model.load_state_dict(donor.model.language_model.state_dict())
    llm.lm_head.load_state_dict(donor.lm_head.state_dict())
    llm.save_pretrained(tmp_path / "llama")
    with_llm = _cfg(f"model.llm.pretrained={tmp_path / 'llama'}")
    model = llava.build_model(with_llm, VOCAB, image_id=IMAGE_ID)
    state = model.model.language_model.state_dict()
    assert torch.equal(state["layers.0.self_attn.q_proj.weight"], llm.model.layers[0].self_attn.q_proj.weight)
    assert not state["layers.0.self_attn.q_proj.bias"].any()  # the new biases start at zero


def test_adapter_stage_needs_the_model_section() -> None:
    with pytest.raises(UserError, match=r"set model\.adapter"):
        load_recipe("finetune", RECIPE, ["model.adapter=null"])
    with pytest.raises(UserError, match="exceeds the LLM"):
        load_recipe("finetune", RECIPE, ["model.adapter.layers=3"])
