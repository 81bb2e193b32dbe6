"""transformers' ``CLIPModel`` weights in open_clip's names and back: the one-to-one map between two
implementations of the same functions, used by ``--format hf`` (``vlmforge.interop.hf_clip``) and by
``model.pretrained`` when it names a transformers CLIP folder.

The fused attention input projection is split into q/k/v, ``c_fc``/``c_proj`` are ``fc1``/``fc2``,
``ln_pre``/``ln_post`` are ``pre_layrnorm``/``post_layernorm``, and the two projections are matrices
multiplied from the right in open_clip and linear layers in transformers (hence transposed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from vlmforge.errors import UserError

# open_clip name -> transformers name, for the tensors outside the transformer blocks
NAMES = {
    "logit_scale": "logit_scale",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.proj": "visual_projection.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "text_projection": "text_projection.weight",
}
TRANSPOSED = {"visual.proj", "text_projection"}  # x @ proj in open_clip, Linear (x @ W.T) in transformers
TOWERS = {
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
    "transformer.resblocks.": "text_model.encoder.layers.",
}
BLOCK_NAMES = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "attn.out_proj.": "self_attn.out_proj.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
QKV = ("q_proj", "k_proj", "v_proj")  # the row blocks of open_clip's in_proj_weight, in order
BLOCK_KEY = re.compile(r"^(visual\.transformer\.resblocks\.|transformer\.resblocks\.)(\d+)\.(.+)$")
HF_BLOCK_KEY = re.compile(r"^(vision_model\.encoder\.layers\.|text_model\.encoder\.layers\.)(\d+)\.(.+)$")
FIELD = "model.pretrained"
UNUSED_HF_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def activation(tower: torch.nn.Module) -> str:
    """transformers' ``hidden_act`` name of an open_clip transformer's MLP activation."""
    from open_clip.transformer import QuickGELU

    act = tower.resblocks[0].mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, torch.nn.GELU) and act.approximate == "none":
        return "gelu"
    if isinstance(act, torch.nn.GELU) and act.approximate == "tanh":
        return "gelu_pytorch_tanh"
    raise ValueError(f"the activation {act!r}")


def hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip ``CLIP`` weights under transformers' ``CLIPModel`` names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in NAMES:
            out[NAMES[key]] = (
                value.T if key in TRANSPOSED else value.reshape(()) if key == "logit_scale" else value
            )
            continue
        match = BLOCK_KEY.match(key)
        if match is None:
            raise _no_place(key)
        tower, index, rest = match.groups()
        prefix = f"{TOWERS[tower]}{index}."
        if rest.startswith("attn.in_proj_"):
            kind = rest.removeprefix("attn.in_proj_")  # weight or bias
            for name, part in zip(QKV, value.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{name}.{kind}"] = part
            continue
        renamed = _rename_block(rest, BLOCK_NAMES)
        if renamed is None:
            raise _no_place(key)
        out[prefix + renamed] = value
    return out


def open_clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPModel`` weights under open_clip ``CLIP`` names (the inverse of ``hf_state``)."""
    return _from_hf(state)[0]


