"""Recipe schema: the single source of truth for every field a recipe may hold.

One top-level model per verb; sub-sections are tagged unions chosen by ``kind:`` (model family,
data source, strategy, logger, eval task). Every model forbids unknown keys so that a typo is an
error, not a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from vlmforge.config.base import Section
from vlmforge.config.curate import CurateRecipe
from vlmforge.config.llava import BpeTokenizer, LlavaModel, LoraAdapters  # noqa: F401  (re-exported)
from vlmforge.config.models import (  # noqa: F401  (re-exported: recipes' model sections)
    PERTURBATION_KINDS,
    ClipModel,
    CoCaModel,
    FlavaModel,
    HardNegatives,
    MaskedModel,
    ModelConfig,
    OpenClipTokenizer,
    Perturbation,
    SigLipModel,
    SslConfig,
    TextTower,
    Tokenizer,
    VisionTower,
    WordTokenizer,
    open_clip_architectures,
)

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------- data
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class DataBase(Section):
    batch_size: int = Field(128, ge=1, description="Global batch: samples per optimizer step, all devices.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per device.")
    image_size: int = Field(224, ge=8, le=1024, description="Side of the square images fed to the model.")
    mean: tuple[float, float, float] = Field(OPENAI_MEAN, description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field(OPENAI_STD, description="Per-channel normalisation std.")
    max_bad_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Stop when the samples dropped (unreadable, unpaired, bad caption, too small) exceed "
        "this fraction of the source: those rejected when it is opened plus those dropped in one epoch.",
    )


class DigitsData(DataBase):
    """sklearn's 1,797 real 8x8 handwritten digits with templated captions; ships offline."""

    kind: Literal["digits"] = "digits"
    image_size: int = Field(16, ge=8, le=1024, description="Digits are upscaled from 8x8 to this side.")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )
    templates: list[str] | None = Field(
        None, description="Caption templates with one '{}' for the class name; default: 6 built-in ones."
    )

    @field_validator("templates")
    @classmethod
    def _one_placeholder(cls, value: list[str] | None) -> list[str] | None:
        for template in value or []:
            if template.count("{}") != 1:
                raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
        return value


class FolderData(DataBase):
    """A folder of images plus a captions file (JSON lines or CSV: image, caption[, label])."""

    kind: Literal["folder"] = "folder"
    path: Path = Field(description="Folder holding the images and the captions file.")
    captions: str = Field(
        "captions.jsonl",
        description="Captions file inside `path`: .jsonl or .csv with image, caption[, label].",
    )
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    classnames: list[str] | None = Field(
        None,
        description="Class names for zero-shot eval, indexed by integer labels (default: sorted labels).",
    )


class WebDatasetData(DataBase):
    """WebDataset tar shards in img2dataset layout: ``key.jpg|png|webp`` + ``key.txt`` (+ ``key.json``)."""

    kind: Literal["webdataset"] = "webdataset"
    shards: list[str] = Field(
        min_length=1,
        description="Uncompressed .tar shard paths or patterns: brace ranges ('shards/{00000..00127}.tar') "
        "and globs ('shards/*.tar'); one string or a list.",
    )
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    min_image_size: int = Field(
        8, ge=1, description="Images whose shorter side is below this many pixels are dropped (too_small)."
    )

    @field_validator("shards", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class FfcvData(DataBase):
    """An FFCV ``.beton`` written by vlmforge (``vlmforge curate ... --write ffcv``): images stored at one
    fixed side, decoded by FFCV's compiled pipelines. Needs the `ffcv` extra and its system libraries."""

    kind: Literal["ffcv"] = "ffcv"
    path: Path = Field(description="The .beton file (its NAME.beton.json must sit next to it).")
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction held out for evaluation after training."
    )
    classnames: list[str] | None = Field(
        None, description="Class names for zero-shot eval (default: those stored when it was written)."
    )


DataSource = Annotated[DigitsData | FolderData | WebDatasetData | FfcvData, Field(discriminator="kind")]


