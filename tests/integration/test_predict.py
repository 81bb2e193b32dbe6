"""`vlmforge predict` on real PNG files (digits written by a test) from a run directory and from its open_clip
export, and `vlmforge eval --model` on an export: the same numbers as the run itself.

LLaVA answers (--prompt) are not trained here: tests/integration/test_llava.py trains its run inside one
slow test and exposes no fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import last_json, run_cli
from vlmforge.data.digits import CLASSNAMES
from vlmforge.errors import UserError

DIGITS = ",".join(CLASSNAMES)
FOLDER_PROMPT = "a photo of a {}."  # the prompt a folder source without templates evaluates with


def _labels(folder: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines() if line]
    return {row["image"]: row["label"] for row in rows}


def _predict(cwd: Path, *args: str) -> dict[str, Any]:
    return last_json(run_cli("predict", *args, "--format", "json", cwd=cwd, check=True).stdout)


def _export(run_dir: Path, out: Path) -> Path:
    from vlmforge.interop.open_clip_export import export

    out.mkdir()
    export(run_dir, out, None, torch.float32)
    return out


@pytest.fixture(scope="module")
def clip_export(tiny_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_run["run_dir"], tmp_path_factory.mktemp("clip-export") / "model")


def test_predicted_labels_score_as_eval_does(
    tiny_run: dict[str, Any], digits_folder: Path, tmp_path: Path
) -> None:
    """The folder's images as `predict` labels them are as accurate as `eval` finds them zero-shot."""
    run_dir = tiny_run["run_dir"]
    predicted = _predict(
        tmp_path, str(run_dir), str(digits_folder), "--classes", DIGITS, "--template", FOLDER_PROMPT
    )
    truth = _labels(digits_folder)
    assert predicted["predicted"] == len(truth) == 120 and predicted["unreadable"] == []
    hits = [truth[Path(p["file"]).name] == p["labels"][0]["label"] for p in predicted["predictions"]]
    accuracy = sum(hits) / len(hits)

    evaluated = last_json(
        run_cli(
            "eval",
            "--run",
            str(run_dir),
            "data.kind=folder",
            f"data.path={digits_folder}",
            "tasks=[{kind: zeroshot}]",
            f"output={tmp_path / 'eval'}",  # the shared run directory stays as it was
            "--format",
            "json",
            cwd=tmp_path,
            check=True,
        ).stdout
    )
    zero_shot = evaluated["metrics"]["zeroshot"]
    assert zero_shot["samples"] == 120 and zero_shot["templates"] == 1
    assert accuracy == pytest.approx(zero_shot["top1"], abs=1 / 120 + 1e-6)  # at most one tie apart
    assert accuracy > 0.2  # chance is 0.1
    assert (tmp_path / "eval" / "zeroshot.json").is_file()


