"""The LightningModule every family's pretraining builds on.

It owns what all families share: the model built through the family's registry entry, the deterministic
resumable train dataloader, AdamW with open_clip's weight-decay rule and the warm-up + decay schedule, named
loss terms for logging, and the data position stored in checkpoints. A family implements ``loss_terms``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch

from vlmforge.config.schema import OptimConfig, PretrainRecipe, TrainingRecipe
from vlmforge.data.loader import DataPosition, GlobalBatchSampler, collate
from vlmforge.families import family_for
from vlmforge.training.schedule import SCHEDULES


@dataclass(frozen=True)
class FitSettings:
    """What one ``Trainer.fit`` of the module consumes: the sampler's batches and the optimizer's span."""

    global_batch: int
    micro_batch: int
    num_workers: int
    optim: OptimConfig
    max_steps: int

    @classmethod
    def of(cls, recipe: PretrainRecipe) -> FitSettings:
        return cls(
            recipe.data.batch_size,
            recipe.micro_batch_size,
            recipe.data.num_workers,
            recipe.optim,
            recipe.train.max_steps,
        )


class PretrainModule(pl.LightningModule):
    """Owns the train dataloader so that the data position stored in a checkpoint is restored before the
    first batch is drawn."""

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
        if recipe.train.activation_checkpointing:
            self.enable_activation_checkpointing()
        self.train_data = train_data
        self.last_terms: dict[str, torch.Tensor] = {}
        self.data_position = DataPosition(0, 0)  # next micro-batch to read
        self._resume_position: DataPosition | None = None

    def enable_activation_checkpointing(self) -> None:
        """Recompute transformer blocks in backward (open_clip models switch it on themselves)."""
        self.model.set_grad_checkpointing(True)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms of one micro-batch; ``loss`` is the total that is optimised."""
        raise NotImplementedError  # each family's module defines its objective

    def no_weight_decay(self, name: str, param: torch.nn.Parameter) -> bool:
        """open_clip's rule: no decay on gains, biases, norms and the temperature/bias scalars."""
        return param.ndim < 2 or "bias" in name or "ln" in name or "logit_scale" in name

    # ---------------------------------------------------------------------------------------- setup
    def train_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.train_data is not None, f"{type(self).__name__} was built without training data"
        sampler = GlobalBatchSampler(
            len(self.train_data),  # type: ignore[arg-type]
            self.settings.global_batch,
            self.settings.micro_batch,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
            seed=self.recipe.seed,
            resume=self._resume_position,
        )
        workers = self.settings.num_workers
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
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=optim.lr,
            betas=optim.betas,
            eps=optim.eps,
        )
        schedule = SCHEDULES[optim.schedule]
        total, warmup, floor = self.settings.max_steps, optim.warmup_steps, optim.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, warmup, total, floor))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(batch)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        self.data_position = DataPosition(int(batch["epoch"]), int(batch["position"]) + 1)
        return terms["loss"]

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        position = self.data_position
        checkpoint["vlmforge"] = {"data_epoch": position.epoch, "data_micro_batch": position.micro_batch}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("vlmforge")
        if state is not None:
            self._resume_position = DataPosition(int(state["data_epoch"]), int(state["data_micro_batch"]))
            self.data_position = self._resume_position
