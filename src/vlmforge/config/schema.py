"""Recipe schema: the single source of truth for every field a recipe may hold.

One top-level model per verb (``RECIPES``); sub-sections are tagged unions chosen by ``kind:`` (model
family, data source, strategy, logger, eval task), defined by topic in the sibling modules and
re-exported here. Every model forbids unknown keys so that a typo is an error, not a silently ignored
setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.curate import CurateRecipe
from vlmforge.config.data import (  # noqa: F401  (re-exported)
    OPENAI_MEAN,
    OPENAI_STD,
    BoxCanvases,
    ConversationSource,
    DataBase,
    DataSource,
    DigitCanvases,
    DigitsConversations,
    DigitsData,
    DigitsPreferences,
    FfcvData,
    FolderData,
    LlavaJsonData,
    PreferenceJsonData,
    PreferenceSource,
    ReferringCanvases,
    ReferringJsonData,
    TextImagesConversations,
    WebDatasetData,
)
from vlmforge.config.evaluation import (  # noqa: F401  (re-exported)
    CaptioningTask,
    CompositionalTask,
    EvalTask,
    GroundingTask,
    LinearProbeTask,
    PreferenceTask,
    RetrievalTask,
    VqaTask,
    ZeroShotTask,
    check_eval_tasks,
    default_pretrain_tasks,
    default_tasks_for,
    eval_tasks_for,
)
from vlmforge.config.finetune import AlignRecipe, FinetuneRecipe, FinetuneStage  # noqa: F401  (re-exported)
from vlmforge.config.llava import BpeTokenizer, LlavaModel  # noqa: F401  (re-exported)
from vlmforge.config.masked_models import FlavaModel  # noqa: F401  (re-exported)
from vlmforge.config.models import (  # noqa: F401  (re-exported)
    ClipModel,
    CoCaModel,
    ModelConfig,
    Perturbation,
    SigLipModel,
    SslConfig,
)
from vlmforge.config.peft import ContrastiveFinetuneRecipe
from vlmforge.config.towers import (  # noqa: F401  (re-exported)
    OpenClipTokenizer,
    TextTower,
    Tokenizer,
    VisionTower,
    WordTokenizer,
    open_clip_architectures,
)
from vlmforge.config.training import (  # noqa: F401  (re-exported)
    LOGGERS_HELP,
    NAME_PATTERN,
    SCHEMA_VERSION,
    BatchPlan,
    CsvLogger,
    DDPStrategy,
    DeepSpeedStrategy,
    DeviceConfig,
    FSDPStrategy,
    LoggerConfig,
    Loggers,
    MlflowLogger,
    NoLogger,
    OptimConfig,
    PlanConfig,
    RunRecipe,
    TensorBoardLogger,
    TrainConfig,
    WandbLogger,
    split_batch,
)


class PretrainRecipe(RunRecipe):
    """`vlmforge pretrain`: train a model from scratch (or from `model.pretrained`)."""

    seed: Seed = Field(0, description="Seed for initialisation, data order and caption choice.")
    model: ModelConfig = Field(description="The model, chosen by kind: clip, siglip, coca, masked, flava.")
    data: DataSource = Field(description="Training data, chosen by kind; a held-out split is evaluated.")
    optim: OptimConfig = Field(
        default_factory=OptimConfig, description="Optimizer and learning-rate schedule."
    )
    train: TrainConfig = Field(description="Length, devices, strategy, precision and checkpoints.")
    logger: Loggers = Field(default_factory=list, description=LOGGERS_HELP)
    plan: PlanConfig = Field(default_factory=PlanConfig, description="Pre-run estimate and confirmation.")
    eval: list[EvalTask] = Field(
        default_factory=default_pretrain_tasks,
        description="Evaluations run on the held-out split after training (default: zero-shot and retrieval, "
        "or a linear probe for models without a text embedding).",
    )

    @model_validator(mode="after")
    def _batch_divides(self) -> PretrainRecipe:
        split_batch(self.data.batch_size, self.train.micro_batch_size, self.world_size, "data.")
        return self

    @model_validator(mode="after")
    def _grouped_batches_have_positives(self) -> PretrainRecipe:
        grouped = self.data.images_per_caption > 1
        if grouped and not (type(self.model) is ClipModel and self.model.multi_positive):
            raise ValueError(
                "data.images_per_caption > 1 puts images of one caption in a batch, which plain "
                "contrastive losses would push apart: set model.kind: clip with model.multi_positive: true"
            )
        micro = self.batch_plan().micro_batch
        if micro % self.data.images_per_caption:
            raise ValueError(
                f"data.images_per_caption {self.data.images_per_caption} does not divide the micro-batch of "
                f"{micro} per device: choose data.batch_size / train.micro_batch_size as its multiples"
            )
        return self

    @model_validator(mode="after")
    def _eval_tasks_apply(self) -> PretrainRecipe:
        if "eval" not in self.model_fields_set:  # set directly: assigning would re-run the validators
            self.__dict__["eval"] = default_tasks_for(eval_tasks_for(self.model))
        check_eval_tasks(self.model, self.eval)
        return self

    @model_validator(mode="after")
    def _periodic_eval_has_tasks(self) -> PretrainRecipe:
        if self.train.eval_every_steps is not None and not self.eval:
            raise ValueError(
                "train.eval_every_steps runs the eval tasks, and eval is empty: list tasks in eval"
            )
        return self

    @model_validator(mode="after")
    def _captions_fit_context(self) -> PretrainRecipe:
        limit = self.model.context_length if isinstance(self.model, CoCaModel) else None
        for task in self.eval:
            if isinstance(task, CaptioningTask) and task.max_length and limit and task.max_length > limit - 1:
                raise ValueError(
                    f"captioning max_length {task.max_length} is longer than the model's context allows "
                    f"({limit - 1} tokens after the start token)"
                )
        return self

    def batch_plan(self) -> BatchPlan:
        batch = self.data.batch_size
        return BatchPlan.of(
            batch, self.train.micro_batch_size, self.world_size, self.train.max_steps, None, None, "data."
        )


EvalData = Annotated[
    DigitsData
    | FolderData
    | WebDatasetData
    | FfcvData
    | LlavaJsonData
    | DigitsConversations
    | PreferenceJsonData
    | DigitsPreferences
    | ReferringJsonData
    | ReferringCanvases
    | BoxCanvases
    | DigitCanvases
    | TextImagesConversations,
    Field(discriminator="kind"),
]


class EvalRecipe(Section):
    """`vlmforge eval`: evaluate a trained run on its held-out split or on other data."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    run: Path | None = Field(None, description="Run directory written by a training verb (or give model).")
    model: Path | None = Field(
        None,
        description="An exported model folder (open_clip local-dir, from vlmforge export --format open_clip; "
        "a transformers LLaVA, CLIP or SigLIP folder) or a run directory, evaluated instead of run; an "
        "export needs data.",
    )
    checkpoint: Path | None = Field(
        None, description="Checkpoint file (default: the run's final checkpoint)."
    )
    data: EvalData | None = Field(
        None,
        description="Data to evaluate on (default: the run's held-out split; benchmark tasks need none).",
    )
    tasks: list[EvalTask] | None = Field(
        None,
        description="Evaluations to run (default: those of the run's recipe). Benchmarks (imagenet, "
        "karpathy_retrieval, karpathy_captioning, sugarcrepe, aro, ...) read their own files, no data.",
    )
    data_split: Literal["all", "val"] = Field(
        "all",
        description="Which part of the given data: all of it, or its held-out split (data.val_fraction; the "
        "split a run trained on that data held out).",
    )
    batch_size: int = Field(256, ge=1, description="Samples per forward pass.")
    seed: Seed = Field(0, description="Seed (evaluation is deterministic for a seed).")
    output: Path | None = Field(
        None, description="Folder for <task>.json (default: the run's or the model folder's eval/)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where benchmark tasks run (auto: the first GPU when there is one); tasks on data: run "
        "on the CPU.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvalRecipe:
        if (self.run is None) == (self.model is None):
            raise ValueError("give exactly one of run (a run directory) or model (an exported model folder)")
        return self

    @property
    def source(self) -> Path:
        """The run directory or model folder evaluated."""
        source = self.run if self.run is not None else self.model
        assert source is not None
        return source


TrainingRecipe = PretrainRecipe | FinetuneRecipe | AlignRecipe | ContrastiveFinetuneRecipe

RECIPES: dict[str, type[Section]] = {
    "pretrain": PretrainRecipe,
    "finetune": FinetuneRecipe,
    "align": AlignRecipe,
    "eval": EvalRecipe,
    "curate": CurateRecipe,
}


def recipe_verb(data: dict[str, object]) -> str:
    """The verb a recipe mapping is written for: a curation has ``steps`` or an ``input`` pool, an
    evaluation names a ``run`` (or a ``model`` folder), a finetune has ``stages``, an alignment starts
    ``from_run`` (whatever its ``method``: dpo, reward_model, rloo), a contrastive finetune has a
    ``method``; anything else is a pretrain recipe."""
    if "from_run" in data:
        return "align"
    if "method" in data:
        return "finetune"
    if "steps" in data or "input" in data:
        return "curate"
    if "run" in data or isinstance(data.get("model"), str):  # a training recipe's model is a section
        return "eval"
    return "finetune" if "stages" in data else "pretrain"


def recipe_class(verb: str, data: dict[str, object]) -> type[Section]:
    """The model a ``verb`` recipe mapping validates against: a finetune recipe with a ``method`` tunes a
    contrastive model, one with ``stages`` a LLaVA."""
    if verb == "finetune" and "method" in data:
        return ContrastiveFinetuneRecipe
    return RECIPES[verb]


def recipe_json_schema(verb: str) -> dict[str, Any]:
    """The JSON Schema of a ``verb``'s recipes: for ``finetune``, either model (LLaVA ``stages`` or a
    contrastive ``method``), as the loader accepts both."""
    if verb == "finetune":
        return TypeAdapter(FinetuneRecipe | ContrastiveFinetuneRecipe).json_schema()
    return RECIPES[verb].model_json_schema()
