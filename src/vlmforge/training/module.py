"""The LightningModule every training builds on: each family's pretraining, LLaVA stages, alignment.

It owns what all families share: the model built through the family's registry entry, the deterministic
resumable train dataloader, AdamW with open_clip's weight-decay rule and the warm-up + decay schedule, named
loss terms for logging, and the data position stored in checkpoints. A family implements ``loss_terms``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from vlmforge.config.schema import BatchPlan, FfcvData, OptimConfig, PretrainRecipe, TrainingRecipe
from vlmforge.data.loader import DataPosition, GlobalBatchSampler, collate
from vlmforge.families import family_for
from vlmforge.models.attention import attention_kernels, use_attention
from vlmforge.training.deepspeed_config import adamw_class
from vlmforge.training.schedule import SCHEDULES
from vlmforge.training.sharding import as_root_forward, promote_scalar_parameters, shard_fsdp2


@dataclass(frozen=True)
class FitSettings:
    """What one ``Trainer.fit`` of the module consumes: the batch plan (sampler and schedule length), the
    optimizer and the loader's workers."""

    batch: BatchPlan
    optim: OptimConfig
    num_workers: int

    @classmethod
    def of(cls, recipe: PretrainRecipe) -> FitSettings:
        return cls(recipe.batch_plan(), recipe.optim, recipe.data.num_workers)


