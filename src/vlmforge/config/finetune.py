"""Recipes of the LLaVA life cycle after pretraining: `vlmforge finetune` (stages) and `vlmforge align`
(preference tuning of a finetune run)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.data import (
    ConversationSource,
    DigitsInContext,
    InContextFields,
    InContextJsonData,
    PreferenceSource,
)
from vlmforge.config.evaluation import EvalTask, PreferenceTask, VqaTask, check_eval_tasks
from vlmforge.config.llava import LlavaModel, LoraAdapters
from vlmforge.config.rlhf import RewardConfig, RlooConfig
from vlmforge.config.training import (
    LOGGERS_HELP,
    NAME_PATTERN,
    BatchPlan,
    DeviceConfig,
    Loggers,
    OptimConfig,
    PlanConfig,
    RunRecipe,
    split_batch,
)


class FinetuneStage(Section):
    """One stage of `vlmforge finetune`: it starts from the previous stage's weights."""

    name: str = Field(pattern=NAME_PATTERN, description="Stage name: its files go to <run>/stages/<name>/.")
    trainable: Literal["projector", "projector+llm", "lora", "projector+lora", "adapter"] = Field(
        description="What trains; the rest is frozen (the vision encoder always is). 'lora': only the "
        "adapters of model.lora; 'adapter': model.adapter's prompts and the LLM's biases, scales and norms."
    )
    data: ConversationSource = Field(description="The stage's conversations, chosen by kind.")
    template: Literal["plain", "chat"] = Field(
        "chat",
        description="'plain': image then answer (LLaVA's stage-1 format); 'chat': USER: ... ASSISTANT: ... "
        "turns. The loss is on the answers only.",
    )
    batch_size: int = Field(128, ge=1, description="Global batch: samples per optimizer step, all devices.")
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Samples per device per forward (default: train.micro_batch_size, else "
        "batch_size / devices).",
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


def _no_periodic_eval(train: DeviceConfig, verb: str) -> None:
    """Evaluation during training runs on pretrain recipes only; LLaVA runs evaluate at the end."""
    if train.eval_every_steps is not None:
        raise ValueError(
            f"train.eval_every_steps applies to pretrain recipes; a {verb} run evaluates its eval tasks "
            "once training ends: unset train.eval_every_steps"
        )


QUANTIZED_TRAINABLE = ("projector", "lora", "projector+lora")  # the 4-bit LLM stays frozen in these


def _quantized_base_is_frozen(recipe: FinetuneRecipe) -> None:
    """QLoRA's 4-bit LLM weights take no updates: with ``model.lora.quantize: nf4`` every stage trains
    the (16-bit) projector and/or the adapters only, and the LLM comes from ``model.llm.pretrained``,
    which is quantized as it loads."""
    lora = recipe.model.lora
    if lora is None or lora.quantize == "none":
        return
    if recipe.model.llm.pretrained is None:
        raise ValueError("model.lora.quantize nf4 quantizes pretrained weights: set model.llm.pretrained")
    for stage in recipe.stages:
        if stage.trainable not in QUANTIZED_TRAINABLE:
            raise ValueError(
                f"stage {stage.name!r} trains {stage.trainable!r}, but model.lora.quantize nf4 keeps the "
                f"LLM's weights in 4-bit and frozen: use trainable {' / '.join(QUANTIZED_TRAINABLE)}"
            )


def _in_context_stages_fit(recipe: FinetuneRecipe) -> None:
    """A stage with several images per sample (in-context data) needs room for all their tokens, and the
    chat template (the plain one keeps one image and one answer)."""
    model = recipe.model
    for stage in recipe.stages:
        in_context = isinstance(stage.data, InContextJsonData | DigitsInContext)
        if in_context and stage.template != "chat":
            raise ValueError(f"stage {stage.name!r}: in-context samples need template: chat")
        if in_context and model.image_layout == "anyres":  # one tiled image per sample is what is tested
            raise ValueError(f"stage {stage.name!r}: in-context samples need model.image_layout single")
        images = stage.data.images_per_sample if in_context else 1
        longest = images * model.image_tokens + model.max_text_tokens
        positions = model.llm.max_position_embeddings
        if longest > positions:
            raise ValueError(
                f"stage {stage.name!r}: {images} images x {model.image_tokens} tokens + max_text_tokens "
                f"{model.max_text_tokens} exceed llm.max_position_embeddings {positions}"
            )
    if any(task.kind == "in_context" for task in recipe.eval) and not isinstance(
        recipe.stages[-1].data, InContextFields
    ):
        raise ValueError("eval task 'in_context' needs the last stage's data to be in-context samples")


def _default_finetune_tasks() -> list[EvalTask]:
    return [VqaTask()]


class FinetuneRecipe(RunRecipe):
    """`vlmforge finetune`: train a vision-language model in stages (LLaVA: align the projector, then
    instruction-tune), each from the previous stage's weights."""

    model: LlavaModel = Field(description="The LLaVA model: vision encoder, projector, LLM, tokenizer.")
    stages: list[FinetuneStage] = Field(min_length=1, description="Stages, run in order.")
    optim: OptimConfig = Field(
        default_factory=OptimConfig, description="Optimizer; each stage may set its own lr and warm-up."
    )
    train: DeviceConfig = Field(default_factory=DeviceConfig, description="Devices and precision.")
    logger: Loggers = Field(default_factory=list, description=LOGGERS_HELP)
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
            micro = stage.micro_batch_size or self.train.micro_batch_size
            split_batch(stage.batch_size, micro, self.world_size, f"stages[{i}].")
            if "lora" in stage.trainable and self.model.lora is None:
                raise ValueError(f"stage {stage.name!r} trains LoRA adapters: set model.lora")
            if stage.trainable == "adapter" and self.model.adapter is None:
                raise ValueError(f"stage {stage.name!r} trains LLaMA-Adapter prompts: set model.adapter")
        if any(task.kind == "preference" for task in self.eval):
            raise ValueError("eval task 'preference' needs preference pairs: it applies to align recipes")
        _quantized_base_is_frozen(self)
        _in_context_stages_fit(self)
        _no_periodic_eval(self.train, "finetune")
        check_eval_tasks(self.model, self.eval)
        return self

    def batch_plan(self, stage: FinetuneStage, train_samples: int | None = None) -> BatchPlan:
        """The stage's batch plan; its micro-batch is the stage's, else ``train.micro_batch_size``."""
        where = f"stages[{self.stages.index(stage)}]."
        micro = stage.micro_batch_size or self.train.micro_batch_size
        return BatchPlan.of(
            stage.batch_size, micro, self.world_size, stage.max_steps, stage.epochs, train_samples, where
        )

    def stage_optim(self, stage: FinetuneStage) -> OptimConfig:
        """The recipe's optimizer with the stage's learning rate and warm-up."""
        changes = {"lr": stage.lr, "warmup_steps": stage.warmup_steps}
        return self.optim.model_copy(update={k: v for k, v in changes.items() if v is not None})


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
    nll_weight: float = Field(
        0.0,
        ge=0,
        description="RPO (Pang et al. 2024): add this weight x the chosen answers' mean token negative "
        "log-likelihood (TRL's rpo_alpha). DPO alone may lower the chosen answer too and move probability "
        "to answers in neither side of any pair; this keeps the chosen one likely.",
    )


def _default_align_tasks() -> list[EvalTask]:
    return [VqaTask(), PreferenceTask()]


class AlignRecipe(RunRecipe):
    """`vlmforge align`: preference-tune (DPO/IPO) the last stage of a finetune run, which is also the frozen
    reference; or, for RLHF, train a reward model on the pairs and then a policy against it (RLOO). An
    align recipe is recognised by its `from_run` key."""

    seed: Seed = Field(0, description="Seed for initialisation of adapters and data order.")
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
    method: Literal["dpo", "reward_model", "rloo"] = Field(
        "dpo",
        description="dpo: the `dpo` loss on the pairs; reward_model: a scalar reward trained on the pairs "
        "(Bradley-Terry); rloo: the policy trained by RLOO against the reward model of `rloo.reward_run`.",
    )
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="The preference loss (method: dpo).")
    reward: RewardConfig = Field(
        default_factory=RewardConfig, description="The reward model (method: reward_model)."
    )
    rloo: RlooConfig | None = Field(None, description="The RL step (method: rloo).")
    data: PreferenceSource = Field(description="Preference pairs (chosen / rejected answers), by kind.")
    batch_size: int = Field(64, ge=1, description="Global batch: preference pairs per optimizer step.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (or give epochs).")
    epochs: int | None = Field(None, ge=1, description="Passes over the pairs (or give max_steps).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and schedule.")
    train: DeviceConfig = Field(
        default_factory=DeviceConfig, description="Devices and precision; train.micro_batch_size in pairs."
    )
    logger: Loggers = Field(default_factory=list, description=LOGGERS_HELP)
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
        if self.lora is not None and self.lora.quantize != "none":  # 16-bit LLM from the finetune run
            raise ValueError("lora.quantize nf4 (QLoRA) applies to finetune stages: set lora.quantize=none")
        if self.dpo.loss == "ipo" and self.dpo.label_smoothing:
            raise ValueError("dpo.label_smoothing applies to loss: sigmoid only")
        _no_periodic_eval(self.train, "align")
        if (self.method == "rloo") != (self.rloo is not None):
            raise ValueError("method: rloo needs the rloo section, and the rloo section needs method: rloo")
        allowed = {"dpo": ("vqa", "preference"), "reward_model": (), "rloo": ("vqa",)}[self.method]
        if self.method == "reward_model" and "eval" not in self.model_fields_set:
            self.eval = []  # a reward model answers nothing: its held-out pairwise accuracy is its evaluation
        for task in self.eval:
            if task.kind not in allowed:
                raise ValueError(
                    f"eval task {task.kind!r} does not apply to an align run of method {self.method} "
                    f"({', '.join(allowed) or 'none: its held-out pairwise accuracy is always measured'})"
                )
        if self.rloo is not None:
            self._check_rloo(self.rloo)
        if self.model is not None and self.model.image_layout == "anyres":
            raise ValueError("model.image_layout anyres is for finetune recipes; align keeps 'single'")
        return self

    def _check_rloo(self, rloo: RlooConfig) -> None:
        every, log = rloo.eval_every_steps, self.train.log_every_steps
        if every is not None and every % log:
            raise ValueError(
                f"rloo.eval_every_steps ({every}) must be a multiple of train.log_every_steps ({log})"
            )
        if self.trainable != "lora":
            raise ValueError(
                "method: rloo trains LoRA adapters (trainable: lora): the reference is the policy with them "
                "switched off, so no copy of the model is held next to the policy and the reward model"
            )
        if self.train.strategy.kind in ("fsdp", "deepspeed"):
            raise ValueError(
                "method: rloo samples answers with the whole policy on each device: use strategy auto or ddp"
            )

    def batch_plan(self, train_pairs: int | None = None) -> BatchPlan:
        micro = self.train.micro_batch_size
        return BatchPlan.of(
            self.batch_size, micro, self.world_size, self.max_steps, self.epochs, train_pairs, ""
        )
