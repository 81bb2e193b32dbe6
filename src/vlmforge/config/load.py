"""Load a recipe: YAML file (safe_load only) + ``key.path=value`` overrides -> validated pydantic model.

Every failure becomes a :class:`UserError` naming the file and the field, with the closest valid key
when a key is unknown.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vlmforge.config.peft import ContrastiveFinetuneRecipe
from vlmforge.config.schema import RECIPES, Section, recipe_class
from vlmforge.errors import UserError

RecipeT = TypeVar("RecipeT", bound=Section)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file and line."""
    if not path.is_file():
        raise UserError(
            f"recipe file not found: {path}", hint="check the path, or list recipes: vlmforge recipes ls"
        )
    try:
        data = load_yaml_text(path.read_bytes().decode("utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})",
            hint="save the recipe as UTF-8",
        ) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(
            f"{path}: malformed YAML{where}: {problem}", hint="fix the YAML syntax there"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping of keys, got {type(data).__name__}")
    return data


# A recipe is a few hundred values; anchors and aliases may share a node, but the tree they stand for must
# stay small: ``a: &a [x, x]``, ``b: &b [*a, *a]``, ... doubles per line (a "billion laughs") and would hang
# whatever walks it later (validation, --print-config, the DeepSpeed config).
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


def load_yaml_text(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses documents whose aliases expand past ``MAX_YAML_NODES`` nodes or
    ``MAX_YAML_DEPTH`` levels, or refer to themselves, before building them."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source, {}, 0)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, source: str, sizes: dict[int, int], depth: int) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (shared nodes counted each time)."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise UserError(f"{source}: a YAML alias refers to itself", hint="remove the recursive alias")
        return sizes[key]
    if depth > MAX_YAML_DEPTH:
        raise UserError(f"{source}: YAML nested deeper than {MAX_YAML_DEPTH} levels", hint="flatten it")
    sizes[key] = -1
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1 + sum(_expanded_size(child, source, sizes, depth + 1) for child in children)
    if total > MAX_YAML_NODES:
        raise UserError(
            f"{source}: YAML anchors/aliases expand to more than {MAX_YAML_NODES:,} values",
            hint="write the values out instead of nesting aliases of aliases",
        )
    sizes[key] = total
    return total


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=3e-4`` -> (["optim", "lr"], 0.0003). Values are parsed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(
            f"bad override {text!r}", hint="write overrides as key.path=value, e.g. optim.lr=3e-4"
        )
    try:
        value = load_yaml_text(raw, f"override {text!r}") if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        value = _number_or_text(value)
    return key.split("."), value


def _number_or_text(value: str) -> Any:
    # YAML 1.1 reads "3e-4" as a string; users mean a number.
    try:
        return float(value) if any(c in value.lower() for c in ".e") else int(value)
    except ValueError:
        return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.path=value`` in a nested dict (intermediate mappings are created); a number picks
    an item of a list (``stages.1.lr=1e-4``)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            key = _list_index(node, part, text, path[:i]) if isinstance(node, list) else part
            child = node[key] if isinstance(node, list) else node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict | list):
                where = ".".join(path[: i + 1])
                raise UserError(f"override {text!r}: {where} is a {type(child).__name__}, not a section")
            node = child
        last = _list_index(node, path[-1], text, path[:-1]) if isinstance(node, list) else path[-1]
        node[last] = value
    return data


def _list_index(items: list[Any], part: str, text: str, where: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise UserError(
            f"override {text!r}: {'.'.join(where)} is a list of {len(items)}; {part!r} is not an index in it",
            hint=f"use a number from 0 to {len(items) - 1}",
        )
    return int(part)


def validate_recipe(cls: type[RecipeT], data: dict[str, Any], source: str) -> RecipeT:
    """Validate a mapping against a recipe model; errors become one readable UserError."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(cls, err) for err in exc.errors()]
        raise UserError(
            f"{source}: invalid {_verb_of(cls)} recipe\n" + "\n".join(f"  - {line}" for line in lines),
            hint="fix the fields above; `vlmforge recipes schema "
            f"{_verb_of(cls)}` lists every field with its type and description",
        ) from None


def load_recipe(
    verb: str, path: Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> Section:
    """Read ``path`` (or start from ``base``), apply overrides and validate as the ``verb``'s recipe."""
    data = read_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, overrides or [])
    cls = recipe_class(verb, data)
    return validate_recipe(cls, data, str(path) if path is not None else "recipe")


def dump_recipe(recipe: BaseModel) -> str:
    """The fully resolved recipe as YAML (every default written out), for run dirs and --print-config."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


# -------------------------------------------------------------------------------- error formatting
def _verb_of(cls: type) -> str:
    if cls is ContrastiveFinetuneRecipe:  # the finetune verb's second recipe model
        return "finetune"
    return next((verb for verb, model in RECIPES.items() if model is cls), cls.__name__)


def _describe(root: type[BaseModel], err: Any) -> str:
    loc = tuple(err["loc"])
    shown = _display_path(root, loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(root, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        suggestion = f"; did you mean '{close[0]}'?" if close else ""
        return f"{shown}: unknown key{suggestion} (valid keys: {', '.join(valid)})"
    if kind == "missing":
        return f"{shown}: required field is missing"
    if kind == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        return f"{shown}: unknown kind {err.get('input', {}).get('kind')!r}; expected one of {expected}"
    if kind == "union_tag_not_found":
        return f"{shown}: needs a `kind:` key to choose its type"
    value = err.get("input")
    got = "" if isinstance(value, dict | list) else f" (got {value!r})"
    return f"{shown}: {err['msg']}{got}"


def _display_path(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Dotted path with discriminator tags removed: ('model', 'clip', 'embd') -> 'model.embd'."""
    parts: list[str] = []
    node: Any = root
    for part in loc:
        if isinstance(node, dict):  # a tagged union: this loc element is the tag, not a key
            node = node.get(part)
            continue
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            continue
        parts.append(str(part))
        node = _child(node, str(part))
    return ".".join(parts) or "<recipe>"


def _valid_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    node: Any = root
    for part in loc:
        if isinstance(node, dict):
            node = node.get(part)
        elif not isinstance(part, int):
            node = _child(node, str(part))
    return sorted(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _child(node: Any, key: str) -> Any:
    """The model (or {tag: model} for tagged unions) a field of ``node`` holds."""
    if not (isinstance(node, type) and issubclass(node, BaseModel)) or key not in node.model_fields:
        return None
    field = node.model_fields[key]
    found = _models_in(field.annotation)
    if field.discriminator and isinstance(found, type):  # a one-member tagged union still has a tag in loc
        return dict.fromkeys(_tags(found), found)
    return found


def _tags(model: type[BaseModel]) -> list[str]:
    """The values of a tagged-union member's tag field (``kind``, or ``method`` for finetuning methods)."""
    for key in ("kind", "method"):
        if key in model.model_fields:
            return list(typing.get_args(model.model_fields[key].annotation))
    return []


def _models_in(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        models = [m for m in (_models_in(a) for a in typing.get_args(annotation)) if m is not None]
        flat: dict[str, Any] = {}
        for model in models:
            if isinstance(model, dict):
                flat.update(model)
            elif _tags(model):
                flat.update(dict.fromkeys(_tags(model), model))
            else:
                return model  # Optional[Model]
        return flat or None
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return _models_in(args[0]) if args else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
