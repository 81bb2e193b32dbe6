"""Conversation data for LLaVA-style finetuning: LLaVA's conversation JSON with an image folder, and an
offline digits conversation set; tokenizers built from the conversations; prompts and labels with the
loss on the assistant's answers only (every other label is -100) and ``<image>`` expanded to one
placeholder token per visual token, the layout transformers' LLaVA scatters image features into."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import (
    ConversationSource,
    DigitCanvases,
    DigitsConversations,
    DigitsData,
    LlavaJsonData,
    ReferringCanvases,
    ReferringJsonData,
    TextImagesConversations,
)
from vlmforge.data.base import ImageTextSet, fingerprint_bytes, split_indices
from vlmforge.data.conversation_set import (
    IMAGE,
    ConversationSet,
    Turn,
    read_json_list,
)
from vlmforge.errors import UserError
from vlmforge.storage import writing

IGNORE_INDEX = -100
SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
BUILT_IMAGE_ID = len(SPECIALS)  # <image> follows SPECIALS in every vocabulary build_tokenizer builds
ROLES = {"human": "USER:", "gpt": "ASSISTANT:"}


# ---------------------------------------------------------------------------------------- sources
QUESTIONS = ("What digit is this?", "Which number is written here?", "What number does the image show?")


def digits_conversations(cfg: DigitsConversations, image_size: int) -> ConversationSet:
    """Digits as captions ("a handwritten seven") or questions ("What digit is this?" -> "seven")."""
    from vlmforge.data.digits import CLASSNAMES, digits_set

    images = digits_set(DigitsData(image_size=image_size, mean=cfg.mean, std=cfg.std, templates=["{}"]))
    assert images.labels is not None
    names = [CLASSNAMES[int(y)] for y in images.labels]
    if cfg.task == "caption":
        conversations = [
            [("human", f"{IMAGE}\nDescribe the image."), ("gpt", f"a handwritten {n}")] for n in names
        ]
    else:
        conversations = [
            [("human", f"{IMAGE}\n{QUESTIONS[i % len(QUESTIONS)]}"), ("gpt", n)] for i, n in enumerate(names)
        ]
    images.name = f"digits-{cfg.task}"
    return ConversationSet(images, conversations, np.ones(len(names), dtype=bool))


def llava_json(cfg: LlavaJsonData, image_size: int) -> ConversationSet:
    """LLaVA's conversation JSON; every problem is reported with the file and the entry's index."""
    entries = read_json_list(cfg.path, "conversation", hint="set the stage's data.path")
    folder = cfg.image_folder or cfg.path.parent
    keys, files, conversations = [], [], []
    for n, entry in enumerate(entries):
        where = f"{cfg.path}: entry {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
            raise UserError(f"{where}: needs a 'conversations' list", hint="see LLaVA's data format")
        image = entry.get("image")
        files.append(folder / str(image) if image else None)
        keys.append(str(entry.get("id", n)))
        conversations.append(_turns(entry["conversations"], image is not None, where))
    absent = [str(f) for f in files if f is not None and not f.is_file()]
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise UserError(f"{cfg.path}: {len(absent)} image file(s) listed but missing: {shown}")
    captions = [[turns[1][1]] for turns in conversations]
    images = listed_images(cfg.path, keys, files, captions, image_size, cfg.mean, cfg.std)
    return ConversationSet(images, conversations, np.array([f is not None for f in files]))


def listed_images(
    path: Path,
    keys: list[str],
    files: list[Path | None],
    captions: list[list[str]],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> ImageTextSet:
    """The images a JSON file at ``path`` lists (``None``: no image), loaded lazily, fingerprinted by
    the file's bytes."""
    from vlmforge.data.folder import load_rgb

    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def load(i: int) -> torch.Tensor:
        return load_rgb(files[i], image_size, mean_t, std_t)  # type: ignore[arg-type]

    return ImageTextSet(
        name=path.stem,
        keys=keys,
        captions=captions,
        load_image=load,
        fingerprint=fingerprint_bytes(path.read_bytes()),
    )


