"""Recipe sections for training data: image-caption sources (``data:`` of pretrain), conversations
(finetune stages) and preference pairs (align), each a tagged union chosen by ``kind:``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.text_images import OcrPrompt, TextImagesFields

# --------------------------------------------------------------------------------------------- data
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class DataBase(Section):
    batch_size: int = Field(128, ge=1, description="Global batch: samples per optimizer step, all devices.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per device.")
    image_size: int = Field(224, ge=8, le=1024, description="Side of the square images fed to the model.")
    mean: tuple[float, float, float] = Field(OPENAI_MEAN, description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field(OPENAI_STD, description="Per-channel normalisation std.")
    max_bad_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Stop when the samples dropped (unreadable, unpaired, bad caption, too small) exceed "
        "this fraction of the source: those rejected when it is opened plus those dropped in one epoch.",
    )
    images_per_caption: int = Field(
        1,
        ge=1,
        description="Batches built of runs of this many images sharing a caption id (a folder's caption_id "
        "column, else the same captions), positives of each other under model.multi_positive (StableRep).",
    )


class DigitsData(DataBase):
    """sklearn's 1,797 real 8x8 handwritten digits with templated captions; ships offline."""

    kind: Literal["digits"] = "digits"
    image_size: int = Field(16, ge=8, le=1024, description="Digits are upscaled from 8x8 to this side.")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )
    templates: list[str] | None = Field(
        None, description="Caption templates with one '{}' for the class name; default: 6 built-in ones."
    )
    classes: list[int] | None = Field(
        None,
        description="Digits kept (default: all ten): e.g. captions of half the classes, leaving the rest "
        "unseen for zero-shot or few-shot tests.",
    )

    @field_validator("classes")
    @classmethod
    def _distinct_digits(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (
            not value or len(set(value)) != len(value) or not set(value) <= set(range(10))
        ):
            raise ValueError(f"classes {value} must be distinct digits 0..9")
        return value

    @field_validator("templates")
    @classmethod
    def _one_placeholder(cls, value: list[str] | None) -> list[str] | None:
        for template in value or []:
            if template.count("{}") != 1:
                raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
        return value


class FolderFields(Section):
    """A folder of images and a captions file naming them: the fields training's folder source and
    curation's folder input share."""

    path: Path = Field(description="Folder holding the images and the captions file.")
    captions: str = Field(
        "captions.jsonl",
        description="Captions file inside `path`: .jsonl or .csv with image, caption[, label, caption_id].",
    )
    allow_outside: bool = Field(
        False,
        description="Read images the captions file names outside `path` (an absolute path, '..', a "
        "symlink leading out). Off: such rows are dropped and counted as unsafe_path, never opened.",
    )


class FolderData(DataBase, FolderFields):
    """A folder of images plus a captions file (JSON lines or CSV: image, caption[, label])."""

    kind: Literal["folder"] = "folder"
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    classnames: list[str] | None = Field(
        None,
        description="Class names for zero-shot eval, indexed by integer labels (default: sorted labels).",
    )


class ShardPatterns(Section):
    """Tar shard paths or patterns: the field training's webdataset source and curation's webdataset input
    share (``data.shards.resolve_shards`` expands them)."""

    shards: list[str] = Field(
        min_length=1,
        description="Uncompressed .tar shard paths or patterns: brace ranges ('shards/{00000..00127}.tar') "
        "and globs ('shards/*.tar'); one string or a list.",
    )

    @field_validator("shards", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class WebDatasetData(DataBase, ShardPatterns):
    """WebDataset tar shards in img2dataset layout: ``key.jpg|png|webp`` + ``key.txt`` (+ ``key.json``)."""

    kind: Literal["webdataset"] = "webdataset"
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    min_image_size: int = Field(
        8, ge=1, description="Images whose shorter side is below this many pixels are dropped (too_small)."
    )


class FfcvData(DataBase):
    """An FFCV ``.beton`` written by vlmforge (``vlmforge curate ... --write ffcv``): images stored at one
    fixed side, decoded by FFCV's compiled pipelines. Needs the `ffcv` extra and its system libraries."""

    kind: Literal["ffcv"] = "ffcv"
    path: Path = Field(description="The .beton file (its NAME.beton.json must sit next to it).")
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    classnames: list[str] | None = Field(
        None, description="Class names for zero-shot eval (default: those stored when it was written)."
    )


# ----------------------------------------------------------------------------------------- finetune
class ConversationDataBase(Section):
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per device.")
    mean: tuple[float, float, float] = Field(OPENAI_MEAN, description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field(OPENAI_STD, description="Per-channel normalisation std.")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction held out for evaluation.")
    num_samples: int | None = Field(
        None, ge=1, description="Conversations in the data, for `vlmforge plan` before the data is at hand."
    )
    mean_text_tokens: int | None = Field(
        None,
        ge=1,
        description="Mean text tokens per conversation, for `vlmforge plan` (default: max_text_tokens).",
    )


class LlavaJsonData(ConversationDataBase):
    """LLaVA's conversation JSON: [{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}];
    images (resized to the vision encoder's side) are read from `image_folder`."""

    kind: Literal["llava-json"] = "llava-json"
    path: Path = Field(description="The conversation JSON file.")
    image_folder: Path | None = Field(None, description="Folder of the images (default: the JSON's folder).")
    ocr_prompt: OcrPrompt | None = Field(
        None,
        description="Words of each image in its first question (Lumos); with words: data, an entry's "
        "'ocr' list of {text, box: [x0, y0, x1, y1] in pixels} gives them.",
    )


class DigitsConversations(ConversationDataBase):
    """sklearn's digits as conversations, offline: captions ("a handwritten seven") for stage 1, questions
    ("What digit is this?" -> "seven") for stage 2. Images are upscaled to the vision encoder's side."""

    kind: Literal["digits-conversations"] = "digits-conversations"
    task: Literal["caption", "vqa"] = Field("vqa", description="Captions or question-answer pairs.")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )


REFER_QUESTION = "Where is {}?"


class ReferringFields(ConversationDataBase):
    """Referring-expression conversations: the question, and the Kosmos-2 grid boxes are answered on."""

    prompt: str = Field(REFER_QUESTION, description="Question with '{}' for the expression.")
    location_bins: int = Field(
        8,
        ge=2,
        le=64,
        description="Side P of the grid boxes are quantised to (Kosmos-2: 32): answers are "
        "<box><loc_a><loc_b></box> with a, b the cells of the top-left and bottom-right corners, and the "
        "P*P location tokens are added to the vocabulary.",
    )

    @field_validator("prompt")
    @classmethod
    def _one_slot(cls, prompt: str) -> str:
        if prompt.count("{}") != 1:
            raise ValueError("the prompt needs exactly one '{}', where the expression goes")
        return prompt


class ReferringJsonData(ReferringFields):
    """RefCOCO-style referring expressions: a JSON list of {image, expression, box: [x, y, w, h]} (pixels,
    COCO's layout, as the refcoco benchmark reads); images are padded to a square, then resized."""

    kind: Literal["refcoco-json"] = "refcoco-json"
    path: Path = Field(description="The JSON list of {image, expression, box}.")
    image_folder: Path | None = Field(None, description="Folder of the images (default: the JSON's folder).")


class ReferringCanvases(ReferringFields):
    """Offline referring expressions: digits and coloured shapes pasted at random on a black canvas,
    asked for by expressions such as "the seven on the left" or "the red square above the circle"."""

    kind: Literal["referring-canvases"] = "referring-canvases"
    count: int = Field(2000, ge=10, description="Canvases (one question each).")
    canvas_size: int = Field(32, ge=16, le=512, description="Canvas side in pixels, before resizing.")
    min_object: int = Field(8, ge=4, description="Smallest object side in pixels.")
    max_object: int = Field(12, ge=4, description="Largest object side in pixels.")
    max_objects: int = Field(3, ge=2, le=6, description="Most objects on one canvas (at least 2).")
    objects: Literal["digits", "shapes", "both"] = Field("both", description="What is pasted.")
    seed: Seed = Field(0, description="Seed of the layouts and expressions (not the run's seed).")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction of canvases (fixed split, independent of seed)."
    )

    @model_validator(mode="after")
    def _objects_fit(self) -> ReferringCanvases:
        if self.min_object > self.max_object:
            raise ValueError(f"min_object {self.min_object} is larger than max_object {self.max_object}")
        if self.max_object * 2 + 1 > self.canvas_size:
            raise ValueError(
                f"two objects of side {self.max_object} do not fit on a canvas of side {self.canvas_size}"
            )
        return self


class DigitCanvases(ConversationDataBase):
    """sklearn's digits drawn small at random places on a larger black canvas, offline, as captions or
    questions ("What digit is this?" -> "seven"): detail that a low-resolution read loses."""

    kind: Literal["digit-canvases"] = "digit-canvases"
    task: Literal["caption", "vqa"] = Field("vqa", description="Captions or question-answer pairs.")
    canvas_size: int = Field(48, ge=8, le=1024, description="Canvas side in pixels, before resizing.")
    digit_size: int = Field(8, ge=4, description="Side of the drawn digit in pixels (sklearn's are 8).")
    seed: Seed = Field(0, description="Seed of the digits' places (not the run's seed).")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )

    @model_validator(mode="after")
    def _digit_fits(self) -> DigitCanvases:
        if self.digit_size > self.canvas_size:
            raise ValueError(f"digit_size {self.digit_size} is larger than canvas_size {self.canvas_size}")
        return self


