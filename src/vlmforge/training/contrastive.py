"""LightningModule for contrastive pretraining (CLIP)."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from vlmforge.config.schema import ClipModel, PretrainRecipe, SigLipModel
from vlmforge.data.loader import CaptionedImages, DataPosition, GlobalBatchSampler, collate
from vlmforge.losses import clip_loss, siglip_loss
from vlmforge.models.contrastive import build_clip
from vlmforge.training.schedule import SCHEDULES

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the temperature so logits stay <= 100


class ContrastiveModule(pl.LightningModule):
    """Trains an open_clip CLIP with the InfoNCE (CLIP) or sigmoid (SigLIP) loss; owns the train dataloader
    so that the data position stored in a checkpoint is restored before the first batch is drawn."""

    def __init__(
        self, recipe: PretrainRecipe, vocab_size: int, train_data: CaptionedImages | None = None
    ) -> None:
        super().__init__()
        assert isinstance(recipe.model, ClipModel)
        self.recipe = recipe
        self.model = build_clip(recipe.model, vocab_size)
        if recipe.train.activation_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.train_data = train_data
        self.objective: Any = None
        self.last_terms: dict[str, torch.Tensor] = {}
        self.data_position = DataPosition(0, 0)  # next micro-batch to read
        self._resume_position: DataPosition | None = None

    # ---------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        from open_clip.loss import ClipLoss, SigLipLoss

        cfg = self.recipe.model
        if isinstance(cfg, SigLipModel):
            self.objective = SigLipLoss(
                cache_labels=True, rank=self.global_rank, world_size=self.trainer.world_size
            )
            return
        self.objective = ClipLoss(
            local_loss=cfg.local_loss,
            gather_with_grad=cfg.gather_with_grad,
            cache_labels=True,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.train_data is not None, "ContrastiveModule was built without training data"
        sampler = GlobalBatchSampler(
            len(self.train_data),
            self.recipe.data.batch_size,
            self.recipe.micro_batch_size,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
            seed=self.recipe.seed,
            resume=self._resume_position,
        )
        workers = self.recipe.data.num_workers
        return torch.utils.data.DataLoader(
            self.train_data,  # type: ignore[arg-type]
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.recipe.optim
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            # open_clip's rule: no weight decay on gains, biases, embeddings' scale and the temperature
            exclude = param.ndim < 2 or "bias" in name or "ln" in name or "logit_scale" in name
            (no_decay if exclude else decay).append(param)
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
        total, warmup, floor = self.recipe.train.max_steps, optim.warmup_steps, optim.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, warmup, total, floor))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------- training
    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(image features, text features, logit scale[, logit bias]) as open_clip returns them."""
        return self.model(image, text)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image_features, text_features, logit_scale, *bias = self(batch["image"], batch["text"])
        if bias:
            terms = siglip_loss(image_features, text_features, logit_scale, bias[0], self.objective)
        else:
            terms = clip_loss(image_features, text_features, logit_scale, self.objective)
        self.last_terms = {k: v.detach() for k, v in terms.items()} | {"logit_scale": logit_scale.detach()}
        if bias:
            self.last_terms["logit_bias"] = bias[0].detach().reshape(())
        self.data_position = DataPosition(int(batch["epoch"]), int(batch["position"]) + 1)
        return terms["loss"]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # FLIP: the last `unmasked_tuning_steps` optimizer steps see every patch. Derived from the step,
        # so a resumed run switches at the same point.
        tuning = self.recipe.model.unmasked_tuning_steps
        if tuning and self.trainer.global_step >= self.recipe.train.max_steps - tuning:
            patch_dropout = getattr(self.model.visual, "patch_dropout", None)
            if patch_dropout is not None and getattr(patch_dropout, "prob", 0.0):
                patch_dropout.prob = 0.0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        position = self.data_position
        checkpoint["vlmforge"] = {"data_epoch": position.epoch, "data_micro_batch": position.micro_batch}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("vlmforge")
        if state is not None:
            self._resume_position = DataPosition(int(state["data_epoch"]), int(state["data_micro_batch"]))
            self.data_position = self._resume_position