def _turns(raw: list[Any], has_image: bool, where: str) -> list[Turn]:
    """Alternating human/gpt turns; ``<image>`` once, in the first human turn (added there if absent)."""
    turns: list[Turn] = []
    for k, turn in enumerate(raw):
        role = turn.get("from") if isinstance(turn, dict) else None
        expected = "human" if k % 2 == 0 else "gpt"
        if role != expected or not isinstance(turn.get("value"), str):
            raise UserError(
                f"{where}: turn {k} must be {{'from': '{expected}', 'value': text}}",
                hint="conversations alternate human and gpt turns, starting with human",
            )
        turns.append((role, turn["value"]))
    if len(turns) < 2 or len(turns) % 2:
        raise UserError(f"{where}: needs question-answer pairs (human, gpt, ...), got {len(turns)} turns")
    count = sum(text.count(IMAGE) for _, text in turns)
    if not has_image and count:
        raise UserError(f"{where}: {IMAGE} in a conversation without an 'image'")
    if has_image and (count > 1 or (count == 1 and IMAGE not in turns[0][1])):
        raise UserError(f"{where}: {IMAGE} must appear once, in the first human turn")
    if has_image and count == 0:
        turns[0] = ("human", f"{IMAGE}\n{turns[0][1]}")
    return turns


def open_conversations(cfg: ConversationSource, image_size: int) -> ConversationSet:
    if isinstance(cfg, DigitsConversations):
        return digits_conversations(cfg, image_size)
    if isinstance(cfg, ReferringCanvases):
        from vlmforge.data.canvases import canvas_set

        return canvas_set(cfg, image_size)
    if isinstance(cfg, DigitCanvases):
        from vlmforge.data.digit_canvases import digit_canvases

        return digit_canvases(cfg, image_size)
    if isinstance(cfg, ReferringJsonData):
        from vlmforge.data.referring import referring_json

        return referring_json(cfg, image_size)
    if isinstance(cfg, TextImagesConversations):
        from vlmforge.data.text_images import text_image_conversations

        return text_image_conversations(cfg, image_size)
    data = llava_json(cfg, image_size)
    if cfg.ocr_prompt is None:
        return data
    from vlmforge.data.ocr_prompt import json_with_words

    return json_with_words(cfg, data)


def split_conversations(cfg: ConversationSource, image_size: int) -> tuple[ConversationSet, ConversationSet]:
    """The fixed (seed-independent) training and held-out parts, stratified when labels exist."""
    full = open_conversations(cfg, image_size)
    train, val = split_indices(len(full.images.keys), full.images.labels, cfg.val_fraction)
    return full.subset(train, "train"), full.subset(val, "val")


# ------------------------------------------------------------------------------------- tokenizers
def build_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 0, name: str = "") -> Any:
    """A ``PreTrainedTokenizerFast`` with <pad>, <s>, </s>, <unk> and <image>: a lower-cased word
    vocabulary ('word'), a byte-level BPE trained on ``texts`` ('bpe'), or a pretrained one."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "pretrained":
        try:
            tok = transformers.AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"model.tokenizer.name: cannot load {name!r}: {str(exc).splitlines()[0]}"
            ) from None
        tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
        if tok.pad_token is None:
            tok.pad_token = tok.unk_token or tok.eos_token
        return tok
    specials = [*SPECIALS.values(), IMAGE]
    if kind == "word":
        splitter = pre_tokenizers.Whitespace()
        words = sorted({w for t in texts for w, _ in splitter.pre_tokenize_str(t.lower())})
        vocab = {w: i for i, w in enumerate([*specials, *(w for w in words if w not in specials)])}
        core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS["unk_token"]))
        core.normalizer = normalizers.Lowercase()
        core.pre_tokenizer = splitter
    else:
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        core.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, additional_special_tokens=[IMAGE], **SPECIALS
    )


def template_texts() -> list[str]:
    """Words the chat template adds, so that a vocabulary built from the data knows them."""
    return list(ROLES.values())


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save into a folder next to ``folder``, then rename it into place: a resumed run never finds half a
    tokenizer."""
    with writing(folder, sync=False) as tmp:
        tokenizer.save_pretrained(str(tmp))


def load_tokenizer(folder: Path) -> Any:
    import transformers

    if not folder.is_dir():
        raise UserError(f"tokenizer folder not found: {folder}", hint="is this a vlmforge finetune run?")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


