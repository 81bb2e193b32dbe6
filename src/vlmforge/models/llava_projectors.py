"""Vision-to-LLM projectors that transformers' ``LlavaMultiModalProjector`` (linear-act-linear) does not
cover; each maps ``[batch, patches, vision width]`` to ``[batch, image tokens, LLM width]``."""

from __future__ import annotations

import torch

from vlmforge.config.llava import LlavaModel, MaplMapper


class LinearProjector(torch.nn.Module):
    """LLaVA's original projector, LiMBeR's linear map (Merullo et al. 2023): one linear map per patch."""

    def __init__(self, vision_width: int, llm_width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(vision_width, llm_width)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear(image_features)


class MaplProjector(torch.nn.Module):
    """MAPL's mapping network (Mañas et al. 2023, EACL): down-project the patches, append learned constant
    query tokens, a pre-norm transformer encoder (ReLU, feed-forward 2 x width, no dropout) over both, and
    the queries' outputs up-projected: ``queries`` image tokens instead of one per patch."""

    def __init__(self, vision_width: int, llm_width: int, mapper: MaplMapper) -> None:
        super().__init__()
        self.down = torch.nn.Linear(vision_width, mapper.width)
        layer = torch.nn.TransformerEncoderLayer(
            d_model=mapper.width,
            nhead=mapper.heads,
            dim_feedforward=2 * mapper.width,
            dropout=0.0,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        # Nested-tensor fast path is for inference with padding masks; there is none here.
        self.encoder = torch.nn.TransformerEncoder(layer, mapper.layers, enable_nested_tensor=False)
        self.queries = torch.nn.Parameter(torch.randn(mapper.queries, mapper.width))
        self.up = torch.nn.Linear(mapper.width, llm_width)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        patches = self.down(image_features)
        queries = self.queries.to(patches.dtype).expand(patches.shape[0], -1, -1)
        encoded = self.encoder(torch.cat([patches, queries], dim=1))
        return self.up(encoded[:, -self.queries.shape[0] :])


def custom_projector(cfg: LlavaModel) -> torch.nn.Module | None:
    """The projector replacing transformers' for ``cfg.projector``; None where transformers' own is it."""
    if cfg.projector == "linear":
        return LinearProjector(cfg.vision.width, cfg.llm.hidden_size)
    if cfg.projector == "mapl":
        return MaplProjector(cfg.vision.width, cfg.llm.hidden_size, cfg.mapper)
    return None
