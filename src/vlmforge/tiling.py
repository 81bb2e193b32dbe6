"""LLaVA-NeXT's "anyres" layout (Liu et al. 2024, "LLaVA-NeXT: Improved reasoning, OCR, and world
knowledge"; Monkey, Li et al. 2024): an image is resized into the best of a fixed set of grid resolutions
(the pinpoints), cut into encoder-sized crops, and read with a squashed global view in front.

Pure size arithmetic, the counts transformers' ``LlavaNextForConditionalGeneration`` arrives at
(``select_best_resolution``, ``get_anyres_image_grid_shape``, ``unpad_image`` and the one newline
embedding per feature row of ``pack_image_features``), so that recipes, planning and prompts know how many
image tokens an image takes without building a model."""

from __future__ import annotations

from collections.abc import Sequence

Size = tuple[int, int]  # (height, width) in pixels


def best_resolution(image: Size, pinpoints: Sequence[Size]) -> Size:
    """The pinpoint that keeps the most of the image's pixels once it is scaled to fit (aspect kept),
    ties broken by the least padding: LLaVA-NeXT's ``select_best_resolution``."""
    height, width = image
    best, kept_best, wasted_best = pinpoints[0], -1, float("inf")
    for target_h, target_w in pinpoints:
        scale = min(target_w / width, target_h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        wasted = target_h * target_w - kept
        if kept > kept_best or (kept == kept_best and wasted < wasted_best):
            best, kept_best, wasted_best = (target_h, target_w), kept, wasted
    return best


def grid_shape(image: Size, pinpoints: Sequence[Size], crop: int) -> Size:
    """(rows, columns) of encoder crops the image is cut into."""
    height, width = best_resolution(image, pinpoints)
    return height // crop, width // crop


def crop_count(image: Size, pinpoints: Sequence[Size], crop: int) -> int:
    """Images the vision encoder reads for one image: the grid's crops plus the global view."""
    rows, columns = grid_shape(image, pinpoints, crop)
    return rows * columns + 1


def unpadded_feature_shape(image: Size, grid: Size, side: int) -> Size:
    """(rows, columns) of the grid's feature map (``side`` features per crop side) once the rows or
    columns that only saw the centred padding are cut off (transformers' ``unpad_image``)."""
    height, width = grid[0] * side, grid[1] * side
    original_h, original_w = image
    if original_w / original_h > width / height:
        kept = int(round(original_h * (width / original_w), 7))
        return height - 2 * ((height - kept) // 2), width
    kept = int(round(original_w * (height / original_h), 7))
    return height, width - 2 * ((width - kept) // 2)


def anyres_tokens(image: Size, pinpoints: Sequence[Size], crop: int, patch: int) -> int:
    """Image tokens the LLM reads for one image: the global view's patches, then the unpadded grid's
    features row by row, each row closed by the newline embedding."""
    side = crop // patch
    rows, columns = unpadded_feature_shape(image, grid_shape(image, pinpoints, crop), side)
    return side * side + rows * (columns + 1)


def max_anyres_tokens(pinpoints: Sequence[Size], crop: int, patch: int) -> int:
    """The most image tokens any image can take: an image with a pinpoint's own shape fills its grid
    without padding, and every other image takes no more than that of the pinpoint it is given."""
    return max(anyres_tokens(pinpoint, pinpoints, crop, patch) for pinpoint in pinpoints)
