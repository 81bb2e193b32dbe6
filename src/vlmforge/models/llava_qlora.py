"""QLoRA for LLaVA stages (Dettmers et al. 2023): the LLM's linear layers held frozen in 4-bit NormalFloat
with double quantization, computed in bf16, under 16-bit LoRA adapters. bitsandbytes stores them and runs
on CUDA GPUs only; what is quantized is what transformers' bitsandbytes integration converts when the LLM
loads: every linear layer of the decoder, not the embeddings, the LM head or the norms (nor the vision
encoder and projector, which are not part of the LLM)."""

from __future__ import annotations

import importlib.util

import torch

from vlmforge.config.llava import LlavaModel
from vlmforge.errors import UserError, missing_extra

LLM_PREFIX = "language_model."
ADAPTER_MARK = "lora_"  # peft's adapter layers (lora_A, lora_B) are linear too, and stay 16-bit


def quantizes(cfg: LlavaModel) -> bool:
    return cfg.lora is not None and cfg.lora.quantize == "nf4"


def quantized_weight_count(model: torch.nn.Module, cfg: LlavaModel) -> int:
    """Frozen parameters QLoRA holds in 4-bit: the weights of the LLM's decoder linear layers (0 unless
    ``model.lora.quantize`` is nf4)."""
    if not quantizes(cfg):
        return 0
    return sum(
        module.weight.numel()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and LLM_PREFIX in name
        and ADAPTER_MARK not in name
        and not module.weight.requires_grad
    )


def check_qlora_runnable(cfg: LlavaModel, on_gpu: bool) -> None:
    """A QLoRA run needs a CUDA GPU (``on_gpu``: the run trains on one), bitsandbytes (the ``qlora``
    extra) and a loader of 4-bit base weights, which training does not have yet."""
    if not quantizes(cfg):
        return
    if not on_gpu:
        raise UserError(
            "model.lora.quantize nf4: QLoRA's 4-bit base weights need a CUDA GPU and bitsandbytes; "
            "this run is on CPU",
            hint="set model.lora.quantize=none to train LoRA on 16-bit weights, or run on a CUDA GPU",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise missing_extra("bitsandbytes", "qlora")
    # Training would otherwise hold the LLM in 16-bit, which the memory check has priced in 4-bit.
    raise UserError(
        "model.lora.quantize nf4: `vlmforge plan` and `vlmforge validate` price QLoRA recipes, but "
        "`vlmforge finetune` does not load 4-bit base weights yet",
        hint="set model.lora.quantize=none to train LoRA on 16-bit weights",
    )
