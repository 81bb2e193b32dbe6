"""A CLIP pretrain run as a transformers folder (``--format hf``): ``config.json`` + ``model.safetensors``
(``AutoModel.from_pretrained`` gives a ``CLIPModel``) and the processor files (``AutoProcessor`` gives a
``CLIPProcessor``): the run's own tokenizer and an image processor with the trained transform (shortest
side to ``image_size``, bicubic, centre crop, the data section's mean/std).

Both libraries compute the same functions, so the weights map one to one
(``vlmforge.models.transformers_clip``, which also reads transformers folders for ``model.pretrained``).
Text features: open_clip pools at ``argmax(ids)``, transformers at the first ``eos_token_id``; vlmforge's
tokenizers give the end token the largest id, so naming it the ``eos_token_id`` makes both pick the same
position. Padding after it is invisible to that position (causal attention), whatever ids or attention
mask a caller pads with.

What a ``CLIPModel`` cannot express is refused (``unsupported``) rather than exported approximately:
mean-pooled patches (``pool_type: avg``; transformers reads the class token), attentional pooling, layer
scale, an image tower without ``ln_pre``, text pooling other than at the end token, text attention
without the causal mask, custom attention blocks, non-ViT image towers. SLIP's head serves its training
loss only and is left out, as in the open_clip export.

SigLIP runs are refused too. ``SiglipModel`` would take the logit bias, but not vlmforge's towers: its
image embeddings have no class token and no pre-LayerNorm (``ln_pre``, which no linear patch embedding can
absorb) and it pools with an attention head or not at all; its text attention is bidirectional and
pools the last position, where vlmforge's causal text tower pools the end token. ``CLIPModel`` would
take the towers but has no logit bias, so its image-text logits would not be the trained ones. The
open_clip export keeps everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmforge.errors import UserError
from vlmforge.interop import CANNOT
from vlmforge.models.transformers_clip import activation, hf_state

OPEN_CLIP_HINT = "export with --format open_clip, which keeps every open_clip model as it is"
SIGLIP_REASON = CANNOT[("hf", "siglip")]


# ------------------------------------------------------------------------------------------ export
def export(run_dir: Path, out: Path, stage: str | None, dtype: torch.dtype) -> None:
    from vlmforge.interop.open_clip_export import exported_state, pretrain_run, save_state

    refuse_kind(run_dir)
    model, tokenizer, recipe = pretrain_run(run_dir, stage, "hf")
    refuse_unsupported(model)
    config = clip_config(model, tokenizer.start_id, tokenizer.end_id, tokenizer.pad_id)
    state = hf_state(exported_state(model))
    check_against_transformers(config, state)
    config.dtype = dtype
    config.save_pretrained(str(out))
    save_state(state, out / "model.safetensors", dtype)
    processor(recipe, tokenizer, config.text_config.max_position_embeddings).save_pretrained(str(out))


def refuse_kind(run_dir: Path) -> None:
    """Only CLIP pretrain runs, decided from the saved recipe before any weights are read."""
    from vlmforge.config.load import read_yaml
    from vlmforge.runs.artifacts import run_verb

    if run_verb(run_dir) != "pretrain":
        raise UserError(f"{run_dir}: this --format hf exporter takes CLIP pretrain runs")
    kind = read_yaml(run_dir / "recipe.yaml").get("model", {}).get("kind")
    if kind != "clip":
        why = SIGLIP_REASON if kind == "siglip" else "no transformers model class computes it"
        raise UserError(f"{run_dir}: a {kind} run cannot be a transformers model: {why}", hint=OPEN_CLIP_HINT)


def unsupported(model: torch.nn.Module) -> list[str]:
    """What of ``model`` a transformers ``CLIPModel`` cannot compute (empty: it can)."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    if type(model) is not open_clip.CLIP:
        return [f"a {type(model).__name__} model (CLIPModel holds open_clip's CLIP)"]
    if model.logit_bias is not None:
        return ["a logit bias (CLIPModel has none)"]
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        return [f"a {type(visual).__name__} image tower (CLIPModel's is a ViT)"]
    problems = []
    if visual.attn_pool is not None:
        problems.append("attentional pooling of the image tokens (CLIPModel reads the class token)")
    elif visual.pool_type != "tok":
        problems.append(
            f"pool_type: {visual.pool_type} (CLIPModel reads the class token; it needs pool_type: tok)"
        )
    if isinstance(visual.ln_pre, torch.nn.Identity):
        problems.append("an image tower without ln_pre (CLIPModel always normalises before the blocks)")
    if (
        visual.proj is None
        or model.text_projection is None
        or not isinstance(model.text_projection, torch.nn.Parameter)
    ):
        problems.append("a projection other than one bias-free matrix per tower")
    if len(set(visual.image_size)) != 1:
        problems.append(f"non-square images {tuple(visual.image_size)}")
    if model.text_pool_type != "argmax":
        problems.append(f"text pooling {model.text_pool_type!r} (CLIPModel pools at the end token)")
    if model.attn_mask is None:
        problems.append("text attention without the causal mask (CLIPModel's text attention is causal)")
    for name, tower in (("image", visual.transformer), ("text", model.transformer)):
        problems += _block_problems(name, tower)
    return problems


