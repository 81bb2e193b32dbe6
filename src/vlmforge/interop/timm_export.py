"""A pretrain run's image encoder as a timm ``local-dir`` folder: ``config.json`` (architecture, model_args,
pretrained_cfg) and ``model.safetensors`` in timm's own parameter names.
``timm.create_model("local-dir:DIR", pretrained=True)`` then rebuilds the encoder with the run's weights, and
``timm.data.resolve_data_config`` + ``create_transform`` the image transform it trained with; pass
``num_classes=N`` as well to finetune it with a new head.

Every vlmforge image tower that is open_clip's plain ``VisionTransformer`` maps onto timm's
``VisionTransformer`` exactly: patch convolution, class token, learned positions, ``ln_pre`` as timm's
``pre_norm``, the blocks (``in_proj`` as ``qkv``, layer scale as ``ls1``/``ls2``), ``ln_post`` as the final
norm (before pooling, or after it as ``fc_norm`` for ``final_ln_after_pool``), class-token or mean-of-patches
pooling, and the projection, when the tower has one, as a bias-free (zero bias) ``head``. The pooled
output (``model(x)``) equals vlmforge's ``encode_image`` and ``forward_features`` gives the normalised
tokens. Parts timm's ViT has no place for (open_clip's attentional pooler, its custom attention blocks) are
refused by name rather than exported approximately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmforge.config.schema import PretrainRecipe
from vlmforge.errors import UserError
from vlmforge.interop.open_clip_export import preprocess_config, pretrain_run, save_state
from vlmforge.storage import write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
# Any of timm's CLIP ViT entry points: chosen for its norm layer, LayerNorm with open_clip's eps (1e-5),
# which a JSON model_args cannot name; model_args override every size, so the name's "base"/"224" do not
# describe the exported model.
ARCHITECTURE = "vit_base_patch16_clip_224"
LAYER_NORM_EPS = 1e-5
ACTIVATIONS = {"GELU": "gelu", "QuickGELU": "quick_gelu"}  # open_clip class name -> timm act_layer name


def export(run_dir: Path, out: Path, stage: str | None, dtype: torch.dtype) -> None:
    model, _, recipe = pretrain_run(run_dir, stage, "timm")
    visual = model.visual
    args = model_args(visual)
    state = timm_state(visual)
    check_names(args, state)
    write_json(out / CONFIG, timm_config(args, recipe))
    save_state(state, out / WEIGHTS, dtype)


# ------------------------------------------------------------------------------- what timm can express
def check_expressible(visual: nn.Module) -> None:
    """UserError naming the first part of the tower timm's ``VisionTransformer`` cannot hold."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    hint = "export the whole model with --format open_clip instead"
    if not isinstance(visual, VisionTransformer):
        raise UserError(
            f"--format timm: the image tower is open_clip's {type(visual).__name__}, not its plain "
            "VisionTransformer",
            hint=hint,
        )
    if visual.attn_pool is not None:
        raise UserError(
            "--format timm: the image tower pools with open_clip's attentional pooler, which timm's "
            "VisionTransformer has no equivalent of (its 'map' pooling is a different module)",
            hint="train with vision.attentional_pool: false, or " + hint,
        )
    if visual.pool_type not in ("tok", "avg"):
        raise UserError(
            f"--format timm: image pooling {visual.pool_type!r} has no timm equivalent", hint=hint
        )
    for block in visual.transformer.resblocks:
        if not isinstance(block, ResidualAttentionBlock):
            raise UserError(
                f"--format timm: the image tower uses open_clip's {type(block).__name__} (qk-norm, scaled "
                "cosine attention or extra norms), which timm's ViT block does not reproduce",
                hint=hint,
            )
    for norm in layer_norms(visual):
        if not isinstance(norm, nn.LayerNorm) or norm.eps != LAYER_NORM_EPS or not norm.elementwise_affine:
            raise UserError(
                f"--format timm: the image tower's {norm} is not an affine LayerNorm with eps "
                f"{LAYER_NORM_EPS}, the norm timm's CLIP ViT uses",
                hint=hint,
            )
    activation(visual)


def layer_norms(visual: nn.Module) -> list[nn.Module]:
    norms = [visual.ln_post] + ([] if isinstance(visual.ln_pre, nn.Identity) else [visual.ln_pre])
    for block in visual.transformer.resblocks:
        norms += [block.ln_1, block.ln_2]
    return norms


def activation(visual: nn.Module) -> str:
    """timm's ``act_layer`` name for the MLP activation of the tower's blocks (all blocks share one)."""
    act = visual.transformer.resblocks[0].mlp.gelu
    name = ACTIVATIONS.get(type(act).__name__)
    if name is None or getattr(act, "approximate", "none") != "none":
        raise UserError(
            f"--format timm: the image tower's activation {act} has no timm act_layer name",
            hint="export the whole model with --format open_clip instead",
        )
    return name


