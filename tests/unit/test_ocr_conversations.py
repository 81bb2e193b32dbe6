"""LLaVAR-style conversations from OCR: templates quoting the words read, a local LM's reply parsed, and
the LLaVA JSON written for `kind: llava-json` (with the words kept for `ocr_prompt`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlmforge.config.schema import LlavaJsonData
from vlmforge.curate.ocr_conversations import (
    TemplateGenerator,
    image_files,
    ocr_conversations,
    parse_reply,
    write_ocr_conversations,
)
from vlmforge.data.conversation_set import IMAGE
from vlmforge.data.conversations import open_conversations
from vlmforge.errors import UserError

READS = {
    "sign.png": [((60, 40, 100, 52), "late"), ((10, 41, 50, 53), "open"), ((10, 5, 60, 20), "cafe")],
    "blank.png": [],
}


def fake_reader(rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], str]]:
    """What a reader would read, told apart by the image's grey level (sign: 10, blank: 20)."""
    return READS["sign.png" if rgb[0, 0, 0] == 10 else "blank.png"]


def image_folder(root: Path) -> Path:
    from PIL import Image

    (root / "images" / "sub").mkdir(parents=True)
    Image.new("RGB", (120, 60), (10, 10, 10)).save(root / "images" / "sub" / "sign.png")
    Image.new("RGB", (120, 60), (20, 20, 20)).save(root / "images" / "blank.png")
    (root / "images" / "broken.jpg").write_bytes(b"not an image")
    (root / "images" / "notes.txt").write_text("not listed")
    return root / "images"


def test_templates_quote_the_words_the_same_way_for_the_same_seed() -> None:
    generator = TemplateGenerator(seed=3)
    turns = generator(["cafe", "open", "late"], "sign")
    assert turns == generator(["cafe", "open", "late"], "sign")
    assert turns[0][1].startswith(f"{IMAGE}\n") and len(turns) == 4
    assert "cafe open late" in turns[1][1]
    assert turns[3][1] in ('The first word is "cafe".', 'There are 3 words: "cafe", "open", "late".')
    seen = {TemplateGenerator(seed)(["stop"], "k")[0][1] for seed in range(20)}
    assert len(seen) > 1 and all(len(TemplateGenerator(s)(["stop"], "k")) == 2 for s in range(20))


def test_conversations_are_llava_json_that_trains_directly(tmp_path: Path) -> None:
    folder = image_folder(tmp_path)
    to = tmp_path / "out" / "ocr.json"
    counts = ocr_conversations(image_files(folder), to, fake_reader, TemplateGenerator(0))
    assert counts == {"images": 3, "written": 1, "no_text": 1, "unreadable": 1, "no_reply": 0}
    (entry,) = json.loads(to.read_text())
    assert entry["id"] == "sign" and entry["image"] == "../images/sub/sign.png"
    assert [w["text"] for w in entry["ocr"]] == ["cafe", "open", "late"]  # reading order
    assert entry["ocr"][1]["box"] == [10, 41, 50, 53]  # pixels, as read
    assert "cafe open late" in entry["conversations"][1]["value"]
    data = open_conversations(LlavaJsonData(path=to), 16)
    assert data.turns(0)[0][1] == entry["conversations"][0]["value"] and data.image(0) is not None
    prompted = open_conversations(LlavaJsonData(path=to, ocr_prompt={"boxes": False}), 16)
    assert prompted.turns(0)[0][1].split("\n")[1] == "Text in the image: cafe, open, late"


def test_lm_replies_are_parsed_or_skipped() -> None:
    assert parse_reply(" What does the sign say?\nAnswer: It says open.\n\nQuestion: more") == [
        ("human", f"{IMAGE}\nWhat does the sign say?"),
        ("gpt", "It says open."),
    ]
    assert parse_reply("What does the sign say?") is None
    assert parse_reply(" \nAnswer: open") is None
    assert parse_reply("Why?\nAnswer:   ") is None


def test_a_local_causal_lm_writes_the_conversation(tmp_path: Path) -> None:
    """A tiny random Llama with a word tokenizer that knows 'Answer:' : greedy decoding is deterministic,
    and whatever it writes is either one parsed turn pair or counted as no reply."""
    import transformers

    from vlmforge.curate.ocr_conversations import LmGenerator
    from vlmforge.data.conversations import build_tokenizer

    tokenizer = build_tokenizer("word", ["question answer : what does the sign say open cafe late"])
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    transformers.set_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    generator = LmGenerator(tmp_path / "lm", max_new_tokens=8)
    first = generator(["cafe", "open"], "sign")
    assert first == generator(["cafe", "open"], "sign")
    assert first is None or (len(first) == 2 and first[0][1].startswith(IMAGE))


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image folder not found"):
        image_files(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        image_files(tmp_path / "empty")
    folder = image_folder(tmp_path)
    taken = tmp_path / "taken.json"
    taken.write_text("[]")
    with pytest.raises(UserError, match="already exists"):
        write_ocr_conversations(folder, taken, None, 0, reader=fake_reader)
    with pytest.raises(UserError, match="--lm: folder not found"):
        write_ocr_conversations(folder, tmp_path / "new.json", tmp_path / "no-lm", 0, reader=fake_reader)
    with pytest.raises(UserError, match="nothing was read"):
        ocr_conversations(image_files(folder), tmp_path / "new.json", lambda rgb: [], TemplateGenerator(0))
    assert not (tmp_path / "new.json").exists()