# ------------------------------------------------------------------------------------ optim + train
class OptimConfig(Section):
    name: Literal["adamw"] = Field("adamw", description="Optimizer.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(
        0.2, ge=0, description="Decoupled weight decay (not on gains, biases, scale)."
    )
    betas: tuple[float, float] = Field((0.9, 0.98), description="Adam betas.")
    eps: float = Field(1e-6, gt=0, description="Adam epsilon.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps from 0 to `lr`.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning-rate decay after warm-up."
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of `lr`.")


class AutoStrategy(Section):
    """Single process, or Lightning's default for the device count."""

    kind: Literal["auto"] = "auto"


class DDPStrategy(Section):
    """Distributed data parallel: one process per device (gloo on CPU, NCCL on GPU)."""

    kind: Literal["ddp"] = "ddp"
    find_unused_parameters: bool = Field(False, description="Only for models with branches unused in a step.")


class FSDPStrategy(Section):
    """Fully sharded data parallel (ZeRO-3-like): weights, gradients and optimizer states split across
    devices, each transformer block gathered only while it runs. Lightning's FSDPStrategy on GPU; FSDP2
    (``fully_shard`` per block) through Lightning's ModelParallelStrategy on CPU. Blocks are the model
    family's transformer block classes; ``train.activation_checkpointing`` recomputes each of them."""

    kind: Literal["fsdp"] = "fsdp"
    sharding: Literal["full", "hybrid", "grad_op"] = Field(
        "full",
        description="full: shard weights, grads and optimizer states over all devices (ZeRO-3); hybrid: "
        "shard inside a node, replicate across nodes; grad_op: keep whole weights, shard grads and "
        "optimizer states (ZeRO-2).",
    )
    cpu_offload: bool = Field(
        False, description="Keep sharded weights and optimizer states in CPU memory (GPU only; slower)."
    )
    state_dict: Literal["sharded", "full"] = Field(
        "sharded",
        description="Resumable checkpoints as a folder with each rank's shard (sharded: nothing gathered, "
        "resumes on any device count), or one file gathered on rank 0 (full). A finished run also "
        "gathers its weights into checkpoints/final-weights.ckpt for evaluation.",
    )


class DeepSpeedStrategy(Section):
    """DeepSpeed ZeRO through Lightning's DeepSpeedStrategy (CUDA GPUs only), configured by the DeepSpeed
    JSON that vlmforge generates from the recipe (``vlmforge pretrain --emit deepspeed-config`` writes it)."""

    kind: Literal["deepspeed"] = "deepspeed"
    stage: Literal[2, 3] = Field(
        2, description="ZeRO stage: 2 shards gradients and optimizer states; 3 also shards the weights."
    )
    offload_optimizer: bool = Field(
        False, description="ZeRO-Offload: optimizer states and the optimizer step on the CPU."
    )
    offload_params: bool = Field(False, description="ZeRO-Infinity: weights in CPU memory (stage 3 only).")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="DeepSpeed config keys merged over the generated config (nested mappings merge), "
        "e.g. {zero_optimization: {overlap_comm: true}}.",
    )

    @model_validator(mode="after")
    def _params_offload_needs_stage3(self) -> DeepSpeedStrategy:
        if self.offload_params and self.stage != 3:
            raise ValueError("offload_params needs stage: 3 (stage 2 keeps whole weights on every GPU)")
        return self


Strategy = Annotated[
    AutoStrategy | DDPStrategy | FSDPStrategy | DeepSpeedStrategy, Field(discriminator="kind")
]


class CheckpointConfig(Section):
    every_steps: int = Field(500, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    keep_last: int = Field(3, ge=1, description="Keep this many most recent step checkpoints.")


class DeviceConfig(Section):
    """Devices, precision and the loop's bookkeeping: everything about training but its length."""

    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="Device type.")
    devices: int = Field(1, ge=1, description="Devices (processes) per node.")
    num_nodes: int = Field(1, ge=1, description="Nodes.")
    strategy: Strategy = Field(default_factory=AutoStrategy, description="Parallelism strategy.")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field(
        "32",
        description="32: fp32; bf16-mixed: bfloat16 autocast; 16-mixed: float16 autocast with a loss "
        "scaler (CUDA GPUs only).",
    )
    compile: bool = Field(False, description="torch.compile the model: slower start, usually faster steps.")
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Samples per device per forward; default batch_size / devices (no accumulation).",
    )
    grad_clip_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm (unset: off).")
    activation_checkpointing: bool = Field(
        False,
        description="Recompute transformer blocks in backward: less activation memory, ~1/3 more compute.",
    )
    log_every_steps: int = Field(10, ge=1, description="Write metrics every N optimizer steps.")
    record_sample_ids: bool = Field(
        False,
        description="Append the sample ids each optimizer step trained on to samples/rank-<R>.jsonl in the "
        "run directory (audits data order and resumes).",
    )
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpointing.")

    @model_validator(mode="after")
    def _fp16_needs_gpu(self) -> TrainConfig:
        if self.precision == "16-mixed" and self.accelerator == "cpu":
            raise ValueError(
                "train.precision 16-mixed (float16 autocast + loss scaler) needs a CUDA GPU; "
                "with train.accelerator cpu use bf16-mixed or 32"
            )
        return self


