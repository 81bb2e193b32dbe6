"""CoOp, Context Optimization (Zhou et al. 2022, §3.2): the prompt's context words become learned vectors
in the text tower's input embedding space, one context shared by all classes (unified) or one per class
(class-specific, CSC); the class name's tokens stay fixed, the context sits at the front."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import normalize

from vlmforge.config.peft import CoOp
from vlmforge.errors import UserError
from vlmforge.models.peft.classifier import ClipClassifier, freeze

PLACEHOLDER = "X"  # one token each, overwritten by the context vectors (CoOp's own trick)


def coop_prompts(classnames: list[str], context_tokens: int) -> list[str]:
    return [" ".join([PLACEHOLDER] * context_tokens + [f"{name}."]) for name in classnames]


class CoOpClassifier(ClipClassifier):
    """Frozen CLIP; the context vectors at positions 1..M (after the start token) train."""

    def __init__(
        self, clip: nn.Module, prompt_tokens: torch.Tensor, cfg: CoOp, init_tokens: torch.Tensor | None
    ) -> None:
        super().__init__(clip, prompt_tokens, templates=1)
        freeze(clip)
        width = clip.token_embedding.weight.shape[1]
        classes = prompt_tokens.shape[0]
        if init_tokens is not None:  # the init words' embeddings (CoOp: "a photo of a")
            with torch.no_grad():
                start = clip.token_embedding(init_tokens[0, 1 : 1 + cfg.context_tokens]).float()
        else:
            start = torch.randn(cfg.context_tokens, width) * 0.02
        shape = (classes, cfg.context_tokens, width) if cfg.class_specific else (cfg.context_tokens, width)
        self.context = nn.Parameter(start.expand(shape).clone() if cfg.class_specific else start.clone())
        self.context_tokens = cfg.context_tokens

    def prompt_features(self) -> torch.Tensor:
        clip, tokens = self.clip, self.prompt_tokens
        embedded = clip.token_embedding(tokens)
        context = self.context if self.context.dim() == 3 else self.context.expand(tokens.shape[0], -1, -1)
        m = self.context_tokens
        x = torch.cat([embedded[:, :1], context.to(embedded.dtype), embedded[:, 1 + m :]], dim=1)
        x = x + clip.positional_embedding.to(x.dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # end token: highest id
        if isinstance(clip.text_projection, nn.Linear):
            return clip.text_projection(pooled)
        return pooled @ clip.text_projection

    def class_embeddings(self) -> torch.Tensor:
        return normalize(self.prompt_features(), dim=-1)


def check_room(prompt_tokens: torch.Tensor, context_tokens: int) -> None:
    """Each prompt must keep its class name and end token inside the context length."""
    ends = prompt_tokens.argmax(dim=-1)
    if int(ends.min()) <= context_tokens + 1:
        raise UserError(
            f"method.context_tokens={context_tokens} leaves no room for a class name in the text tower's "
            f"context of {prompt_tokens.shape[1]} tokens",
            hint="lower method.context_tokens",
        )


def check_text_tower(clip: nn.Module) -> None:
    """CoOp feeds embeddings to an open_clip CLIP's text transformer, pooled at the end token."""
    if not hasattr(clip, "token_embedding") or getattr(clip, "text_pool_type", "argmax") != "argmax":
        raise UserError(
            "method coop needs an open_clip CLIP text tower pooled at the end token",
            hint="start from a vlmforge clip run or an open_clip export",
        )
