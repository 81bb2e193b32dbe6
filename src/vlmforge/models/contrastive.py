"""Contrastive dual encoders (CLIP) built from open_clip towers: a named architecture or custom towers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmforge.config.augment import AugmentConfig
from vlmforge.config.schema import ClipModel, SigLipModel, SslConfig, TextTower, VisionTower
from vlmforge.errors import UserError
from vlmforge.models.transformers_clip import read_transformers_clip
from vlmforge.weights import read_state_dict, resolve, strip_prefixes


def build_model(cfg: ClipModel, vocab_size: int, device: str = "cpu") -> torch.nn.Module:
    """A randomly initialised open_clip ``CLIP`` (then ``cfg.pretrained`` is loaded if set).

    ``device="meta"`` builds it without memory, for counting FLOPs and activations."""
    import open_clip

    extra = {"init_logit_bias": cfg.init_logit_bias} if isinstance(cfg, SigLipModel) else {}
    if cfg.arch is not None:
        model = create_arch(cfg, device, force_patch_dropout=cfg.patch_dropout or None, **extra)
    else:
        assert cfg.vision is not None and cfg.text is not None
        vision = vision_cfg(cfg.vision, patch_dropout=cfg.patch_dropout)
        text = text_cfg(cfg.text, vocab_size)
        with torch.device(device):
            model = open_clip.CLIP(
                embed_dim=cfg.embed_dim,
                vision_cfg=vision,
                text_cfg=text,
                quick_gelu=cfg.quick_gelu,
                init_logit_scale=cfg.init_logit_scale,
                **extra,
            )
    if cfg.pretrained is not None:
        load_checkpoint_weights(model, resolve(cfg.pretrained, cfg.arch))
    if cfg.ssl is not None:  # after the pretrained weights: a CLIP checkpoint has no SLIP head
        with torch.device(device):
            model.ssl_head = ssl_head(cfg.ssl, embed_dim(cfg))
    if cfg.augment is not None:
        with torch.device(device):
            model.augment_heads = AugmentHeads(cfg.augment, embed_dim(cfg))
    if cfg.box_head is not None:
        from vlmforge.models.box_head import BoxHead, token_width

        with torch.device(device):
            model.box_head = BoxHead(cfg.box_head, embed_dim(cfg), token_width(model))
    return model


def create_arch(cfg: Any, device: str, **options: Any) -> torch.nn.Module:
    """open_clip's named architecture ``cfg.arch``, randomly initialised, with the recipe's activation and
    temperature (``options``: further ``create_model`` keywords)."""
    import open_clip

    with quiet_random_init():
        return open_clip.create_model(
            cfg.arch,
            pretrained=None,
            force_quick_gelu=cfg.quick_gelu,
            device=device,
            init_logit_scale=cfg.init_logit_scale,
            **options,
        )


def embed_dim(cfg: ClipModel) -> int:
    if cfg.arch is None:
        return cfg.embed_dim
    import open_clip

    return int(open_clip.get_model_config(cfg.arch)["embed_dim"])


def ssl_head(cfg: SslConfig, width: int) -> torch.nn.Sequential:
    """SLIP's 3-layer projection MLP on the image tower's output (Mu et al. 2022, §3), with LayerNorm where
    SLIP has (synchronised) BatchNorm, so the loss does not depend on how the batch is split over devices."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(width, cfg.hidden_dim),
        nn.LayerNorm(cfg.hidden_dim),
        nn.GELU(),
        nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
        nn.LayerNorm(cfg.hidden_dim),
        nn.GELU(),
        nn.Linear(cfg.hidden_dim, cfg.out_dim),
    )


