"""Recipe schema, overrides and error messages (in-process, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlmforge.config.load import apply_overrides, dump_recipe, load_recipe, parse_override, read_yaml
from vlmforge.config.schema import (
    RECIPES,
    DDPStrategy,
    recipe_json_schema,
    recipe_verb,
)
from vlmforge.config.shipped import find_recipe, list_recipes
from vlmforge.errors import UserError

DEBUG = find_recipe("debug/clip-tiny")


@pytest.mark.parametrize("name", list(list_recipes()))
def test_every_shipped_recipe_validates_and_round_trips(name: str, tmp_path: Path) -> None:
    """Every shipped recipe loads as the verb its folder says, and its resolved dump (what a run saves as
    recipe.yaml) loads back to the same recipe."""
    path = list_recipes()[name]
    group = name.split("/")[0]
    verb = recipe_verb(read_yaml(path))
    aligned = name.endswith("-dpo") or any(method in name for method in ("dpo-", "-reward", "-rloo"))
    expected = "curate" if group == "curate" else "align" if aligned else None
    expected = "eval" if group == "eval" else expected
    if group == "llava" or name.startswith("debug/llava"):
        expected = expected or "finetune"
    if group == "peft" or ("method" in read_yaml(path) and not aligned):  # contrastive finetuning methods
        expected = "finetune"
    assert verb == (expected or "pretrain")
    recipe = load_recipe(verb, path)
    dumped = tmp_path / "recipe.yaml"
    dumped.write_text(dump_recipe(recipe))
    assert load_recipe(verb, dumped) == recipe


def test_shipped_recipes_include_demo_debug_and_real_scale() -> None:
    assert {
        "demo/clip-digits",
        "debug/clip-tiny",
        "clip/vit-b-16",
        "clip/vit-b-16-laion400m",
        "flip/vit-l-14-good-data",
        "debug/llava-tiny",
        "llava/llava-1.5-7b",
    } <= set(list_recipes())


def test_override_values_are_typed_and_nested() -> None:
    recipe = load_recipe(
        "pretrain", DEBUG, ["optim.lr=3e-4", "data.batch_size=64", "train.strategy.kind=ddp"]
    )
    assert recipe.optim.lr == pytest.approx(3e-4)
    assert recipe.data.batch_size == 64
    assert isinstance(recipe.train.strategy, DDPStrategy)


def test_parse_override_handles_lists_null_and_text() -> None:
    assert parse_override("data.mean=[0.5,0.5,0.5]") == (["data", "mean"], [0.5, 0.5, 0.5])
    assert parse_override("train.grad_clip_norm=null") == (["train", "grad_clip_norm"], None)
    assert parse_override("name=my-run") == (["name"], "my-run")
    with pytest.raises(UserError, match=r"key\.path=value"):
        parse_override("no-equals-sign")


def test_override_into_a_scalar_is_an_error() -> None:
    with pytest.raises(UserError, match=r"optim\.lr is a float"):
        apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr.x=1"])


def test_typo_key_names_field_and_suggests_closest() -> None:
    with pytest.raises(UserError) as info:
        load_recipe("pretrain", DEBUG, ["model.vision.widht=64"])
    text = str(info.value)
    assert "model.vision.widht" in text
    assert "did you mean 'width'" in text


def test_typo_top_level_key() -> None:
    with pytest.raises(UserError, match="did you mean 'optim'"):
        load_recipe("pretrain", DEBUG, ["optimm.lr=1"])


def test_wrong_type_names_field_and_value() -> None:
    with pytest.raises(UserError) as info:
        load_recipe("pretrain", DEBUG, ["optim.lr=fast"])
    assert "optim.lr" in str(info.value)
    assert "'fast'" in str(info.value)


def test_unknown_kind_lists_choices() -> None:
    with pytest.raises(UserError) as info:
        load_recipe("pretrain", DEBUG, ["data.kind=imagenet"])
    assert "data" in str(info.value) and "'digits'" in str(info.value)


def test_batch_must_divide_across_devices() -> None:
    with pytest.raises(UserError, match="multiple of"):
        load_recipe("pretrain", DEBUG, ["data.batch_size=33", "train.devices=2"])


def test_accumulation_is_derived_from_micro_batch() -> None:
    recipe = load_recipe(
        "pretrain", DEBUG, ["data.batch_size=32", "train.devices=2", "train.micro_batch_size=8"]
    )
    assert recipe.batch_plan().accumulate == 2


def test_unknown_open_clip_arch_suggests_names() -> None:
    with pytest.raises(UserError, match="ViT-B-16"):
        load_recipe("pretrain", find_recipe("clip/vit-b-16"), ["model.arch=ViT-B-61"])


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(UserError) as info:
        read_yaml(bad)
    assert str(bad) in str(info.value) and "line" in str(info.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_yaml(tmp_path / "absent.yaml")


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe("pretrain", DEBUG, ["optim.lr=1e-3"])
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(dump_recipe(recipe))
    assert load_recipe("pretrain", dumped) == recipe
    assert "warmup_steps" in yaml.safe_load(dumped.read_text())["optim"]  # defaults written out


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="malformed YAML"):
        read_yaml(evil)


@pytest.mark.parametrize("verb", list(RECIPES))
def test_every_recipe_field_is_described(verb: str) -> None:
    """`vlmforge recipes schema VERB` documents every field a recipe may hold (finetune: both models)."""
    schema = recipe_json_schema(verb)
    sections = {"(top level)": schema, **schema.get("$defs", {})}
    undocumented = [
        f"{section}.{field}"
        for section, body in sections.items()
        for field, spec in body.get("properties", {}).items()
        if not spec.get("description") and field not in ("kind", "method", "schema_version")  # tags
    ]
    assert not undocumented, f"fields without a description: {undocumented}"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e309"])
def test_non_finite_numbers_are_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"optim\.lr"):
        load_recipe("pretrain", find_recipe("debug/clip-tiny"), [f"optim.lr={value}"])
    recipe = tmp_path / "r.yaml"
    with_plan = f"\nplan: {{confirm_above_usd: {value}}}\n"
    recipe.write_text(find_recipe("debug/clip-tiny").read_text() + with_plan)
    with pytest.raises(UserError, match="confirm_above_usd"):
        load_recipe("pretrain", recipe)
