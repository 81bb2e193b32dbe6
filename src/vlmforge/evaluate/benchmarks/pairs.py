"""Caption-versus-negative benchmarks: SugarCrepe (Hsieh et al. 2023; files of {id: {filename, caption,
negative_caption}} over COCO val2017 images) and ARO's Visual Genome Relation / Attribution (Yuksekgonul
et al. 2023; a list of {image_path, bbox_*, true_caption, false_caption, relation_name | attributes}, each
image cropped to its box). An item is won when its caption scores strictly higher than its negative."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.benchmarks import AroTask, SugarCrepeTask
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.features import Picture, drop_counts, image_features
from vlmforge.evaluate.benchmarks.layout import image_paths, read_json, require, subset
from vlmforge.evaluate.tasks import encode_texts

SUGARCREPE = "a SugarCrepe file: a JSON object {id: {filename, caption, negative_caption}}"
ARO = "an ARO file: a JSON list of {image_path, bbox_x, bbox_y, bbox_w, bbox_h, true_caption, false_caption}"
NUMBER = (int, float)


@dataclass(frozen=True)
class CaptionPair:
    """One item: an image (or a region of it), its caption and the negative; ``group``: what it is
    reported under (a SugarCrepe file, an ARO relation or attribute pair)."""

    id: str
    picture: Picture
    caption: str
    negative: str
    group: str


def caption_wins(caption_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """Items whose caption scores strictly above the negative: SugarCrepe's ``pos_score > neg_score``
    (main_eval.py) and ARO's argmax over [false, true] (aro_datasets.py), where a tie picks the false one."""
    return caption_scores > negative_scores


@torch.no_grad()
def score_pairs(
    model: Any, pairs: Sequence[CaptionPair], benchmark: str, batch_size: int
) -> tuple[list[int], torch.Tensor, torch.Tensor, list[Any]]:
    """(the positions of the pairs whose image is readable, their caption scores, their negative scores,
    the dropped images): cosine similarities of the image (each distinct picture encoded once) with both."""
    pictures = list(dict.fromkeys(pair.picture for pair in pairs))
    position = {picture: i for i, picture in enumerate(pictures)}
    features, kept, dropped = image_features(model, pictures, benchmark, batch_size)
    row_of = {picture: row for row, picture in enumerate(kept)}
    evaluated = [i for i, pair in enumerate(pairs) if position[pair.picture] in row_of]
    images = features[[row_of[position[pairs[i].picture]] for i in evaluated]]
    texts = [pairs[i].caption for i in evaluated] + [pairs[i].negative for i in evaluated]
    embedded = encode_texts(model.model, model.tokenizer, list(texts), model.context_length, batch_size)
    count = len(evaluated)
    return evaluated, (images * embedded[:count]).sum(1), (images * embedded[count:]).sum(1), dropped


def read_sugarcrepe(path: Path, images: Path, max_samples: int | None) -> list[CaptionPair]:
    """A SugarCrepe file's items (a fixed subset of ``max_samples``), their images under ``images``."""
    data = read_json(path, SUGARCREPE)
    if not isinstance(data, dict):
        raise UserError(f"sugarcrepe.files: {path} is not a JSON object", hint=f"give {SUGARCREPE}")
    ids = list(data)
    keys = [ids[i] for i in subset(len(ids), max_samples)]
    fields = [
        [
            require(data[key], field, str, f"{path}, item {key!r}")
            for field in ("filename", "caption", "negative_caption")
        ]
        for key in keys
    ]
    files = image_paths(images, [row[0] for row in fields], path)
    return [
        CaptionPair(key, Picture(file, row[0]), row[1], row[2], path.stem)
        for key, row, file in zip(keys, fields, files, strict=True)
    ]


def aro_group(record: dict[str, Any], where: str) -> str:
    """The relation (VG-Relation) or the attribute pair joined by '_' (VG-Attribution) of an item."""
    if "relation_name" in record:
        return str(require(record, "relation_name", str, where))
    attributes = require(record, "attributes", list, where)
    if len(attributes) != 2 or not all(isinstance(a, str) for a in attributes):
        raise UserError(f"{where}: field 'attributes' should be two attribute words, found {attributes!r}")
    return f"{attributes[0]}_{attributes[1]}"


