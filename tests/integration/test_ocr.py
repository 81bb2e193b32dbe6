"""The OCR text detector of `vlmforge curate` (EasyOCR, the `ocr` extra): reading rendered captions back,
dropping captions that transcribe the image's text, T-MARS masking with OCR boxes, and its errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.curate_pool import digit, photo, recipe_of, rendered_text
from vlmforge.curate.base import Resources
from vlmforge.curate.steps import build_steps
from vlmforge.errors import UserError
from vlmforge.verbs import curate

pytest.importorskip("easyocr", reason="the ocr extra: pip install 'vlmforge[ocr]'")

OCR = {"kind": "ocr"}
SPOTTING = {"kind": "text_spotting", "max_text_area": None, "max_caption_overlap": 0.5, "detector": OCR}


def write_folder(root: Path, samples: dict[str, tuple[Any, str]]) -> Path:
    root.mkdir()
    lines = []
    for key, (image, caption) in samples.items():
        image.save(root / f"{key}.png")
        lines.append(json.dumps({"image": f"{key}.png", "caption": caption}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_max_caption_overlap_drops_captions_that_transcribe_the_image(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "pool",
        {
            "hotel": (rendered_text("welcome to the grand hotel"), "welcome to the grand hotel"),
            "sale": (rendered_text("big summer sale today only"), "a shop window poster with red letters"),
            "coffee": (photo("coffee"), "a cup of coffee with a saucer and a spoon on a table"),
            "digit": (digit(), "a handwritten digit three written in dark ink"),
        },
    )
    source = {"kind": "folder", "path": str(folder), "samples_per_shard": 2}
    # two workers: each forked process loads its own reader
    recipe = recipe_of(tmp_path, [SPOTTING], input=source, engine={"kind": "local", "workers": 2})
    result = curate.run(recipe, progress=False)
    report = json.loads((result.output / "report.json").read_text())
    stage = report["stages"][1]
    assert (stage["in"], stage["out"], stage["dropped"]) == (4, 3, {"caption_is_rendered_text": 1})
    assert report["total"] == 4 and report["kept"] == 3 and report["dropped"] == 1
    dropped = [json.loads(line) for line in (result.output / "dropped.jsonl").read_text().splitlines()]
    assert [(d["key"], d["stage"], d["reason"]) for d in dropped] == [
        ("hotel", "text_spotting", "caption_is_rendered_text")
    ]
    hist = stage["histograms"]["text_overlap"]
    assert sum(hist["kept"]) == 3 and sum(hist["dropped"]) == 1
    assert any(p.endswith("text_spotting.png") for p in report["plots"])

    import webdataset as wds

    kept = {
        s["__key__"]: json.loads(s["json"])["curate"]
        for shard in sorted((result.output / "shards").glob("*.tar"))
        for s in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False)
    }
    assert set(kept) == {"sale", "coffee", "digit"}
    assert kept["sale"]["scores"]["text_spotting.text_overlap"] == 0.0
    assert "sale" in kept["sale"]["texts"]["text_spotting.ocr_text"].lower()  # what OCR read is recorded
    assert "texts" not in kept["coffee"] and "texts" not in kept["digit"]  # nothing read, nothing recorded


def test_missing_extra_or_weights_are_named_before_any_shard_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipe_of(tmp_path, [{**SPOTTING, "detector": {**OCR, "languages": ["fr"]}}])
    with pytest.raises(UserError, match=r"weights missing.*\['fr'\]") as info:
        build_steps(recipe, Resources(recipe))
    assert "detector.model_dir" in (info.value.hint or "")
    recipe = recipe_of(tmp_path, [{**SPOTTING, "detector": {**OCR, "model_dir": str(tmp_path / "none")}}])
    with pytest.raises(UserError, match=r"detector\.model_dir: folder not found"):
        build_steps(recipe, Resources(recipe))

    monkeypatch.setitem(sys.modules, "easyocr", None)
    for step in (SPOTTING, {"kind": "clip_score", "threshold": 0.0, "mask_text": True, "detector": OCR}):
        recipe = recipe_of(tmp_path, [step], model={"kind": "run", "path": "unused"})
        with pytest.raises(UserError, match="easyocr") as info:
            build_steps(recipe, Resources(recipe))
        assert info.value.hint == "pip install 'vlmforge[ocr]'"
    folder = write_folder(tmp_path / "pool", {"coffee": (photo("coffee"), "a cup of coffee")})
    recipe = recipe_of(tmp_path, [SPOTTING], input={"kind": "folder", "path": str(folder)})
    with pytest.raises(UserError, match="easyocr"):
        curate.run(recipe, progress=False)
    assert not list(recipe.output.glob("work/measure/*"))  # no shard was measured
