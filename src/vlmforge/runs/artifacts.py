"""What a finished run left behind, and loading it back: the final checkpoint of a pretrain run, the
weights of a finetune run's stages, the tokenizer, and the trained model itself (for ``vlmforge eval``,
curation scorers and captioners, and ``vlmforge align``, which starts from a finetune run).

Layout: ``result.json`` names the final weights relative to the run; a pretrain run keeps step
checkpoints in ``checkpoints/`` (a sharded run also ``checkpoints/final-weights.ckpt``) and its tokenizer
in ``tokenizer.json``; a finetune run keeps ``stages/<name>/model.safetensors`` and ``tokenizer/``; an
align run ``model.safetensors`` and ``tokenizer/``. Next to each LLaVA run's weights (and in a finetune
run's root) is transformers' ``config.json`` of the model (``vlmforge.models.llava.write_run_config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.config.load import load_recipe, read_yaml
from vlmforge.config.peft import ContrastiveFinetuneRecipe
from vlmforge.config.schema import (
    AlignRecipe,
    FinetuneRecipe,
    FinetuneStage,
    LlavaModel,
    PretrainRecipe,
    TrainingRecipe,
    recipe_verb,
)
from vlmforge.errors import UserError
from vlmforge.storage import WEIGHTS, is_completed
from vlmforge.weights import final_checkpoint

MODEL_FIELDS_IGNORED = {"lora": True, "pretrained": True, "vision": {"pretrained"}, "llm": {"pretrained"}}


def run_verb(run_dir: Path) -> str:
    """The verb that wrote a run directory (from its saved recipe)."""
    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(
            f"{run_dir}: not a run directory (no recipe.yaml)", hint="pass a directory under runs/"
        )
    return recipe_verb(read_yaml(run_dir / "recipe.yaml"))


# ------------------------------------------------------------------------------------------ pretrain
def pretrained_model(recipe: PretrainRecipe, vocab_size: int, checkpoint: Path) -> Any:
    """The recipe's model with a checkpoint's weights (random init first: the weights replace it)."""
    from vlmforge.families import family_for
    from vlmforge.models.contrastive import load_checkpoint_weights

    cfg = recipe.model.model_copy(update={"pretrained": None})
    model = family_for(cfg).models.build_model(cfg, vocab_size)
    load_checkpoint_weights(model, checkpoint)
    return model


def load_trained(run_dir: Path, checkpoint: Path | None = None) -> tuple[Any, Any, TrainingRecipe, Path]:
    """(model, tokenizer, recipe, weights) of a pretrain or finetune run: its final weights, or
    ``checkpoint``."""
    verb = run_verb(run_dir)
    if verb == "finetune":
        return load_finetuned(run_dir, checkpoint)
    if verb != "pretrain":
        raise UserError(f"{run_dir} is a {verb} run", hint="give a pretrain or finetune run directory")
    from vlmforge.data.tokenizers import load_tokenizer

    recipe = load_recipe("pretrain", run_dir / "recipe.yaml")
    assert isinstance(recipe, PretrainRecipe)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    ckpt = checkpoint or final_checkpoint(run_dir)
    return pretrained_model(recipe, tokenizer.vocab_size, ckpt), tokenizer, recipe, ckpt


# ------------------------------------------------------------------------------------------ finetune
def stage_dir(run_dir: Path, stage: FinetuneStage) -> Path:
    return run_dir / "stages" / stage.name


def stage_completed(directory: Path, outcome: str = "result.json") -> bool:
    """A finetune stage (or an align run's training) that finished and saved its weights."""
    return is_completed(directory, outcome) and (directory / WEIGHTS).is_file()


def final_weights(run_dir: Path) -> Path:
    """The weights of a finetune run's last completed stage."""
    recipe = load_recipe("finetune", run_dir / "recipe.yaml")
    assert isinstance(recipe, FinetuneRecipe)
    for stage in reversed(recipe.stages):
        if stage_completed(stage_dir(run_dir, stage)):
            return stage_dir(run_dir, stage) / WEIGHTS
    raise UserError(f"{run_dir}: no finetune stage has finished", hint="resume it with --resume auto")


def llava_model(cfg: LlavaModel, tokenizer: Any, weights: Path) -> Any:
    """A LLaVA model of ``cfg`` for inference with saved ``weights`` and the run's tokenizer."""
    from vlmforge.data.conversations import IMAGE
    from vlmforge.models.llava import trained_model, vocab_size_for

    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    return trained_model(cfg, vocab_size_for(cfg, tokenizer), image_id, weights)


def load_finetuned(run_dir: Path, weights: Path | None = None) -> tuple[Any, Any, FinetuneRecipe, Path]:
    """A finetune run's model with the weights of its last finished stage (or ``weights``)."""
    from vlmforge.data.conversations import load_tokenizer

    recipe = load_recipe("finetune", run_dir / "recipe.yaml")
    assert isinstance(recipe, FinetuneRecipe)
    if weights is not None and weights.suffix != ".safetensors":
        raise UserError(
            f"checkpoint: {weights} is not a stage's weights file",
            hint="give RUN/stages/<stage>/model.safetensors, or leave it unset for the last stage's",
        )
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    weights = weights or final_weights(run_dir)
    return llava_model(recipe.model, tokenizer, weights), tokenizer, recipe, weights


def stage_of(run_dir: Path, recipe: FinetuneRecipe, weights: Path) -> FinetuneStage:
    """The finetune stage whose weights these are (its prompt template and image normalisation apply);
    the last stage for weights from elsewhere."""
    for stage in recipe.stages:
        if stage_dir(run_dir, stage).resolve() == weights.parent.resolve():
            return stage
    return recipe.stages[-1]


# --------------------------------------------------------------------------------------------- align
@dataclass(frozen=True)
class FinetunedRun:
    """The finetune run an alignment starts from."""

    run_dir: Path
    recipe: FinetuneRecipe
    weights: Path  # its last finished stage's


def finetuned_run(path: Path) -> FinetunedRun:
    """``from_run``: a finetune run directory, or a folder of runs whose newest completed one is taken."""
    if not path.is_dir():
        raise UserError(
            f"from_run: {path} is not a directory", hint="give a `vlmforge finetune` run directory"
        )
    if not (path / "recipe.yaml").is_file():
        runs = sorted(p for p in path.iterdir() if p.is_dir() and is_completed(p))
        if not runs:
            raise UserError(
                f"from_run: {path} is neither a run directory nor a folder of completed runs",
                hint="give a `vlmforge finetune` run directory (runs/<name>/<timestamp>)",
            )
        path = runs[-1]
    if run_verb(path) != "finetune":
        raise UserError(f"from_run: {path} is not a finetune run", hint="align starts from a finetune run")
    recipe = load_recipe("finetune", path / "recipe.yaml")
    assert isinstance(recipe, FinetuneRecipe)
    return FinetunedRun(path, recipe, final_weights(path))


def with_source_model(recipe: AlignRecipe) -> tuple[AlignRecipe, FinetunedRun]:
    """The align recipe with ``from_run`` resolved to one run directory and that run's model section
    (without pretrained towers: its weights replace them). A model section given in the recipe must
    describe the same architecture."""
    source = finetuned_run(recipe.from_run)
    model = source.recipe.model.without_pretrained()
    if recipe.model is not None:
        given = recipe.model.model_dump(exclude=MODEL_FIELDS_IGNORED)
        if given != model.model_dump(exclude=MODEL_FIELDS_IGNORED):
            raise UserError(
                f"model: the recipe's model section differs from the one of from_run {recipe.from_run}",
                hint="remove the model section (it is read from the run) or copy the run's",
            )
    return recipe.model_copy(update={"from_run": source.run_dir, "model": model}), source


def with_planned_model(recipe: TrainingRecipe) -> TrainingRecipe:
    """The recipe the planner counts: an align recipe without a model section takes its from_run's, a
    contrastive finetune its init_from run's."""
    if isinstance(recipe, ContrastiveFinetuneRecipe) and recipe.model is None:
        return recipe.model_copy(update={"model": start_model_section(recipe.init_from)})
    if not isinstance(recipe, AlignRecipe) or recipe.model is not None:
        return recipe
    if not recipe.from_run.exists():
        raise UserError(
            f"from_run {recipe.from_run} is not on this machine: cannot read its model section",
            hint="add the finetune run's model section to the recipe to plan it before the run exists",
        )
    return with_source_model(recipe)[0]


def start_model_section(path: Path) -> Any:
    """The model section of the pretrain run ``init_from`` names (a run, or a folder of runs: the newest
    completed)."""
    runs = [path] if (path / "recipe.yaml").is_file() else []
    if not runs and path.is_dir():
        runs = sorted(p for p in path.iterdir() if p.is_dir() and is_completed(p))[-1:]
    if not runs or run_verb(runs[0]) != "pretrain":
        raise UserError(
            f"init_from {path} is not a pretrain run on this machine: cannot read its model section",
            hint="add the starting model's section as `model:` to plan the recipe",
        )
    recipe = load_recipe("pretrain", runs[0] / "recipe.yaml")
    assert isinstance(recipe, PretrainRecipe)
    return recipe.model


def load_aligned(run_dir: Path, weights: Path | None = None) -> tuple[Any, Any, Any, AlignRecipe, Path]:
    """(policy, reference, tokenizer, recipe, weights) of an align run: its final policy (or ``weights``,
    a weights file) and the finetuned model it started from, which is its reference."""
    from vlmforge.data.conversations import load_tokenizer

    recipe = load_recipe("align", run_dir / "recipe.yaml")
    assert isinstance(recipe, AlignRecipe) and recipe.model is not None
    if recipe.method == "reward_model":
        raise UserError(
            f"{run_dir} is a reward model run: it scores answers and answers nothing itself",
            hint="its held-out pairwise accuracy is in its result.json; a `method: rloo` run uses it",
        )
    weights = weights or run_dir / WEIGHTS
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise UserError(
            f"checkpoint: {weights} is not an align run's weights file",
            hint="give RUN/model.safetensors, or leave it unset for the run's final weights",
        )
    source = finetuned_run(recipe.from_run)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    policy = llava_model(recipe.model, tokenizer, weights)
    reference = llava_model(recipe.model, tokenizer, source.weights)
    return policy, reference, tokenizer, recipe, weights
