"""Recipe sections for evaluation tasks (``eval:`` of a training recipe, ``tasks:`` of an eval recipe), and
the check that a model's family can run them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.benchmarks import (
    AroTask,
    BenchmarkTask,
    ImageNetTask,
    KarpathyCaptioningTask,
    KarpathyRetrievalTask,
    SugarCrepeTask,
)
from vlmforge.config.benchmarks_llava import (
    LLAVA_BENCHMARK_KINDS,
    MmbenchTask,
    PopeTask,
    RefCocoTask,
    ScienceQaTask,
    VqaV2Task,
)
from vlmforge.config.decoding import CaptionDecoding
from vlmforge.config.llava import LlavaModel
from vlmforge.config.models import PERTURBATION_KINDS, ModelConfig, Perturbation


# --------------------------------------------------------------------------------------------- eval
class ZeroShotTask(Section):
    """Zero-shot classification: class embeddings averaged over prompt templates (CLIP §3.1.4)."""

    kind: Literal["zeroshot"] = "zeroshot"
    templates: list[str] | None = Field(None, description="Prompt templates with '{}'; default: the data's.")


class RetrievalTask(Section):
    """Image-to-text and text-to-image retrieval, recall@k. Items scoring exactly alike (repeated
    captions) count as their expected value over a random order of the tie, whatever ks are asked."""

    kind: Literal["retrieval"] = "retrieval"
    ks: list[int] = Field([1, 5, 10], description="Recall cut-offs.")
    match: Literal["auto", "pair", "label"] = Field(
        "auto",
        description="'pair': the paired caption is the hit; 'label': any item of the same class is "
        "(for data where many images share a caption); 'auto': label when the data has labels.",
    )


class CompositionalTask(Section):
    """Word order and attribute binding, ARO / SugarCrepe-style (Yuksekgonul et al. 2023; Hsieh et al. 2023):
    each image scores its caption against reordered copies of it; accuracy = the caption scores highest."""

    kind: Literal["compositional"] = "compositional"
    perturbations: list[Perturbation] = Field(
        default_factory=lambda: list(PERTURBATION_KINDS),
        min_length=1,
        description="Reordered copies per caption, one per perturbation that applies to it.",
    )
    attributes: list[str] | None = Field(
        None, description="Attribute words for swap_attributes (default: built-in colours, sizes, materials)."
    )
    seed: Seed = Field(0, description="Seed of the perturbations (the same probes for every model).")


class VqaTask(Section):
    """Visual question answering: greedy answers to held-out questions, one reference answer each.
    ``accuracy`` is VQA accuracy (Antol et al. 2015, the official VQA v2 answer normalisation: number words as
    digits, articles and punctuation dropped, contractions spelled out), 1 for an answer equal to the
    reference once both are normalised; ``exact_match`` only lower-cases and strips punctuation."""

    kind: Literal["vqa"] = "vqa"
    max_new_tokens: int = Field(16, ge=1, description="Longest generated answer, in tokens.")
    max_samples: int | None = Field(None, ge=1, description="Evaluate at most this many conversations.")


class CaptioningTask(CaptionDecoding):
    """Caption each image with the model's decoder and score the captions against all of the image's
    captions as the COCO caption evaluation (pycocoevalcap) does: its PTB tokenisation, Bleu_1..Bleu_4,
    METEOR (only with the captions extra and Java installed), ROUGE_L and CIDEr (CIDEr-D); SPICE is not
    computed (it downloads models). Every image's caption goes to eval/captioning.predictions.jsonl.
    Generative models only."""

    kind: Literal["captioning"] = "captioning"


class LinearProbeTask(Section):
    """Logistic regression on frozen, standardised image features: fit on the run's training split,
    scored on the evaluation data (the linear-probe protocol of CLIP §3.2 and MAE §4)."""

    kind: Literal["linear_probe"] = "linear_probe"
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength of the logistic regression.")
    max_iter: int = Field(1000, ge=1, description="Solver iterations (L-BFGS).")
    max_train_samples: int = Field(
        10000, ge=1, description="Fit on at most this many training samples (a fixed random subset)."
    )


class PreferenceTask(Section):
    """Held-out preference pairs of an align run: reward accuracy (the fraction of pairs whose implicit DPO
    reward, beta * log(policy / reference), is higher for the chosen answer), the mean reward margin, and
    how often the policy and the reference alone give the chosen answer the higher likelihood."""

    kind: Literal["preference"] = "preference"
    max_samples: int | None = Field(None, ge=1, description="Evaluate at most this many pairs.")


class GroundingTask(Section):
    """Referring-expression grounding on held-out referring data: each predicted box scored by its IoU
    with the true box, accuracy@threshold and mean IoU (the RefCOCO protocol), beside the centre-box
    baseline (a box of the training boxes' mean size at the image centre); ``grounding.boxes.png`` draws
    the first ``shown`` images with both boxes."""

    kind: Literal["grounding"] = "grounding"
    threshold: float = Field(0.5, gt=0, le=1, description="IoU a predicted box needs to count as correct.")
    max_new_tokens: int = Field(8, ge=1, description="Longest generated answer, in tokens (LLaVA).")
    max_samples: int | None = Field(None, ge=1, description="Evaluate at most this many expressions.")
    shown: int = Field(16, ge=0, le=64, description="Images drawn with their boxes (0: no picture).")


class InContextTask(Section):
    """k-shot accuracy of in-context samples (Otter / MIMIC-IT, Li et al. 2023; the k-shot protocol of
    Flamingo, Alayrac et al. 2022): each held-out query answered greedily after the last k of its context
    examples, scored by exact match (lower-cased, punctuation removed), for every k in ``shots``; the
    accuracies go to in_context.json and in_context.shots.png."""

    kind: Literal["in_context"] = "in_context"
    shots: list[int] = Field([0, 1, 2, 4], min_length=1, description="Context examples k to score.")
    max_new_tokens: int = Field(4, ge=1, description="Longest generated answer, in tokens.")
    max_samples: int | None = Field(None, ge=1, description="Evaluate at most this many queries.")

    @field_validator("shots")
    @classmethod
    def _distinct_counts(cls, shots: list[int]) -> list[int]:
        if any(k < 0 for k in shots) or len(set(shots)) != len(shots):
            raise ValueError(f"shots must be distinct counts >= 0, got {shots}")
        return sorted(shots)


EvalTask = Annotated[
    ZeroShotTask
    | RetrievalTask
    | CompositionalTask
    | CaptioningTask
    | LinearProbeTask
    | VqaTask
    | PreferenceTask
    | ImageNetTask
    | KarpathyRetrievalTask
    | KarpathyCaptioningTask
    | SugarCrepeTask
    | AroTask
    | VqaV2Task
    | PopeTask
    | MmbenchTask
    | ScienceQaTask
    | RefCocoTask
    | GroundingTask
    | InContextTask,
    Field(discriminator="kind"),
]


def default_pretrain_tasks() -> list[ZeroShotTask | RetrievalTask | LinearProbeTask]:
    return [ZeroShotTask(), RetrievalTask()]


def default_tasks_for(supported: tuple[str, ...]) -> list[ZeroShotTask | RetrievalTask | LinearProbeTask]:
    """The default tasks a model supports; a linear probe for models without a text embedding."""
    return [task for task in default_pretrain_tasks() if task.kind in supported] or [LinearProbeTask()]


# The eval task kinds each model kind supports: models with an image and a text embedding rank captions;
# CoCa also captions; a masked model without a text embedding is probed; LLaVA answers questions.
# Benchmarks (config.benchmarks) are tasks too: most rank captions, Karpathy captioning captions.
EMBEDDING_TASKS = ("zeroshot", "retrieval", "compositional", "linear_probe")
EMBEDDING_BENCHMARKS = ("imagenet", "karpathy_retrieval", "sugarcrepe", "aro")
COCA_TASKS = (*EMBEDDING_TASKS[:3], "captioning", "linear_probe")
EVAL_TASKS: dict[str, tuple[str, ...]] = {
    "clip": (*EMBEDDING_TASKS, *EMBEDDING_BENCHMARKS, "grounding"),
    "siglip": (*EMBEDDING_TASKS, *EMBEDDING_BENCHMARKS),
    "coca": (*COCA_TASKS, *EMBEDDING_BENCHMARKS, "karpathy_captioning"),
    "masked": ("linear_probe",),
    "flava": (*EMBEDDING_TASKS, *EMBEDDING_BENCHMARKS),
    "llava": ("vqa", "preference", *LLAVA_BENCHMARK_KINDS, "grounding", "in_context"),
}


def eval_tasks_for(model: ModelConfig | LlavaModel) -> tuple[str, ...]:
    return EVAL_TASKS[model.kind]


def check_eval_tasks(model: ModelConfig | LlavaModel, tasks: list[EvalTask]) -> None:
    """Every task must be one the model's family can run, and no benchmark: those read their own files
    and run with ``vlmforge eval`` on the trained run."""
    supported = eval_tasks_for(model)
    for task in tasks:
        if isinstance(task, BenchmarkTask):
            raise ValueError(
                f"eval task {task.kind!r} is a benchmark: evaluate the trained run on it with vlmforge eval "
                "(an eval recipe's tasks), not during training"
            )
        if task.kind not in supported:
            raise ValueError(
                f"eval task {task.kind!r} does not apply to model.kind {model.kind!r} "
                f"(tasks for this model: {', '.join(supported)})"
            )
