"""A pretrain run as an open_clip ``local-dir`` folder: ``open_clip_config.json`` (``model_cfg`` +
``preprocess_cfg``), ``open_clip_model.safetensors`` and, for a word vocabulary, the tokenizer files that
open_clip's ``HFTokenizer`` reads. ``open_clip.create_model_and_transforms("local-dir:DIR")`` and
``open_clip.get_tokenizer("local-dir:DIR")`` then rebuild the model, its image transform and tokenizer.

vlmforge's contrastive and CoCa models are open_clip models, so the weights go out as they are; training
only parts (SLIP's self-supervised head) are left behind, and FLIP's patch dropout is off (open_clip
applies it in training mode only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.schema import CoCaModel, PretrainRecipe, SigLipModel
from vlmforge.data.tokenizers import TextTokenizer
from vlmforge.errors import UserError
from vlmforge.interop.tokenizer_files import is_simple_bpe, save_tokenizer_files
from vlmforge.runs.artifacts import load_trained, run_verb
from vlmforge.storage import write_json

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"
# SLIP's projection MLP and CLIP-rocket's strong-view heads serve their training losses only
TRAINING_ONLY = ("ssl_head.", "augment_heads.")


def pretrain_run(run_dir: Path, stage: str | None, fmt: str) -> tuple[Any, Any, PretrainRecipe]:
    """(model, tokenizer, recipe) of a pretrain run, for the exporters that take only those."""
    if stage is not None:
        raise UserError(f"--stage {stage}: a pretrain run has no stages", hint="leave --stage out")
    if run_verb(run_dir) != "pretrain":
        raise UserError(
            f"{run_dir}: --format {fmt} exports pretrain runs",
            hint="export a LLaVA finetune or align run with --format hf",
        )
    model, tokenizer, recipe, _ = load_trained(run_dir)
    assert isinstance(recipe, PretrainRecipe)
    return model, tokenizer, recipe


def export(run_dir: Path, out: Path, stage: str | None, dtype: torch.dtype) -> None:
    model, tokenizer, recipe = pretrain_run(run_dir, stage, "open_clip")
    config = model_config(recipe, model, tokenizer)
    if not is_simple_bpe(tokenizer):
        save_tokenizer_files(tokenizer, out, config["text_cfg"]["context_length"])
        config["text_cfg"]["hf_tokenizer_name"] = "local-dir"  # open_clip reads the files next to the config
    write_json(
        out / CONFIG,
        {
            "model_cfg": config,
            "preprocess_cfg": preprocess_config(recipe),
            "vlmforge": zeroshot_config(recipe),
        },
    )
    save_state(exported_state(model), out / WEIGHTS, dtype)


def zeroshot_config(recipe: PretrainRecipe) -> dict[str, Any]:
    """The run's zero-shot prompt templates and class names (open_clip ignores this key; ``vlmforge
    predict`` and ``eval --model`` read it, so an export classifies as its run did)."""
    from vlmforge.interop.inference import run_classnames, run_templates

    return {"zeroshot_templates": list(run_templates(recipe)), "classnames": run_classnames(recipe)}


def exported_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith(TRAINING_ONLY)}


def save_state(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    """Weights as safetensors; floating tensors in ``dtype`` (integer buffers keep theirs)."""
    from safetensors.torch import save_file

    cast = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().clone()
        for k, v in state.items()
    }
    save_file(cast, str(path), metadata={"format": "pt"})


def model_config(recipe: PretrainRecipe, model: torch.nn.Module, tokenizer: TextTokenizer) -> dict[str, Any]:
    """open_clip's ``model_cfg`` of the run's model: the named architecture's with the recipe's choices,
    or the custom towers' fields."""
    import open_clip

    from vlmforge.models.contrastive import text_cfg, vision_cfg

    cfg = recipe.model
    vocab_size = tokenizer.vocab_size
    if cfg.arch is not None:
        spec: dict[str, Any] = dict(open_clip.get_model_config(cfg.arch))
        spec["quick_gelu"] = bool(cfg.quick_gelu or spec.get("quick_gelu", False))
        spec["vision_cfg"] = dict(spec["vision_cfg"]) | {"patch_dropout": 0.0}
        spec["text_cfg"] = dict(spec["text_cfg"])
    elif isinstance(cfg, CoCaModel):
        from vlmforge.models.generative import tower_configs

        vision, text, decoder = tower_configs(cfg, vocab_size)
        spec = {
            "embed_dim": cfg.embed_dim,
            "quick_gelu": cfg.quick_gelu,
            "vision_cfg": _changed(vision),
            "text_cfg": _changed(text),
            "multimodal_cfg": _changed(decoder),
        }
    else:
        assert cfg.vision is not None and cfg.text is not None
        spec = {
            "embed_dim": cfg.embed_dim,
            "quick_gelu": cfg.quick_gelu,
            "vision_cfg": _changed(vision_cfg(cfg.vision)),
            "text_cfg": _changed(text_cfg(cfg.text, vocab_size)),
        }
    if isinstance(cfg, CoCaModel):
        spec["custom_text"] = True  # open_clip builds CoCa for a custom-text config with multimodal_cfg
    if isinstance(cfg, SigLipModel):
        spec["init_logit_bias"] = cfg.init_logit_bias  # the trained bias comes with the weights
    return _plain(spec)


def preprocess_config(recipe: PretrainRecipe) -> dict[str, Any]:
    """The image transform the run trained with: shortest side to ``image_size`` (bicubic), centre crop,
    the data section's mean and std (``vlmforge.data.images.square_tensor``)."""
    data = recipe.data
    size = int(getattr(data, "image_size", 224))
    return {
        "size": size,
        "mode": "RGB",
        "mean": list(data.mean),
        "std": list(data.std),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }


def _changed(config: Any) -> dict[str, Any]:
    """The fields of an open_clip config dataclass that differ from its defaults (a short, readable
    config; open_clip fills in the rest as it would for its own)."""
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.default is dataclasses.MISSING or getattr(config, field.name) != field.default
    }


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples as lists, dataclass leftovers as dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