class TrainConfig(DeviceConfig):
    max_steps: int = Field(ge=1, description="Optimizer steps to train for.")


class PlanConfig(Section):
    """The estimate printed before every training run."""

    confirm_above_usd: float = Field(
        100.0, ge=0, description="Ask before starting (on a terminal) when the estimated cost is above this."
    )
    accelerator: str | None = Field(
        None, description="Catalog name of the GPUs in use (default: recognised from the CUDA device name)."
    )


class NoLogger(Section):
    """metrics.jsonl in the run directory only (always written)."""

    kind: Literal["none"] = "none"


class WandbLogger(Section):
    """Weights & Biases, offline unless WANDB_API_KEY is set in the environment (never in the recipe)."""

    kind: Literal["wandb"] = "wandb"
    project: str = Field("vlmforge", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user).")
    mode: Literal["offline", "online", "disabled"] = Field("offline", description="W&B mode.")


LoggerConfig = Annotated[NoLogger | WandbLogger, Field(discriminator="kind")]


# --------------------------------------------------------------------------------------------- eval
class ZeroShotTask(Section):
    """Zero-shot classification: class embeddings averaged over prompt templates (CLIP §3.1.4)."""

    kind: Literal["zeroshot"] = "zeroshot"
    templates: list[str] | None = Field(None, description="Prompt templates with '{}'; default: the data's.")


class RetrievalTask(Section):
    """Image-to-text and text-to-image retrieval, recall@k."""

    kind: Literal["retrieval"] = "retrieval"
    ks: list[int] = Field([1, 5, 10], description="Recall cut-offs.")
    match: Literal["auto", "pair", "label"] = Field(
        "auto",
        description="'pair': the paired caption is the hit; 'label': any item of the same class is "
        "(for data where many images share a caption); 'auto': label when the data has labels.",
    )


class CompositionalTask(Section):
    """Word order and attribute binding, ARO / SugarCrepe-style (Yuksekgonul et al. 2023; Hsieh et al. 2023):
    each image scores its caption against reordered copies of it; accuracy = the caption scores highest."""

    kind: Literal["compositional"] = "compositional"
    perturbations: list[Perturbation] = Field(
        default_factory=lambda: list(PERTURBATION_KINDS),
        min_length=1,
        description="Reordered copies per caption, one per perturbation that applies to it.",
    )
    attributes: list[str] | None = Field(
        None, description="Attribute words for swap_attributes (default: built-in colours, sizes, materials)."
    )
    seed: int = Field(0, description="Seed of the perturbations (the same probes for every model).")


class VqaTask(Section):
    """Visual question answering: greedy answers to held-out questions, exact match after lower-casing and
    stripping punctuation (the VQA accuracy of generative VLMs, one reference answer per question)."""

    kind: Literal["vqa"] = "vqa"
    max_new_tokens: int = Field(16, ge=1, description="Longest generated answer, in tokens.")
    max_samples: int | None = Field(None, ge=1, description="Evaluate at most this many conversations.")


