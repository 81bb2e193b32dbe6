"""LLaVA-NeXT's anyres layout on transformers' ``LlavaNextForConditionalGeneration`` (Liu et al. 2024):
the same towers and projector as ``vlmforge.models.llava``, plus the grid pinpoints and the learned
newline embedding, so that a stage folder loads in transformers as LLaVA-NeXT.

Images travel through the data pipeline at ``LlavaModel.input_side``; ``vision_inputs`` tiles a batch
right before the model reads it, with transformers' own ``LlavaNextImageProcessor`` (resize into the best
pinpoint, centre padding, encoder-sized crops, the squashed global view first), on already normalised
pixels: padding is therefore the normalisation mean, not black."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.config.llava import LlavaModel
from vlmforge.tiling import crop_count

NEWLINE = "model.image_newline"  # trained with the projector, as LLaVA-NeXT's stage 1 does


def next_config(single: Any, cfg: LlavaModel) -> Any:
    """The ``LlavaNextConfig`` of a recipe whose ``LlavaConfig`` is ``single``: the same towers, image
    token and projector, with the recipe's pinpoints."""
    from vlmforge.models.transformers_lib import transformers_module

    return transformers_module().LlavaNextConfig(
        vision_config=single.vision_config,
        text_config=single.text_config,
        image_token_index=single.image_token_index,
        image_seq_length=single.image_seq_length,
        projector_hidden_act=single.projector_hidden_act,
        vision_feature_select_strategy=single.vision_feature_select_strategy,
        vision_feature_layer=single.vision_feature_layer,
        image_grid_pinpoints=[list(pinpoint) for pinpoint in cfg.grid_pinpoints],
        architectures=["LlavaNextForConditionalGeneration"],
    )


def tiler(pinpoints: list[list[int]], crop: int) -> Any:
    """transformers' LLaVA-NeXT image processor reduced to the tiling: no rescaling or normalisation
    (vlmforge's images arrive normalised), crops of ``crop`` pixels."""
    from vlmforge.models.transformers_lib import transformers_module

    square = {"height": crop, "width": crop}
    return transformers_module().LlavaNextImageProcessor(
        image_grid_pinpoints=pinpoints,
        size=square,
        crop_size=square,
        do_rescale=False,
        do_normalize=False,
        do_convert_rgb=False,
        do_center_crop=False,
    )


def tile(pixels: torch.Tensor, pinpoints: list[list[int]], crop: int) -> dict[str, torch.Tensor]:
    """``pixel_values`` [B, crops, 3, crop, crop] (global view first, rows of the grid after it) and
    ``image_sizes`` [B, 2] of a batch of normalised images [B, 3, H, W], on the batch's device (the
    processor cuts them on the CPU: a few milliseconds for a batch of 32 small images)."""
    tiled = tiler(pinpoints, crop)([image for image in pixels.detach().cpu()], return_tensors="pt")
    return {
        "pixel_values": tiled["pixel_values"].to(pixels.device, pixels.dtype),
        "image_sizes": tiled["image_sizes"].to(pixels.device),
    }


def vision_inputs(model: Any, pixels: torch.Tensor | None) -> dict[str, Any]:
    """What ``model``'s forward or ``generate`` takes for a batch of images [B, 3, H, W]: the images
    themselves for LLaVA, their crops and sizes for a LLaVA-NeXT config (one with grid pinpoints)."""
    config = model.config
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    if pixels is None or pinpoints is None:
        return {"pixel_values": pixels}
    return tile(pixels, pinpoints, int(config.vision_config.image_size))


def synthetic_inputs(cfg: LlavaModel, batch_size: int, device: str) -> dict[str, torch.Tensor]:
    """Blank crops and sizes of ``batch_size`` images at the recipe's input side (no tiling, so that
    planning on the meta device runs the encoder on as many crops as training does)."""
    side, crop = cfg.input_side, cfg.vision.image_size
    crops = crop_count((side, side), cfg.grid_pinpoints, crop)
    return {
        "pixel_values": torch.zeros(batch_size, crops, 3, crop, crop, device=device),
        "image_sizes": torch.tensor([[side, side]] * batch_size),  # read as numbers: never on meta
    }
