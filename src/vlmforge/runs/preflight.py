"""What every training verb checks before its first side effect — and ``vlmforge validate`` with it: the
optional packages it needs, whether its strategy and precision run here, that the model takes the data's
image size, and that the model, its activations and the data held in memory fit this machine. Every
problem is reported at once."""

from __future__ import annotations

import os

from vlmforge.config.peft import ContrastiveFinetuneRecipe, LinearProbe, LoraFamily
from vlmforge.config.schema import (
    AlignRecipe,
    FinetuneRecipe,
    PretrainRecipe,
    TrainingRecipe,
)
from vlmforge.errors import UserError, collect
from vlmforge.launch import global_rank

GB = 1024**3
IN_MEMORY_KINDS = ("digits", "digits-conversations", "digits-preferences")  # held whole in each process


def preflight(recipe: TrainingRecipe) -> list[UserError]:
    """Every problem that would stop a pretrain, finetune or align run before it creates anything. The
    model-dependent checks need the basics (packages, strategy, an align recipe's source run) first."""
    from vlmforge.training.requirements import check_loggers_installed, check_runnable

    if isinstance(recipe, ContrastiveFinetuneRecipe):
        return contrastive_preflight(recipe)
    basics = [lambda: check_loggers_installed(recipe.logger), lambda: check_runnable(recipe)]
    if isinstance(recipe, FinetuneRecipe | AlignRecipe):
        from vlmforge.models.transformers_lib import transformers_module

        basics.insert(0, transformers_module)
    if isinstance(recipe, FinetuneRecipe):
        basics.append(lambda: check_qlora(recipe))
    resolved: list[TrainingRecipe] = [recipe]
    if isinstance(recipe, AlignRecipe):  # its model is its from_run's
        from vlmforge.runs.artifacts import with_source_model

        basics.append(lambda: resolved.append(with_source_model(recipe)[0]))
    problems = collect(basics)
    if problems:
        return problems
    recipe = resolved[-1]
    checks = [lambda: check_memory(recipe)]
    if isinstance(recipe, PretrainRecipe):
        checks.insert(0, lambda: check_image_size(recipe))
        checks.insert(0, lambda: check_pretrained(recipe))
    return collect(checks)


def check_qlora(recipe: FinetuneRecipe) -> None:
    """``model.lora.quantize: nf4`` trains with bitsandbytes installed."""
    from vlmforge.models.llava_qlora import check_qlora_runnable

    check_qlora_runnable(recipe.model)


def check_image_size(recipe: PretrainRecipe) -> None:
    """The model (built on the meta device: no memory) must take the images the data makes."""
    from vlmforge.families import family_for
    from vlmforge.planning.phases import phases

    model = phases(recipe)[0].build("meta")
    side = family_for(recipe.model).models.image_size(recipe.model, model)
    if side != recipe.data.image_size:
        raise UserError(
            f"data.image_size is {recipe.data.image_size} but the model expects {side}",
            hint=f"set data.image_size={side}",
        )


def check_pretrained(recipe: PretrainRecipe) -> None:
    """``model.pretrained`` names weights on this machine (a tag or hub name: in the local caches)."""
    if recipe.model.pretrained is not None:
        from vlmforge.weights import resolve

        resolve(recipe.model.pretrained, recipe.model.arch)


def data_in_memory_gb(recipe: TrainingRecipe) -> float:
    """The data each process holds in memory (sources read whole: the digits), in GB."""
    from vlmforge.data.digits import in_memory_bytes

    if isinstance(recipe, PretrainRecipe):
        sources = [(recipe.data, recipe.data.image_size)]
    else:
        model = recipe.model
        side = model.input_side if model is not None else 0
        staged = isinstance(recipe, FinetuneRecipe)
        sources = [(data, side) for data in ([s.data for s in recipe.stages] if staged else [recipe.data])]
    return sum(in_memory_bytes(side) for data, side in sources if data.kind in IN_MEMORY_KINDS) / GB


def check_memory(recipe: TrainingRecipe) -> None:
    """Refuse a run whose estimated memory per process is above what this machine has (``plan.check_memory:
    false`` starts it anyway): the numbers, and what to change."""
    from vlmforge.planning.fits import device_memory, host_available_gb, recipe_memory
    from vlmforge.planning.phases import recipe_model_costs
    from vlmforge.training.requirements import on_cpu

    if not recipe.plan.check_memory:
        return
    if global_rank() != 0:  # rank 0 checked before the others started; they see its memory in use
        return
    cpu = on_cpu(recipe)
    here = int(os.environ.get("LOCAL_WORLD_SIZE", recipe.train.devices))  # processes on this host
    data_gb = data_in_memory_gb(recipe)
    host = host_available_gb()
    if host is not None and data_gb * here > host:
        raise UserError(
            f"the data held in memory needs {data_gb:.1f} GB per process x {here} = {data_gb * here:.1f} GB; "
            f"this host has {host:.1f} GB available",
            hint="lower data.image_size (the digits are held whole), or set plan.check_memory=false",
        )
    device = device_memory(cpu, here)
    if device is None:
        return
    for cost in recipe_model_costs(recipe):
        estimate = recipe_memory(recipe, cost, cost.micro_batch)
        need = estimate.total_gb + (data_gb if cpu else 0.0)
        if need > device.gb:
            raise UserError(
                f"{cost.name}: estimated {need:.1f} GB per process (weights {estimate.weights_gb:.1f}, "
                f"gradients {estimate.grads_gb:.1f}, optimizer {estimate.optimizer_gb:.1f}, activations "
                f"{estimate.activations_gb:.1f} at micro-batch {cost.micro_batch}"
                + (f", data {data_gb:.1f}" if cpu and data_gb else "")
                + f"); {device.name} has {device.gb:.1f} GB",
                hint="`vlmforge plan -c RECIPE` shows layouts that fit (lower train.micro_batch_size, "
                "train.activation_checkpointing=true, a sharding strategy, or more devices); "
                "plan.check_memory=false starts anyway",
            )


def contrastive_preflight(recipe: ContrastiveFinetuneRecipe) -> list[UserError]:
    """A contrastive finetune's starting model and class folders exist, its method's package imports,
    and a GPU is here when asked for."""
    import importlib.util

    import torch

    problems = []
    if not recipe.init_from.exists():
        problems.append(
            UserError(
                f"init_from: {recipe.init_from} does not exist",
                hint="give a pretrain run directory, a folder of runs or an exported model folder",
            )
        )
    for field in ("path", "test_path"):
        path = getattr(recipe.data, field, None)
        if path is not None and not path.is_dir():
            problems.append(
                UserError(f"data.{field}: {path} is not a directory", hint="give a folder of class folders")
            )
    needs = {LinearProbe: ("sklearn", "scikit-learn"), LoraFamily: ("peft", "peft")}.get(type(recipe.method))
    if needs and importlib.util.find_spec(needs[0]) is None:
        problems.append(
            UserError(f"method {recipe.method.method} needs {needs[1]}", hint=f"pip install {needs[1]}")
        )
    if recipe.train.accelerator == "gpu" and not torch.cuda.is_available():
        problems.append(
            UserError("train.accelerator: gpu, but no CUDA GPU is visible", hint="set train.accelerator: cpu")
        )
    return problems
