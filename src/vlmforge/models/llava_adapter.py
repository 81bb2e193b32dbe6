"""LLaMA-Adapter V2-style adapters on the LLaVA LLM (Zhang et al. 2023; Gao et al. 2023, "LLaMA-Adapter V2").

- **Zero-init gated adaption prompts** (V1 §3.2): in the top ``layers`` decoder blocks, ``prompt_length``
  learned tokens are projected by the block's own key/value maps; every query also attends to them in a
  separate softmax, and that attention's output is scaled by a per-head gate initialised to zero, so training
  starts from exactly the frozen LLM. They are part of the architecture (saved with the weights).
- **Unlocked bias and scale** (V2 §3.1, "bias tuning"): every linear map of the LLM becomes
  ``s ⊙ (W x + b)`` with ``b`` zero-initialised (the LLM is built with attention and MLP biases) and ``s``
  a per-output scale initialised to one; ``s`` is folded into ``W`` and ``b`` when the stage ends
  (``merge_scales``), so the saved model is a plain Llama with biases plus the prompts.
The norms' gains are unlocked too (``trainable_names``).
"""

from __future__ import annotations

import math

import torch

from vlmforge.config.llava import LlavaModel

ADAPTION = "adaption"  # attribute of each adapted self_attn holding its prompt and gate
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdaptionPrompt(torch.nn.Module):
    """One block's learned prompt tokens and zero-initialised per-head gate."""

    def __init__(self, prompt_length: int, width: int, heads: int) -> None:
        super().__init__()
        self.prompt = torch.nn.Parameter(torch.randn(prompt_length, width) * width**-0.5)
        self.gate = torch.nn.Parameter(torch.zeros(heads))


def gated_prompt_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, gate: torch.Tensor
) -> torch.Tensor:
    """LLaMA-Adapter's zero-init attention to the prompt: softmax over the prompt tokens only, scaled by
    the per-head gate. query [B, H, T, D], keys/values [H, P, D], gate [H] -> [B, H, T, D]."""
    scores = query @ keys.transpose(-1, -2) / math.sqrt(query.shape[-1])
    return gate.view(1, -1, 1, 1) * (scores.softmax(dim=-1) @ values)


def _prompt_hook(attention: torch.nn.Module, args: tuple, kwargs: dict, output: tuple) -> tuple:
    """Forward hook of an adapted ``self_attn``: its output plus the gated attention to its prompt. A
    module-level function reading everything from the module, so copies of the model stay independent."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    adaption: AdaptionPrompt = getattr(attention, ADAPTION)
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    cos, sin = kwargs["position_embeddings"]
    batch, length, _ = hidden.shape
    head_dim = attention.head_dim
    query = attention.q_proj(hidden).view(batch, length, -1, head_dim).transpose(1, 2)
    query, _ = apply_rotary_pos_emb(query, query, cos, sin)  # the prompt itself has no position
    prompt = adaption.prompt.to(hidden.dtype)
    keys = attention.k_proj(prompt).view(prompt.shape[0], -1, head_dim).transpose(0, 1)
    values = attention.v_proj(prompt).view(prompt.shape[0], -1, head_dim).transpose(0, 1)
    repeat = query.shape[1] // keys.shape[0]  # grouped-query attention shares key/value heads
    keys, values = keys.repeat_interleave(repeat, 0), values.repeat_interleave(repeat, 0)
    mixed = gated_prompt_attention(query, keys, values, adaption.gate.to(hidden.dtype))
    mixed = mixed.transpose(1, 2).reshape(batch, length, -1)
    # the output map without its bias: the block's own attention output already carries it once
    added = torch.nn.functional.linear(mixed, attention.o_proj.weight)
    scale = getattr(attention.o_proj, "adapter_scale", None)
    return (output[0] + (added if scale is None else added * scale), *output[1:])


def install_prompts(model: torch.nn.Module, cfg: LlavaModel) -> None:
    """Add the adaption prompts to the top ``cfg.adapter.layers`` blocks (the architecture, every build)."""
    assert cfg.adapter is not None
    for block in list(model.model.language_model.layers)[-cfg.adapter.layers :]:
        prompt = AdaptionPrompt(cfg.adapter.prompt_length, cfg.llm.hidden_size, cfg.llm.heads)
        block.self_attn.add_module(ADAPTION, prompt)
        block.self_attn.register_forward_hook(_prompt_hook, with_kwargs=True)


def _scale_hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output * module.adapter_scale


def add_scales(model: torch.nn.Module) -> None:
    """V2's per-output scale on every LLM linear map, for one stage (``merge_scales`` folds it away)."""
    for name, module in model.model.language_model.named_modules():
        if name.rsplit(".", 1)[-1] in LINEAR_NAMES:
            ones = torch.ones(module.out_features, device=module.weight.device, dtype=module.weight.dtype)
            module.adapter_scale = torch.nn.Parameter(ones)
            module.register_forward_hook(_scale_hook)


def merge_scales(model: torch.nn.Module) -> None:
    """Fold each scale into its linear map, ``s ⊙ (W x + b) = (s W) x + s b``, and drop it."""
    with torch.no_grad():
        for module in model.modules():
            scale = getattr(module, "adapter_scale", None)
            if scale is None:
                continue
            module.weight.mul_(scale[:, None])
            if module.bias is not None:
                module.bias.mul_(scale)
            for key, hook in list(module._forward_hooks.items()):
                if hook is _scale_hook:
                    del module._forward_hooks[key]
            del module.adapter_scale


def trainable_name(name: str) -> bool:
    """What an ``adapter`` stage trains: the prompts and gates, the LLM's biases, scales and norm gains."""
    if ".language_model." not in f".{name}":
        return False
    return f".{ADAPTION}." in name or name.endswith((".bias", ".adapter_scale")) or "norm" in name


def added_by_adapter(name: str) -> bool:
    """Parameters a pretrained Llama does not have: prompts, gates and the zero-initialised biases."""
    return f".{ADAPTION}." in f".{name}" or name.endswith(".bias")
