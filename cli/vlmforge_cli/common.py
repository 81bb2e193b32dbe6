"""What every command shares: the Typer apps, the consoles, exit codes, option types, and loading,
guarding and rendering helpers (bad input -> a short message and exit 2, a full disk -> exit 4, never a
traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from vlmforge.errors import UserError, UserErrors
from vlmforge.storage import DiskFull, disk_full

app = typer.Typer(
    name="vlmforge",
    help="Train vision-language models from typed, reproducible recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipes_app = typer.Typer(
    help="List, show, copy shipped recipes; print recipe JSON Schemas.", no_args_is_help=True
)
app.add_typer(recipes_app, name="recipes")
data_app = typer.Typer(help="Check data sources before a run.", no_args_is_help=True)
app.add_typer(data_app, name="data")


class DefaultCommandGroup(TyperGroup):
    """A group whose first argument, when it names none of its commands (an option, a key=value
    override, nothing), goes to its default command: ``vlmforge eval --run DIR`` is ``vlmforge eval run
    --run DIR`` while ``vlmforge eval score ...`` runs ``score``; ``--help`` first shows the group's help."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        asks_help = bool(args) and args[0] in ctx.help_option_names
        if not asks_help and (not args or args[0] not in self.commands):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Evaluate a run or an exported model (vlmforge eval --run DIR | --model DIR --data digits | -c "
    "eval.yaml key=value: the default command, see vlmforge eval run --help), score predictions made "
    "elsewhere (eval score) or compare evaluated runs (eval compare).",
)
app.add_typer(eval_app, name="eval")


curate_app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Curate an image-text pool (vlmforge curate -c recipe.yaml: the default command, see vlmforge "
    "curate run --help), or sample a curation for human labelling and measure each filter against the "
    "labels (curate annotate).",
)
app.add_typer(curate_app, name="curate")

err = Console(stderr=True, emoji=False)  # ":name:" in a path or key stays text
# Piped output is not cut to 80 columns: tables stay readable in logs and files.
out = Console(emoji=False) if sys.stdout.isatty() else Console(width=160, emoji=False)
# Exit codes: each way a run can end has its own, so a scheduler can tell them apart.
EXIT_DATA_OVER_BUDGET = 1  # the data had more bad samples than data.max_bad_fraction allows
EXIT_BAD_INPUT = 2  # recipe, flags or files are wrong; nothing was started (or nothing was lost)
EXIT_DIVERGED = 3  # the loss became non-finite; the last finite step's checkpoint was kept
EXIT_DISK_FULL = 4  # a write failed for lack of space; result.json names the intact checkpoint
EXIT_SIGINT = 130  # Ctrl-C: checkpoint saved, as for SIGTERM
EXIT_SIGTERM = 143  # preempted: checkpoint saved, resume with --resume


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class EmitKind(str, Enum):
    deepspeed_config = "deepspeed-config"


RecipeOpt = Annotated[str, typer.Option("--config", "-c", help="Recipe YAML file, or a shipped recipe name.")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Overrides as key.path=value, e.g. optim.lr=3e-4 data.batch_size=64."),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", help="table (human) or json (one object on stdout).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Let --emit/--emit-launch replace files that already exist.")
]
PrintConfigOpt = Annotated[
    bool, typer.Option("--print-config", help="Print the fully resolved recipe as YAML and exit.")
]


def fail(error: UserError) -> NoReturn:
    for problem in error.problems if isinstance(error, UserErrors) else [error]:
        err.print(f"[bold red]error:[/] {escape(problem.message)}", highlight=False, soft_wrap=True)
        if problem.hint:
            err.print(f"[yellow]hint:[/] {escape(problem.hint)}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def fail_disk_full(error: DiskFull) -> NoReturn:
    """A write failed for lack of space: what failed, what is intact, how to go on; exit 4."""
    err.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True)
    run_dir = error.run_dir
    if run_dir is None:
        hint = "free space on that device, then run the command again"
    elif error.intact is not None:
        recorded = f" ({run_dir / 'result.json'} records the failure)" if error.recorded else ""
        err.print(
            f"the newest intact checkpoint is {escape(str(error.intact))}{escape(recorded)}",
            highlight=False,
            soft_wrap=True,
        )
        hint = f"free space on that device, then resume the run with: --resume {run_dir}"
    else:
        err.print(f"{escape(str(run_dir))} holds no intact checkpoint yet", highlight=False, soft_wrap=True)
        hint = "free space on that device, then start the run again"
    err.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_DISK_FULL)


def guarded(body: Callable[[], Any]) -> Any:
    """Run a command's body: bad input -> message and exit 2; a disk full -> message and exit 4."""
    try:
        return body()
    except UserError as error:
        fail(error)
    except Exception as error:
        full = disk_full(error)
        if full is None:
            raise
        fail_disk_full(full)


def load(
    verb: str, config: str | None, overrides: list[str] | None, base: dict[str, Any] | None = None
) -> Any:
    from vlmforge.config.load import load_recipe, read_yaml
    from vlmforge.config.schema import recipe_verb
    from vlmforge.config.shipped import resolve_recipe_path

    path = resolve_recipe_path(config) if config is not None else None
    if path is not None:
        written_for = recipe_verb(read_yaml(path))
        # an eval recipe may leave out `run` (given by --run): it then reads like a pretrain recipe
        if written_for != verb and not (verb == "eval" and base is not None):
            raise UserError(
                f"{config} is a {written_for} recipe; this command reads {verb} recipes",
                hint=f"run it with: vlmforge {written_for} -c {config}",
            )
    return load_recipe(verb, path, overrides or [], base=base)


def training_verb(config: str) -> str:
    """pretrain, finetune or align, from the recipe's contents (stages: finetune; from_run: align)."""
    from vlmforge.config.load import read_yaml
    from vlmforge.config.schema import recipe_verb
    from vlmforge.config.shipped import resolve_recipe_path

    verb = guarded(lambda: recipe_verb(read_yaml(resolve_recipe_path(config))))
    if verb not in ("pretrain", "finetune", "align"):
        fail(
            UserError(
                f"{config} is an {verb} recipe, not a training recipe",
                hint="give a pretrain, finetune or align recipe",
            )
        )
    return verb


def emit(fmt: OutputFormat, payload: dict[str, Any], render: Callable[[], None]) -> None:
    if fmt is OutputFormat.json:
        from vlmforge.storage import json_text

        sys.stdout.write(json_text(payload) + "\n")
        sys.stdout.flush()
    else:
        render()


def print_config(recipe: Any) -> None:
    from vlmforge.config.load import dump_recipe

    sys.stdout.write(dump_recipe(recipe))


def emit_deepspeed(recipe: Any, target: Path | None, fmt: OutputFormat, overwrite: bool) -> None:
    """``--emit deepspeed-config``: one DeepSpeed JSON per fit of a training recipe."""
    from vlmforge.runs.lifecycle import emit_deepspeed_configs

    written = guarded(lambda: emit_deepspeed_configs(recipe, target, overwrite))
    paths = {name: str(path) for name, path in written.items()}
    payload: dict[str, Any] = {"deepspeed_configs": paths, "metrics": {}}
    if len(paths) == 1:
        payload["deepspeed_config"] = next(iter(paths.values()))

    def render() -> None:
        for path in paths.values():
            err.print(f"wrote {escape(path)}")

    emit(fmt, payload, render)
