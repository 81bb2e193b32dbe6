"""The ``vlmforge`` command: parse, load + validate the recipe, call the verb's ``run``, render.

No ML logic lives here. Exit codes: 0 success, 2 bad input (message, no traceback), 143 stopped by
SIGTERM after saving a checkpoint (resume with ``--resume auto``), 1 from ``data check`` when more samples
are bad than ``data.max_bad_fraction`` allows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from vlmforge.errors import UserError, raise_all
from vlmforge_cli import (
    curate_annotate,  # noqa: F401  (registers curate annotate export, curate annotate import)
    curate_documents,  # noqa: F401  (registers curate documents, assign-images, demo-documents)
    curate_generate,  # noqa: F401  (registers curate generate-images)
    curate_ocr,  # noqa: F401  (registers curate ocr-conversations)
    eval_reports,  # noqa: F401  (registers eval score, eval compare)
    inference,  # noqa: F401  (registers pretrain, finetune, align, then eval, predict)
    interop,  # noqa: F401  (registers export)
    sweep,  # noqa: F401  (registers sweep)
)
from vlmforge_cli.common import (
    EXIT_DATA_OVER_BUDGET,
    FormatOpt,
    OutputFormat,
    OverridesArg,
    PrintConfigOpt,
    RecipeOpt,
    app,
    curate_app,
    data_app,
    emit,
    err,
    fail,
    guarded,
    load,
    out,
    print_config,
    recipes_app,
    training_verb,
)


# ------------------------------------------------------------------------------------- other verbs
@curate_app.command("run")
def curate(
    config: RecipeOpt,
    overrides: OverridesArg = None,
    write: Annotated[
        str | None,
        typer.Option(help="ffcv: also write the kept samples to <output>/curated.beton (the `ffcv` extra)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    show_config: PrintConfigOpt = False,
) -> None:
    """Filter, deduplicate, balance and re-caption an image-text pool into WebDataset shards.

    Writes shards/, report.json, report.html and plots/ to the recipe's output folder; running it again
    resumes: finished shards are not redone."""
    from vlmforge.verbs import curate as verb

    if write not in (None, "ffcv"):
        fail(UserError(f"--write {write!r}: the only extra output format is ffcv", hint="--write ffcv"))
    recipe = guarded(lambda: load("curate", config, overrides))
    if write == "ffcv" and recipe.ffcv is None:  # the recipe's own ffcv section wins
        from vlmforge.config.curate import FfcvOutput

        recipe = recipe.model_copy(update={"ffcv": FfcvOutput()})
    if show_config:
        print_config(recipe)
        return
    result = guarded(lambda: verb.run(recipe))
    from vlmforge_cli.render import curate_summary

    emit(fmt, result.to_json(), lambda: curate_summary(out, result))


def _checked_plan_flags(
    gpus: str | None, budget_usd: float | None, deadline_hours: float | None
) -> list[int] | None:
    """--gpus as a list of counts; every problem of the numeric plan flags reported at once."""
    from vlmforge.verbs import plan as verb

    problems: list[UserError] = []
    counts = None
    if gpus is not None:
        try:
            counts = [int(part) for part in gpus.split(",") if part.strip()]
        except ValueError:
            problems.append(
                UserError(
                    f"--gpus {gpus!r}: cannot read it as comma-separated whole numbers",
                    hint="e.g. --gpus 1,8,64",
                )
            )
    raise_all(problems + verb.limit_problems(counts, budget_usd, deadline_hours))
    return counts


@app.command()
def plan(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Recipe to plan.")] = None,
    overrides: OverridesArg = None,
    gpu: Annotated[
        str | None,
        typer.Option(help="Accelerators, comma-separated (default: a100-40gb,a100-80gb,h100-sxm)."),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="GPU counts, comma-separated (default: 1,8,64 + the recipe's).")
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Only configurations costing at most this.")
    ] = None,
    deadline_hours: Annotated[
        float | None, typer.Option(help="Only configurations finishing within this.")
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="Extra accelerator CSV (same columns as the bundled one).")
    ] = None,
    published: Annotated[
        Path | None,
        typer.Option(
            help="Predict the runs in a published-runs CSV ('bundled': the calibration set) and compare."
        ),
    ] = None,
    refit: Annotated[
        Path | None,
        typer.Option(help="Learn this machine's utilisation from finished runs under this folder."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write a cost vs time PNG here.")] = None,
    calibrate: Annotated[
        bool, typer.Option("--calibrate", help="First time real steps of the model on this machine's device.")
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
    show_config: PrintConfigOpt = False,
) -> None:
    """Estimate GPU count, time, memory per GPU and cost of a recipe (or of published runs).

    --calibrate times a few real training steps on the device here (on the recipe's data when it is on
    this machine, else on random inputs of its shapes) and uses the measured utilisation for this device
    in this and later plans."""
    from dataclasses import asdict

    from vlmforge.verbs import plan as verb
    from vlmforge_cli.render import calibration_line, plan_table, published_table

    accelerators = [name for name in gpu.split(",") if name.strip()] if gpu is not None else None
    counts = guarded(lambda: _checked_plan_flags(gpus, budget_usd, deadline_hours))
    if refit is not None:
        fitted = guarded(lambda: verb.refit(refit))

        def show_fitted() -> None:
            for calibration in fitted:
                calibration_line(out, calibration)

        emit(fmt, {"calibrations": [asdict(c) for c in fitted]}, show_fitted)
        return
    if published is not None:
        report = guarded(lambda: verb.published(published, catalog))
        emit(fmt, report, lambda: published_table(out, report))
        return
    if config is None:
        fail(UserError("give a recipe with -c, or --published FILE.csv"))
    recipe = guarded(lambda: load(training_verb(config), config, overrides))
    if show_config:
        print_config(recipe)
        return

    calibration = guarded(lambda: verb.calibrate(recipe)) if calibrate else None
    result = guarded(lambda: verb.run(recipe, accelerators, counts, budget_usd, deadline_hours, catalog))
    payload = result.to_json()
    if plot is not None:
        payload["plot"] = str(verb.plot(result, plot))
    if calibration is not None:
        payload["calibration"] = asdict(calibration)

    def render() -> None:
        if calibration is not None:
            calibration_line(out, calibration)
        plan_table(out, result)

    emit(fmt, payload, render)


@app.command()
def validate(
    config: RecipeOpt,
    overrides: OverridesArg = None,
    verb: Annotated[str | None, typer.Option(help="Recipe type (default: inferred from the file).")] = None,
    fmt: FormatOpt = OutputFormat.table,
    show_config: PrintConfigOpt = False,
    schema_only: Annotated[
        bool,
        typer.Option(
            "--schema-only",
            help="Check fields, types and values only, not what the verb checks on this machine (files, "
            "packages, devices, memory): for a recipe meant for another machine.",
        ),
    ] = False,
) -> None:
    """Check a recipe without running anything: every check the verb runs before it starts, all problems
    at once (fields, types, values, files, packages, devices, memory)."""
    from vlmforge.config.schema import RECIPES, recipe_verb

    def body() -> tuple[str, Any]:
        from vlmforge.config.load import read_yaml
        from vlmforge.config.shipped import resolve_recipe_path

        chosen = verb or recipe_verb(read_yaml(resolve_recipe_path(config)))
        if chosen not in RECIPES:
            raise UserError(f"--verb {chosen!r} is not a recipe type", hint=f"one of: {', '.join(RECIPES)}")
        return chosen, load(chosen, config, overrides)

    chosen, recipe = guarded(body)
    if show_config:
        print_config(recipe)
        return
    notes = _missing_paths(recipe)
    if not schema_only:  # here a missing file is an error, as it is for the verb
        missing = [
            UserError(note, hint="fix the path, or pass --schema-only")
            for note in notes
            if not note.startswith("model.pretrained")  # the pre-flight resolves it
        ]
        guarded(lambda: raise_all(missing + _preflight(chosen, recipe)))
    payload = {"valid": True, "verb": chosen, "name": getattr(recipe, "name", None), "notes": notes}

    def render() -> None:
        out.print(f"[green]valid[/] {chosen} recipe: {escape(str(config))}")
        for note in notes:
            err.print(f"[yellow]note:[/] {escape(note)}")

    emit(fmt, payload, render)


def _preflight(verb: str, recipe: Any) -> list[UserError]:
    """The checks the verb itself runs before its first side effect, every problem at once."""
    import importlib

    module = PREFLIGHT.get(verb)
    return importlib.import_module(module).preflight(recipe) if module else []


# The verbs whose run starts with ``preflight(recipe)``: validate runs the same checks.
PREFLIGHT = {
    "curate": "vlmforge.verbs.curate",
    "pretrain": "vlmforge.runs.preflight",
    "finetune": "vlmforge.runs.preflight",
    "align": "vlmforge.runs.preflight",
}


def _missing_paths(recipe: Any) -> list[str]:
    """Paths the recipe names that do not exist on this machine (fine for recipes meant for a cluster)."""
    notes = []
    sources = [("data", getattr(recipe, "data", None))]
    sources += [(f"stages[{i}].data", stage.data) for i, stage in enumerate(getattr(recipe, "stages", []))]
    for where, data in sources:
        if data is not None and getattr(data, "path", None) is not None and not data.path.exists():
            notes.append(f"{where}.path {data.path} does not exist on this machine")
    for task in getattr(recipe, "tasks", None) or []:  # benchmarks name their files
        missing = {field: path for field, path in getattr(task, "paths", dict)().items() if not path.exists()}
        notes += [
            f"tasks: {task.result_name}.{f} {p} does not exist on this machine" for f, p in missing.items()
        ]
    pretrained = getattr(getattr(recipe, "model", None), "pretrained", None)
    if pretrained is not None and not Path(pretrained).expanduser().exists():
        notes.append(
            f"model.pretrained {pretrained} is not a path on this machine: it must be a name found in the "
            "local open_clip / Hugging Face caches (checked without --schema-only)"
        )
    return notes


# ------------------------------------------------------------------------------------------- data
@data_app.command("check")
def data_check(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SHARDS... | FOLDER | OVERRIDES...",
            help="Shard paths or patterns ('shards/{00000..00009}.tar'), or one folder holding images and "
            "captions.jsonl; with -c: key.path=value overrides.",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Check the recipe's data (data.kind: webdataset or folder)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Read every sample and decode every image: counts, sizes, caption lengths, each bad sample by shard
    (or folder) and key, and the loader throughput measured here. Exit 1 when a run would stop
    (max_bad_fraction)."""
    from vlmforge.config.schema import FolderData, WebDatasetData
    from vlmforge.data.check import check_source

    def source() -> WebDatasetData | FolderData:
        if config is None:
            if not args:
                raise UserError("give shard paths or patterns, a folder, or a recipe with -c")
            if any(Path(arg).is_dir() for arg in args):
                if len(args) > 1:
                    raise UserError(
                        "give one folder, or shard paths and patterns, not both",
                        hint="vlmforge data check FOLDER  |  vlmforge data check 'shards/*.tar'",
                    )
                return FolderData(path=Path(args[0]))
            return WebDatasetData(shards=args)
        data = load("pretrain", config, args).data
        if not isinstance(data, WebDatasetData | FolderData):
            raise UserError(
                f"data check reads webdataset shards or a folder; the recipe's data.kind is {data.kind!r}",
                hint="give shard patterns or a folder: vlmforge data check 'shards/{00000..00009}.tar'",
            )
        return data

    report = guarded(lambda: check_source(source()))
    from vlmforge.planning.bottleneck import record_decode_rate
    from vlmforge_cli.render import data_check_table

    if report.images_per_s > 0:  # plans compare the images/s each GPU needs with this rate
        record_decode_rate(report.images_per_s)

    emit(fmt, report.to_json(), lambda: data_check_table(out, report.to_json()))
    if report.over_budget:
        err.print(
            f"[red]{len(report.dropped)} of {report.entries} samples are bad: above "
            f"data.max_bad_fraction={report.max_bad_fraction:g}, a run would stop[/]"
        )
        raise typer.Exit(EXIT_DATA_OVER_BUDGET)


