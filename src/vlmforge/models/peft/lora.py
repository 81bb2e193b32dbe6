"""LoRA-family adapters through peft on linear layers of the towers' transformer blocks, chosen by name:
LoRA (Hu et al. 2022), DoRA (Liu et al. 2024), VeRA (Kopiczko et al. 2024)."""

from __future__ import annotations

from torch import nn

from vlmforge.config.peft import LoraFamily
from vlmforge.errors import UserError

# where each tower's transformer blocks sit in an open_clip CLIP
TOWER_BLOCKS = {"visual": r"visual\.transformer\.resblocks", "text": r"transformer\.resblocks"}
# what peft names the trained tensors of each method (VeRA's shared random matrices are frozen buffers)
ADAPTER_MARKERS = {"lora": "lora_", "dora": "lora_", "vera": "vera_lambda_"}


def target_pattern(cfg: LoraFamily) -> str:
    """A regular expression peft matches in full against module names: the configured layer names inside
    the chosen towers' blocks."""
    layers = "|".join(f"(?:{m})" for m in cfg.modules)
    towers = "|".join(TOWER_BLOCKS[t] for t in cfg.towers)
    return rf"(?:{towers})\.\d+\..*(?:{layers})"


def add_lora(clip: nn.Module, cfg: LoraFamily, seed: int) -> None:
    """Insert the adapters into ``clip`` in place; only they train afterwards."""
    import torch

    try:
        from peft import LoraConfig, VeraConfig, inject_adapter_in_model
    except ImportError:
        raise UserError(
            f"method {cfg.method} needs peft", hint="pip install 'vlmforge[llava]' (or pip install peft)"
        ) from None
    pattern = target_pattern(cfg)
    check_called(clip, pattern)
    if cfg.method == "vera":
        config = VeraConfig(
            r=cfg.rank, target_modules=pattern, vera_dropout=cfg.dropout, projection_prng_key=seed
        )
    else:
        config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=pattern,
            use_dora=cfg.method == "dora",
        )
    torch.manual_seed(seed)
    try:
        if cfg.method == "vera":  # VeRA's shared random matrices live on its tuner, which adapts in place
            from peft.tuners.vera import VeraModel

            VeraModel(clip, config, "default")
        else:
            inject_adapter_in_model(config, clip)
    except ValueError as exc:  # peft: no module matched, or a matched one it cannot adapt
        raise UserError(
            f"method.modules {cfg.modules} in towers {cfg.towers}: {exc}",
            hint="name linear layers of the blocks, e.g. c_fc, c_proj",
        ) from None
    marker = ADAPTER_MARKERS[cfg.method]
    for name, parameter in clip.named_parameters():
        parameter.requires_grad_(marker in name)


def check_called(clip: nn.Module, pattern: str) -> None:
    """Refuse layers whose forward is never called: nn.MultiheadAttention uses its ``out_proj`` weight
    inside its own kernel, so an adapter wrapped around that layer would not change the output."""
    import re

    bypassed = [
        f"{name}.out_proj"
        for name, module in clip.named_modules()
        if isinstance(module, nn.MultiheadAttention) and re.fullmatch(pattern, f"{name}.out_proj")
    ]
    if bypassed:
        raise UserError(
            f"method.modules matches attention output projections ({bypassed[0]}, ...) that "
            "nn.MultiheadAttention never calls: an adapter there would stay unused",
            hint="adapt the MLP layers c_fc, c_proj",
        )
