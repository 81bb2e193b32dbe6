"""Masked vision-language models (seed §3.3.2): MAE-style masked image modeling (He et al. 2022), BERT-style
masked language modeling (Devlin et al. 2019), and a FLAVA-like joint objective with the contrastive term
(Singh et al. 2022), each switched on by its section in the recipe.

Design: our own small heads on open_clip's towers, not transformers' ViTMAE/BERT. The towers are the
ones the contrastive family trains (``open_clip`` ``VisionTransformer`` and ``TextTransformer``, built by
open_clip from a named architecture or custom sizes), so one set of encoders, weight-decay rule,
activation checkpointing (``set_grad_checkpointing``) and meta-device planning serves every family, and
the joint model's ``encode_image``/``encode_text`` plug straight into zero-shot and retrieval evaluation.
The heads are short: an MAE pixel decoder (visible tokens + mask tokens + positions -> a few transformer
blocks -> pixels per patch) and a BERT prediction head tied to the token embedding. (transformers is not
a dependency of vlmforge either.)

- ``kind: masked`` learns no image-text space: MAE, optionally with MLM on the captions; the image feature
  is the encoder's pooled output (no projection), evaluated by a linear probe.
- ``kind: flava``: contrastive InfoNCE on the unimodal embeddings plus any of MIM and MLM. No multimodal
  fusion encoder: FLAVA's fusion encoder serves its multimodal objectives (masked multimodal modeling,
  image-text matching), which need paired cross-attention and a third tower; the unimodal objectives
  here already give the zero-shot/retrieval space and keep the compute close to CLIP's.

The text tower is bidirectional (no causal mask, padding masked out) as MLM needs; the MLM mask token is
the id just past the tokenizer's vocabulary (one extra embedding row), so tokenizers stay unchanged.
Contrastive text features come from a clean caption (a second, cheap text pass); contrastive image
features come from a full image pass, or from the MIM encoder's visible patches (``image_input: visible``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlmforge.config.masked_models import FlavaModel, MAEDecoder, MaskedModel
from vlmforge.config.towers import TextTower
from vlmforge.errors import UserError
from vlmforge.masking import mim_loss, mlm_candidates, mlm_corrupt, mlm_loss, patchify, random_patch_mask
from vlmforge.models.contrastive import load_checkpoint_weights
from vlmforge.weights import resolve

MaskedConfig = MaskedModel | FlavaModel
Contrastive = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class PixelDecoder(nn.Module):
    """MAE's decoder: visible tokens are projected, mask tokens fill the masked places, positions are added,
    and light transformer blocks predict the pixels of every patch (He et al. 2022 §3 "MAE decoder")."""

    def __init__(self, encoder_width: int, cfg: MAEDecoder, patches: int, patch_pixels: int) -> None:
        from open_clip.transformer import LayerNorm, Transformer

        super().__init__()
        self.embed = nn.Linear(encoder_width, cfg.width)
        self.mask_token = nn.Parameter(torch.empty(cfg.width).normal_(std=0.02))
        self.positional_embedding = nn.Parameter(torch.empty(patches, cfg.width).normal_(std=0.02))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio)
        self.ln_final = LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, patch_pixels)

    def forward(self, visible_tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """[B, K, encoder width] tokens at patch indices ``visible`` [B, K] -> [B, L, pixels per patch]."""
        x = self.embed(visible_tokens)
        batch, _, width = x.shape
        full = self.mask_token.to(x.dtype).expand(batch, self.positional_embedding.shape[0], width)
        x = full.scatter(1, visible[..., None].expand(-1, -1, width), x)
        x = self.transformer(x + self.positional_embedding.to(x.dtype))
        return self.head(self.ln_final(x))


class TokenPredictionHead(nn.Module):
    """BERT's masked-LM head: dense + GELU + LayerNorm, then logits from the (tied) token embedding."""

    def __init__(self, width: int, vocab_size: int) -> None:
        from open_clip.transformer import LayerNorm

        super().__init__()
        self.dense = nn.Linear(width, width)
        self.ln = LayerNorm(width)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        hidden = self.ln(nn.functional.gelu(self.dense(tokens)))
        return hidden @ embedding[: self.bias.shape[0]].T + self.bias


