"""The registry of data sources: recipe ``data.kind`` -> loader, plus the train/held-out split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlmforge.config.schema import (
    BoxCanvases,
    DataBase,
    DigitsData,
    FfcvData,
    FinetuneRecipe,
    FolderData,
    TrainingRecipe,
    WebDatasetData,
)
from vlmforge.data.base import ImageTextSet, split_indices
from vlmforge.data.canvases import box_canvas_set
from vlmforge.data.digits import digits_set
from vlmforge.data.ffcv import ffcv_set
from vlmforge.data.folder import folder_set
from vlmforge.data.webds import webdataset_set

SOURCES: dict[type[DataBase], Callable[..., ImageTextSet]] = {
    DigitsData: digits_set,
    FolderData: folder_set,
    WebDatasetData: webdataset_set,
    FfcvData: ffcv_set,
    BoxCanvases: box_canvas_set,
}


def open_source(cfg: DataBase) -> ImageTextSet:
    return SOURCES[type(cfg)](cfg)


def train_val_split(cfg: DataBase) -> tuple[ImageTextSet, ImageTextSet]:
    """The full source cut into the fixed (seed-independent) training and held-out parts."""
    full = open_source(cfg)
    val_fraction = getattr(cfg, "val_fraction", 0.0)
    train, val = split_indices(len(full.keys), full.labels, val_fraction)
    return full.subset(train, "train"), full.subset(val, "val")


def build_eval_data(train_recipe: TrainingRecipe, data: Any, split: str = "all") -> Any:
    """Given data is evaluated whole (``split`` "val": its held-out split); by default, the held-out split
    of the run's training data (of the last stage's, for a finetune run)."""
    from vlmforge.errors import UserError

    if isinstance(train_recipe, FinetuneRecipe):
        from vlmforge.data.conversations import open_conversations, split_conversations

        side = train_recipe.model.input_side
        if data is None:
            from vlmforge.data.in_context import split_stage_data

            return split_stage_data(train_recipe.stages[-1].data, side)[1]
        if isinstance(data, DataBase):
            raise UserError(
                f"data.kind {data.kind!r}: a finetune run is evaluated on conversations",
                hint="use data.kind: llava-json or digits-conversations",
            )
        return split_conversations(data, side)[1] if split == "val" else open_conversations(data, side)
    if data is not None and not isinstance(data, DataBase):
        raise UserError(
            f"data.kind {data.kind!r}: a pretrain run is evaluated on image-caption data",
            hint="use data.kind: webdataset, folder or digits",
        )
    if data is not None:
        trained = train_recipe.data  # preprocess exactly as in training
        data = data.model_copy(
            update={"image_size": trained.image_size, "mean": trained.mean, "std": trained.std}
        )
        return train_val_split(data)[1] if split == "val" else open_source(data)
    return train_val_split(train_recipe.data)[1]
