"""Recipe sections of the LLaVA-style benchmarks ``vlmforge eval`` reads from their public file layouts at a
local path: VQAv2, POPE, MMBench, ScienceQA-IMG and RefCOCO-style referring boxes. ``max_samples`` (of
``BenchmarkTask``) evaluates a fixed random subset: of each POPE file's questions, of MMBench's questions
(all rotations of each), of the others' items."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from vlmforge.config.benchmarks import BenchmarkTask

SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's short-answer prompt
OPTION_LETTER = (
    "Answer with the option's letter from the given choices directly."  # LLaVA-1.5's choice prompt
)
REFER_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}"


class VqaV2Task(BenchmarkTask):
    """VQAv2 (Goyal et al. 2017) from its official files: scored with the VQA accuracy of the official
    evaluation script when annotations are given, else (test-dev) given as the submission list."""

    kind: Literal["vqav2"] = "vqav2"
    questions: Path = Field(
        description="Official questions JSON (v2_OpenEnded_mscoco_<subtype>_questions.json)."
    )
    annotations: Path | None = Field(
        None,
        description="Official annotations JSON (v2_mscoco_<subtype>_annotations.json); none for test-dev: "
        "the answers are then written to eval/<name>.submission.json, a list in the evaluation server's "
        "results format [{question_id, answer}].",
    )
    images: Path = Field(
        description="COCO image folder holding COCO_<data_subtype>_<image_id:012d>.jpg (e.g. val2014/)."
    )
    prompt_suffix: str = Field(SHORT_ANSWER, description="Line appended to every question.")
    max_new_tokens: int = Field(16, ge=1, description="Longest generated answer, in tokens.")


class PopeTask(BenchmarkTask):
    """POPE object hallucination (Li et al. 2023): yes/no questions about objects, one file per sampling
    setting (adversarial, popular, random); metrics per file and their mean."""

    kind: Literal["pope"] = "pope"
    files: list[Path] = Field(
        min_length=1,
        description="POPE question files, JSON lines {question_id, image, text, label} "
        "(e.g. coco_pope_adversarial.json).",
    )
    images: Path = Field(description="Folder the files' 'image' names are relative to (COCO val2014/).")
    prompt_suffix: str = Field(SHORT_ANSWER, description="Line appended to every question.")
    max_new_tokens: int = Field(8, ge=1, description="Longest generated answer, in tokens.")

    @field_validator("files")
    @classmethod
    def _distinct_names(cls, files: list[Path]) -> list[Path]:
        stems = [path.stem for path in files]
        if len(set(stems)) < len(stems):
            raise ValueError("each file is reported under its name: give files with distinct names")
        return files


class MmbenchTask(BenchmarkTask):
    """MMBench (Liu et al. 2023) from its TSV (index, question, hint, A-D, answer, category, image as
    base64): multiple-choice accuracy, per category, and optionally CircularEval."""

    kind: Literal["mmbench"] = "mmbench"
    path: Path = Field(description="MMBench TSV file (e.g. MMBench_DEV_EN.tsv).")
    circular: bool = Field(
        False,
        description="CircularEval: ask each question once per rotation of its options; a question counts "
        "only when every rotation is answered right.",
    )
    prompt_suffix: str = Field(OPTION_LETTER, description="Line appended to every question.")
    max_new_tokens: int = Field(8, ge=1, description="Longest generated answer, in tokens.")


class ScienceQaTask(BenchmarkTask):
    """ScienceQA-IMG (Lu et al. 2022): the questions with an image, from problems.json; accuracy overall and
    per subject."""

    kind: Literal["scienceqa"] = "scienceqa"
    problems: Path = Field(description="ScienceQA problems.json ({pid: {question, choices, answer, ...}}).")
    splits: Path | None = Field(
        None, description="pid_splits.json ({split: [pid, ...]}); default: each problem's own 'split'."
    )
    split: str = Field("test", min_length=1, description="Which split to evaluate.")
    images: Path = Field(description="Image root holding <split>/<pid>/image.png.")
    prompt_suffix: str = Field(OPTION_LETTER, description="Line appended to every question.")
    max_new_tokens: int = Field(8, ge=1, description="Longest generated answer, in tokens.")


class RefCocoTask(BenchmarkTask):
    """Referring expression grounding, RefCOCO-style (Kazemzadeh et al. 2014; Yu et al. 2016): the model
    answers the box [x1, y1, x2, y2] of the region an expression describes, normalised to 0-1 over the
    image padded to a square (LLaVA-1.5's layout); accuracy@threshold IoU and mean IoU."""

    kind: Literal["refcoco"] = "refcoco"
    path: Path = Field(
        description="JSON list of {image, expression, box: [x, y, w, h]} with the box in pixels."
    )
    images: Path | None = Field(
        None, description="Folder the 'image' names are relative to (default: path's)."
    )
    prompt: str = Field(REFER_PROMPT, description="Question with '{}' for the expression.")
    threshold: float = Field(0.5, gt=0, le=1, description="IoU a predicted box needs to count as correct.")
    max_new_tokens: int = Field(32, ge=1, description="Longest generated answer, in tokens.")

    @field_validator("prompt")
    @classmethod
    def _one_slot(cls, prompt: str) -> str:
        if prompt.count("{}") != 1:
            raise ValueError("the prompt needs exactly one '{}', where the expression goes")
        return prompt


LLAVA_BENCHMARK_KINDS = ("vqav2", "pope", "mmbench", "scienceqa", "refcoco")