# ---------------------------------------------------------------------------------------- recipes
@recipes_app.command("ls")
def recipes_ls(fmt: FormatOpt = OutputFormat.table) -> None:
    """List shipped recipes."""
    from vlmforge.config.load import read_yaml
    from vlmforge.config.schema import recipe_verb
    from vlmforge.config.shipped import list_recipes
    from vlmforge_cli.render import recipes_table

    found = list_recipes()
    verbs = {name: recipe_verb(read_yaml(path)) for name, path in found.items()}
    payload = {"recipes": {k: str(v) for k, v in found.items()}, "verbs": verbs}
    emit(fmt, payload, lambda: recipes_table(out, found, verbs))


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="Recipe name, e.g. debug/clip-tiny.")]) -> None:
    """Print a shipped recipe."""
    from vlmforge.config.shipped import find_recipe

    path = guarded(lambda: find_recipe(name))
    sys.stdout.write(path.read_text(encoding="utf-8"))


@recipes_app.command("cp")
def recipes_cp(
    name: Annotated[str, typer.Argument(help="Recipe name, e.g. demo/clip-digits.")],
    dest: Annotated[Path, typer.Argument(help="Destination file or folder.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a shipped recipe to edit it."""
    from vlmforge.config.shipped import copy_recipe

    target = guarded(lambda: copy_recipe(name, dest, overwrite=force))
    err.print(f"copied to {escape(str(target))}")


@recipes_app.command("schema")
def recipes_schema(
    verb: Annotated[str, typer.Argument(help="pretrain, finetune, align, eval or curate.")],
) -> None:
    """Print the JSON Schema of a verb's recipe (every field, type, default and description)."""
    from vlmforge.config.schema import RECIPES, recipe_json_schema

    if verb not in RECIPES:
        fail(UserError(f"no recipe schema for {verb!r}", hint=f"one of: {', '.join(RECIPES)}"))
    sys.stdout.write(json.dumps(recipe_json_schema(verb), indent=2) + "\n")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub unless the user opts in
    app()


if __name__ == "__main__":
    main()
