"""`vlmforge eval` (a run or an exported model, on its held-out split or given data) and `vlmforge predict`
(labels, captions or answers for image files from a run or an exported model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from vlmforge.errors import UserError
from vlmforge_cli import training  # noqa: F401  (registers pretrain, finetune, align first)
from vlmforge_cli.common import (
    FormatOpt,
    OutputFormat,
    OverridesArg,
    PrintConfigOpt,
    app,
    emit,
    err,
    fail,
    guarded,
    load,
    out,
    print_config,
)

# shipped evaluation data for --data: the recipe fields it sets
EVAL_DATA = {
    "digits": {"data": {"kind": "digits"}, "data_split": "val"},
    "digits-conversations": {"data": {"kind": "digits-conversations"}, "data_split": "val"},
}


@app.command("eval")
def evaluate(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Eval recipe YAML.")] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="Run directory to evaluate (no recipe needed).")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Exported model folder (open_clip local-dir; transformers LLaVA, CLIP or SigLIP) or run "
            "directory to evaluate; results go to its eval/ unless output=DIR is given.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Shipped evaluation data, the held-out split its runs keep: digits (image-caption data) "
            "or digits-conversations (questions about digits, for LLaVA).",
        ),
    ] = None,
    overrides: OverridesArg = None,
    fmt: FormatOpt = OutputFormat.table,
    show_config: PrintConfigOpt = False,
) -> None:
    """Evaluate a trained run or an exported model: zero-shot, retrieval, compositionality, captioning,
    linear probe, visual question answering (LLaVA); or standard benchmarks read from their own files at
    a local path (tasks of kind imagenet, karpathy_retrieval, karpathy_captioning, sugarcrepe, aro, ...:
    see `vlmforge recipes show eval/benchmarks`)."""
    from vlmforge.verbs import evaluate as verb

    if run_dir is not None and model_dir is not None:
        fail(UserError("give --run or --model, not both", hint="--run RUN_DIR  |  --model EXPORT_DIR"))
    if config is None and run_dir is None and model_dir is None:
        fail(
            UserError(
                "give an eval recipe (-c), a run directory (--run) or a model folder (--model)",
                hint="e.g. vlmforge eval --run runs/NAME/STAMP  |  vlmforge eval --model DIR --data digits",
            )
        )
    if data is not None and data not in EVAL_DATA:
        fail(
            UserError(
                f"--data {data!r} is not shipped evaluation data", hint=f"one of: {', '.join(EVAL_DATA)}"
            )
        )
    # the flags as overrides: they win over the recipe file's fields
    flags = [f"run={run_dir}"] if run_dir is not None else []
    flags += [f"model={model_dir}"] if model_dir is not None else []
    flags += _data_overrides(EVAL_DATA[data]) if data is not None else []
    # a recipe file may leave run/model to the flags (it then reads like a pretrain recipe)
    base = {} if config is None or run_dir is not None or model_dir is not None else None
    recipe = guarded(lambda: load("eval", config, flags + list(overrides or []), base=base))
    if show_config:
        print_config(recipe)
        return
    result = guarded(lambda: verb.run(recipe))
    if recipe.model is not None:
        err.print(f"results written to {escape(str(result.folder))}", soft_wrap=True)
    from vlmforge_cli.render import eval_table

    emit(fmt, result.to_json(), lambda: eval_table(out, result.metrics, title=f"eval: {result.data}"))


def _data_overrides(fields: dict[str, Any]) -> list[str]:
    """key.path=value overrides setting ``fields`` (one level of nesting)."""
    pairs: list[str] = []
    for key, value in fields.items():
        if isinstance(value, dict):
            pairs += [f"{key}.{sub}={item}" for sub, item in value.items()]
        else:
            pairs.append(f"{key}={value}")
    return pairs


@app.command()
def predict(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR|EXPORT_DIR",
            help="A run directory, an open_clip export or a transformers folder (LLaVA, CLIP, SigLIP).",
        ),
    ],
    images: Annotated[
        list[str],
        typer.Argument(
            metavar="IMAGE...", help="Image files, folders (all images below, sorted) or quoted globs."
        ),
    ],
    classes: Annotated[
        str | None,
        typer.Option(help="Zero-shot: comma-separated class names, e.g. cat,dog,bird (CLIP, SigLIP, CoCa)."),
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="A question to answer about each image (LLaVA).")] = None,
    caption: Annotated[bool, typer.Option("--caption", help="Caption each image, greedily (CoCa).")] = False,
    template: Annotated[
        list[str] | None,
        typer.Option(
            help="Zero-shot prompt template with '{}' (repeatable; default: the run's zero-shot templates, "
            "'a photo of a {}.' for an export)."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Labels shown per image, most likely first.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda.")] = "auto",
    max_tokens: Annotated[
        int | None,
        typer.Option(help="Longest caption or answer in tokens (default: the context length; answers 16)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Predict for image files: zero-shot labels with probabilities (--classes), a caption (--caption) or
    an answer (--prompt). Unreadable images are listed and skipped; exit 2 when none can be read."""
    from vlmforge.verbs import predict as verb

    names = (
        None if classes is None else list(dict.fromkeys(c.strip() for c in classes.split(",") if c.strip()))
    )
    request = verb.PredictRequest(
        source, images, names, prompt, caption, template, top, batch_size, device, max_tokens
    )
    result = guarded(lambda: verb.run(request))
    for bad in result.unreadable:
        shown = f"{escape(bad.file)}: {escape(bad.reason)} ({escape(bad.detail)})"
        err.print(f"[yellow]skipped[/] {shown}", soft_wrap=True)
    if result.unreadable:
        err.print(
            f"[yellow]{len(result.unreadable)} of {len(result.unreadable) + len(result.predictions)} images "
            "could not be read and were skipped[/]"
        )
    emit(fmt, result.to_json(), lambda: prediction_table(result))


def prediction_table(result: Any) -> None:
    title = f"predict: {result.task} ({result.model_kind}, {result.device})"
    table = Table(title=title, caption=escape(result.source))
    table.add_column("image", overflow="fold")
    table.add_column({"zeroshot": "labels", "caption": "caption", "answer": "answer"}[result.task])
    for row in result.predictions:
        if "labels" in row:
            shown = ", ".join(f"{escape(x['label'])} {x['score']:.3f}" for x in row["labels"])
        else:
            shown = escape(row.get("caption", row.get("answer", "")))
        table.add_row(escape(row["file"]), shown)
    out.print(table)
