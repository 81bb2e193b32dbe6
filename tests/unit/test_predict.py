"""Image arguments of `vlmforge predict` (files, folders, globs), its option checks, and the eval recipe's
run / model choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import EvalRecipe, recipe_verb
from vlmforge.data.image_paths import find_images
from vlmforge.errors import UserError
from vlmforge.verbs.predict import PredictRequest, request_problems


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_files_folders_and_globs_in_order_each_once(tmp_path: Path) -> None:
    _touch(tmp_path / "b.png", tmp_path / "a.JPG", tmp_path / "sub" / "c.webp", tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden" / "d.png", tmp_path / "other" / "e.png")
    found = find_images([str(tmp_path / "other" / "e.png"), str(tmp_path), str(tmp_path / "*.png")])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["other/e.png", "a.JPG", "b.png", "sub/c.webp"]  # folder: recursive, sorted, no .hidden
    assert find_images([str(tmp_path / "notes.txt")]) == [tmp_path / "notes.txt"]  # asked for by name
    assert [p.name for p in find_images([str(tmp_path / "**" / "*.webp")])] == ["c.webp"]


def test_arguments_naming_no_image_are_one_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as caught:
        find_images([str(tmp_path / "empty"), str(tmp_path / "missing.png"), str(tmp_path / "*.jpg")])
    assert "empty" in caught.value.message and "missing.png" in caught.value.message
    assert "*.jpg" in caught.value.message


def test_option_problems_are_reported_together() -> None:
    request = PredictRequest(Path("run"), ["x.png"], ["cat"], "why?", top=0, templates=["no placeholder"])
    messages = [problem.message for problem in request_problems(request)]
    assert any("got --classes and --prompt" in m for m in messages)
    assert any("at least two class names" in m for m in messages)
    assert any("--template" in m for m in messages) and any("--top 0" in m for m in messages)
    assert request_problems(PredictRequest(Path("run"), ["x.png"], caption=True)) == []


def test_eval_recipe_takes_a_run_or_a_model(tmp_path: Path) -> None:
    assert recipe_verb({"model": "exports/clip", "data": {"kind": "digits"}}) == "eval"
    assert recipe_verb({"model": {"kind": "clip"}}) == "pretrain"  # a training recipe's model section
    recipe = load_recipe("eval", None, ["model=exports/clip", "data.kind=digits", "data_split=val"], base={})
    assert isinstance(recipe, EvalRecipe) and recipe.source == Path("exports/clip")
    with pytest.raises(UserError, match="exactly one of run"):
        load_recipe("eval", None, ["model=a", "run=b"], base={})
    with pytest.raises(UserError, match="exactly one of run"):
        load_recipe("eval", None, [], base={})
