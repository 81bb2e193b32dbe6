"""Quality-score steps of the `vlmforge curate` recipe (seed §3.1.4): an aesthetic score of the image and a
fluency score of the caption, each kept by threshold or top fraction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section


class QualityRule(Section):
    """Keep by a score of any scale: at or above `threshold`, or the `top_fraction` best (exactly one)."""

    # the `name` every curate step has (config.curate.StepBase, which imports this module's steps)
    name: str | None = Field(None, description="Name in the report (default: the kind).")
    threshold: float | None = Field(None, description="Keep scores at or above this.")
    top_fraction: float | None = Field(None, gt=0, le=1, description="Keep this best-scoring fraction.")

    @model_validator(mode="after")
    def _one_rule(self) -> Any:
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError("give exactly one of threshold or top_fraction")
        return self


class AestheticScore(QualityRule):
    """Predicted aesthetic rating of the image: an MLP on the scoring model's L2-normalised image embedding
    (the LAION-Aesthetics predictor's design, Schuhmann et al. 2022), trained on your ratings with
    ``vlmforge.curate.quality.train_aesthetic_head``; uses the recipe's `model:` for the embeddings."""

    kind: Literal["aesthetic_score"] = "aesthetic_score"
    head: Path = Field(description="The head's .safetensors file written by train_aesthetic_head.")


class TextQuality(QualityRule):
    """Caption fluency: the mean log-probability per token under a local causal language model, i.e. minus
    the log perplexity (perplexity filtering as in CCNet, Wenzek et al. 2020); higher is more fluent."""

    kind: Literal["text_quality"] = "text_quality"
    model: Path = Field(description="Local transformers causal-LM folder (weights + tokenizer); offline.")
    max_tokens: int = Field(64, ge=2, description="Caption tokens scored (longer captions are cut).")
