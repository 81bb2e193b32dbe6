"""QLoRA for LLaVA stages (Dettmers et al. 2023): the LLM's linear layers held frozen in 4-bit NormalFloat
with double quantization under 16-bit LoRA adapters. What is quantized is what transformers' bitsandbytes
integration converts: every linear layer of the decoder, not the embeddings, the LM head or the norms (nor
the vision encoder and projector, which are not part of the LLM).

Each quantized layer keeps its 16-bit weight in host memory (not on the accelerator, not in checkpoints):
when the stage ends, the LoRA updates merge into those exact weights, so the next stage and every export
get 16-bit weights that never went through 4-bit rounding — the usual way QLoRA adapters are merged,
rather than re-quantizing. bitsandbytes runs NF4 on CUDA GPUs and, since 0.48, on CPU (slowly), which
is how the tests train a QLoRA stage."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import torch

from vlmforge.config.llava import LlavaModel
from vlmforge.errors import missing_extra

LLM_PREFIX = "language_model."
ADAPTER_MARK = "lora_"  # peft's adapter layers (lora_A, lora_B) are linear too, and stay 16-bit
FULL_WEIGHT = "vlmforge_full_weight"  # a plain attribute: neither parameter nor buffer, so never saved


def quantizes(cfg: LlavaModel) -> bool:
    return cfg.lora is not None and cfg.lora.quantize == "nf4"


def _quantizable(name: str, module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) and LLM_PREFIX in name and ADAPTER_MARK not in name


def quantized_weight_count(model: torch.nn.Module, cfg: LlavaModel) -> int:
    """Frozen parameters QLoRA holds in 4-bit: the weights of the LLM's decoder linear layers (0 unless
    ``model.lora.quantize`` is nf4)."""
    if not quantizes(cfg):
        return 0
    return sum(
        module.weight.numel()
        for name, module in model.named_modules()
        if _quantizable(name, module) and not module.weight.requires_grad
    )


def quantize_llm(model: torch.nn.Module) -> int:
    """Replace the LLM's decoder linear layers by bitsandbytes NF4 layers with double quantization
    (computing in the layer's own dtype), each keeping its 16-bit weight on the host; returns how many."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise missing_extra("bitsandbytes", "qlora") from None
    targets = [(name, module) for name, module in model.named_modules() if _quantizable(name, module)]
    for name, linear in targets:
        weight = linear.weight.detach()
        layer = _rebuilt_linear4bit()(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=weight.dtype,
            compress_statistics=True,  # double quantization: the block scales quantized too
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(
            weight.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4"
        )
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        setattr(layer, FULL_WEIGHT, weight.to("cpu", copy=True))
        layer.to(weight.device)  # bitsandbytes quantizes as the weight moves to its device
        _replace(model, name, layer)
    return len(targets)


@functools.cache
def _rebuilt_linear4bit() -> Any:
    """bitsandbytes' NF4 layer, kept out of state dicts: it never trains and is rebuilt from the stage's
    start weights whenever a run starts or resumes, so checkpoints hold the adapters, not the 4-bit base."""
    import bitsandbytes as bnb

    class RebuiltLinear4bit(bnb.nn.Linear4bit):  # type: ignore[misc]
        def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
            return None

        def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
            return None

    return RebuiltLinear4bit


def restore_full_weights(model: torch.nn.Module) -> int:
    """Put back 16-bit linear layers, with the weights kept at quantization, wherever ``quantize_llm``
    placed 4-bit ones (LoRA wrappers keep their adapters); returns how many."""
    restored = [(name, module) for name, module in model.named_modules() if hasattr(module, FULL_WEIGHT)]
    for name, layer in restored:
        weight = getattr(layer, FULL_WEIGHT)
        device = layer.weight.device
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None, device="meta")
        linear.weight = torch.nn.Parameter(weight.to(device), requires_grad=False)
        if layer.bias is not None:
            linear.bias = torch.nn.Parameter(layer.bias.detach(), requires_grad=False)
        _replace(model, name, linear)
    return len(restored)


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)


def check_qlora_runnable(cfg: LlavaModel) -> None:
    """A QLoRA run needs bitsandbytes (the ``qlora`` extra)."""
    if quantizes(cfg) and importlib.util.find_spec("bitsandbytes") is None:
        raise missing_extra("bitsandbytes", "qlora")
