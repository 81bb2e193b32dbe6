"""The image-text model curation scores with: a vlmforge run's, or an open_clip architecture with a local
checkpoint; L2-normalised embeddings of images and captions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlmforge.config.curate_models import OpenClipScorer, RunScorer, ScoringModel
from vlmforge.errors import UserError


@dataclass
class Scorer:
    """Image and text towers with their preprocessing; embeddings are L2-normalised float32."""

    model: Any
    tokenize: Callable[[list[str], int], Any]
    context_length: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def images(self, images: list[Any]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        pixels = np.stack([_square(image, self.image_size) for image in images])
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2) - torch.tensor(self.mean).view(1, 3, 1, 1)) / (
            torch.tensor(self.std).view(1, 3, 1, 1)
        )
        with torch.no_grad():
            return self.model.encode_image(x.float(), normalize=True).float().numpy()

    def texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            tokens = self.tokenize(texts, self.context_length)
            return self.model.encode_text(tokens, normalize=True).float().numpy()


def _square(image: Any, size: int) -> np.ndarray:
    """Shorter side resized to ``size`` (bicubic), centre crop; float32 HWC in [0, 1]."""
    from PIL import Image

    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    resized = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0


def load_scorer(cfg: ScoringModel) -> Scorer:
    import torch

    torch.manual_seed(0)
    if isinstance(cfg, RunScorer):
        return _from_run(cfg)
    assert isinstance(cfg, OpenClipScorer)
    return _from_open_clip(cfg)


def _from_run(cfg: RunScorer) -> Scorer:
    from vlmforge.families import family_for
    from vlmforge.runs.artifacts import load_trained

    model, tokenizer, recipe, _ = load_trained(cfg.path, cfg.checkpoint)
    models = family_for(recipe.model).models
    return Scorer(
        model.eval(),
        tokenizer,
        models.context_length(recipe.model, model),
        models.image_size(recipe.model, model),
        recipe.data.mean,
        recipe.data.std,
    )


def quick_gelu(cfg: OpenClipScorer) -> bool:
    """The recipe's choice, else what open_clip records for the tag (OpenAI's weights were trained with
    QuickGELU: GELU would score with a different network)."""
    import open_clip

    if cfg.quick_gelu is not None:
        return cfg.quick_gelu
    return bool(open_clip.get_pretrained_cfg(cfg.arch, cfg.checkpoint).get("quick_gelu", False))


def _from_open_clip(cfg: OpenClipScorer) -> Scorer:
    import open_clip

    from vlmforge.data.tokenizers import OpenClipBPE
    from vlmforge.models.contrastive import load_checkpoint_weights, quiet_random_init
    from vlmforge.weights import resolve

    if cfg.config is not None:
        if not cfg.config.is_file():
            raise UserError(f"model.config: file not found: {cfg.config}")
        open_clip.add_model_config(cfg.config)
    if cfg.arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(cfg.arch, open_clip.list_models(), n=3)
        raise UserError(
            f"model.arch: open_clip has no architecture {cfg.arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else ""),
            hint="name a shipped architecture, or give model.config with the JSON of a custom one",
        )
    weights = resolve(cfg.checkpoint, cfg.arch, "model.checkpoint")
    with quiet_random_init():
        model = open_clip.create_model(cfg.arch, pretrained=None, force_quick_gelu=quick_gelu(cfg))
    try:
        load_checkpoint_weights(model, weights)
    except UserError as exc:
        raise UserError(exc.message.replace("model.pretrained", "model.checkpoint"), exc.hint) from None
    pre = model.visual.preprocess_cfg
    size = pre["size"][0] if isinstance(pre["size"], tuple | list) else pre["size"]
    return Scorer(
        model.eval(), OpenClipBPE(cfg.arch), int(model.context_length), int(size), pre["mean"], pre["std"]
    )
