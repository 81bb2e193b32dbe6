"""The training commands: `pretrain`, `finetune`, `align` (load the recipe, emit configs or launch
scripts, run, render)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from vlmforge_cli.common import (
    EXIT_DIVERGED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EmitKind,
    ForceOpt,
    FormatOpt,
    OutputFormat,
    OverridesArg,
    PrintConfigOpt,
    RecipeOpt,
    app,
    emit,
    emit_deepspeed,
    err,
    guarded,
    load,
    out,
    print_config,
)


@app.command()
def pretrain(
    config: RecipeOpt,
    overrides: OverridesArg = None,
    resume: Annotated[
        str, typer.Option(help="auto: newest unfinished run of this name; never; or a run dir / .ckpt file.")
    ] = "never",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Start without asking, whatever the estimated cost.")
    ] = False,
    emit_launch: Annotated[
        str | None,
        typer.Option(
            help="Write a torchrun or slurm launch script for this recipe (nodes x devices) and exit."
        ),
    ] = None,
    emit_config: Annotated[
        EmitKind | None,
        typer.Option("--emit", help="Write a generated config for this recipe and exit: the DeepSpeed JSON."),
    ] = None,
    launch_file: Annotated[
        Path | None,
        typer.Option(
            help="Where --emit-launch / --emit write (default: ./<name>-<kind>.sh, ./<name>-deepspeed.json)."
        ),
    ] = None,
    force: ForceOpt = False,
    fmt: FormatOpt = OutputFormat.table,
    show_config: PrintConfigOpt = False,
) -> None:
    """Pretrain a model (CLIP, SigLIP, FLIP, CoCa, masked, FLAVA) from a recipe, then evaluate it held out.

    The estimated time and cost on the devices in use is printed first; on a terminal, a run costing more
    than plan.confirm_above_usd asks before it starts."""
    from vlmforge.verbs import pretrain as verb

    recipe = guarded(lambda: load("pretrain", config, overrides))
    if show_config:
        print_config(recipe)
        return
    if emit_launch is not None:
        write_launch_script(recipe, emit_launch, launch_file, force, fmt)
        return
    if emit_config is EmitKind.deepspeed_config:
        emit_deepspeed(recipe, launch_file, fmt, force)
        return
    confirm = None if yes or not sys.stdin.isatty() else (lambda question: typer.confirm(question, err=True))
    result = guarded(lambda: verb.run(recipe, resume=resume, confirm=confirm))
    if result is None:  # a worker rank under DDP: rank 0 reports
        return
    from vlmforge_cli.render import pretrain_summary

    emit(fmt, result.to_json(), lambda: pretrain_summary(out, result))
    exit_unless_completed(result)


def write_launch_script(
    recipe: Any, kind: str, launch_file: Path | None, force: bool, fmt: OutputFormat
) -> None:
    """``--emit-launch torchrun|slurm``: the launch script and the resolved recipe beside it."""
    from vlmforge.launch import emit_launch as write_launch

    target = launch_file or Path(f"{recipe.name}-{kind}.sh")
    script, resolved = guarded(lambda: write_launch(recipe, kind, target, force))
    emit(
        fmt,
        {"launch_script": str(script), "recipe": str(resolved), "metrics": {}},
        lambda: err.print(f"wrote {escape(str(script))} (recipe: {escape(str(resolved))})"),
    )


ResumeStagedOpt = Annotated[
    str,
    typer.Option(
        help="auto: newest unfinished run of this name (finished parts are skipped); never; "
        "or a run dir / .ckpt file."
    ),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Start without asking, whatever the estimated cost.")
]
EmitOpt = Annotated[
    EmitKind | None,
    typer.Option(
        "--emit", help="Write a generated config for this recipe and exit: the DeepSpeed JSON of each fit."
    ),
]
EmitFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--launch-file",
        help="Where --emit-launch / --emit write (default: ./<name>-<kind>.sh, ./<name>-deepspeed.json; "
        "with several stages, one DeepSpeed file each with -<stage> before .json).",
    ),
]
EmitLaunchOpt = Annotated[
    str | None,
    typer.Option(help="Write a torchrun or slurm launch script for this recipe (nodes x devices) and exit."),
]


def _staged_command(verb_name: str, doc: str) -> None:
    """Register ``finetune`` or ``align``: the two share their options, their run and their summary."""

    def command(
        config: RecipeOpt,
        overrides: OverridesArg = None,
        resume: ResumeStagedOpt = "never",
        yes: YesOpt = False,
        emit_launch: EmitLaunchOpt = None,
        emit_config: EmitOpt = None,
        launch_file: EmitFileOpt = None,
        force: ForceOpt = False,
        fmt: FormatOpt = OutputFormat.table,
        show_config: PrintConfigOpt = False,
    ) -> None:
        _train_llava(
            verb_name,
            config,
            overrides,
            resume,
            yes,
            fmt,
            show_config,
            (emit_launch, emit_config),
            launch_file,
            force,
        )

    command.__doc__ = doc
    app.command(name=verb_name)(command)


_staged_command(
    "finetune",
    """Finetune a model, then evaluate it: a LLaVA run stage by stage, or a contrastive model with a
    recipe `method:` (linear probe, full + WiSE-FT, LoRA/DoRA/VeRA, CoOp, VPT, CLIP-Adapter).

    LLaVA stages start from the previous stage's weights and train only what they name (projector,
    projector+llm, adapters, LoRA). The plan for the devices in use is printed first; on a terminal, a run
    costing more than plan.confirm_above_usd asks before it starts.""",
)
_staged_command(
    "align",
    """Align a finetuned LLaVA run (from_run): DPO / IPO on chosen/rejected pairs, a reward model, or RLOO
    against that reward model; then evaluate on held-out data.

    The finetune run named by from_run is the starting policy and the frozen reference. The plan for the
    devices in use is printed first; on a terminal, a run costing more than plan.confirm_above_usd asks
    before it starts.""",
)


def _train_llava(
    verb_name: str,
    config: str,
    overrides: list[str] | None,
    resume: str,
    yes: bool,
    fmt: OutputFormat,
    show_config: bool,
    emits: tuple[str | None, EmitKind | None],
    launch_file: Path | None,
    force: bool,
) -> None:
    """finetune or align: load, run, render (the two share their options and their summary). ``emits``:
    the --emit-launch and --emit choices."""
    import importlib

    verb = importlib.import_module(f"vlmforge.verbs.{verb_name}")
    recipe = guarded(lambda: load(verb_name, config, overrides))
    if show_config:
        print_config(recipe)
        return
    emit_launch, emit_config = emits
    if emit_launch is not None:
        write_launch_script(recipe, emit_launch, launch_file, force, fmt)
        return
    if emit_config is EmitKind.deepspeed_config:
        emit_deepspeed(recipe, launch_file, fmt, force)
        return
    confirm = None if yes or not sys.stdin.isatty() else (lambda question: typer.confirm(question, err=True))
    result = guarded(lambda: verb.run(recipe, resume=resume, confirm=confirm))
    if result is None:  # a worker rank under DDP: rank 0 reports
        return
    from vlmforge_cli.render import finetune_summary

    emit(fmt, result.to_json(), lambda: finetune_summary(out, result, verb_name))
    exit_unless_completed(result)


def exit_unless_completed(result: Any) -> None:
    """A run that stopped early says why, what it saved and what to do, and exits with its own code."""
    saved = f" to {result.checkpoint}" if result.checkpoint else ""
    resume = f"Resume with: --resume {result.run_dir}"
    if result.status == "preempted":
        err.print(f"stopped by SIGTERM; checkpoint saved{escape(saved)}. {escape(resume)}", soft_wrap=True)
        raise typer.Exit(EXIT_SIGTERM)
    if result.status == "interrupted":
        err.print(
            f"stopped by Ctrl-C (SIGINT); checkpoint saved{escape(saved)}. {escape(resume)}", soft_wrap=True
        )
        raise typer.Exit(EXIT_SIGINT)
    if result.status == "diverged":
        stop = result.metrics.get("stopped", {})
        err.print(
            f"[bold red]diverged:[/] the loss became NaN or infinite at step {stop.get('step')}; "
            f"training stopped before that step's update and step {stop.get('saved_step')} was saved"
            f"{escape(saved)}",
            soft_wrap=True,
        )
        err.print(
            "[yellow]hint:[/] start again with a lower optim.lr, a longer optim.warmup_steps or "
            "train.grad_clip_norm; `vlmforge eval --run RUN_DIR` evaluates the saved step",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_DIVERGED)
