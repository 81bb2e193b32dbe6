"""LightningModule for contrastive pretraining: CLIP (InfoNCE), SigLIP (sigmoid), FLIP (patch masking), with
optional NegCLIP hard-negative captions, a SLIP self-supervised term, StableRep's multi-positive loss, or
CLIP-rocket's cross-modal augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vlmforge.config.augment import ImageAugment
from vlmforge.config.schema import SigLipModel
from vlmforge.data.loader import GlobalBatchSampler
from vlmforge.errors import UserError
from vlmforge.losses import (
    box_loss,
    clip_loss,
    cross_augmented_loss,
    multi_positive_loss,
    negclip_loss,
    nt_xent_loss,
    siglip_loss,
)
from vlmforge.training.module import TrainingModule
from vlmforge.training.sharding import clamp_parameter_

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the temperature so logits stay <= 100


class ContrastiveModule(TrainingModule):
    """Trains an open_clip CLIP with the InfoNCE (CLIP) or sigmoid (SigLIP) loss, plus the optional NegCLIP
    hard negatives (``model.hard_negatives``) and SLIP term (``model.ssl``), with StableRep's
    multi-positive loss over caption ids (``model.multi_positive``), or with CLIP-rocket's weak and strong
    views (``model.augment``)."""

    def batch_sampler(self) -> GlobalBatchSampler:
        """With ``data.images_per_caption`` k > 1: micro-batches of whole runs of k images per caption id."""
        per_caption = self.recipe.data.images_per_caption
        if per_caption == 1:
            return super().batch_sampler()
        from vlmforge.data.grouping import GroupedBatchSampler

        batch = self.settings.batch
        ids = self.train_data.caption_ids  # type: ignore[union-attr]
        return GroupedBatchSampler(
            ids, per_caption, batch.global_batch, batch.micro_batch, **self.sampler_placement()
        )

    def setup(self, stage: str) -> None:
        """The loss module for this rank (open_clip's, which gathers features across ranks); with hard
        negatives, training samples also carry a negative caption (``vlmforge.data.perturb``), with
        CLIP-rocket's augmentation strong caption views (``vlmforge.data.text_augment``)."""
        from open_clip.loss import ClipLoss, SigLipLoss

        from vlmforge.data.loader import CaptionedImages
        from vlmforge.data.perturb import HardNegativeCaptions, attribute_words

        cfg = self.recipe.model
        negatives = cfg.hard_negatives
        if negatives is not None and isinstance(self.train_data, CaptionedImages):
            self.train_data = HardNegativeCaptions(  # type: ignore[assignment]
                self.train_data, negatives.perturbations, attribute_words(negatives.attributes)
            )
        if cfg.augment is not None and isinstance(self.train_data, CaptionedImages):
            from vlmforge.data.text_augment import AugmentedCaptions

            self.train_data = AugmentedCaptions(  # type: ignore[assignment]
                self.train_data, cfg.augment.text, cfg.augment.strong_views
            )
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

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(image features, text features, logit scale[, logit bias]) as open_clip returns them."""
        return self.model(image, text)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.recipe.model.augment is not None:
            return self.augmented_terms(batch)
        if self.recipe.model.box_head is not None:
            return self.box_terms(batch)
        negatives = batch.get("negative_text")
        text = batch["text"] if negatives is None else torch.cat([batch["text"], negatives])
        image_features, text_features, logit_scale, *bias = self(batch["image"], text)
        if negatives is not None:
            text_features, negative_features = text_features.chunk(2)
            all_image, all_text, all_negative = self.gather(image_features, text_features, negative_features)
            queries = (image_features, text_features) if self.local_queries else (all_image, all_text)
            labels = self.labels(len(queries[0]))
            terms = negclip_loss(*queries, all_image, all_text, all_negative, logit_scale, labels)
        elif "caption_id" in batch:
            terms = self.multi_positive_terms(image_features, text_features, logit_scale, batch["caption_id"])
        elif bias:
            terms = siglip_loss(image_features, text_features, logit_scale, bias[0], self.objective)
            terms["logit_bias"] = bias[0].detach().reshape(())
        else:
            terms = clip_loss(image_features, text_features, logit_scale, self.objective)
        if self.recipe.model.ssl is not None:
            terms["ssl"] = self.ssl_loss(batch)
            terms["loss"] = terms["loss"] + self.recipe.model.ssl.weight * terms["ssl"]
        terms["logit_scale"] = logit_scale.detach()
        return terms

    def box_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """InfoNCE plus X-VLM's box loss on each image's own caption (the matched pairs), times its weight;
        the image tower runs once, giving the embedding and the patch tokens the head attends to."""
        from vlmforge.models.box_head import encode_with_tokens, to_xyxy

        cfg = self.recipe.model.box_head
        assert cfg is not None
        if "box" not in batch:
            raise UserError(
                f"model.box_head needs a box per sample, and data.kind {self.recipe.data.kind!r} has none",
                hint="use data.kind: box-canvases, or drop model.box_head",
            )
        image_features, tokens = encode_with_tokens(self.model, batch["image"])
        text_features = self.model.encode_text(batch["text"], normalize=True)
        logit_scale = self.model.logit_scale.exp()
        terms = clip_loss(image_features, text_features, logit_scale, self.objective)
        predicted = to_xyxy(self.model.box_head(tokens, text_features))
        terms |= box_loss(predicted, batch["box"].to(predicted.dtype))
        terms["loss"] = terms["loss"] + cfg.weight * terms["box"]
        terms["box"] = terms["box"].detach()
        terms["logit_scale"] = logit_scale.detach()
        return terms

    def augmented_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CLIP-rocket: the weak image view with the caption through the model, the strong image and caption
        views through the separate heads, both InfoNCE losses over the gathered batch (plus SLIP's term)."""
        cfg = self.recipe.model.augment
        assert cfg is not None
        views = cfg.strong_views
        # view numbers 3 and up: their random streams differ from SLIP's views (0, 1) and the captions'
        weak = self.image_views(batch, cfg.weak, [3])
        image_features, text_features, logit_scale = self(weak, batch["text"])[:3]
        strong = self.image_views(batch, cfg.strong, range(4, 4 + views))
        captions = batch["augmented_text"].transpose(0, 1).flatten(0, 1)  # [views x B, context]
        heads = self.model.augment_heads
        strong_images = heads.image(self.model.encode_image(strong)).chunk(views)
        strong_texts = heads.text(self.model.encode_text(captions)).chunk(views)
        gathered = self.gather(image_features, text_features, *strong_images, *strong_texts)
        weak_keys, strong_keys = (gathered[0], gathered[1]), (gathered[2 : 2 + views], gathered[2 + views :])
        weak_queries, strong_queries = weak_keys, strong_keys
        if self.local_queries:
            weak_queries = (image_features, text_features)
            strong_queries = (list(strong_images), list(strong_texts))
        strong_scale = heads.logit_scale.exp()
        labels = self.labels(len(weak_queries[0]))
        terms = cross_augmented_loss(
            weak_queries,
            weak_keys,
            strong_queries,
            strong_keys,
            logit_scale,
            strong_scale,
            labels,
            cfg.label_smoothing,
        )
        if self.recipe.model.ssl is not None:
            terms["ssl"] = self.ssl_loss(batch)
            terms["loss"] = terms["loss"] + self.recipe.model.ssl.weight * terms["ssl"]
        terms["logit_scale"] = logit_scale.detach()
        terms["augmented_logit_scale"] = strong_scale.detach().reshape(())
        return terms

    def image_views(
        self, batch: dict[str, torch.Tensor], cfg: ImageAugment, views: Sequence[int]
    ) -> torch.Tensor:
        """The batch's images under views ``views`` of augmentation ``cfg``, view after view."""
        from vlmforge.training.augment import augment, view_params

        data, epoch, indices = self.recipe.data, int(batch["epoch"]), batch["index"].tolist()
        params = [view_params(cfg, self.recipe.seed, epoch, indices, v) for v in views]
        return torch.cat([augment(batch["image"], p, data.mean, data.std) for p in params])

    def multi_positive_terms(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        ids: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """StableRep's loss over the gathered batch, caption ids gathered alongside the features."""
        all_image, all_text = self.gather(image_features, text_features)
        all_ids = self.gather_ids(ids)
        if not self.local_queries:
            image_features, text_features, ids = all_image, all_text, all_ids
        return multi_positive_loss(
            image_features, text_features, all_image, all_text, logit_scale, ids, all_ids
        )

    def ssl_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SLIP: NT-Xent between the projected embeddings of two augmented views of every image."""
        from vlmforge.training.augment import augment, view_params

        cfg, data = self.recipe.model.ssl, self.recipe.data
        assert cfg is not None
        epoch, indices = int(batch["epoch"]), batch["index"].tolist()
        views = [
            augment(
                batch["image"], view_params(cfg, self.recipe.seed, epoch, indices, v), data.mean, data.std
            )
            for v in (0, 1)
        ]
        view1, view2 = self.model.ssl_head(self.model.encode_image(torch.cat(views))).chunk(2)
        all_view1, all_view2 = self.gather(view1, view2)
        queries = (view1, view2) if self.local_queries else (all_view1, all_view2)
        return nt_xent_loss(*queries, all_view1, all_view2, self.labels(len(queries[0])), cfg.temperature)

    @property
    def local_queries(self) -> bool:
        """Whether this rank scores only its own samples against all ranks' (open_clip's local loss)."""
        return self.trainer.world_size == 1 or self.recipe.model.local_loss

    def labels(self, queries: int) -> torch.Tensor:
        """Each query's index among the gathered samples."""
        offset = (
            queries * self.global_rank if self.trainer.world_size > 1 and self.recipe.model.local_loss else 0
        )
        return torch.arange(queries, device=self.device) + offset

    def gather(self, *features: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``features`` (each [b, d]) in one all-gather, side by side, with gradients as in
        open_clip's ``gather_features``: through the gather with ``gather_with_grad``, else only through this
        rank's own rows (and not even those with ``local_loss``, whose queries carry them)."""
        if self.trainer.world_size == 1:
            return list(features)
        import torch.distributed as dist
        import torch.distributed.nn

        cfg, widths = self.recipe.model, [f.shape[1] for f in features]
        local = torch.cat(features, dim=1)
        if cfg.gather_with_grad:
            gathered = torch.cat(torch.distributed.nn.all_gather(local))
        else:
            parts = [torch.zeros_like(local) for _ in range(self.trainer.world_size)]
            dist.all_gather(parts, local)
            if not cfg.local_loss:
                parts[self.global_rank] = local
            gathered = torch.cat(parts)
        return list(gathered.split(widths, dim=1))

    def gather_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Every rank's caption ids, side by side in the order ``gather`` puts their features."""
        if self.trainer.world_size == 1:
            return ids
        import torch.distributed as dist

        parts = [torch.empty_like(ids) for _ in range(self.trainer.world_size)]
        dist.all_gather(parts, ids)
        return torch.cat(parts)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # FLIP: the last `unmasked_tuning_steps` optimizer steps see every patch. Derived from the step,
        # so a resumed run switches at the same point.
        tuning = self.recipe.model.unmasked_tuning_steps
        if tuning and self.trainer.global_step >= self.recipe.train.max_steps - tuning:
            patch_dropout = getattr(self.model.visual, "patch_dropout", None)
            if patch_dropout is not None and getattr(patch_dropout, "prob", 0.0):
                patch_dropout.prob = 0.0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        clamp_parameter_(self.model.logit_scale, 0, MAX_LOGIT_SCALE)  # also DeepSpeed's fp32 copy
        if self.recipe.model.augment is not None:  # CLIP-rocket clamps its second temperature alike
            clamp_parameter_(self.model.augment_heads.logit_scale, 0, MAX_LOGIT_SCALE)