# ----------------------------------------------------------------------------------------- the mapping
def model_args(visual: nn.Module) -> dict[str, Any]:
    """timm ``VisionTransformer`` keywords that rebuild ``visual`` (an open_clip ``VisionTransformer``)."""
    check_expressible(visual)
    blocks = visual.transformer.resblocks
    width = int(visual.conv1.out_channels)
    ls_init = blocks[0].ls_1
    args: dict[str, Any] = {
        "img_size": int(visual.image_size[0]),
        "patch_size": int(visual.patch_size[0]),
        "embed_dim": width,
        "depth": len(blocks),
        "num_heads": int(blocks[0].attn.num_heads),
        "mlp_ratio": blocks[0].mlp.c_fc.out_features / width,
        "class_token": True,
        "pre_norm": not isinstance(visual.ln_pre, nn.Identity),
        "global_pool": "token" if visual.pool_type == "tok" else "avg",
        # open_clip normalises every token before pooling unless final_ln_after_pool: timm's fc_norm=False
        # puts its final norm there too (forward_features then returns the normalised tokens)
        "fc_norm": bool(visual.final_ln_after_pool),
        "act_layer": activation(visual),
        "num_classes": 0 if visual.proj is None else int(visual.proj.shape[1]),
    }
    if not isinstance(ls_init, nn.Identity):
        args["init_values"] = 1.0  # any value switches layer scale on; the trained gammas replace it
    return args


def timm_state(visual: nn.Module) -> dict[str, torch.Tensor]:
    """``visual``'s weights under timm's names and shapes (model_args(visual) builds the module)."""
    check_expressible(visual)
    src = visual.state_dict()
    width = int(visual.conv1.out_channels)
    state = {
        "patch_embed.proj.weight": src["conv1.weight"],
        "cls_token": src["class_embedding"].reshape(1, 1, width),
        "pos_embed": src["positional_embedding"].unsqueeze(0),
    }
    if isinstance(visual.ln_pre, nn.Identity):
        # timm's patch convolution has a bias exactly when there is no pre-norm; open_clip's never has one
        state["patch_embed.proj.bias"] = torch.zeros(width, dtype=src["conv1.weight"].dtype)
    else:
        state |= _renamed(src, "ln_pre.", "norm_pre.")
    for i in range(len(visual.transformer.resblocks)):
        state |= block_state(src, i)
    final_norm = "fc_norm." if visual.final_ln_after_pool else "norm."
    state |= _renamed(src, "ln_post.", final_norm)
    if visual.proj is not None:
        proj = src["proj"]  # [width, embed_dim], applied as pooled @ proj
        state["head.weight"] = proj.T
        state["head.bias"] = torch.zeros(proj.shape[1], dtype=proj.dtype)
    return state


BLOCK_NAMES = {
    "ln_1.": "norm1.",
    "attn.in_proj_weight": "attn.qkv.weight",  # q, k, v stacked in the same order in both
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.": "attn.proj.",
    "ls_1.": "ls1.",
    "ln_2.": "norm2.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
    "ls_2.": "ls2.",
}


def block_state(src: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    prefix = f"transformer.resblocks.{index}."
    out: dict[str, torch.Tensor] = {}
    for old, new in BLOCK_NAMES.items():
        out |= _renamed(src, prefix + old, f"blocks.{index}.{new}")
    return out


def _renamed(src: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    return {new + key[len(old) :]: value for key, value in src.items() if key.startswith(old)}


def check_names(args: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """The timm model ``args`` describe holds exactly ``state``'s names and shapes (built without memory),
    so an export timm would refuse to load fails here instead."""
    import timm

    with torch.device("meta"):
        expected = timm.create_model(ARCHITECTURE, pretrained=False, **args).state_dict()
    have = {k: tuple(v.shape) for k, v in state.items()}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    if have != want:
        diff = sorted(set(have.items()) ^ set(want.items()))[:4]
        raise RuntimeError(f"timm export: weights do not match timm's VisionTransformer: {diff}")


# ---------------------------------------------------------------------------------------------- config
def timm_config(args: dict[str, Any], recipe: PretrainRecipe) -> dict[str, Any]:
    """timm's ``config.json``: the architecture, the keywords that rebuild the encoder, the run's image
    transform as ``pretrained_cfg``."""
    return {
        "architecture": ARCHITECTURE,
        "num_classes": args["num_classes"],
        "num_features": args["embed_dim"],
        "global_pool": args["global_pool"],
        "model_args": args,
        "pretrained_cfg": pretrained_cfg(recipe, args["img_size"], args["num_classes"]),
    }


def pretrained_cfg(recipe: PretrainRecipe, size: int, num_classes: int) -> dict[str, Any]:
    """The transform vlmforge trained with (``square_tensor``: shortest side to the image size, bicubic,
    centre crop, the data section's mean and std) in timm's terms: crop_pct 1.0 resizes the shortest side
    to the input size itself before the centre crop."""
    pre = preprocess_config(recipe)
    return {
        "input_size": [3, size, size],
        "fixed_input_size": True,
        "interpolation": pre["interpolation"],
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": pre["mean"],
        "std": pre["std"],
        "num_classes": num_classes,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "description": f"image encoder of vlmforge run {recipe.name}",
    }
