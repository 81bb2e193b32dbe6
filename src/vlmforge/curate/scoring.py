"""Ranking with a pretrained image-text model (seed §3.1, "Ranking based on Pretrained VLMs"): CLIPScore
with optional T-MARS text masking, and text spotting (text area, how much of the score the text carries,
and with OCR how much of the caption is the text rendered in the image)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlmforge.curate.base import Resources, Step
from vlmforge.curate.batch import Batch, Decision, Table, first_reason
from vlmforge.curate.heuristics import STOP_WORDS, words
from vlmforge.curate.scorers import Scorer
from vlmforge.curate.textdetect import check_east, mask_text, text_area
from vlmforge.ocr import OcrReader, Read, check_ocr


# -------------------------------------------------------------------------------------------- shared
def image_embeddings(batch: Batch, scorer: Scorer) -> np.ndarray:
    return batch.cached("image_embedding", lambda b: scorer.images(b.images))


def text_embeddings(batch: Batch, scorer: Scorer) -> np.ndarray:
    return batch.cached("text_embedding", lambda b: scorer.texts(b.captions))


def text_reads(batch: Batch, reader: OcrReader, name: str) -> list[list[Read]]:
    def read(b: Batch) -> np.ndarray:
        found = np.empty(len(b), dtype=object)
        for i, image in enumerate(b.images):
            found[i] = reader.read(np.asarray(image))
        return found

    return list(batch.cached(f"text_reads:{name}", read))


def text_boxes(batch: Batch, detector: Any, name: str) -> list[list[tuple[int, int, int, int]]]:
    if isinstance(detector, OcrReader):  # one OCR pass gives the boxes and the words
        return [[box for box, _ in found] for found in text_reads(batch, detector, name)]

    def detect(b: Batch) -> np.ndarray:
        found = np.empty(len(b), dtype=object)
        for i, image in enumerate(b.images):
            found[i] = detector(np.asarray(image))
        return found

    return list(batch.cached(f"text_boxes:{name}", detect))


def masked_embeddings(batch: Batch, scorer: Scorer, detector: Any, name: str) -> np.ndarray:
    """Embeddings of the images with their detected text masked (T-MARS)."""

    def embed(b: Batch) -> np.ndarray:
        boxes = text_boxes(b, detector, name)
        return scorer.images([mask_text(image, found) for image, found in zip(b.images, boxes, strict=True)])

    return batch.cached(f"masked_embedding:{name}", embed)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", a, b).astype(np.float64)


def content_words(text: str) -> set[str]:
    """Lower-cased alphanumeric words of 3+ characters that are not stop words."""
    return {w for w in words(text) if len(w) >= 3 and w not in STOP_WORDS}


def caption_overlap(caption: str, read: list[str]) -> float:
    """Text-spotting overlap (Radenovic et al. 2023; T-MARS, Maini et al. 2023): the fraction of the
    caption's content words that OCR reads in the image; 0 for a caption without content words."""
    wanted = content_words(caption)
    seen = set(words(" ".join(read)))
    return len(wanted & seen) / len(wanted) if wanted else 0.0


def check_detector(cfg: Any) -> None:
    """The detector's files (and for OCR its extra), before any shard is read."""
    if cfg.kind == "ocr":
        check_ocr(cfg)
    elif cfg.kind == "east":
        check_east(cfg)


OCR_TEXT_CHARS = 200  # OCR'd text kept per sample in the output JSON