def projection_mlp(width: int, hidden: int, out: int) -> torch.nn.Sequential:
    """A 3-layer MLP, Linear-LayerNorm-ReLU twice then Linear (CLIP-rocket's and SLIP's heads, with LayerNorm
    for their BatchNorm so the loss does not depend on how the batch is split over devices)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(),
        nn.Linear(hidden, out),
    )


def strong_view_head(cfg: AugmentConfig, width: int) -> torch.nn.Module:
    """An MLP head, or a linear one that starts as the identity: the strong views then start out scored
    in the contrastive embedding space, which lets tiny models learn from the first steps."""
    if cfg.heads == "mlp":
        return projection_mlp(width, cfg.hidden_dim, width)
    head = torch.nn.Linear(width, width, bias=False)
    torch.nn.init.eye_(head.weight)
    return head


class AugmentHeads(torch.nn.Module):
    """CLIP-rocket's separate projectors for the strong views (Fini et al. 2023, §3): one MLP (or linear map)
    per modality and a temperature of their own. They read the towers' embeddings, since open_clip's towers
    apply their linear projection inside ``encode_image``/``encode_text``; CLIP-rocket's read the backbone
    features."""

    def __init__(self, cfg: AugmentConfig, width: int) -> None:
        super().__init__()
        self.image, self.text = (strong_view_head(cfg, width) for _ in range(2))
        # shape [1]: sharded strategies cannot split a 0-d parameter (``training.sharding``)
        self.logit_scale = torch.nn.Parameter(torch.full((1,), cfg.init_logit_scale))


class quiet_random_init:
    """open_clip warns that no pretrained weights were loaded: random init is what a recipe asks for."""

    def __enter__(self) -> None:
        import logging

        self._level = logging.root.level
        logging.root.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        import logging

        logging.root.setLevel(self._level)


def context_length(cfg: ClipModel, model: torch.nn.Module) -> int:
    return cfg.text.context_length if cfg.text is not None else int(model.context_length)


def image_size(cfg: ClipModel, model: torch.nn.Module) -> int:
    if cfg.vision is not None:
        return cfg.vision.image_size
    size = model.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def vision_cfg(tower: VisionTower, **extra: object) -> object:
    """open_clip's vision-tower config for a recipe's custom tower (``extra``: family-specific fields)."""
    from open_clip.model import CLIPVisionCfg

    return CLIPVisionCfg(
        layers=tower.layers,
        width=tower.width,
        head_width=tower.head_width,
        mlp_ratio=tower.mlp_ratio,
        patch_size=tower.patch_size,
        image_size=tower.image_size,
        pool_type=tower.pool_type,
        **extra,
    )


def text_cfg(tower: TextTower, vocab_size: int, **extra: object) -> object:
    """open_clip's text-tower config for a recipe's custom tower (``extra``: family-specific fields)."""
    from open_clip.model import CLIPTextCfg

    return CLIPTextCfg(
        context_length=tower.context_length,
        vocab_size=vocab_size,
        width=tower.width,
        heads=tower.heads,
        layers=tower.layers,
        mlp_ratio=tower.mlp_ratio,
        **extra,
    )


def synthetic_loss(
    cfg: ClipModel, model: torch.nn.Module, batch_size: int, device: str, vocab_size: int
) -> torch.Tensor:
    """Both towers on ``batch_size`` synthetic image-caption pairs (plus the hard-negative captions, the two
    SLIP views with their head, CLIP-rocket's strong views with theirs, or X-VLM's box head, when the
    recipe has them), reduced to a scalar. (The B x B similarity matrices of the real losses are
    negligible per sample and left out.)"""
    side, ctx = image_size(cfg, model), context_length(cfg, model)
    captions = 2 * batch_size if cfg.hard_negatives is not None else batch_size
    image = torch.zeros(batch_size, 3, side, side, device=device)
    text = torch.zeros(captions, ctx, dtype=torch.long, device=device)
    if cfg.box_head is not None:  # one pass of the image tower gives the embedding and the head's tokens
        from vlmforge.models.box_head import encode_with_tokens

        image_features, tokens = encode_with_tokens(model, image)
        text_features = model.encode_text(text, normalize=True)
        boxes = model.box_head(tokens, text_features)
        return (image_features * text_features).sum() + boxes.sum()
    image_features, text_features = model(image, text)[:2]
    total = (image_features * text_features[:batch_size]).sum() + text_features[batch_size:].sum()
    if cfg.ssl is not None:
        views = torch.zeros(2 * batch_size, 3, side, side, device=device)
        total = total + model.ssl_head(model.encode_image(views)).sum()
    if cfg.augment is not None:  # the strong views of every image and caption, through their heads
        strong = cfg.augment.strong_views * batch_size
        views = torch.zeros(strong, 3, side, side, device=device)
        captions = torch.zeros(strong, ctx, dtype=torch.long, device=device)
        heads = model.augment_heads
        total = (
            total + (heads.image(model.encode_image(views)) * heads.text(model.encode_text(captions))).sum()
        )
    return total


def match_scalar_shapes(state: dict[str, Any], model: torch.nn.Module) -> None:
    """Reshape 1-element tensors of ``state`` to the shape ``model`` holds (0-d <-> [1]), in place, so
    weights trained with [1] scalars load into a freshly built model and back."""
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    for key, value in state.items():
        shape = shapes.get(key)
        if (
            shape is not None
            and isinstance(value, torch.Tensor)
            and value.numel() == 1
            and value.shape != shape
            and shape.numel() == 1
        ):
            state[key] = value.reshape(shape)


def load_checkpoint_weights(model: torch.nn.Module, path: Path) -> None:
    """Load local weights (``vlmforge.weights.resolve`` finds them): a vlmforge/Lightning ``.ckpt``, an
    open_clip ``.pt``/``.bin`` state dict, ``.safetensors``, or a transformers ``CLIPModel`` folder (in
    open_clip's names). Loading is ``weights_only`` (no pickled code) and strict: a mismatch is an error."""
    if path.is_dir():  # resolve hands a transformers folder over whole
        state = read_transformers_clip(path, model)
    elif path.is_file():
        state = read_state_dict(path, "model.pretrained")
    else:
        raise UserError(f"model.pretrained: checkpoint not found: {path}")
    state = {strip_prefixes(k): v for k, v in state.items()}
    match_scalar_shapes(state, model)  # training holds 0-d scalars as shape [1] (FSDP/ZeRO shard dim 0)
    hint = "the checkpoint must come from the same architecture as model.arch / model.vision+text"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise UserError(f"model.pretrained: {path} does not match the model: {detail}", hint=hint) from None
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"model.pretrained: {path} does not match the model: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:2]})",
            hint=hint,
        )