class InContextFields(ConversationDataBase):
    """Multimodal in-context samples (Otter / MIMIC-IT, Li et al. 2023): instruction-image-answer examples
    as context, then a query instruction and image; one ``<image>`` per example, in order."""

    answer_loss: Literal["query", "all"] = Field(
        "query",
        description="Which answers carry the loss: the query's only (Otter), or every context answer too.",
    )


class InContextJsonData(InContextFields):
    """A JSON list of {"id", "images": [file, ...], "context": [{"instruction", "answer"}, ...],
    "query": {"instruction", "answer"}}: one image per context example then the query's
    (len(images) = len(context) + 1); an instruction may hold ``<image>`` where its image goes (default:
    before the instruction). Images are read from ``image_folder``."""

    kind: Literal["in-context-json"] = "in-context-json"
    path: Path = Field(description="The JSON file of in-context samples.")
    image_folder: Path | None = Field(None, description="Folder of the images (default: the JSON's folder).")
    images_per_sample: int = Field(
        4, ge=1, le=64, description="Images per sample `vlmforge plan` counts (context examples + 1)."
    )


class DigitsInContext(InContextFields):
    """Offline in-context digits: "<image> What is this? this is a seven. <image> What is this? ..."
    Training samples have 0 to ``shots`` context examples; held-out ones have ``shots`` (k-shot evaluation
    keeps the last k). Context and query images never cross the fixed train / held-out split."""

    kind: Literal["digits-in-context"] = "digits-in-context"
    shots: int = Field(4, ge=1, le=16, description="Most context examples per sample.")
    count: int = Field(2000, ge=10, description="Samples in all, before the held-out split.")
    names: Literal["digit", "nonce"] = Field(
        "digit",
        description="Answers: the digit's name, or a made-up word bound to the digit within one sample "
        "only (Frozen's fast binding, Tsimpoukelli et al. 2021): then only the context tells the answer.",
    )
    seed: Seed = Field(0, description="Seed of the samples' draws (not the run's seed).")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction of digits and samples (fixed, independent of seed)."
    )

    @property
    def images_per_sample(self) -> int:
        return self.shots + 1


