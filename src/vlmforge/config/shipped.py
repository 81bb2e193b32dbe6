"""Shipped recipes: ``recipes/<group>/<name>.yaml`` in a checkout, ``vlmforge/_recipes`` in a wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

from vlmforge.errors import UserError


def recipes_root() -> Path:
    packaged = Path(__file__).parents[1] / "_recipes"  # vlmforge/_recipes
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "recipes"  # editable install / source checkout


def list_recipes() -> dict[str, Path]:
    """{'demo/clip-digits': path, ...} sorted by name."""
    root = recipes_root()
    found = {str(p.relative_to(root).with_suffix("")): p for p in root.rglob("*.yaml")}
    return dict(sorted(found.items()))


def find_recipe(name: str) -> Path:
    """A shipped recipe by full name (``debug/clip-tiny``) or by unique stem (``clip-tiny``)."""
    recipes = list_recipes()
    name = name.removesuffix(".yaml")
    if name in recipes:
        return recipes[name]
    by_stem = [path for key, path in recipes.items() if key.rsplit("/", 1)[-1] == name]
    if len(by_stem) == 1:
        return by_stem[0]
    import difflib

    close = difflib.get_close_matches(name, list(recipes), n=3)
    raise UserError(
        f"no shipped recipe named {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
        hint="list them with: vlmforge recipes ls",
    )


def resolve_recipe_path(value: str) -> Path:
    """A recipe argument: an existing file, else a shipped recipe name."""
    path = Path(value)
    if path.is_file():
        return path
    try:
        return find_recipe(value)
    except UserError:
        raise UserError(
            f"recipe file not found: {value}",
            hint="give a path to a YAML file or a name from `vlmforge recipes ls`",
        ) from None


def copy_recipe(name: str, dest: Path, overwrite: bool = False) -> Path:
    source = find_recipe(name)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists", hint="choose another destination or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