class CaptioningTask(Section):
    """Caption each image with the model's decoder; score BLEU-4 (Papineni et al. 2002) and CIDEr-D
    (Vedantam et al. 2015) against all of the image's captions. Generative models only."""

    kind: Literal["captioning"] = "captioning"
    method: Literal["greedy", "beam"] = Field("beam", description="Decoding: greedy or beam search.")
    beam_size: int = Field(3, ge=1, description="Hypotheses kept per image (method: beam only).")
    max_length: int | None = Field(
        None,
        ge=1,
        description="Most tokens generated per caption, end token included (default and limit: the "
        "model's context length - 1).",
    )
    repetition_penalty: float = Field(
        1.0, ge=1.0, description="Divide the logits of tokens already generated by this (CTRL; 1: off)."
    )
    no_repeat_ngram: int = Field(0, ge=0, description="Never generate an n-gram twice in a caption (0: off).")
    length_penalty: float = Field(
        1.0, description="Rank beam hypotheses by log-prob / length^this (method: beam only; 0: off)."
    )
    examples: int = Field(8, ge=0, description="Generated captions written into the result as examples.")


class LinearProbeTask(Section):
    """Logistic regression on frozen, standardised image features: fit on the run's training split,
    scored on the evaluation data (the linear-probe protocol of CLIP §3.2 and MAE §4)."""

    kind: Literal["linear_probe"] = "linear_probe"
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength of the logistic regression.")
    max_iter: int = Field(1000, ge=1, description="Solver iterations (L-BFGS).")
    max_train_samples: int = Field(
        10000, ge=1, description="Fit on at most this many training samples (a fixed random subset)."
    )


class PreferenceTask(Section):
    """Held-out preference pairs of an align run: reward accuracy (the fraction of pairs whose implicit DPO
    reward, beta * log(policy / reference), is higher for the chosen answer), the mean reward margin, and
    how often the policy and the reference alone give the chosen answer the higher likelihood."""

    kind: Literal["preference"] = "preference"
    max_samples: int | None = Field(None, ge=1, description="Evaluate at most this many pairs.")


EvalTask = Annotated[
    ZeroShotTask
    | RetrievalTask
    | CompositionalTask
    | CaptioningTask
    | LinearProbeTask
    | VqaTask
    | PreferenceTask,
    Field(discriminator="kind"),
]


def _default_tasks() -> list[ZeroShotTask | RetrievalTask | LinearProbeTask]:
    return [ZeroShotTask(), RetrievalTask()]


def default_tasks_for(supported: tuple[str, ...]) -> list[ZeroShotTask | RetrievalTask | LinearProbeTask]:
    """The default tasks a model supports; a linear probe for models without a text embedding."""
    return [task for task in _default_tasks() if task.kind in supported] or [LinearProbeTask()]


# ------------------------------------------------------------------------------------------ recipes
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def family_eval_tasks(model: ModelConfig | LlavaModel) -> tuple[str, ...]:
    from vlmforge.families import family_for

    return family_for(model).eval_tasks


def check_eval_tasks(model: ModelConfig | LlavaModel, tasks: list[EvalTask]) -> None:
    """Every task must be one the model's family can run."""
    supported = family_eval_tasks(model)
    for task in tasks:
        if task.kind not in supported:
            raise ValueError(
                f"eval task {task.kind!r} does not apply to model.kind {model.kind!r} "
                f"(tasks for this model: {', '.join(supported)})"
            )


def split_batch(batch_size: int, micro_batch_size: int | None, world: int, where: str) -> int:
    """The micro-batch per device; raises unless the global batch splits evenly over devices x micro."""
    micro = micro_batch_size or batch_size // world
    if micro < 1 or batch_size % (micro * world):
        raise ValueError(
            f"{where}batch_size {batch_size} must be a multiple of "
            f"micro_batch_size ({micro}) x devices x nodes ({world})"
        )
    return micro