class TrainingModule(pl.LightningModule, metaclass=abc.ABCMeta):
    """The base of every family's module (pretraining, a finetune stage, an alignment). Owns the train
    dataloader so that the data position stored in a checkpoint is restored before the first batch is
    drawn."""

    collate: Callable[[list[dict[str, Any]]], dict[str, Any]] = staticmethod(collate)

    def __init__(
        self,
        recipe: TrainingRecipe,
        vocab_size: int,
        train_data: torch.utils.data.Dataset | None = None,
        settings: FitSettings | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe
        assert settings is not None or isinstance(recipe, PretrainRecipe), "a stage needs its settings"
        self.settings = settings or FitSettings.of(recipe)  # type: ignore[arg-type]
        self.vocab_size = vocab_size
        self.model = family_for(recipe.model).models.build_model(recipe.model, vocab_size)
        use_attention(self.model, recipe.train.attention)
        # 0-d parameters (open_clip's logit scale) become shape [1]: FSDP and ZeRO shard along dim 0
        promote_scalar_parameters(self.model)
        self._configured = False
        self.objective_terms = self.loss_terms  # under FSDP2: the same, run as the sharded root's forward
        if recipe.train.activation_checkpointing:
            self.enable_activation_checkpointing()
        self.train_data = train_data
        self.last_terms: dict[str, torch.Tensor] = {}
        self.data_position = DataPosition(0, 0)  # next micro-batch to read
        self._resume_position: DataPosition | None = None

    def enable_activation_checkpointing(self) -> None:
        """Recompute transformer blocks in backward (open_clip models switch it on themselves)."""
        self.model.set_grad_checkpointing(True)

    def block_classes(self) -> tuple[type[torch.nn.Module], ...]:
        """Transformer block classes: FSDP shards each block as one unit (and activation checkpointing
        recomputes per block). Families built on open_clip towers inherit this; others override it."""
        from open_clip.transformer import ResidualAttentionBlock

        return (ResidualAttentionBlock,)

    @abc.abstractmethod
    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms of one micro-batch; ``loss`` is the total that is optimised."""

    def no_weight_decay(self, name: str, param: torch.nn.Parameter) -> bool:
        """open_clip's rule: no decay on gains, biases, norms and the temperature/bias scalars."""
        return param.ndim < 2 or "bias" in name or "ln" in name or "logit_scale" in name

    # ---------------------------------------------------------------------------------------- setup
    def configure_model(self) -> None:
        """Called by Lightning once the strategy is set up: FSDP2 sharding per block (CPU FSDP runs through
        Lightning's ModelParallelStrategy), then ``torch.compile`` when the recipe asks for it."""
        if self._configured:
            return
        self._configured = True
        from lightning.pytorch.strategies import ModelParallelStrategy

        if isinstance(self.trainer.strategy, ModelParallelStrategy):
            shard_fsdp2(self.model, self.recipe, self.block_classes(), self.device)
            self.objective_terms = as_root_forward(self.model, self.loss_terms)
        if self.recipe.train.compile:
            self.model.compile()  # in place: parameter names (and checkpoints) stay those of the eager model

    def batch_sampler(self) -> GlobalBatchSampler:
        """This rank's micro-batches of sample keys, resuming at the checkpoint's data position."""
        return GlobalBatchSampler(
            len(self.train_data),  # type: ignore[arg-type]
            self.settings.batch.global_batch,
            self.settings.batch.micro_batch,
            **self.sampler_placement(),
        )

    def sampler_placement(self) -> dict[str, Any]:
        """Where a sampler stands: this rank among all, the run's seed, the data position to resume at."""
        return {
            "rank": self.global_rank,
            "world_size": self.trainer.world_size,
            "seed": self.recipe.seed,
            "resume": self._resume_position,
        }

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.train_data is not None, f"{type(self).__name__} was built without training data"
        sampler = self.batch_sampler()
        workers = self.settings.num_workers
        data = getattr(self.recipe, "data", None)
        if isinstance(data, FfcvData):  # FFCV decodes the images of the sampler's micro-batches
            from vlmforge.data.ffcv import FfcvBatches

            normalise = (data.mean, data.std)
            return FfcvBatches(  # type: ignore[return-value]
                self.train_data, sampler, data.path, workers, normalise, lambda: self.trainer.current_epoch
            )
        return torch.utils.data.DataLoader(
            self.train_data,
            batch_sampler=sampler,  # type: ignore[arg-type]
            collate_fn=self.collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.settings.optim
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if self.no_weight_decay(name, param) else decay).append(param)
        optimizer = adamw_class(self.recipe)(
            [
                {"params": decay, "weight_decay": optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=optim.lr,
            betas=optim.betas,
            eps=optim.eps,
        )
        schedule = SCHEDULES[optim.schedule]
        total, warmup, floor = self.settings.batch.max_steps, optim.warmup_steps, optim.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, warmup, total, floor))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with attention_kernels(self.recipe.train.attention):
            terms = self.objective_terms(batch)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        self.data_position = DataPosition(int(batch["epoch"]), int(batch["position"]) + 1)
        if self.recipe.train.record_sample_ids:
            self._record_sample_ids(batch)
        return terms["loss"]

    def step_back(self) -> None:
        """Forget the optimizer step in progress (its loss was not finite): the data position returns to
        the last completed step, so that a checkpoint saved now is that step's."""
        accumulate = self.trainer.accumulate_grad_batches
        position = self.data_position
        self.data_position = DataPosition(position.epoch, max(0, position.micro_batch - accumulate))

    def _record_sample_ids(self, batch: dict[str, torch.Tensor]) -> None:
        path = Path(self.trainer.default_root_dir) / "samples" / f"rank-{self.global_rank}.jsonl"
        path.parent.mkdir(exist_ok=True)
        record = {"step": self.trainer.global_step + 1, "epoch": int(batch["epoch"])}
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record | {"ids": batch["index"].tolist()}) + "\n")

    # ---------------------------------------------------------------------------------- checkpoints
    # The data position is stored in optimizer steps of the epoch, not in this rank's micro-batches: global
    # batch k holds the same samples whatever the device count, so a checkpoint written by N processes
    # resumes on M with no sample missed or repeated.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        accumulate = self.trainer.accumulate_grad_batches
        position = self.data_position
        if position.micro_batch % accumulate:  # checkpoints are only written at optimizer-step boundaries
            raise RuntimeError(f"checkpoint mid-accumulation at micro-batch {position.micro_batch}")
        checkpoint["vlmforge"] = {
            "data_epoch": position.epoch,
            "data_step": position.micro_batch // accumulate,
            "accumulate": accumulate,
            "world_size": self.trainer.world_size,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("vlmforge")
        if state is None:
            return
        accumulate = self.trainer.accumulate_grad_batches
        self._resume_position = DataPosition(int(state["data_epoch"]), int(state["data_step"]) * accumulate)
        self.data_position = self._resume_position
        if int(state["accumulate"]) != accumulate:
            rescale_batch_progress(checkpoint, int(state["accumulate"]), accumulate)


def rescale_batch_progress(checkpoint: dict[str, Any], saved: int, now: int) -> None:
    """Lightning counts micro-batches; when gradient accumulation changes with the device count, its
    restored counters must be re-expressed in the new micro-batches so optimizer steps stay aligned."""
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    for counters in (progress["current"], progress["total"]):
        for key, value in counters.items():
            # counters are multiples of ``saved`` at a step boundary, give or take the one in-flight batch
            steps, rest = divmod(int(value), saved)
            counters[key] = steps * now + (rest and now - (saved - rest))
