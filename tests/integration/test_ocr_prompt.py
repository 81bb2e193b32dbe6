"""Text-rich data end to end: `vlmforge curate ocr-conversations` reads rendered signs with EasyOCR and
writes LLaVA JSON quoting them; that JSON's words go into prompts read by the same reader (cached); the
debug recipe with OCR words in its prompts trains from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, last_json, run_cli
from tests.curate_pool import rendered_text
from vlmforge.config.schema import LlavaJsonData
from vlmforge.data.conversations import open_conversations

RECIPE = REPO / "recipes" / "debug" / "llava-ocr-prompt-tiny.yaml"
SHORT = (
    "stages.0.max_steps=3",
    "stages.0.batch_size=8",
    "stages.0.data.count=60",
    "eval.0.max_samples=6",
)


def test_curate_writes_conversations_quoting_what_ocr_reads(tmp_path: Path) -> None:
    pytest.importorskip("easyocr", reason="the ocr extra: pip install 'vlmforge[ocr]'")
    folder = tmp_path / "signs"
    folder.mkdir()
    rendered_text("grand hotel").save(folder / "hotel.png")
    rendered_text("summer sale").save(folder / "sale.png")
    to = tmp_path / "ocr.json"
    proc = run_cli(
        "curate", "ocr-conversations", str(folder), "--to", str(to), "--format", "json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = last_json(proc.stdout)
    assert (summary["images"], summary["written"]) == (2, 2)
    entries = {e["id"]: e for e in json.loads(to.read_text())}
    read = {key: [w["text"] for w in entry["ocr"]] for key, entry in entries.items()}
    for key, first in (("hotel", "grand"), ("sale", "summer")):
        assert read[key][0].lower().startswith(first)  # the top line first
        assert " ".join(read[key]) in entries[key]["conversations"][1]["value"]  # quoted in the answer

    cache = tmp_path / "cache"
    reader_prompt = {"words": "reader", "boxes": False, "cache_dir": str(cache)}
    data = open_conversations(LlavaJsonData(path=to, ocr_prompt=reader_prompt), 16)
    lines = {data.images.keys[i]: data.turns(i)[0][1].split("\n")[1] for i in range(len(data))}
    assert lines == {key: "Text in the image: " + ", ".join(words) for key, words in read.items()}
    assert len(list(cache.glob("*.json"))) == 2

    again = run_cli("curate", "ocr-conversations", str(folder), "--to", str(to), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_debug_recipe_trains_with_ocr_words_in_the_prompt(tmp_path: Path) -> None:
    proc = run_cli(
        "finetune", "-c", str(RECIPE), *SHORT, "--format", "json", "--yes", cwd=tmp_path, check=True
    )
    result = last_json(proc.stdout)
    assert result["metrics"]["stages"]["instruct"]["step"] == 3
    vqa = result["metrics"]["eval"]["vqa"]
    assert 0.0 <= vqa["accuracy"] <= 1.0 and len(vqa["examples"]) > 0
    assert all(example["question"].startswith("Text in the image: ") for example in vqa["examples"])