class PretrainRecipe(Section):
    """`vlmforge pretrain`: train a model from scratch (or from `model.pretrained`)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    name: str = Field(
        pattern=NAME_PATTERN, description="Run name: runs go to <output_dir>/<name>/<timestamp>/."
    )
    seed: int = Field(0, description="Seed for initialisation, data order and caption choice.")
    output_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    model: ModelConfig
    data: DataSource
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig
    logger: LoggerConfig = Field(default_factory=NoLogger)
    plan: PlanConfig = Field(default_factory=PlanConfig, description="Pre-run estimate and confirmation.")
    eval: list[EvalTask] = Field(
        default_factory=_default_tasks,
        description="Evaluations run on the held-out split after training (default: zero-shot and retrieval, "
        "or a linear probe for models without a text embedding).",
    )

    @model_validator(mode="after")
    def _batch_divides(self) -> PretrainRecipe:
        split_batch(self.data.batch_size, self.train.micro_batch_size, self.world_size, "data.")
        return self

    @model_validator(mode="after")
    def _eval_tasks_apply(self) -> PretrainRecipe:
        if "eval" not in self.model_fields_set:  # set directly: assigning would re-run the validators
            self.__dict__["eval"] = default_tasks_for(family_eval_tasks(self.model))
        check_eval_tasks(self.model, self.eval)
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

    @property
    def world_size(self) -> int:
        return self.train.devices * self.train.num_nodes

    @property
    def micro_batch_size(self) -> int:
        return self.train.micro_batch_size or self.data.batch_size // self.world_size

    @property
    def accumulate_grad_batches(self) -> int:
        return self.data.batch_size // (self.micro_batch_size * self.world_size)


# ----------------------------------------------------------------------------------------- finetune
class ConversationDataBase(Section):
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per device.")
    mean: tuple[float, float, float] = Field(OPENAI_MEAN, description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field(OPENAI_STD, description="Per-channel normalisation std.")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction held out for evaluation.")
    num_samples: int | None = Field(
        None, ge=1, description="Conversations in the data, for `vlmforge plan` before the data is at hand."
    )
    mean_text_tokens: int | None = Field(
        None,
        ge=1,
        description="Mean text tokens per conversation, for `vlmforge plan` (default: max_text_tokens).",
    )


class LlavaJsonData(ConversationDataBase):
    """LLaVA's conversation JSON: [{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}];
    images (resized to the vision encoder's side) are read from `image_folder`."""

    kind: Literal["llava-json"] = "llava-json"
    path: Path = Field(description="The conversation JSON file.")
    image_folder: Path | None = Field(None, description="Folder of the images (default: the JSON's folder).")


class DigitsConversations(ConversationDataBase):
    """sklearn's digits as conversations, offline: captions ("a handwritten seven") for stage 1, questions
    ("What digit is this?" -> "seven") for stage 2. Images are upscaled to the vision encoder's side."""

    kind: Literal["digits-conversations"] = "digits-conversations"
    task: Literal["caption", "vqa"] = Field("vqa", description="Captions or question-answer pairs.")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )


ConversationSource = Annotated[LlavaJsonData | DigitsConversations, Field(discriminator="kind")]