def test_json_shape_globs_and_a_corrupt_file(
    tiny_run: dict[str, Any], digits_folder: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    for name in ("img000.png", "img001.png"):
        shutil.copy(digits_folder / name, images / name)
    shutil.copy(digits_folder / "img002.png", images / "nested" / "img002.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = run_cli(
        "predict",
        str(tiny_run["run_dir"]),
        str(images / "*.png"),  # a glob: the top folder's two digits and the corrupt file
        str(images / "nested"),  # a folder: the image below it
        "--classes",
        DIGITS,
        "--top",
        "3",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    result = last_json(proc.stdout)
    assert result["task"] == "zeroshot" and result["model_kind"] == "clip"
    assert result["source_kind"] == "pretrain run" and result["device"] in ("cpu", "cuda")
    assert result["classes"] == list(CLASSNAMES) and len(result["templates"]) == 6  # the digits' templates
    assert (result["images"], result["predicted"]) == (4, 3)
    assert [Path(p["file"]).name for p in result["predictions"]] == ["img000.png", "img001.png", "img002.png"]
    for prediction in result["predictions"]:
        scores = [label["score"] for label in prediction["labels"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
        assert {label["label"] for label in prediction["labels"]} <= set(CLASSNAMES)
    (bad,) = result["unreadable"]
    assert Path(bad["file"]).name == "corrupt.png" and bad["reason"] in ("decode_error", "truncated")
    assert "corrupt.png" in proc.stderr and "1 of 4 images could not be read" in proc.stderr


def test_bad_input_exits_2(tiny_run: dict[str, Any], digits_folder: Path, tmp_path: Path) -> None:
    run_dir = str(tiny_run["run_dir"])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    (tmp_path / "empty").mkdir()
    cases = {
        "no image files found": (run_dir, str(tmp_path / "empty"), "--classes", DIGITS),
        "none of the 1 image file(s) could be read": (run_dir, str(corrupt), "--classes", DIGITS),
        "give one of --classes, --prompt or --caption": (run_dir, str(digits_folder / "img000.png")),
    }
    for message, args in cases.items():
        proc = run_cli("predict", *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.splitlines()) <= 12  # one screen


def test_what_a_model_cannot_do_is_refused(tiny_run: dict[str, Any], digits_folder: Path) -> None:
    from vlmforge.verbs.predict import PredictRequest, run

    image = [str(digits_folder / "img000.png")]
    cases = {
        "has no caption decoder": PredictRequest(tiny_run["run_dir"], image, caption=True, device="cpu"),
        "does not answer questions": PredictRequest(
            tiny_run["run_dir"], image, prompt="Which digit?", device="cpu"
        ),
        "neither a vlmforge run directory": PredictRequest(
            digits_folder, image, list(CLASSNAMES), device="cpu"
        ),
    }
    for message, request in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            run(request)
        assert caught.value.hint


def test_coca_captions_from_the_run_and_its_export(
    coca_run: Path, digits_folder: Path, tmp_path: Path
) -> None:
    exported = _export(coca_run, tmp_path / "export")
    pattern = str(digits_folder / "img00[0-3].png")
    from_run = _predict(tmp_path, str(coca_run), pattern, "--caption")
    from_export = _predict(tmp_path, str(exported), pattern, "--caption")
    assert from_export["source_kind"] == "open_clip export" and from_export["model_kind"] == "coca"
    captions = [p["caption"] for p in from_run["predictions"]]
    assert len(captions) == 4 and all(captions)
    assert [p["caption"] for p in from_export["predictions"]] == captions
    assert not list(exported.glob("eval")), "predict writes nothing"


def test_eval_model_on_an_export_matches_the_run(
    tiny_run: dict[str, Any], clip_export: Path, digits_folder: Path, tmp_path: Path
) -> None:
    run_dir = tiny_run["run_dir"]
    args = ("--data", "digits", "--format", "json")
    on_export = run_cli("eval", "--model", str(clip_export), *args, cwd=tmp_path)
    assert on_export.returncode == 0, on_export.stderr[-3000:]
    exported = last_json(on_export.stdout)
    on_run = last_json(
        run_cli(
            "eval",
            "--run",
            str(run_dir),
            "--data",
            "digits",
            f"output={tmp_path / 'run-eval'}",
            "--format",
            "json",
            cwd=tmp_path,
            check=True,
        ).stdout
    )
    assert exported["data"] == on_run["data"] == "digits:val"  # the held-out split the run kept
    assert exported["metrics"]["zeroshot"]["top1"] == pytest.approx(on_run["metrics"]["zeroshot"]["top1"])
    assert exported["metrics"]["zeroshot"]["samples"] == on_run["metrics"]["zeroshot"]["samples"] == 360
    recall = "image_to_text_R@1"
    assert exported["metrics"]["retrieval"][recall] == pytest.approx(on_run["metrics"]["retrieval"][recall])
    assert (clip_export / "eval" / "zeroshot.json").is_file()  # said on stderr, not silently
    assert f"results written to {clip_export / 'eval'}" in on_export.stderr

    pattern = str(digits_folder / "img01*.png")
    same = ("--classes", DIGITS, "--template", FOLDER_PROMPT)
    from_run = _predict(tmp_path, str(run_dir), pattern, *same)["predictions"]
    from_export = _predict(tmp_path, str(clip_export), pattern, *same)["predictions"]
    assert [p["labels"] for p in from_export] == [p["labels"] for p in from_run]

    no_data = run_cli("eval", "--model", str(clip_export), cwd=tmp_path)
    assert no_data.returncode == 2 and "names no evaluation data" in no_data.stderr
