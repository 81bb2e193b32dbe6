"""`vlmforge predict`: run a trained model on image files.

source (run directory, open_clip export or transformers folder, ``interop.inference``) + image files
(files, folders, globs) -> per image: the top-K zero-shot labels with probabilities (models with a text
embedding, ``--classes``), a greedy caption (CoCa, ``--caption``) or a greedy answer (LLaVA,
``--prompt``). Unreadable images are listed and skipped; none readable is an error. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmforge.errors import UserError, raise_all

TASKS = ("zeroshot", "caption", "answer")


@dataclass(frozen=True)
class PredictRequest:
    source: Path
    images: list[str]
    classes: list[str] | None = None  # zeroshot
    prompt: str | None = None  # answer
    caption: bool = False  # caption
    templates: list[str] | None = None  # zeroshot: default the model's
    top: int = 5
    batch_size: int = 32
    device: str = "auto"
    max_tokens: int | None = None  # caption / answer length limit

    @property
    def task(self) -> str:
        return "zeroshot" if self.classes is not None else "answer" if self.prompt is not None else "caption"


@dataclass
class Unreadable:
    file: str
    reason: str
    detail: str


@dataclass
class PredictResult:
    source: str
    source_kind: str  # pretrain run, finetune run, align run, open_clip export, transformers folder
    model_kind: str
    task: str
    device: str
    predictions: list[dict[str, Any]]
    unreadable: list[Unreadable] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # classes + templates, or prompt, or limits

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "model_kind": self.model_kind,
            "task": self.task,
            "device": self.device,
            **self.settings,
            "images": len(self.predictions) + len(self.unreadable),
            "predicted": len(self.predictions),
            "unreadable": [vars(u) for u in self.unreadable],
            "predictions": self.predictions,
        }


def run(request: PredictRequest) -> PredictResult:
    """Predict for every readable image the request names."""
    from vlmforge.data.image_paths import find_images
    from vlmforge.interop.inference import load_for_inference

    raise_all(request_problems(request))
    files = find_images(request.images)
    loaded = load_for_inference(request.source, request.device)
    raise_all(model_problems(request, loaded))
    predictor, settings = _predictor(request, loaded)
    result = PredictResult(
        str(request.source), loaded.source, loaded.kind, request.task, str(loaded.device), [], [], settings
    )
    for start in range(0, len(files), request.batch_size):
        batch, names = _read_batch(files[start : start + request.batch_size], loaded.transform, result)
        if batch:
            outputs = predictor(torch.stack(batch))
            result.predictions += [{"file": name} | out for name, out in zip(names, outputs, strict=True)]
    if not result.predictions:
        raise UserError(
            _none_readable(result.unreadable), hint="give PNG, JPEG, WebP, BMP, GIF or TIFF images"
        )
    return result


# ---------------------------------------------------------------------------------------- checks
def request_problems(request: PredictRequest) -> list[UserError]:
    """Option problems found before anything is loaded, all at once."""
    problems = []
    chosen = {"--classes": request.classes is not None, "--prompt": request.prompt is not None}
    given = [flag for flag, on in (chosen | {"--caption": request.caption}).items() if on]
    if len(given) != 1:
        problems.append(
            UserError(
                "give one of --classes, --prompt or --caption"
                + (f" (got {' and '.join(given)})" if given else ""),
                hint="contrastive models (CLIP, SigLIP, CoCa): --classes cat,dog; CoCa: --caption; "
                "LLaVA runs: --prompt 'What is in the image?'",
            )
        )
    if request.classes is not None and len(request.classes) < 2:
        problems.append(UserError("--classes: give at least two class names", hint="--classes cat,dog,bird"))
    if request.prompt is not None and not request.prompt.strip():
        problems.append(UserError("--prompt is empty", hint="--prompt 'What digit is this?'"))
    for template in request.templates or []:
        if template.count("{}") != 1:
            problems.append(
                UserError(
                    f"--template {template!r} must contain '{{}}' once", hint="--template 'a photo of a {}.'"
                )
            )
    for flag, value in (("--top", request.top), ("--batch-size", request.batch_size)):
        if value < 1:
            problems.append(UserError(f"{flag} {value}: must be at least 1"))
    if request.max_tokens is not None and request.max_tokens < 1:
        problems.append(UserError(f"--max-tokens {request.max_tokens}: must be at least 1"))
    return problems


def model_problems(request: PredictRequest, loaded: Any) -> list[UserError]:
    """What the request asks that this model cannot do."""
    where = f"{request.source} ({loaded.source}, model.kind {loaded.kind})"
    takes = {"--classes": loaded.embeds_text, "--caption": loaded.captions, "--prompt": loaded.answers}
    flags = [flag for flag, ok in takes.items() if ok]
    hint = f"this model takes {' or '.join(flags)}" if flags else "this model predicts nothing from images"
    if request.task == "zeroshot" and not loaded.embeds_text:
        return [UserError(f"--classes: {where} has no text embedding to rank class names with", hint=hint)]
    if request.task == "caption" and not loaded.captions:
        return [UserError(f"--caption: {where} has no caption decoder", hint=hint)]
    if request.task == "answer" and not loaded.answers:
        return [UserError(f"--prompt: {where} does not answer questions", hint=hint)]
    if request.templates and request.task != "zeroshot":
        return [UserError("--template applies to --classes only")]
    return []


# ----------------------------------------------------------------------------------------- batches
def _predictor(request: PredictRequest, loaded: Any) -> tuple[Any, dict[str, Any]]:
    """(images -> one output dict per image, the settings the result reports)."""
    from vlmforge.evaluate import predictions as predict

    if request.task == "zeroshot":
        classes = list(request.classes or [])
        templates = list(request.templates or loaded.templates)
        classifier = predict.class_embeddings(loaded, classes, templates, request.batch_size)
        top = min(request.top, len(classes))

        def labels(images: torch.Tensor) -> list[dict[str, Any]]:
            probs = predict.class_probabilities(loaded, images, classifier)
            best = probs.topk(top, dim=1)
            return [
                {
                    "labels": [
                        {"label": classes[i], "score": round(float(s), 6)} for s, i in zip(*row, strict=True)
                    ]
                }
                for row in zip(best.values.tolist(), best.indices.tolist(), strict=True)
            ]

        return labels, {"classes": classes, "templates": templates, "top": top}
    if request.task == "caption":
        return (
            lambda images: [
                {"caption": c} for c in predict.greedy_captions(loaded, images, request.max_tokens)
            ],
            {"decoding": "greedy", "max_tokens": request.max_tokens},
        )
    prompt = str(request.prompt)
    return (
        lambda images: [
            {"answer": a} for a in predict.greedy_answers(loaded, images, prompt, request.max_tokens)
        ],
        {"prompt": prompt, "prompt_template": loaded.prompt_template, "decoding": "greedy"},
    )


def _read_batch(
    files: list[Path], transform: Any, result: PredictResult
) -> tuple[list[torch.Tensor], list[str]]:
    """The readable images of ``files``, transformed; the others are added to ``result.unreadable``."""
    from vlmforge.data.images import ImageError, decode_rgb

    images, names = [], []
    for file in files:
        try:
            images.append(transform(decode_rgb(file)))
            names.append(str(file))
        except ImageError as exc:  # also a file that cannot be opened (permissions, vanished)
            result.unreadable.append(Unreadable(str(file), exc.reason, exc.detail))
    return images, names


def _none_readable(unreadable: list[Unreadable]) -> str:
    shown = "; ".join(f"{u.file}: {u.detail}" for u in unreadable[:5])
    more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
    return f"none of the {len(unreadable)} image file(s) could be read ({shown}{more})"