def _block_problems(name: str, tower: torch.nn.Module) -> list[str]:
    from open_clip.transformer import ResidualAttentionBlock

    for block in tower.resblocks:
        if type(block) is not ResidualAttentionBlock or not isinstance(
            block.attn, torch.nn.MultiheadAttention
        ):
            return [f"custom attention blocks in the {name} tower ({type(block).__name__})"]
        if not isinstance(block.ls_1, torch.nn.Identity) or not isinstance(block.ls_2, torch.nn.Identity):
            return [f"layer scale in the {name} tower"]
    try:
        activation(tower)
    except ValueError as exc:
        return [f"{exc} in the {name} tower"]
    return []


def refuse_unsupported(model: torch.nn.Module) -> None:
    problems = unsupported(model)
    if problems:
        raise UserError(
            "--format hf: transformers' CLIPModel cannot express " + "; ".join(problems), hint=OPEN_CLIP_HINT
        )


def clip_config(model: torch.nn.Module, bos_id: int, eos_id: int, pad_id: int) -> Any:
    """transformers' ``CLIPConfig`` of an open_clip ``CLIP`` (a ViT image tower, see ``unsupported``)."""
    from transformers import CLIPConfig

    visual, embed_dim = model.visual, int(model.visual.proj.shape[1])
    vision = _tower_config(visual.transformer, visual.ln_pre.eps) | {
        "image_size": int(visual.image_size[0]),
        "patch_size": int(visual.conv1.kernel_size[0]),
        "num_channels": int(visual.conv1.in_channels),
        "projection_dim": embed_dim,
    }
    text = _tower_config(model.transformer, model.ln_final.eps) | {
        "vocab_size": int(model.token_embedding.num_embeddings),
        "max_position_embeddings": int(model.positional_embedding.shape[0]),
        "projection_dim": embed_dim,
        # eos_token_id: transformers pools at its first occurrence (see the module docstring)
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=embed_dim,
        logit_scale_init_value=float(model.logit_scale.detach().float().reshape(())),
    )


def _tower_config(tower: torch.nn.Module, eps: float) -> dict[str, Any]:
    block = tower.resblocks[0]
    return {
        "hidden_size": int(block.attn.embed_dim),
        "intermediate_size": int(block.mlp.c_fc.out_features),
        "num_hidden_layers": len(tower.resblocks),
        "num_attention_heads": int(block.attn.num_heads),
        "hidden_act": activation(tower),
        "layer_norm_eps": float(eps),
    }


def check_against_transformers(config: Any, state: dict[str, torch.Tensor]) -> None:
    """The converted weights are exactly the tensors a ``CLIPModel`` of ``config`` holds (built without
    memory), so ``from_pretrained`` initialises nothing at random."""
    from transformers import CLIPModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    assert got == expected, f"weights differ from CLIPModel's: {sorted(set(got) ^ set(expected))[:4]}"


def processor(recipe: Any, tokenizer: Any, context_length: int) -> Any:
    """``CLIPProcessor``: the run's tokenizer and the image transform it trained with."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    from vlmforge.interop.open_clip_export import preprocess_config
    from vlmforge.interop.tokenizer_files import fast_tokenizer

    pre = preprocess_config(recipe)
    images = CLIPImageProcessor(
        size={"shortest_edge": pre["size"]},
        crop_size={"height": pre["size"], "width": pre["size"]},
        resample=3,  # PIL's BICUBIC, as vlmforge.data.images.square_tensor
        image_mean=pre["mean"],
        image_std=pre["std"],
    )
    return CLIPProcessor(image_processor=images, tokenizer=fast_tokenizer(tokenizer, context_length))