# --------------------------------------------------------------------------------------------- steps
class ScoreRuleStep(Step):
    """Keeps the samples whose ``score`` column is at or above ``cfg.threshold`` (decided per sample, so
    local) or among the ``cfg.top_fraction`` best of all samples reaching the step (global; ties: the
    earlier sample first)."""

    score: ClassVar[str]
    reason: ClassVar[str]

    @property
    def local(self) -> bool:  # type: ignore[override]
        return self.cfg.top_fraction is None  # a threshold decides each sample alone; a fraction cannot

    def apply(self, table: Table) -> Decision:
        score = table[self.score]
        if self.cfg.threshold is not None:
            low = score < self.cfg.threshold
        else:
            keep = int(np.ceil(self.cfg.top_fraction * len(table)))
            order = np.argsort(-score, kind="stable")  # ties: earlier sample first
            low = np.ones(len(table), dtype=bool)
            low[order[:keep]] = False
        decision = Decision.from_reasons(
            first_reason(len(table), [(low, self.reason)]), **{self.score: score}
        )
        kept = score[~low]
        decision.info["cutoff"] = float(kept.min()) if len(kept) else None
        return decision


class ClipScoreStep(ScoreRuleStep):
    """CLIPScore as the cosine of image and caption embeddings (Hessel et al. 2021, without the 2.5 x
    clip-at-0 rescaling, as LAION and DataComp threshold it)."""

    kind = "clip_score"
    score = "clip_score"
    reason = "low_clip_score"

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        if cfg.mask_text:
            check_detector(cfg.detector)  # the OCR extra and weights, before any shard is read

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        scorer = self.resources.scorer()
        texts = text_embeddings(batch, scorer)
        if self.cfg.mask_text:
            detector = self.resources.detector(self.cfg.detector)
            images = masked_embeddings(batch, scorer, detector, self.cfg.detector.model_dump_json())
        else:
            images = image_embeddings(batch, scorer)
        return {"clip_score": cosine(images, texts)}


class TextSpottingStep(Step):
    """Text spotting: the text-area fraction from the detector; with a scoring model, the CLIPScore drop
    when the text is masked, which is high when the caption's words are what the image shows as rendered
    text (the T-MARS observation); with the OCR detector, the share of the caption's words read in the
    image (captions that merely transcribe the rendered text)."""

    kind = "text_spotting"

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        check_detector(cfg.detector)

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        detector = self.resources.detector(self.cfg.detector)
        boxes = text_boxes(batch, detector, self.cfg.detector.model_dump_json())
        areas = [
            text_area(found, image.width, image.height)
            for found, image in zip(boxes, batch.images, strict=True)
        ]
        columns = {"text_area": np.array(areas, dtype=np.float64)}
        if isinstance(detector, OcrReader):
            reads = text_reads(batch, detector, self.cfg.detector.model_dump_json())
            texts = [[text for _, text in found] for found in reads]
            overlap = [caption_overlap(c, t) for c, t in zip(batch.captions, texts, strict=True)]
            columns["text_overlap"] = np.array(overlap, dtype=np.float64)
            columns["ocr_text"] = np.array([" ".join(t)[:OCR_TEXT_CHARS] for t in texts], dtype=str)
        if self.cfg.max_score_drop is not None:
            scorer = self.resources.scorer()
            texts = text_embeddings(batch, scorer)
            plain = cosine(image_embeddings(batch, scorer), texts)
            masked = cosine(
                masked_embeddings(batch, scorer, detector, self.cfg.detector.model_dump_json()), texts
            )
            columns["score_drop"] = plain - masked
        return columns

    def apply(self, table: Table) -> Decision:
        area = table["text_area"]
        rules = []
        if self.cfg.max_text_area is not None:
            rules.append((area > self.cfg.max_text_area, "text_dominated"))
        scores = {"text_area": area}
        if self.cfg.max_score_drop is not None:
            rules.append((table["score_drop"] > self.cfg.max_score_drop, "caption_in_rendered_text"))
            scores["score_drop"] = table["score_drop"]
        if "text_overlap" in table.columns:
            scores["text_overlap"] = table["text_overlap"]
        if self.cfg.max_caption_overlap is not None:  # the most specific reason goes first
            rules.insert(
                0, (table["text_overlap"] > self.cfg.max_caption_overlap, "caption_is_rendered_text")
            )
        decision = Decision.from_reasons(first_reason(len(table), rules), **scores)
        if "ocr_text" in table.columns:
            decision.texts["ocr_text"] = table["ocr_text"]
        return decision
