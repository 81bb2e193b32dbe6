"""Recipe sections shared by the training verbs: optimizer, parallelism strategy, devices and precision,
checkpoints, the pre-run plan, loggers; the batch arithmetic every training recipe checks, and the fields
every training recipe starts with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from vlmforge.config.base import Section, Seed

SCHEMA_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def split_batch(batch_size: int, micro_batch_size: int | None, world: int, where: str) -> int:
    """The micro-batch per device; raises unless the global batch splits evenly over devices x micro."""
    micro = micro_batch_size or batch_size // world
    if micro < 1 or batch_size % (micro * world):
        raise ValueError(
            f"{where}batch_size {batch_size} must be a multiple of "
            f"micro_batch_size ({micro}) x devices x nodes ({world})"
        )
    return micro


@dataclass(frozen=True)
class BatchPlan:
    """How one ``Trainer.fit`` steps — a pretrain run, a finetune stage or an alignment: worked out once
    from the recipe and read by the training module (sampler, schedule), the Trainer (accumulation,
    length), the DeepSpeed config, the planner and ``actual.json``.

    DeepSpeed's identity holds: global_batch = micro_batch x accumulate x world_size."""

    global_batch: int  # samples per optimizer step, all devices
    micro_batch: int  # samples per device per forward
    world_size: int
    max_steps: int  # optimizer steps

    @property
    def accumulate(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def to_json(self) -> dict[str, int]:
        return asdict(self) | {"accumulate": self.accumulate}

    @classmethod
    def of(
        cls,
        global_batch: int,
        micro_batch_size: int | None,
        world_size: int,
        max_steps: int | None,
        epochs: int | None,
        train_samples: int | None,
        where: str,
    ) -> BatchPlan:
        """``max_steps``, or ``epochs`` of full global batches over ``train_samples`` (needed then); the
        micro-batch defaults to the global batch split over the devices (no accumulation)."""
        micro = split_batch(global_batch, micro_batch_size, world_size, where)
        if max_steps is None:
            if train_samples is None:
                raise ValueError(f"{where}epochs: the number of training samples is needed to count steps")
            max_steps = max(1, (epochs or 1) * (train_samples // global_batch))
        return cls(global_batch, micro, world_size, max_steps)


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
    """Devices, precision and the loop's bookkeeping: everything about training but its length.

    ``eval_every_steps`` lives here, beside the loop's other "every N optimizer steps" settings (metrics,
    checkpoints) and in every verb's ``train`` section, as when the loop evaluates; the recipe's top-level
    ``eval`` keeps saying what is evaluated, during training and at its end."""

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
    attention: Literal["sdpa", "eager", "flash"] = Field(
        "sdpa",
        description="Attention kernel: sdpa (torch picks the fastest that runs), eager (plain math, for "
        "debugging and exact comparisons) or flash (FlashAttention: torch's kernel, on CPU or CUDA GPUs "
        "of compute capability 8.0+, or the flash-attn package when installed; other GPUs are refused). "
        "transformers models get it as attn_implementation, open_clip towers through "
        "torch.nn.attention.sdpa_kernel.",
    )
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
    eval_every_steps: int | None = Field(
        None,
        ge=1,
        description="Run the recipe's eval tasks on the held-out split every N optimizer steps during "
        "training (pretrain recipes; rank 0, needs whole weights: strategy auto or ddp); unset: only at "
        "the end.",
    )
    record_sample_ids: bool = Field(
        False,
        description="Append the sample ids each optimizer step trained on to samples/rank-<R>.jsonl in the "
        "run directory (audits data order and resumes).",
    )
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpointing.")

    @model_validator(mode="after")
    def _periodic_eval_needs_whole_weights(self) -> DeviceConfig:
        if self.eval_every_steps is not None and isinstance(self.strategy, FSDPStrategy | DeepSpeedStrategy):
            raise ValueError(
                f"train.eval_every_steps evaluates rank 0's copy of the model, but strategy "
                f"{self.strategy.kind} splits the weights across ranks; use strategy auto or ddp, or unset "
                "eval_every_steps (the end-of-run evaluation gathers the weights)"
            )
        return self

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
    check_memory: bool = Field(
        True,
        description="Refuse to start when the estimated memory per device (model states + activations, "
        "and the data held in memory) exceeds what this machine has; false starts anyway.",
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


class CsvLogger(Section):
    """Lightning's CSVLogger: <run_dir>/logs/csv/version_<N>/metrics.csv (a resumed run adds a version).
    Always written, listed or not."""

    kind: Literal["csv"] = "csv"


class TensorBoardLogger(Section):
    """Lightning's TensorBoardLogger: event files in <run_dir>/logs/tensorboard/version_<N>/ (a resumed run
    adds a version); needs the tensorboard extra. View with `tensorboard --logdir <run_dir>/logs`."""

    kind: Literal["tensorboard"] = "tensorboard"


class MlflowLogger(Section):
    """Lightning's MLFlowLogger, offline by default (a file store in <run_dir>/logs/mlflow); needs the mlflow
    extra."""

    kind: Literal["mlflow"] = "mlflow"
    experiment: str = Field("vlmforge", description="MLflow experiment name.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: file:<run_dir>/logs/mlflow, nothing sent anywhere)."
    )


LoggerConfig = Annotated[
    NoLogger | WandbLogger | CsvLogger | TensorBoardLogger | MlflowLogger, Field(discriminator="kind")
]


def _as_list(value: Any) -> Any:
    """One logger section is a list of one (recipes written before lists were accepted)."""
    return [value] if isinstance(value, dict | Section) else value


def _kinds_unique(loggers: list[Any]) -> list[Any]:
    kinds = [logger.kind for logger in loggers if logger.kind != "none"]
    repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if repeated:
        raise ValueError(f"logger kind {', '.join(repeated)} is listed more than once; list each kind once")
    return loggers


Loggers = Annotated[
    list[LoggerConfig],
    BeforeValidator(_as_list, json_schema_input_type=list[LoggerConfig] | LoggerConfig),
    AfterValidator(_kinds_unique),
]
LOGGERS_HELP = (
    "Where metrics go besides metrics.jsonl and logs/csv (both always written): a list of logger sections "
    "(or one), each none, csv, tensorboard, mlflow or wandb."
)


# ---------------------------------------------------------------------------------- training recipes
class RunRecipe(Section):
    """The fields every training recipe (pretrain, finetune, align) starts with; each recipe declares
    its own ``train`` section (a ``DeviceConfig``) and may describe ``seed`` more precisely."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    name: str = Field(
        pattern=NAME_PATTERN, description="Run name: runs go to <output_dir>/<name>/<timestamp>/."
    )
    seed: Seed = Field(0, description="Seed for initialisation and data order.")
    output_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")

    if TYPE_CHECKING:  # a field of every subclass, declared there to keep its place in the recipe
        train: DeviceConfig

    @property
    def world_size(self) -> int:
        return self.train.devices * self.train.num_nodes