# -------------------------------------------------------------------------------------- encoding
def _pieces(tokenizer: Any, text: str, image_tokens: int, image_id: int) -> list[int]:
    """Token ids of ``text`` with ``<image>`` replaced by ``image_tokens`` placeholder ids."""
    ids: list[int] = []
    for k, part in enumerate(text.split(IMAGE)):
        if k:
            ids += [image_id] * image_tokens
        if part.strip():
            ids += tokenizer(part, add_special_tokens=False)["input_ids"]
    return ids


def encode(
    tokenizer: Any,
    turns: Sequence[Turn],
    template: str,
    image_tokens: int,
    image_id: int,
    max_text_tokens: int,
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a conversation; labels are -100 except on the answers and their </s>.

    'plain' (LLaVA's stage-1 format): <s> image answer </s> — the question is dropped. 'chat':
    <s> USER: question ASSISTANT: answer </s> for every turn pair. Text beyond ``max_text_tokens``
    is cut (never inside the image's placeholders)."""
    ids, labels = [tokenizer.bos_token_id], [IGNORE_INDEX]
    eos = tokenizer.eos_token_id
    for question, answer in zip(turns[0::2], turns[1::2], strict=True):
        if template == "plain":
            prompt = IMAGE if IMAGE in question[1] else ""
        else:
            prompt = f"{ROLES['human']} {question[1]} {ROLES['gpt']}"
        prompt_ids = _pieces(tokenizer, prompt, image_tokens, image_id)
        answer_ids = [*_pieces(tokenizer, f" {answer[1]}", 0, image_id), eos]
        ids += prompt_ids + answer_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        if template == "plain":
            break  # one caption per image
    is_image = np.asarray(ids) == image_id
    limit = max_text_tokens + int(is_image.sum())
    if is_image.any():
        limit = max(limit, int(np.flatnonzero(is_image)[-1]) + 1)
    return ids[:limit], labels[:limit]


def prompt_ids(tokenizer: Any, question: str, template: str, image_tokens: int, image_id: int) -> list[int]:
    """The ids a model continues to answer ``question`` (the prompt part of ``encode``)."""
    prompt = (
        (IMAGE if IMAGE in question else "")
        if template == "plain"
        else (f"{ROLES['human']} {question} {ROLES['gpt']}")
    )
    return [tokenizer.bos_token_id, *_pieces(tokenizer, prompt, image_tokens, image_id)]


class ConversationSamples(torch.utils.data.Dataset):
    """Training samples keyed by ``GlobalBatchSampler``'s (epoch, position, index); encodings cached."""

    def __init__(
        self,
        data: ConversationSet,
        tokenizer: Any,
        template: str,
        image_tokens: int,
        image_id: int,
        max_text: int,
    ) -> None:
        self.data, self.tokenizer, self.template = data, tokenizer, template
        self.image_tokens, self.image_id, self.max_text = image_tokens, image_id, max_text
        self._cache: dict[int, tuple[list[int], list[int]]] = {}

    def __len__(self) -> int:
        return len(self.data)

    def encoded(self, index: int) -> tuple[list[int], list[int]]:
        if index not in self._cache:
            self._cache[index] = encode(
                self.tokenizer,
                self.data.turns(index),
                self.template,
                self.image_tokens,
                self.image_id,
                self.max_text,
            )
        return self._cache[index]

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, position, index = key
        ids, labels = self.encoded(index)
        return {
            "input_ids": ids,
            "labels": labels,
            "image": self.data.image(index),
            "index": index,
            "epoch": epoch,
            "position": position,
        }


def collate_conversations(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded ids, labels (-100) and attention mask; the images of the samples that have one."""
    longest = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = (
            torch.tensor(it["input_ids"]),
            torch.tensor(it["labels"]),
            1,
        )
    images = [it["image"] for it in items if it["image"] is not None]
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "pixel_values": torch.stack(images) if images else None,
        "index": torch.tensor([it["index"] for it in items]),
        "epoch": torch.tensor(items[0]["epoch"]),
        "position": torch.tensor(items[0]["position"]),
    }