class FinetuneStage(Section):
    """One stage of `vlmforge finetune`: it starts from the previous stage's weights."""

    name: str = Field(pattern=NAME_PATTERN, description="Stage name: its files go to <run>/stages/<name>/.")
    trainable: Literal["projector", "projector+llm", "lora", "projector+lora"] = Field(
        description="What trains; the rest is frozen (the vision encoder always is). 'lora': only the "
        "adapters of model.lora."
    )
    data: ConversationSource
    template: Literal["plain", "chat"] = Field(
        "chat",
        description="'plain': image then answer (LLaVA's stage-1 format); 'chat': USER: ... ASSISTANT: ... "
        "turns. The loss is on the answers only.",
    )
    batch_size: int = Field(128, ge=1, description="Global batch: samples per optimizer step, all devices.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Samples per device per forward; default batch_size / devices."
    )
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (or give epochs).")
    epochs: int | None = Field(None, ge=1, description="Passes over the data (or give max_steps).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate (default: optim.lr).")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps (default: optim.warmup_steps).")

    @model_validator(mode="after")
    def _length(self) -> FinetuneStage:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of max_steps or epochs")
        return self

    def steps_for(self, train_samples: int) -> int:
        """Optimizer steps: max_steps, or epochs of full global batches."""
        return self.max_steps or max(1, (self.epochs or 1) * (train_samples // self.batch_size))


def _default_finetune_tasks() -> list[EvalTask]:
    return [VqaTask()]


class FinetuneRecipe(Section):
    """`vlmforge finetune`: train a vision-language model in stages (LLaVA: align the projector, then
    instruction-tune), each from the previous stage's weights."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    name: str = Field(
        pattern=NAME_PATTERN, description="Run name: runs go to <output_dir>/<name>/<timestamp>/."
    )
    seed: int = Field(0, description="Seed for initialisation and data order.")
    output_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    model: LlavaModel
    stages: list[FinetuneStage] = Field(min_length=1, description="Stages, run in order.")
    optim: OptimConfig = Field(
        default_factory=OptimConfig, description="Optimizer; each stage may set its own lr and warm-up."
    )
    train: DeviceConfig = Field(default_factory=DeviceConfig, description="Devices and precision.")
    logger: LoggerConfig = Field(default_factory=NoLogger)
    plan: PlanConfig = Field(default_factory=PlanConfig, description="Pre-run estimate and confirmation.")
    eval: list[EvalTask] = Field(
        default_factory=_default_finetune_tasks,
        description="Evaluations run after the last stage on its data's held-out split.",
    )

    @model_validator(mode="after")
    def _stages_consistent(self) -> FinetuneRecipe:
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for i, stage in enumerate(self.stages):
            split_batch(stage.batch_size, stage.micro_batch_size, self.world_size, f"stages[{i}].")
            if "lora" in stage.trainable and self.model.lora is None:
                raise ValueError(f"stage {stage.name!r} trains LoRA adapters: set model.lora")
        if any(task.kind == "preference" for task in self.eval):
            raise ValueError("eval task 'preference' needs preference pairs: it applies to align recipes")
        check_eval_tasks(self.model, self.eval)
        return self

    @property
    def world_size(self) -> int:
        return self.train.devices * self.train.num_nodes

    def micro_batch_size(self, stage: FinetuneStage) -> int:
        return stage.micro_batch_size or stage.batch_size // self.world_size

    def accumulate_grad_batches(self, stage: FinetuneStage) -> int:
        return stage.batch_size // (self.micro_batch_size(stage) * self.world_size)

    def stage_optim(self, stage: FinetuneStage) -> OptimConfig:
        """The recipe's optimizer with the stage's learning rate and warm-up."""
        changes = {"lr": stage.lr, "warmup_steps": stage.warmup_steps}
        return self.optim.model_copy(update={k: v for k, v in changes.items() if v is not None})


# -------------------------------------------------------------------------------------------- align
class PreferenceDataBase(ConversationDataBase):
    max_bad_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Stop when the pairs dropped (missing or unreadable image, empty answer) exceed this "
        "fraction of the entries read.",
    )


class PreferenceJsonData(PreferenceDataBase):
    """Preference pairs as JSON: [{"id", "image", "prompt", "chosen", "rejected"}]; images (resized to the
    vision encoder's side) are read from `image_folder`."""

    kind: Literal["preference-json"] = "preference-json"
    path: Path = Field(description="The preference JSON file.")
    image_folder: Path | None = Field(None, description="Folder of the images (default: the JSON's folder).")


class DigitsPreferences(PreferenceDataBase):
    """sklearn's digits as preference pairs, offline: "What digit is this?" -> the right digit word
    (chosen) or a wrong one drawn with `seed` (rejected)."""

    kind: Literal["digits-preferences"] = "digits-preferences"
    seed: int = Field(0, description="Seed of the wrong answers (the same pairs for every run).")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction (fixed stratified split, independent of seed)."
    )


PreferenceSource = Annotated[PreferenceJsonData | DigitsPreferences, Field(discriminator="kind")]


class DpoConfig(Section):
    """Direct preference optimisation on summed answer-token log-probs of the policy and the reference."""

    beta: float = Field(0.1, gt=0, description="KL strength: rewards are beta * log(policy / reference).")
    loss: Literal["sigmoid", "ipo"] = Field(
        "sigmoid",
        description="sigmoid: DPO (Rafailov et al. 2023, eq. 7); ipo: squared loss towards a margin of "
        "1 / (2 beta) (Azar et al. 2023, eq. 17).",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed fraction of flipped labels (conservative DPO; sigmoid only)."
    )


def _default_align_tasks() -> list[EvalTask]:
    return [VqaTask(), PreferenceTask()]


class AlignRecipe(Section):
    """`vlmforge align`: preference-tune (DPO/IPO) the last stage of a finetune run, which is also the frozen
    reference. An align recipe is recognised by its `from_run` key."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    name: str = Field(
        pattern=NAME_PATTERN, description="Run name: runs go to <output_dir>/<name>/<timestamp>/."
    )
    seed: int = Field(0, description="Seed for initialisation of adapters and data order.")
    output_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    from_run: Path = Field(
        description="A finetune run directory, or a folder of runs (<output_dir>/<name>) whose newest "
        "completed run is taken: its last stage's weights and tokenizer start the policy and the reference."
    )
    model: LlavaModel | None = Field(
        None,
        description="The finetune run's model section, for `vlmforge plan` before the run is on this "
        "machine (default: read from the run; checked against it when aligning).",
    )
    lora: LoraAdapters | None = Field(None, description="Adapters, for trainable: lora or projector+lora.")
    trainable: Literal["lora", "projector+llm", "projector+lora"] = Field(
        "lora",
        description="What trains. 'lora': only adapters, and the reference is the same model with them "
        "switched off; otherwise the reference is a frozen copy.",
    )
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="The preference loss.")
    data: PreferenceSource
    batch_size: int = Field(64, ge=1, description="Global batch: preference pairs per optimizer step.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (or give epochs).")
    epochs: int | None = Field(None, ge=1, description="Passes over the pairs (or give max_steps).")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: DeviceConfig = Field(
        default_factory=DeviceConfig, description="Devices and precision; train.micro_batch_size in pairs."
    )
    logger: LoggerConfig = Field(default_factory=NoLogger)
    plan: PlanConfig = Field(default_factory=PlanConfig, description="Pre-run estimate and confirmation.")
    eval: list[EvalTask] = Field(
        default_factory=_default_align_tasks,
        description="Evaluations on the held-out pairs after training: VQA (chosen answers), preference.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AlignRecipe:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of max_steps or epochs")
        split_batch(self.batch_size, self.train.micro_batch_size, self.world_size, "")
        if "lora" in self.trainable and self.lora is None:
            raise ValueError(f"trainable {self.trainable!r} trains LoRA adapters: set lora")
        if self.dpo.loss == "ipo" and self.dpo.label_smoothing:
            raise ValueError("dpo.label_smoothing applies to loss: sigmoid only")
        for task in self.eval:
            if task.kind not in ("vqa", "preference"):
                raise ValueError(f"eval task {task.kind!r} does not apply to an align run (vqa, preference)")
        return self

    @property
    def world_size(self) -> int:
        return self.train.devices * self.train.num_nodes

    @property
    def micro_batch_size(self) -> int:
        return self.train.micro_batch_size or self.batch_size // self.world_size

    @property
    def accumulate_grad_batches(self) -> int:
        return self.batch_size // (self.micro_batch_size * self.world_size)

    def steps_for(self, train_pairs: int) -> int:
        """Optimizer steps: max_steps, or epochs of full global batches."""
        return self.max_steps or max(1, (self.epochs or 1) * (train_pairs // self.batch_size))


EvalData = Annotated[
    DigitsData | FolderData | WebDatasetData | FfcvData | LlavaJsonData | DigitsConversations,
    Field(discriminator="kind"),
]


class EvalRecipe(Section):
    """`vlmforge eval`: evaluate a trained run on its held-out split or on other data."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    run: Path = Field(description="Run directory written by a training verb.")
    checkpoint: Path | None = Field(
        None, description="Checkpoint file (default: the run's final checkpoint)."
    )
    data: EvalData | None = Field(
        None, description="Data to evaluate on (default: the run's held-out split)."
    )
    tasks: list[EvalTask] | None = Field(
        None, description="Evaluations to run (default: those of the run's recipe)."
    )
    batch_size: int = Field(256, ge=1, description="Samples per forward pass.")
    seed: int = Field(0, description="Seed (evaluation is deterministic for a seed).")


TrainingRecipe = PretrainRecipe | FinetuneRecipe | AlignRecipe

RECIPES: dict[str, type[Section]] = {
    "pretrain": PretrainRecipe,
    "finetune": FinetuneRecipe,
    "align": AlignRecipe,
    "eval": EvalRecipe,
    "curate": CurateRecipe,
}


def recipe_verb(data: dict[str, object]) -> str:
    """The verb a recipe mapping is written for: a curation has ``steps``, an evaluation names a ``run``,
    a finetune has ``stages``, an alignment starts ``from_run``; anything else is a pretrain recipe."""
    if "from_run" in data:
        return "align"
    if "steps" in data:
        return "curate"
    if "run" in data:
        return "eval"
    return "finetune" if "stages" in data else "pretrain"
