"""What the RLOO step of `vlmforge align` reads and builds: the prompts of the preference pairs (their
answers unused), the policy's sampled answers appended to them for scoring by the policy and the
reference, and the same answers in the reward model's own prompt (with the pair's facts when the reward
model was trained with them).
"""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.data.conversations import IGNORE_INDEX, collate_conversations, encode, prompt_ids
from vlmforge.data.preferences import PreferenceSet, fact_prompt


class PromptSamples(torch.utils.data.Dataset):
    """The chat prompt of each pair (``USER: question ASSISTANT:``), keyed like ``PreferenceSamples``."""

    def __init__(self, data: PreferenceSet, tokenizer: Any, image_tokens: int, image_id: int) -> None:
        self.data, self.tokenizer = data, tokenizer
        self.image_tokens, self.image_id = image_tokens, image_id

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, position, index = key
        question = self.data.turns(index)[0][1]
        ids = prompt_ids(self.tokenizer, question, "chat", self.image_tokens, self.image_id)
        return {"prompt": ids, "image": self.data.image(index), "index": index, "epoch": epoch} | {
            "position": position
        }


def collate_prompts(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Left-padded prompts (``generate`` continues every row at the same column) and their images."""
    longest = max(len(it["prompt"]) for it in items)
    ids = torch.tensor([[pad_id] * (longest - len(it["prompt"])) + it["prompt"] for it in items])
    mask = torch.tensor([[0] * (longest - len(it["prompt"])) + [1] * len(it["prompt"]) for it in items])
    images = [it["image"] for it in items if it["image"] is not None]
    return {
        "prompt_ids": ids,
        "prompt_mask": mask,
        "prompts": [it["prompt"] for it in items],
        "images": [it["image"] for it in items],
        "pixel_values": torch.stack(images) if images else None,
        "index": torch.tensor([it["index"] for it in items]),
        "epoch": torch.tensor(items[0]["epoch"]),
        "position": torch.tensor(items[0]["position"]),
    }


def cut_at_eos(generated: list[list[int]], eos: int) -> list[list[int]]:
    """Each generated row up to and including its first ``</s>`` (the rest is padding)."""
    return [row[: row.index(eos) + 1] if eos in row else row for row in generated]


def answered_batch(
    prompts: list[list[int]], answers: list[list[int]], images: list[torch.Tensor | None], pad_id: int
) -> dict[str, Any]:
    """Prompt + answer rows, labelled on the answer only (what ``sequence_logps`` sums over); row r
    pairs ``answers[r]`` with prompt ``r % len(prompts)`` (answer-major, as the samples are drawn)."""
    rows = []
    for r, answer in enumerate(answers):
        prompt = list(prompts[r % len(prompts)])
        rows.append(
            {
                "input_ids": prompt + answer,
                "labels": [IGNORE_INDEX] * len(prompt) + answer,
                "image": images[r % len(prompts)],
                "index": r,
                "epoch": 0,
                "position": 0,
            }
        )
    return collate_conversations(rows, pad_id)


def reward_batch(
    data: PreferenceSet,
    indices: list[int],
    answers: list[str],
    reward_tokenizer: Any,
    facts: bool,
    shape: tuple[int, int, int],  # (image tokens, <image> id, max text tokens) of the reward model
) -> dict[str, Any]:
    """The answers as the reward model reads them: its chat encoding of the pair's prompt (with the pair's
    facts when ``facts``) and the answer; answer r belongs to pair ``indices[r % len(indices)]``."""
    image_tokens, image_id, max_text = shape
    rows = []
    for r, answer in enumerate(answers):
        i = indices[r % len(indices)]
        question = data.turns(i)[0][1]
        prompt = fact_prompt(question, data.facts_of(i)) if facts else question
        turns = [("human", prompt), ("gpt", answer)]
        ids, labels = encode(reward_tokenizer, turns, "chat", image_tokens, image_id, max_text)
        rows.append(
            {"input_ids": ids, "labels": labels, "image": data.image(i), "index": r}
            | {
                "epoch": 0,
                "position": 0,
            }
        )
    pad = int(reward_tokenizer.pad_token_id)
    return collate_conversations(rows, pad)
