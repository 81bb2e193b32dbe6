"""The registry of curation steps: recipe ``steps[].kind`` -> step class."""

from __future__ import annotations

from vlmforge.config.curate import CurateRecipe
from vlmforge.curate.base import Resources, Step
from vlmforge.curate.dedup import EmbeddingDedupStep, ExactDedupStep, NearDedupStep
from vlmforge.curate.heuristics import (
    CaptionComplexityStep,
    CaptionLengthStep,
    DataCompTextStep,
    FileSizeStep,
    ImageSizeStep,
    LanguageStep,
    RepeatedTokensStep,
)
from vlmforge.curate.quality import AestheticScoreStep, TextQualityStep
from vlmforge.curate.recaption import CaptionAgreementStep, RecaptionStep
from vlmforge.curate.sampling import DataCompImageStep, MetaClipBalanceStep
from vlmforge.curate.scoring import ClipScoreStep, TextSpottingStep

STEPS: dict[str, type[Step]] = {
    cls.kind: cls
    for cls in (
        CaptionLengthStep,
        CaptionComplexityStep,
        RepeatedTokensStep,
        ImageSizeStep,
        FileSizeStep,
        LanguageStep,
        ExactDedupStep,
        NearDedupStep,
        EmbeddingDedupStep,
        ClipScoreStep,
        TextSpottingStep,
        DataCompTextStep,
        DataCompImageStep,
        MetaClipBalanceStep,
        RecaptionStep,
        CaptionAgreementStep,
        AestheticScoreStep,
        TextQualityStep,
    )
}


def build_steps(recipe: CurateRecipe, resources: Resources) -> list[Step]:
    return [STEPS[cfg.kind](cfg, resources) for cfg in recipe.steps]
