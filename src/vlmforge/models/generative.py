"""Generative image-text models: CoCa (Yu et al. 2022) built from open_clip's ``CoCa``: a vision tower, a
unimodal text tower whose appended class token gives the text embedding, and a multimodal decoder that
attends to the image tokens and predicts the caption's next token."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.config.schema import CoCaModel
from vlmforge.generate import StepFn
from vlmforge.models.contrastive import create_arch, image_size, load_checkpoint_weights, text_cfg, vision_cfg
from vlmforge.weights import resolve


def build_model(cfg: CoCaModel, vocab_size: int, device: str = "cpu") -> torch.nn.Module:
    """A randomly initialised open_clip ``CoCa`` (then ``cfg.pretrained`` is loaded if set).

    Captions are padded with id 0, which is open_clip's ``pad_id`` for CoCa and both tokenizers' pad."""
    from open_clip.coca_model import CoCa

    if cfg.arch is not None:
        model = create_arch(cfg, device)
    else:
        vision, text, decoder = tower_configs(cfg, vocab_size)
        with torch.device(device):
            model = CoCa(
                embed_dim=cfg.embed_dim,
                multimodal_cfg=decoder,
                text_cfg=text,
                vision_cfg=vision,
                quick_gelu=cfg.quick_gelu,
                init_logit_scale=cfg.init_logit_scale,
            )
    init_decoder(model.text_decoder)
    if cfg.pretrained is not None:
        load_checkpoint_weights(model, resolve(cfg.pretrained, cfg.arch))
    return model


def tower_configs(cfg: CoCaModel, vocab_size: int) -> tuple[Any, Any, Any]:
    """open_clip's (vision, text, multimodal decoder) configs of a recipe's custom CoCa towers."""
    from open_clip.coca_model import MultimodalCfg

    assert cfg.vision is not None and cfg.text is not None and cfg.decoder is not None
    vision = vision_cfg(
        cfg.vision,
        attentional_pool=cfg.vision.attentional_pool,
        attn_pooler_queries=cfg.vision.attn_pooler_queries,
        attn_pooler_heads=cfg.vision.attn_pooler_heads,
        output_tokens=True,
    )
    text = text_cfg(cfg.text, vocab_size, embed_cls=True, output_tokens=True)
    decoder = MultimodalCfg(
        context_length=cfg.text.context_length,
        vocab_size=vocab_size,
        width=cfg.decoder.width,
        heads=cfg.decoder.heads,
        layers=cfg.decoder.layers,
        mlp_ratio=cfg.decoder.mlp_ratio,
    )
    return vision, text, decoder


def init_decoder(decoder: torch.nn.Module) -> None:
    """Initialise CoCa's decoder the way open_clip initialises its text tower. open_clip never calls
    ``MultimodalTransformer.init_parameters`` (which would fail: it reads attributes the class lacks), so the
    vocabulary projection is left as uninitialised ``torch.empty`` memory (open_clip issue #554)."""
    from torch.nn import init

    width, layers = decoder.width, decoder.layers
    proj_std, attn_std, fc_std = width**-0.5 * (2 * layers) ** -0.5, width**-0.5, (2 * width) ** -0.5
    for block in [*decoder.resblocks, *decoder.cross_attn]:
        init.normal_(block.attn.in_proj_weight, std=attn_std)
        init.normal_(block.attn.out_proj.weight, std=proj_std)
        init.normal_(block.mlp.c_fc.weight, std=fc_std)
        init.normal_(block.mlp.c_proj.weight, std=proj_std)
    init.normal_(decoder.text_projection, std=width**-0.5)


def context_length(cfg: CoCaModel, model: torch.nn.Module) -> int:
    return cfg.text.context_length if cfg.text is not None else int(model.context_length)


def synthetic_loss(
    cfg: CoCaModel, model: torch.nn.Module, batch_size: int, device: str, vocab_size: int
) -> torch.Tensor:
    """Both towers, the decoder and the caption cross-entropy on ``batch_size`` synthetic pairs: the decoder's
    [batch, tokens, vocabulary] logits are a large share of CoCa's activations. (The B x B similarity
    matrix of the contrastive term is negligible per sample and left out.)"""
    side, ctx = image_size(cfg, model), context_length(cfg, model)
    image = torch.zeros(batch_size, 3, side, side, device=device)
    text = torch.ones(batch_size, ctx, dtype=torch.long, device=device)  # no padding: every position counts
    out = model(image, text)
    caption = torch.nn.functional.cross_entropy(out["logits"].flatten(0, 1), out["labels"].flatten())
    return (out["image_features"] * out["text_features"]).sum() + caption


@torch.no_grad()
def decoder_step(model: torch.nn.Module, images: torch.Tensor, vocab_size: int) -> StepFn:
    """Next-token logits of CoCa's decoder for caption prefixes of ``images`` (encoded once), restricted to
    the tokenizer's ``vocab_size`` ids (a named architecture may have more outputs than a word vocabulary).

    Each call re-runs the text tower and decoder over the whole prefix: captions are short, and causal
    attention makes the result equal to an incrementally cached decoder's."""
    _, image_tokens = model.visual(images)

    @torch.no_grad()
    def step(prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        _, token_embeddings = model.text(prefixes)
        logits = model.text_decoder(image_tokens[rows], token_embeddings)
        return logits[:, -1, :vocab_size]

    return step