def read_aro(path: Path, images: Path, max_samples: int | None) -> list[CaptionPair]:
    """An ARO file's items (a fixed subset of ``max_samples``), each image cropped to its box."""
    data = read_json(path, ARO)
    if not isinstance(data, list):
        raise UserError(f"aro.annotations: {path} is not a JSON list", hint=f"give {ARO}")
    chosen = subset(len(data), max_samples)
    names = [require(data[i], "image_path", str, f"{path}, item {i}") for i in chosen]
    files = image_paths(images, names, path)
    pairs = []
    for i, name, file in zip(chosen, names, files, strict=True):
        where = f"{path}, item {i}"
        record = data[i]
        box = tuple(float(require(record, f"bbox_{c}", NUMBER, where)) for c in "xywh")
        pairs.append(
            CaptionPair(
                str(i),
                Picture(file, name, box),  # type: ignore[arg-type]
                require(record, "true_caption", str, where),
                require(record, "false_caption", str, where),
                aro_group(record, where),
            )
        )
    return pairs


def group_accuracies(groups: Sequence[str], wins: torch.Tensor) -> list[dict[str, Any]]:
    """Accuracy and item count of each group, in sorted group order."""
    out = []
    for group in sorted(set(groups)):
        mine = torch.tensor([g == group for g in groups])
        out.append({"group": group, "accuracy": float(wins[mine].float().mean()), "count": int(mine.sum())})
    return out


def pair_predictions(
    pairs: Sequence[CaptionPair], evaluated: list[int], true: torch.Tensor, false: torch.Tensor
) -> list[dict[str, Any]]:
    wins = caption_wins(true, false)
    return [
        {
            "group": pairs[i].group,
            "id": pairs[i].id,
            "image": pairs[i].picture.key,
            "caption_score": round(float(true[row]), 6),
            "negative_score": round(float(false[row]), 6),
            "correct": bool(wins[row]),
        }
        for row, i in enumerate(evaluated)
    ]


def sugarcrepe(model: Any, task: SugarCrepeTask, batch_size: int) -> dict[str, Any]:
    """Accuracy per file (reported under its name, e.g. accuracy_swap_att) and their mean."""
    stems = [path.stem for path in task.files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise UserError(
            f"sugarcrepe.files: two files named {', '.join(repeated)}",
            hint="each file is reported by its name",
        )
    pairs = [pair for path in task.files for pair in read_sugarcrepe(path, task.images, task.max_samples)]
    evaluated, true, false, dropped = score_pairs(model, pairs, str(task.images), batch_size)
    groups = group_accuracies([pairs[i].group for i in evaluated], caption_wins(true, false))
    metrics: dict[str, Any] = {f"accuracy_{g['group']}": g["accuracy"] for g in groups}
    metrics["accuracy"] = sum(g["accuracy"] for g in groups) / len(groups)
    metrics |= {"samples": len(evaluated), **drop_counts(dropped), "files": len(groups)}
    metrics["predictions"] = pair_predictions(pairs, evaluated, true, false)
    return metrics


def aro(model: Any, task: AroTask, batch_size: int) -> dict[str, Any]:
    """Accuracy over all items, its mean over relations (or attribute pairs), and each one's."""
    pairs = read_aro(task.annotations, task.images, task.max_samples)
    evaluated, true, false, dropped = score_pairs(model, pairs, str(task.annotations), batch_size)
    wins = caption_wins(true, false)
    groups = group_accuracies([pairs[i].group for i in evaluated], wins)
    metrics: dict[str, Any] = {
        "accuracy": float(wins.float().mean()),
        "macro_accuracy": sum(g["accuracy"] for g in groups) / len(groups),
        "samples": len(evaluated),
        **drop_counts(dropped),
        "groups": len(groups),
        "per_group": groups,
        "predictions": pair_predictions(pairs, evaluated, true, false),
    }
    return metrics
