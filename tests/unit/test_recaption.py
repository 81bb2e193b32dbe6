"""Re-captioning and caption agreement (Sieve) in `vlmforge curate` with captioners trained by vlmforge: a
short CoCa pretrain run and a short LLaVA finetune run caption the curation test pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.curate_pool import Pool, make_recipe
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Table
from vlmforge.curate.steps import build_steps


def webdataset(pool: Pool) -> dict[str, str]:
    return {"kind": "webdataset", "shards": pool.shards}


def recaption_with(run: Path, **options: Any) -> dict[str, Any]:
    return {"kind": "recaption", "captioner": {"kind": "run", "run": str(run), **options}}


# ---------------------------------------------------------------------------------- fast checks
def test_caption_agreement_ranks_with_the_clip_score_rules(pool: Pool, tmp_path: Path) -> None:
    captioner = {"kind": "python", "target": "tests.curate_pool:size_captioner"}
    step = {"kind": "caption_agreement", "top_fraction": 0.5, "captioner": captioner}
    recipe = make_recipe(tmp_path, webdataset(pool), [step], model={"kind": "run", "path": "unused"})
    (built,) = build_steps(recipe, Resources(recipe))
    assert not built.local  # a fraction decides across shards
    score = np.array([0.1, 0.9, 0.5, 0.5])
    decision = built.apply(Table(np.array(list("abcd")), {"caption_agreement": score}))
    assert decision.keep.tolist() == [False, True, True, False]  # tie at 0.5: the earlier one
    assert set(decision.reason[~decision.keep]) == {"low_caption_agreement"}
    assert decision.info["cutoff"] == 0.5
    with pytest.raises(Exception, match="score with a model"):
        make_recipe(tmp_path, webdataset(pool), [{**step, "threshold": None}])


def test_a_cuda_captioner_needs_a_single_local_worker(pool: Pool, tmp_path: Path) -> None:
    steps = [recaption_with(tmp_path, device="cuda")]
    with pytest.raises(Exception, match="forked local workers cannot share"):
        make_recipe(tmp_path, webdataset(pool), steps)
    one = make_recipe(tmp_path, webdataset(pool), steps, engine={"kind": "local", "workers": 1})
    assert one.steps[0].captioner.device == "cuda"
