"""OCR-augmented instruction data (LLaVAR, Zhang et al. 2023, "LLaVAR: Enhanced Visual Instruction
Tuning for Text-Rich Image Understanding"): text-rich images are read by an OCR reader and each gets a
conversation quoting the words it read, written in LLaVA's conversation JSON (which `kind: llava-json`
trains on directly), with the words and boxes kept per entry as 'ocr' (what `ocr_prompt: {words: data}`
reads). Conversations come from templates, or from a local causal LM prompted with the words."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.data.conversation_set import IMAGE, Turn
from vlmforge.data.ocr_prompt import PixelRead, normalised, reading_order
from vlmforge.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
TEMPLATES = (
    ("What is written in the image?", 'The image says "{text}".'),
    ("What text appears in this image?", 'The text in the image reads "{text}".'),
    ("Can you read the text in the image?", 'Yes, it says "{text}".'),
    ("Transcribe the text shown in the picture.", '"{text}"'),
)
FIRST_WORD = ("What is the first word of the text?", 'The first word is "{first}".')
COUNT_WORDS = ("How many words are written in the image?", "There are {count} words: {quoted}.")
LM_PROMPT = (
    "An image contains this text, in reading order: {text}\n"
    "Write one question a person could ask about the text in the image, and its answer.\n"
    "Question:"
)
Generator = Callable[[Sequence[str], str], list[Turn] | None]
Reader = Callable[[np.ndarray], list[PixelRead]]


@dataclass(frozen=True)
class TemplateGenerator:
    """A conversation from templates, the same for the same ``seed`` and image key: a question whose
    answer quotes all the text, then (for several words) one about the first word or the word count."""

    seed: int = 0

    def __call__(self, words: Sequence[str], key: str) -> list[Turn]:
        digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        question, answer = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        turns: list[Turn] = [("human", f"{IMAGE}\n{question}"), ("gpt", answer.format(text=" ".join(words)))]
        if len(words) > 1:
            follow, reply = FIRST_WORD if rng.random() < 0.5 else COUNT_WORDS
            quoted = ", ".join(f'"{w}"' for w in words)
            turns += [
                ("human", follow),
                ("gpt", reply.format(first=words[0], count=len(words), quoted=quoted)),
            ]
        return turns


@dataclass
class LmGenerator:
    """A question and answer written by a local causal LM (transformers, greedy decoding) from the words,
    as LLaVAR prompts a text-only LLM with OCR results; a reply without 'Answer:' yields no conversation."""

    folder: Path
    max_new_tokens: int = 64
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)

    def __call__(self, words: Sequence[str], key: str) -> list[Turn] | None:
        import torch

        model, tokenizer = self.loaded()
        prompt = LM_PROMPT.format(text=" ".join(words))
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **ids,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        reply = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return parse_reply(reply)

    def loaded(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = load_causal_lm(self.folder)
        return self._loaded


def parse_reply(reply: str) -> list[Turn] | None:
    """'<question> Answer: <answer>' (what follows the prompt's 'Question:') as one turn pair; None when
    either part is empty or there is no 'Answer:'."""
    question, marker, rest = reply.partition("Answer:")
    answer = rest.split("\n\n")[0].split("Question:")[0].strip()
    if not marker or not question.strip() or not answer:
        return None
    return [("human", f"{IMAGE}\n{question.strip()}"), ("gpt", answer)]


def load_causal_lm(folder: Path) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder (never downloads); a bad folder is a UserError."""
    import transformers

    if not folder.is_dir():
        raise UserError(f"--lm: folder not found: {folder}", hint="a folder saved by save_pretrained")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"--lm: cannot load a causal LM from {folder}: {str(exc).splitlines()[0]}",
            hint="the folder needs config.json, the weights and the tokenizer's files",
        ) from None
    return model.eval(), tokenizer


def image_files(folder: Path) -> list[Path]:
    """Images under ``folder`` (recursive), sorted; a missing or image-less folder is a UserError."""
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}", hint="give a folder of text-rich images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def conversation_entry(
    image: Path, json_folder: Path, reads: list[PixelRead], size: tuple[int, int], generator: Generator
) -> dict[str, Any] | None:
    """One LLaVA JSON entry for ``image``, or None when nothing was read or the generator wrote nothing."""
    width, height = size
    ordered = reading_order(normalised(reads, width, height))
    if not ordered:
        return None
    key = image.stem
    turns = generator([text for text, _ in ordered], key)
    if turns is None:
        return None
    by_text = {
        (text, (x0 / width, y0 / height, x1 / width, y1 / height)): [x0, y0, x1, y1]
        for (x0, y0, x1, y1), text in reads
    }
    return {
        "id": key,
        "image": os.path.relpath(image, json_folder),
        "conversations": [{"from": role, "value": text} for role, text in turns],
        "ocr": [{"text": text, "box": by_text[(text, box)]} for text, box in ordered],
    }


def ocr_conversations(
    images: Sequence[Path], to: Path, reader: Reader, generator: Generator
) -> dict[str, int]:
    """Read every image, write the conversations to the JSON file ``to`` (image paths relative to its
    folder); counts of images, conversations written, and images skipped for each reason."""
    from PIL import Image, UnidentifiedImageError

    if to.exists():
        raise UserError(f"--to: {to} already exists", hint="choose a new file; nothing is overwritten")
    entries, counts = [], {"images": len(images), "written": 0, "no_text": 0, "unreadable": 0, "no_reply": 0}
    for image in images:
        try:
            with Image.open(image) as opened:
                rgb = np.asarray(opened.convert("RGB"))
        except (UnidentifiedImageError, OSError):
            counts["unreadable"] += 1
            continue
        reads = reader(rgb)
        entry = conversation_entry(image, to.parent.resolve(), reads, (rgb.shape[1], rgb.shape[0]), generator)
        if entry is None:
            counts["no_text" if not reads else "no_reply"] += 1
            continue
        entries.append(entry)
    counts["written"] = len(entries)
    if not entries:
        raise UserError(f"no conversation was written: nothing was read in {len(images)} image(s)")
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.replace(to)
    return counts


def write_ocr_conversations(
    folder: Path, to: Path, lm: Path | None, seed: int, reader: Reader | None = None
) -> dict[str, Any]:
    """`vlmforge curate ocr-conversations`: EasyOCR (``reader`` replaces it) on every image of ``folder``,
    conversations from templates (``lm`` None) or the local causal LM in ``lm``, written to ``to``."""
    from vlmforge.config.curate_models import OcrDetector
    from vlmforge.ocr import OcrReader, check_ocr

    images = image_files(folder)
    if to.exists():
        raise UserError(f"--to: {to} already exists", hint="choose a new file; nothing is overwritten")
    generator: Generator = TemplateGenerator(seed) if lm is None else LmGenerator(lm)
    if isinstance(generator, LmGenerator):
        generator.loaded()  # a bad --lm folder fails before any image is read
    if reader is None:
        check_ocr(OcrDetector())
        reader = OcrReader(OcrDetector()).read
    counts = ocr_conversations(images, to, reader, generator)
    return {"conversations": str(to), "generator": "template" if lm is None else str(lm), **counts}
