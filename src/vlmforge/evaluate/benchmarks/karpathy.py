"""COCO and Flickr30k on the Karpathy split (Karpathy & Fei-Fei 2015): ``dataset_coco.json`` /
``dataset_flickr30k.json``, {"images": [{"filepath"?, "filename", "split", "sentences": [{"raw", ...}],
"cocoid" | "imgid", ...}], "dataset"}, images under a root (COCO: root/filepath/filename; Flickr30k:
root/filename). Retrieval with every image's captions, and captioning scored against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmforge.config.benchmarks import KarpathyCaptioningTask, KarpathyRetrievalTask, KarpathySplit
from vlmforge.data.accounting import Drop
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.features import (
    Picture,
    drop_counts,
    image_features,
    none_readable,
    picture_batches,
)
from vlmforge.evaluate.benchmarks.layout import image_paths, read_json, require, subset
from vlmforge.evaluate.tasks import encode_texts

LAYOUT = (
    'a Karpathy split file: {"images": [{"filename", "split", "sentences": [{"raw"}], "cocoid" | "imgid"}]}'
)
TOP_CAPTIONS = 5  # retrieved captions kept per image in the predictions
ROWS = 1024  # images ranked at once (a 5k x 25k similarity matrix is 500 MB)


@dataclass(frozen=True)
class KarpathyImage:
    """One image of the split: its id (cocoid or imgid), file and sentences."""

    image_id: int | str
    picture: Picture
    sentences: list[str]


def read_karpathy(task: KarpathySplit) -> list[KarpathyImage]:
    """The images of ``task.split`` (a fixed subset of ``max_samples``), each with its raw sentences."""
    path = task.annotations
    data = read_json(path, LAYOUT)
    records = require(data, "images", list, str(path))
    splits = [require(record, "split", str, f"{path}, images[{i}]") for i, record in enumerate(records)]
    in_split = [i for i, split in enumerate(splits) if split == task.split]
    if not in_split:
        raise UserError(
            f"{path}: no image of split {task.split!r} (it has {', '.join(sorted(set(splits))) or 'none'})",
            hint="set split to one of those",
        )
    chosen = [in_split[k] for k in subset(len(in_split), task.max_samples)]
    names, ids, sentences = [], [], []
    for i in chosen:
        where, record = f"{path}, images[{i}]", records[i]
        filename = require(record, "filename", str, where)
        folder = require(record, "filepath", str, where) if "filepath" in record else ""  # COCO only
        names.append(f"{folder}/{filename}" if folder else filename)
        ids.append(require(record, "cocoid" if "cocoid" in record else "imgid", (int, str), where))
        listed = require(record, "sentences", list, where)
        if not listed:
            raise UserError(f"{where}: no sentences", hint=f"give {LAYOUT}")
        sentences.append([require(s, "raw", str, f"{where}.sentences[{j}]") for j, s in enumerate(listed)])
    files = image_paths(task.images, names, path)
    return [
        KarpathyImage(image_id, Picture(file, name), texts)
        for image_id, file, name, texts in zip(ids, files, names, sentences, strict=True)
    ]


def caption_owners(sentences: list[list[str]], per_image: int | None) -> tuple[list[str], torch.Tensor]:
    """(every image's first ``per_image`` sentences in image order, the image index of each)."""
    texts: list[str] = []
    owner: list[int] = []
    for row, image_sentences in enumerate(sentences):
        captions = image_sentences[:per_image]
        texts += captions
        owner += [row] * len(captions)
    return texts, torch.tensor(owner)


def first_hit_ranks(similarity: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Per image, the 1-based rank of its best-ranked own caption among all captions (``own``: [images,
    captions] bool)."""
    ranks = []
    for start in range(0, len(similarity), ROWS):
        sims, mine = similarity[start : start + ROWS], own[start : start + ROWS]
        best_own = sims.masked_fill(~mine, float("-inf")).max(dim=1).values
        ranks.append((sims > best_own[:, None]).sum(dim=1) + 1)
    return torch.cat(ranks)


def karpathy_retrieval(model: Any, task: KarpathyRetrievalTask, batch_size: int) -> dict[str, Any]:
    """Recall@k both ways with every image's first ``captions_per_image`` captions: an image query hits when
    any of its captions is among the top k, a caption query when its image is (CLIP §3.1.5)."""
    from vlmforge.evaluate.metrics import retrieval_recall

    images = read_karpathy(task)
    features, kept, dropped = image_features(
        model, [im.picture for im in images], str(task.images), batch_size
    )
    texts, text_groups = caption_owners([images[i].sentences for i in kept], task.captions_per_image)
    captions_features = encode_texts(
        model.model, model.tokenizer, list(texts), model.context_length, batch_size
    )
    metrics: dict[str, Any] = retrieval_recall(
        features, captions_features, torch.arange(len(kept)), text_groups, task.ks
    )
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    metrics |= {"samples": len(kept), "captions": len(texts), **drop_counts(dropped)}
    similarity = features @ captions_features.T
    ranks = first_hit_ranks(similarity, text_groups[None, :] == torch.arange(len(kept))[:, None])
    top = similarity.topk(min(TOP_CAPTIONS, len(texts)), dim=1).indices
    metrics["predictions"] = [
        {
            "image_id": images[i].image_id,
            "file": images[i].picture.key,
            "first_hit_rank": int(ranks[row]),
            "top_captions": [texts[int(c)] for c in top[row]],
        }
        for row, i in enumerate(kept)
    ]
    return metrics


@torch.no_grad()
def karpathy_captioning(model: Any, task: KarpathyCaptioningTask, batch_size: int) -> dict[str, Any]:
    """Caption every image with the project's decoding and score the captions against all of the image's
    sentences (``caption_metrics.caption_scores``, after coco-caption); the predictions are the COCO
    results format, {"image_id", "caption"} per image."""
    from vlmforge.evaluate.caption_metrics import caption_scores
    from vlmforge.evaluate.captioning import caption_decoding, coca_captions

    settings = caption_decoding(task, model.context_length, "karpathy_captioning")
    images = read_karpathy(task)
    pictures = [im.picture for im in images]
    dropped: list[Drop] = []
    kept: list[int] = []
    captions: list[str] = []
    for positions, batch in picture_batches(pictures, str(task.images), model.transform, batch_size, dropped):
        found = coca_captions(model.model, model.tokenizer, batch.to(model.device), settings)
        captions += [c.strip() for c in found]
        kept += positions
    if not kept:
        raise none_readable(str(task.images), len(pictures), dropped)
    references = [images[i].sentences for i in kept]
    metrics: dict[str, Any] = dict(caption_scores(captions, references))
    metrics |= {"method": task.method, "max_length": settings.max_length}
    if task.method == "beam":
        metrics["beam_size"] = task.beam_size
    metrics |= {"samples": len(kept), **drop_counts(dropped)}
    shown = sorted({k * len(kept) // task.examples for k in range(task.examples)})  # spread over the split
    metrics["examples"] = [
        {"key": images[kept[row]].picture.key, "caption": captions[row], "reference": references[row][0]}
        for row in shown
    ]
    metrics["predictions"] = [
        {"image_id": images[i].image_id, "caption": caption}
        for i, caption in zip(kept, captions, strict=True)
    ]
    return metrics
