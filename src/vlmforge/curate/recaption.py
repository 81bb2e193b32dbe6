"""Synthetic captions (seed §3.1.1) and caption-model agreement (§3.1.4): re-captioning replaces each
caption with a captioner's; Sieve keeps the samples whose caption agrees with the captioner's."""

from __future__ import annotations

from typing import Any

import numpy as np

from vlmforge.curate.base import Resources, Step
from vlmforge.curate.batch import Batch, Decision, Table, first_reason
from vlmforge.curate.captioners import Captioner
from vlmforge.curate.scoring import ScoreRuleStep, cosine, text_embeddings
from vlmforge.errors import UserError


def generated_captions(batch: Batch, captioner: Captioner, cfg: Any, step: str) -> list[str]:
    """One whitespace-normalised caption per row. A run's captions depend on the image only, so steps
    with the same run captioner share them (``Batch.cached``)."""

    def caption(b: Batch) -> list[str]:
        new = list(captioner(b.images, b.captions))
        if len(new) != len(b) or not all(isinstance(c, str) for c in new):
            raise UserError(
                f"steps.{step}: the captioner returned {len(new)} values for {len(b)} images",
                hint="it must return one string per image",
            )
        return [" ".join(c.split()) for c in new]

    if cfg.kind == "run":
        return [str(c) for c in batch.cached(f"generated_caption:{cfg.model_dump_json()}", caption)]
    return caption(batch)


class RecaptionStep(Step):
    """Synthetic captions replace the originals; later steps see the new ones (Nguyen et al. 2023)."""

    kind = "recaption"
    rewrites_caption = True

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.captioner = resources.captioner(cfg.captioner, f"steps.{self.name}.captioner")

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        new = generated_captions(batch, self.captioner, self.cfg.captioner, self.name)
        return {"caption": np.array(new, dtype=str)}

    def apply(self, table: Table) -> Decision:
        return Decision.from_reasons(first_reason(len(table), [(table["caption"] == "", "empty_caption")]))


class CaptionAgreementStep(ScoreRuleStep):
    """Sieve (Mahmoud et al. 2024): the cosine similarity of the original and the generated caption,
    both embedded by the scoring model's text tower. Unlike CLIPScore it does not reward captions that
    spell the image's rendered text, nor punish captions a contrastive model embeds poorly."""

    kind = "caption_agreement"
    score = "caption_agreement"
    reason = "low_caption_agreement"

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.captioner = resources.captioner(cfg.captioner, f"steps.{self.name}.captioner")

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        scorer = self.resources.scorer()
        generated = generated_captions(batch, self.captioner, self.cfg.captioner, self.name)
        return {self.score: cosine(scorer.texts(generated), text_embeddings(batch, scorer))}