InContextSource = InContextJsonData | DigitsInContext


class TextImagesConversations(TextImagesFields, ConversationDataBase):
    """Offline text-rich images: sign words and numbers drawn small on a canvas, asked about ("What word
    is written?", "What number is on the sign?", "What word is at the top?"); every word's box is kept."""

    kind: Literal["text-images"] = "text-images"


ConversationSource = Annotated[
    LlavaJsonData
    | DigitsConversations
    | ReferringJsonData
    | ReferringCanvases
    | DigitCanvases
    | InContextJsonData
    | DigitsInContext
    | TextImagesConversations,
    Field(discriminator="kind"),
]


class BoxCanvases(DataBase):
    """The referring canvases as image-caption pairs for pretraining: the caption is the expression, and
    each sample carries its object's box (normalised x1, y1, x2, y2) for ``model.box_head``."""

    kind: Literal["box-canvases"] = "box-canvases"
    image_size: int = Field(32, ge=8, le=1024, description="Canvases are resized to this side.")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    canvases: ReferringCanvases = Field(
        default_factory=ReferringCanvases,
        description="How the canvases are drawn (count, canvas_size, objects, seed, val_fraction, ...).",
    )

    @property
    def val_fraction(self) -> float:
        """The held-out fraction (the held-out canvases draw their digits from images training never sees)."""
        return self.canvases.val_fraction


DataSource = Annotated[
    DigitsData | FolderData | WebDatasetData | FfcvData | BoxCanvases, Field(discriminator="kind")
]


# -------------------------------------------------------------------------------------------- align
class PreferenceDataBase(ConversationDataBase):
    max_bad_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Stop when the pairs dropped (missing or unreadable image, empty answer) exceed this "
        "fraction of the entries read.",
    )


class PreferenceJsonData(PreferenceDataBase):
    """Preference pairs as JSON: [{"id", "image", "prompt", "chosen", "rejected"}]; images (resized to the
    vision encoder's side) are read from `image_folder`."""

    kind: Literal["preference-json"] = "preference-json"
    path: Path = Field(description="The preference JSON file.")
    image_folder: Path | None = Field(None, description="Folder of the images (default: the JSON's folder).")


class DigitsPreferences(PreferenceDataBase):
    """sklearn's digits as preference pairs, offline: "What digit is this?" -> the right digit word
    (chosen) or `rejected` wrong ones drawn with `seed` (rejected), one pair each."""

    kind: Literal["digits-preferences"] = "digits-preferences"
    seed: Seed = Field(0, description="Seed of the wrong answers (the same pairs for every run).")
    rejected: int = Field(
        1,
        ge=1,
        le=9,
        description="Wrong answers per image, each its own pair with the same chosen answer (distinct, "
        "seeded; 9: every wrong digit). With one, a reward model learns to beat that one wrong digit, not "
        "every wrong digit a policy may sample.",
    )
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )


PreferenceSource = Annotated[PreferenceJsonData | DigitsPreferences, Field(discriminator="kind")]
