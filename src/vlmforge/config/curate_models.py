"""The models a curation runs: the scoring model (CLIPScore, embeddings), text detectors (text spotting)
and captioners (recaptioning, caption agreement) — sections of the `vlmforge curate` recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from vlmforge.config.base import Section


# ------------------------------------------------------------------------------------ scoring model
class RunScorer(Section):
    """The image and text towers of a vlmforge training run (its final checkpoint by default)."""

    kind: Literal["run"] = "run"
    path: Path = Field(description="Run directory written by `vlmforge pretrain`.")
    checkpoint: Path | None = Field(None, description="Checkpoint file (default: the run's final one).")


class OpenClipScorer(Section):
    """An open_clip architecture with its weights: a local file or folder, or one of open_clip's tags
    (from the local cache when HF_HUB_OFFLINE=1: nothing is downloaded then)."""

    kind: Literal["open_clip"] = "open_clip"
    arch: str = Field(description="open_clip model name, e.g. ViT-B-32, or the stem of `config`.")
    checkpoint: str = Field(
        description="Weights: a local state dict (.pt/.bin/.safetensors, loaded weights-only), an open_clip "
        "local-dir folder, or an open_clip tag of `arch` such as openai or laion2b_s34b_b79k."
    )
    quick_gelu: bool | None = Field(
        None, description="QuickGELU activations; default: as the open_clip tag says (OpenAI's need it)."
    )
    config: Path | None = Field(
        None, description="A model config JSON in open_clip's format, for architectures it does not ship."
    )


ScoringModel = Annotated[RunScorer | OpenClipScorer, Field(discriminator="kind")]


class MserDetector(Section):
    """OpenCV MSER character candidates (stroke-width filtered) grouped into text lines."""

    kind: Literal["mser"] = "mser"
    min_chars: int = Field(3, ge=1, description="Characters a line needs to count as text.")
    max_side: int = Field(512, ge=32, description="Images are shrunk to this longest side before detection.")


class EastDetector(Section):
    """OpenCV's EAST text detector (cv2.dnn) from a local frozen model file."""

    kind: Literal["east"] = "east"
    model: Path = Field(description="frozen_east_text_detection.pb (downloaded by you; not bundled).")
    confidence: float = Field(0.5, gt=0, lt=1, description="Minimum box confidence.")
    nms: float = Field(0.4, gt=0, lt=1, description="Non-maximum suppression IoU.")
    input_size: int = Field(320, ge=32, multiple_of=32, description="Side the image is resized to.")


class OcrDetector(Section):
    """EasyOCR (CRAFT boxes + a CRNN recogniser) that also reads the words (`pip install 'vlmforge[ocr]'`);
    CUDA when present, else CPU."""

    kind: Literal["ocr"] = "ocr"
    min_confidence: float = Field(0.3, ge=0, lt=1, description="Drop words read with lower confidence.")
    languages: list[str] = Field(
        ["en"], min_length=1, description="EasyOCR language codes; only English weights ship offline."
    )
    model_dir: Path | None = Field(
        None, description="Folder with EasyOCR weights (default: the bundled English ones)."
    )
    max_side: int = Field(640, ge=32, description="Images are shrunk to this longest side before reading.")


TextDetector = Annotated[MserDetector | EastDetector | OcrDetector, Field(discriminator="kind")]


# ----------------------------------------------------------------------------------------- captioners
class PythonCaptioner(Section):
    """A captioner built by a Python factory: ``target`` is 'package.module:function'; the function
    takes `options` and returns a callable (images, captions) -> new captions."""

    kind: Literal["python"] = "python"
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="'module:factory'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the factory.")


class RunCaptioner(Section):
    """Captions from a vlmforge run: a CoCa pretrain run (its decoder, the project's greedy or beam
    search) or a LLaVA finetune run (its answer to `prompt`, transformers' generate). Images are
    preprocessed as the run trained (image size, mean, std); decoding is deterministic."""

    kind: Literal["run"] = "run"
    run: Path = Field(
        description="Run directory of `vlmforge pretrain` (CoCa) or `vlmforge finetune` (LLaVA)."
    )
    checkpoint: Path | None = Field(
        None, description="Weights file (default: the run's final checkpoint / last stage's weights)."
    )
    method: Literal["greedy", "beam"] = Field("greedy", description="Decoding: greedy or beam search.")
    beam_size: int = Field(3, ge=1, description="Hypotheses kept per image (method: beam only).")
    max_length: int | None = Field(
        None,
        ge=1,
        description="Most tokens generated per caption (default: CoCa, its context length - 1, also the "
        "limit; LLaVA, its max_text_tokens).",
    )
    repetition_penalty: float = Field(
        1.0, ge=1.0, description="Divide the logits of tokens already generated by this (CTRL; 1: off)."
    )
    no_repeat_ngram: int = Field(0, ge=0, description="Never generate an n-gram twice in a caption (0: off).")
    length_penalty: float = Field(
        1.0, description="Rank beam hypotheses by log-prob / length^this (method: beam only)."
    )
    prompt: str = Field("Describe the image.", min_length=1, description="What a LLaVA run is asked.")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="'cpu', 'cuda' or 'cuda:N'.")


Captioner = Annotated[PythonCaptioner | RunCaptioner, Field(discriminator="kind")]
