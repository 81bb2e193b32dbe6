"""Visual question answering for LLaVA models: greedy answers (transformers' ``generate``) to the first
question of each held-out conversation, scored by VQA accuracy and exact match against its reference
answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vlmforge.config.schema import VqaTask
from vlmforge.evaluate.metrics import exact_match
from vlmforge.evaluate.vqa_accuracy import vqa_accuracy, vqa_score
from vlmforge.models.llava_anyres import vision_inputs

SHOWN_EXAMPLES = 5
Prompter = Callable[[str], list[int]]  # question -> the ids the model continues to answer it


@torch.no_grad()
def answer_ids(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    images: list[torch.Tensor | None],
    new: int,
    template: str = "chat",
    prompter: Prompter | None = None,
    **search: Any,
) -> list[list[int]]:
    """The ids generated greedily for ``questions`` (a left-padded batch on the model's device), padding
    after ``</s>`` included. Each prompt is ``prompter(question)``, by default vlmforge's ``template``
    layout; ``search`` goes to transformers' ``generate`` (e.g. num_beams)."""
    device = next(model.parameters()).device
    build = prompter or default_prompter(model, tokenizer, template)
    prompts = [build(q) for q in questions]
    longest = max(len(p) for p in prompts)
    eos = int(tokenizer.eos_token_id)
    pad = eos if tokenizer.pad_token_id is None else int(tokenizer.pad_token_id)
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
    pixels = [image for image in images if image is not None]
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        **vision_inputs(model, torch.stack(pixels).to(device) if pixels else None),
        max_new_tokens=new,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=pad,
        **search,
    )
    return out[:, longest:].tolist()


def default_prompter(model: Any, tokenizer: Any, template: str) -> Prompter:
    """vlmforge's prompt layout ``template`` (``data.conversations.prompt_ids``) for ``model``'s image
    placeholder."""
    from vlmforge.data.conversations import prompt_ids

    image_id, image_tokens = int(model.config.image_token_index), int(model.config.image_seq_length)
    return lambda question: prompt_ids(tokenizer, question, template, image_tokens, image_id)


def answer(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    images: list[torch.Tensor | None],
    new: int,
    template: str = "chat",
    prompter: Prompter | None = None,
    **search: Any,
) -> list[str]:
    """Greedy answers to ``questions`` (see ``answer_ids``), decoded without specials."""
    ids = answer_ids(model, tokenizer, questions, images, new, template, prompter, **search)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def vqa(context: Any, task: VqaTask) -> dict[str, Any]:
    """Greedy answers on ``context.data`` (a ``ConversationSet``) scored against each question's one reference
    answer: ``accuracy``, the VQA accuracy (``vqa_accuracy``: normalised answers equal), and ``exact_match``
    (lower-cased, punctuation removed); ``predictions`` lists every question with its score, ``examples`` the
    first few."""
    from vlmforge.data.conversations import IMAGE

    data = context.data
    count = min(len(data), task.max_samples or len(data))
    questions, references, predictions = [], [], []
    for start in range(0, count, context.batch_size):
        indices = range(start, min(start + context.batch_size, count))
        batch = [data.turns(i) for i in indices]
        asked = [turns[0][1] for turns in batch]
        images = [data.image(i) for i in indices]
        predictions += answer(
            context.model, context.tokenizer, asked, images, task.max_new_tokens, prompter=context.prompter
        )
        questions += [q.replace(IMAGE, "").strip() for q in asked]
        references += [turns[1][1] for turns in batch]
    scored = [
        {"question": q, "reference": r, "prediction": p.strip(), "score": vqa_accuracy(p, [r])}
        for q, r, p in zip(questions, references, predictions, strict=True)
    ]
    examples = [
        {key: row[key] for key in ("question", "reference", "prediction")} for row in scored[:SHOWN_EXAMPLES]
    ]
    return {
        "accuracy": vqa_score(predictions, [[r] for r in references])["accuracy"],
        "exact_match": exact_match(predictions, references),
        "examples": examples,
        "predictions": scored,
    }