def _from_hf(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(open_clip state, open_clip name -> the transformers name it came from, for messages)."""
    names = {hf: oc for oc, hf in NAMES.items()}
    towers = {hf: oc for oc, hf in TOWERS.items()}
    blocks = {hf: oc for oc, hf in BLOCK_NAMES.items()}
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}  # open_clip in_proj key -> {q_proj: ..., k_proj: ...}
    for key, value in state.items():
        if key in UNUSED_HF_KEYS:  # older files keep the position-id buffers
            continue
        if key in names:
            oc = names[key]
            out[oc], origin[oc] = (value.T if oc in TRANSPOSED else value), key
            continue
        match = HF_BLOCK_KEY.match(key)
        if match is None:
            raise _not_clip(key)
        tower, index, rest = match.groups()
        prefix = f"{towers[tower]}{index}."
        projection, _, kind = rest.removeprefix("self_attn.").partition(".")
        if rest.startswith("self_attn.") and projection in QKV:
            oc = f"{prefix}attn.in_proj_{kind}"
            fused.setdefault(oc, {})[projection] = value
            origin.setdefault(oc, key)
            continue
        renamed = _rename_block(rest, blocks)
        if renamed is None:
            raise _not_clip(key)
        out[prefix + renamed], origin[prefix + renamed] = value, key
    for key, parts in fused.items():
        if set(parts) != set(QKV):
            raise UserError(f"{FIELD}: {key}: the file lacks {sorted(set(QKV) - set(parts))}")
        out[key] = torch.cat([parts[name] for name in QKV], dim=0)
    return out, origin


def _no_place(key: str) -> UserError:
    return UserError(
        f"--format hf: {key} has no place in transformers' CLIPModel", hint="export with --format open_clip"
    )


def _not_clip(key: str) -> UserError:
    return UserError(f"{FIELD}: {key} is not a tensor of transformers' CLIPModel")


def _rename_block(rest: str, names: dict[str, str]) -> str | None:
    """A tensor name inside a block in the other library's words (None: it has none)."""
    for old, new in names.items():
        if rest.startswith(old):
            return new + rest.removeprefix(old)
    return None


# ----------------------------------------------------------------------------- transformers folders
def read_transformers_clip(folder: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of a transformers ``CLIPModel`` folder as ``model``'s open_clip state dict; a tensor
    whose shape differs from ``model``'s, or an activation the model does not use, is a UserError."""
    if not (folder / "config.json").is_file():
        raise UserError(
            f"{FIELD}: {folder} is a folder without config.json",
            hint="give a checkpoint file, or a folder written by transformers' CLIPModel.save_pretrained",
        )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "clip":
        raise UserError(
            f"{FIELD}: {folder} holds a {config.get('model_type')!r} model, not a transformers CLIPModel",
            hint="give a folder written by CLIPModel.save_pretrained, or a checkpoint file",
        )
    state, origin = _from_hf(_read_weights(folder))
    _check_shapes(state, model, origin)
    _check_activations(config, model)
    return state


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A transformers folder's tensors: one weights file, or the shards its index names."""
    from vlmforge.weights import read_state_dict

    index = folder / "model.safetensors.index.json"
    if index.is_file():  # save_pretrained shards big models
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return {k: v for name in files for k, v in read_state_dict(folder / name, FIELD).items()}
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return read_state_dict(folder / name, FIELD)
    raise UserError(f"{FIELD}: {folder} has config.json but no model.safetensors or pytorch_model.bin")


def _check_shapes(state: dict[str, torch.Tensor], model: torch.nn.Module, origin: dict[str, str]) -> None:
    """The first tensor whose shape differs from the model's, named as in the file (load_state_dict would
    report them all, in open_clip's names)."""
    expected = model.state_dict()
    for key, value in state.items():
        want = expected.get(key)
        if want is None or value.shape == want.shape or value.numel() == want.numel() == 1:
            continue
        name = origin.get(key, key)
        raise UserError(
            f"{FIELD}: {name} has shape {list(value.shape)} in the file (open_clip {key}), "
            f"the model has {list(want.shape)}",
            hint="the recipe's towers (width, layers, patch and image size, context length, tokenizer "
            "vocabulary, embed_dim) must be those of the transformers model",
        )


def _check_activations(config: dict[str, Any], model: torch.nn.Module) -> None:
    """Weights trained with QuickGELU give other features under GELU (and back): a recipe that differs
    from the file's activation is almost surely a mistake."""
    towers = (
        ("text_config", getattr(model, "transformer", None)),
        ("vision_config", getattr(getattr(model, "visual", None), "transformer", None)),
    )
    for section, tower in towers:
        try:
            have = activation(tower)
        except (AttributeError, TypeError, ValueError):  # not an open_clip ViT block: nothing to compare
            continue
        want = config.get(section, {}).get("hidden_act", "quick_gelu")  # CLIPConfig's default
        if want != have:
            raise UserError(
                f"{FIELD}: the transformers model uses {want} in its {section}, the recipe's model {have}",
                hint="set model.quick_gelu: true" if want == "quick_gelu" else "set model.quick_gelu: false",
            )


# ------------------------------------------------------------------------- open_clip image towers
def open_clip_vision_tower(reference: str, field: str) -> tuple[dict[str, torch.Tensor], bool] | None:
    """(transformers ``CLIPVisionModel`` weights, whether it uses QuickGELU) of the image tower of a
    vlmforge CLIP run or an open_clip local-dir export; None when ``reference`` is neither (a transformers
    folder or hub name). Its projection is left out: LLaVA reads the tower's hidden states."""
    from vlmforge.config.load import read_yaml
    from vlmforge.weights import read_state_dict, strip_prefixes, weights_in

    path = Path(reference).expanduser()
    run, export = path / "recipe.yaml", path / "open_clip_config.json"
    if not path.is_dir() or not (run.is_file() or export.is_file()):
        return None
    if run.is_file():
        model = read_yaml(run).get("model") or {}
        if model.get("kind") not in ("clip", "siglip"):
            raise UserError(f"{field}: {path} is not a CLIP or SigLIP pretrain run", hint="give a CLIP run")
        quick_gelu = bool(model.get("quick_gelu", False))
    else:
        quick_gelu = bool(
            json.loads(export.read_text(encoding="utf-8"))["model_cfg"].get("quick_gelu", False)
        )
    state = read_state_dict(weights_in(path, field), field)
    visual = {}
    for key, value in state.items():
        key = strip_prefixes(key)
        if key.startswith("visual.") and key != "visual.proj":
            visual[key] = value
    try:
        converted = hf_state(visual)
    except UserError as exc:
        raise UserError(
            f"{field}: the image tower of {path} does not fit transformers' CLIPVisionModel "
            f"({exc.message.removeprefix('--format hf: ')})",
            hint="start from a tower with a class token and standard blocks",
        ) from None
    return {k: v for k, v in converted.items() if k.startswith("vision_model.")}, quick_gelu
