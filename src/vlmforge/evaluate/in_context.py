"""k-shot evaluation of in-context samples for LLaVA models: each held-out query answered greedily after
the last k of its context examples, for every k of the task, and the accuracy-over-k plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmforge.config.evaluation import InContextTask
from vlmforge.data.in_context import InContextSet, few_shot_prompt
from vlmforge.errors import UserError
from vlmforge.evaluate.metrics import normalize_answer


@torch.no_grad()
def generate_answers(
    model: Any, tokenizer: Any, prompts: list[list[int]], pixel_values: torch.Tensor, new: int
) -> list[str]:
    """Greedy answers to left-padded ``prompts`` whose image placeholders ``pixel_values`` fill in order."""
    device = next(model.parameters()).device
    longest = max(len(p) for p in prompts)
    eos = int(tokenizer.eos_token_id)
    pad = eos if tokenizer.pad_token_id is None else int(tokenizer.pad_token_id)
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixel_values.to(device),
        max_new_tokens=new,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    return [text.strip() for text in tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)]


def k_shot_rows(context: Any, data: InContextSet, shots: int, count: int, new: int) -> list[dict[str, Any]]:
    """One row per query: the reference, the answer (at most ``new`` tokens) after ``shots`` context
    examples, and whether they match once normalised (lower-cased, punctuation and spaces removed)."""
    model = context.model
    image_id, image_tokens = int(model.config.image_token_index), int(model.config.image_seq_length)
    rows: list[dict[str, Any]] = []
    for start in range(0, count, context.batch_size):
        indices = range(start, min(start + context.batch_size, count))
        turns = [data.turns(i) for i in indices]
        prompts = [few_shot_prompt(context.tokenizer, t, shots, image_tokens, image_id) for t in turns]
        pixels = torch.cat([data.image(i)[-(shots + 1) :] for i in indices])
        answers = generate_answers(model, context.tokenizer, prompts, pixels, new)
        for i, t, predicted in zip(indices, turns, answers, strict=True):
            reference = t[-1][1]
            hit = normalize_answer(predicted) == normalize_answer(reference)
            rows.append(
                {
                    "index": i,
                    "shots": shots,
                    "reference": reference,
                    "prediction": predicted,
                    "score": float(hit),
                }
            )
    return rows


def in_context(context: Any, task: InContextTask) -> dict[str, Any]:
    """Exact-match accuracy of the held-out queries after k = each of ``task.shots`` context examples:
    ``accuracy_<k>shot`` for each k of ``shots``, the per-query ``predictions`` and a few ``examples``
    per k."""
    data = context.data
    if not isinstance(data, InContextSet):
        raise UserError(
            f"eval task 'in_context' needs in-context samples, but data {data.name!r} has none",
            hint="evaluate a stage whose data kind is in-context-json or digits-in-context",
        )
    count = min(len(data), task.max_samples or len(data))
    fewest = min(data.context_size(i) for i in range(count))
    if task.shots[-1] > fewest:
        raise UserError(
            f"eval task 'in_context': shots {task.shots[-1]} needs that many context examples, but a "
            f"held-out sample of {data.name!r} has {fewest}",
            hint=f"keep the task's shots at most {fewest}",
        )
    new = task.max_new_tokens
    rows = [row for k in task.shots for row in k_shot_rows(context, data, k, count, new)]
    accuracy = {k: _mean([r["score"] for r in rows if r["shots"] == k]) for k in task.shots}
    examples = [r for k in task.shots for r in [r for r in rows if r["shots"] == k][:3]]
    return {
        "shots": list(task.shots),
        **{accuracy_key(k): value for k, value in accuracy.items()},
        "queries": count,
        "examples": examples,
        "predictions": rows,
    }


def accuracy_key(shots: int) -> str:
    return f"accuracy_{shots}shot"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def shots_plot(metrics: dict[str, Any], path: Path) -> Path:
    """Accuracy over the number of context examples (the task's metrics), as ``vlmforge plan --plot``
    draws (Agg, 120 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = list(metrics["shots"])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(shots, [metrics[accuracy_key(k)] for k in shots], marker="o")
    ax.set_xticks(shots)
    ax.set_ylim(0, 1)
    ax.set_xlabel("in-context examples (k)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title("k-shot accuracy on held-out queries")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