class MaskedVLM(nn.Module):
    """open_clip towers with the heads the recipe's objectives need; ``None`` where an objective is off.

    ``vocab_size`` is the tokenizer's; id ``vocab_size`` is the MLM mask token."""

    def __init__(
        self,
        visual: nn.Module,
        text: nn.Module | None,
        decoder: PixelDecoder | None,
        mlm_head: TokenPredictionHead | None,
        vocab_size: int,
        init_logit_scale: float | None,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.decoder = decoder
        self.mlm_head = mlm_head
        self.vocab_size = vocab_size
        scale = None if init_logit_scale is None else nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_scale = scale

    @property
    def patch_size(self) -> int:
        return int(self.visual.patch_size[0])

    @property
    def num_patches(self) -> int:
        return int(self.visual.grid_size[0] * self.visual.grid_size[1])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every transformer block (encoders and decoder) in backward."""
        self.visual.set_grad_checkpointing(enable)
        if self.text is not None:
            self.text.set_grad_checkpointing(enable)
        if self.decoder is not None:
            self.decoder.transformer.grad_checkpointing = enable

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if self.text is None:
            raise UserError("this masked model has no text tower", hint="evaluate it with linear_probe")
        features = self.text(text)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_visible(self, image: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ViT on the patches at ``visible`` [B, K] only (MAE's encoder): (pooled image feature, the K
        normalised patch tokens). Same embedding, pooling and projection as ``encode_image``."""
        v = self.visual
        x = v.conv1(image).flatten(2).transpose(1, 2)  # [B, L, width], raster order
        pos = v.positional_embedding.to(x.dtype)
        x = torch.gather(x + pos[1:], 1, visible[..., None].expand(-1, -1, x.shape[-1]))
        cls = (v.class_embedding.to(x.dtype) + pos[0]).expand(x.shape[0], 1, -1)
        x = v.transformer(v.ln_pre(torch.cat([cls, x], dim=1)))
        pooled, tokens = v._pool(x)  # open_clip's own pooling (class token or mean, then ln_post)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled, tokens

    def mlm_logits(self, text: torch.Tensor) -> torch.Tensor:
        """[B, T] (corrupted) ids -> [B, T, vocab] logits from the bidirectional text tower."""
        assert self.text is not None and self.mlm_head is not None
        out = self.text.forward_intermediates(
            text, indices=1, normalize_intermediates=True, intermediates_only=True, output_fmt="NLC"
        )
        return self.mlm_head(out["text_intermediates"][-1], self.text.token_embedding.weight)


# ---------------------------------------------------------------------------------------- building
def tower_configs(cfg: MaskedConfig, vocab_size: int) -> tuple[int, dict[str, Any], dict[str, Any], bool]:
    """(embed_dim, vision cfg, text cfg, quick_gelu) as fields of open_clip's CLIPVisionCfg/CLIPTextCfg."""
    joint = isinstance(cfg, FlavaModel)
    if cfg.arch is not None:
        import open_clip

        spec = open_clip.get_model_config(cfg.arch)  # a plain ViT arch (checked by the recipe schema)
        vision, text = dict(spec["vision_cfg"]), dict(spec["text_cfg"])
        embed_dim, quick_gelu = int(spec["embed_dim"]), cfg.quick_gelu or bool(spec.get("quick_gelu"))
    else:
        assert cfg.vision is not None
        embed_dim = cfg.embed_dim if isinstance(cfg, FlavaModel) else cfg.vision.width
        vision = cfg.vision.model_dump()
        text = cfg.text.model_dump() if cfg.text is not None else {}
        quick_gelu = cfg.quick_gelu
    vision |= {"patch_dropout": 0.0, "output_tokens": False}
    text |= {
        "vocab_size": vocab_size + (1 if cfg.mlm is not None else 0),  # + the mask token
        "no_causal_mask": True,
        "proj_type": "linear" if joint else "none",
        "output_tokens": False,
    }
    return embed_dim, vision, text, quick_gelu


def build_model(cfg: MaskedConfig, vocab_size: int, device: str = "cpu") -> MaskedVLM:
    """The towers and heads the recipe's objectives use (then ``cfg.pretrained`` loaded if set);
    ``device="meta"`` builds it without memory, for planning."""
    from open_clip.model import _build_text_tower, _build_vision_tower  # how open_clip's CLIP builds them

    joint = isinstance(cfg, FlavaModel)
    embed_dim, vision_cfg, text_cfg, quick_gelu = tower_configs(cfg, vocab_size)
    with torch.device(device):
        visual = _build_vision_tower(embed_dim, vision_cfg, quick_gelu)
        if not joint:
            visual.proj = None  # MAE's image feature: the pooled encoder output itself
        text = None
        if joint or cfg.mlm is not None:
            text = _build_text_tower(embed_dim, text_cfg, quick_gelu)
            text.use_pad_mask = True  # bidirectional attention never looks at padding
        decoder = None
        if cfg.mim is not None:
            patch = int(visual.patch_size[0])
            patches = int(visual.grid_size[0] * visual.grid_size[1])
            width = int(visual.conv1.out_channels)
            decoder = PixelDecoder(width, cfg.mim.decoder, patches, patch * patch * 3)
        mlm_head = TokenPredictionHead(text.width, vocab_size) if cfg.mlm is not None and text else None
        scale = cfg.contrastive.init_logit_scale if isinstance(cfg, FlavaModel) else None
        model = MaskedVLM(visual, text, decoder, mlm_head, vocab_size, scale)
    if cfg.pretrained is not None:
        load_checkpoint_weights(model, resolve(cfg.pretrained, cfg.arch))
    return model


def image_size(cfg: MaskedConfig, model: MaskedVLM) -> int:
    return int(model.visual.image_size[0])


def context_length(cfg: MaskedConfig, model: MaskedVLM) -> int:
    if model.text is not None:
        return int(model.text.context_length)
    return (cfg.text or TextTower()).context_length  # captions are read but unused by an MAE


# --------------------------------------------------------------------------------------- objective
def objective_terms(
    model: MaskedVLM,
    cfg: MaskedConfig,
    image: torch.Tensor,
    text: torch.Tensor,
    contrastive: Contrastive | None = None,
) -> dict[str, torch.Tensor]:
    """Each switched-on term (``mim``, ``mlm``, ``contrastive``) and ``loss``, their weighted sum.

    ``contrastive(image_features, text_features, logit_scale)`` is the InfoNCE loss (open_clip's
    ``ClipLoss`` configured for this rank); required for ``kind: flava``."""
    terms: dict[str, torch.Tensor] = {}
    weighted: list[torch.Tensor] = []
    visible_features = None
    if cfg.mim is not None:
        visible, mask = random_patch_mask(image.shape[0], model.num_patches, cfg.mim.mask_ratio, image.device)
        visible_features, tokens = model.encode_visible(image, visible)
        assert model.decoder is not None
        predicted = model.decoder(tokens, visible)
        target = patchify(image, model.patch_size)
        terms["mim"] = mim_loss(predicted.float(), target.float(), mask, cfg.mim.norm_pix_loss)
        weighted.append(cfg.mim.weight * terms["mim"])
    if cfg.mlm is not None:
        end_id = model.vocab_size - 1  # the end token holds the largest id (vlmforge.data.tokenizers)
        candidates = mlm_candidates(text, end_id)
        inputs, labels = mlm_corrupt(text, candidates, model.vocab_size, (1, end_id), cfg.mlm.mask_ratio)
        terms["mlm"] = mlm_loss(model.mlm_logits(inputs), labels)
        weighted.append(cfg.mlm.weight * terms["mlm"])
    if isinstance(cfg, FlavaModel):
        assert contrastive is not None and model.logit_scale is not None
        if cfg.contrastive.image_input == "visible" and visible_features is not None:
            image_features = nn.functional.normalize(visible_features, dim=-1)
        else:
            image_features = model.encode_image(image, normalize=True)
        text_features = model.encode_text(text, normalize=True)
        terms["contrastive"] = contrastive(image_features, text_features, model.logit_scale.exp())
        weighted.append(cfg.contrastive.weight * terms["contrastive"])
    terms["loss"] = torch.stack(weighted).sum()
    return terms


def synthetic_loss(
    cfg: MaskedConfig, model: MaskedVLM, batch_size: int, device: str, vocab_size: int
) -> torch.Tensor:
    """The training objective on ``batch_size`` synthetic full-length captions and images: the encoder on
    visible patches, the decoder on all of them, the MLM head, the contrastive passes."""
    from open_clip.loss import ClipLoss

    side, ctx = image_size(cfg, model), context_length(cfg, model)
    image = torch.zeros(batch_size, 3, side, side, device=device)
    text = torch.full((batch_size, ctx), 2, dtype=torch.long, device=device)
    text[:, 0], text[:, -1] = 1, vocab_size - 1
    return objective_terms(model, cfg, image, text, ClipLoss())["loss"]
