"""Re-captioning and caption agreement (Sieve) in `vlmforge curate` with captioners trained by vlmforge: a
short CoCa pretrain run and a short LLaVA finetune run caption the curation test pool."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, last_json, run_cli
from tests.curate_pool import Pool, dropped_of, make_recipe, report_of, shard_samples
from vlmforge.errors import UserError
from vlmforge.verbs import curate


@pytest.fixture(scope="module")
def llava_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debug LLaVA recipe, both stages cut to 10 steps."""
    cwd = tmp_path_factory.mktemp("llava-run")
    args = ["stages.0.max_steps=10", "stages.1.max_steps=10", "eval=[]", "--format", "json"]
    proc = run_cli("finetune", "-c", "debug/llava-tiny", *args, cwd=cwd, check=True)
    return cwd / last_json(proc.stdout)["run_dir"]


def webdataset(pool: Pool) -> dict[str, str]:
    return {"kind": "webdataset", "shards": pool.shards}


def recaption_with(run: Path, **options: Any) -> dict[str, Any]:
    return {"kind": "recaption", "captioner": {"kind": "run", "run": str(run), **options}}


def pil(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def pixels(image: Any, size: int, mean: Any, std: Any) -> Any:
    """The training transform, applied here one image at a time."""
    import torch

    from vlmforge.data.images import square_tensor

    return square_tensor(image, size, torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1))


def output_bytes(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "shards").glob("*.tar"))}


def check_recaptioned(result: Any, pool: Pool, caption_alone: Any) -> None:
    """Every readable sample is re-captioned (or dropped as empty), each kept caption is the captioner's
    caption of that very image decoded on its own, and the original caption is kept in the JSON."""
    report = report_of(result.output)
    stage = report["stages"][-1]
    assert stage["in"] == report["stages"][0]["out"]  # every readable sample reaches the step
    assert stage["in"] == stage["out"] + stage["dropped"].get("empty_caption", 0)
    kept = shard_samples(result.output)
    assert len(kept) == result.kept == stage["out"] > 0
    for key, sample in kept.items():
        assert sample["txt"] == caption_alone(pil(sample["image"])), key
        assert sample["json"]["curate"]["original_caption"] == pool.captions[key]
    assert any(s["txt"] != pool.captions[k] for k, s in kept.items())


# -------------------------------------------------------------------------------------------- CoCa
def coca_captioner(run: Path) -> Any:
    """The run's greedy caption of one image, decoded alone (default max_length: context - 1)."""
    from vlmforge.evaluate.captioning import coca_captions
    from vlmforge.generate import Decoding
    from vlmforge.runs.artifacts import load_trained

    model, tokenizer, recipe, _ = load_trained(run)
    data = recipe.data
    vocabulary = set(json.loads((run / "tokenizer.json").read_text())["words"])

    def caption_alone(image: Any) -> str:
        x = pixels(image, data.image_size, data.mean, data.std)[None]
        (caption,) = coca_captions(model.eval(), tokenizer, x, Decoding("greedy", max_length=15))
        assert set(caption.split()) <= vocabulary
        return " ".join(caption.split())

    return caption_alone


@pytest.mark.slow
def test_a_coca_run_recaptions_the_pool_deterministically(coca_run: Path, pool: Pool, tmp_path: Path) -> None:
    caption_alone = coca_captioner(coca_run)
    steps = [recaption_with(coca_run)]
    first = curate.run(make_recipe(tmp_path / "a", webdataset(pool), steps), progress=False)
    check_recaptioned(first, pool, caption_alone)
    single = make_recipe(tmp_path / "b", webdataset(pool), steps, engine={"kind": "local", "workers": 1})
    again = curate.run(single, progress=False)
    assert output_bytes(again.output) == output_bytes(first.output)  # same bytes, other worker count
    too_long = make_recipe(tmp_path / "c", webdataset(pool), [recaption_with(coca_run, max_length=40)])
    with pytest.raises(UserError, match=r"steps\.recaption\.captioner: max_length 40 is longer"):
        curate.run(too_long, progress=False)


@pytest.mark.slow
def test_caption_agreement_keeps_the_samples_above_its_threshold(
    coca_run: Path, pool: Pool, tmp_path: Path
) -> None:
    """Sieve with the CoCa run as captioner and its text tower as the sentence encoder."""

    def agreement(threshold: float, where: str) -> Any:
        step = {
            "kind": "caption_agreement",
            "threshold": threshold,
            "captioner": {"kind": "run", "run": str(coca_run)},
        }
        recipe = make_recipe(
            tmp_path / where, webdataset(pool), [step], model={"kind": "run", "path": str(coca_run)}
        )
        return curate.run(recipe, progress=False)

    everything = agreement(-1.0, "all")
    scores = {
        k: s["json"]["curate"]["scores"]["caption_agreement.caption_agreement"]
        for k, s in shard_samples(everything.output).items()
    }
    assert len(scores) == everything.kept == report_of(everything.output)["stages"][-1]["in"]
    from vlmforge.config.curate_models import RunScorer
    from vlmforge.curate.scorers import load_scorer

    scorer, caption_alone = load_scorer(RunScorer(path=coca_run)), coca_captioner(coca_run)
    kept = shard_samples(everything.output)
    for key in list(kept)[::5]:  # the score is the cosine of the generated and the original caption
        generated, original = scorer.texts([caption_alone(pil(kept[key]["image"])), pool.captions[key]])
        assert scores[key] == pytest.approx(float(generated @ original), abs=1e-4), key
    assert np.ptp(list(scores.values())) > 0.1  # the captions do not all agree alike

    ranked = np.unique(list(scores.values()))  # JSON scores are rounded to 6 decimals: cut in a gap
    gap = next(i for i in range(len(ranked) // 2, len(ranked)) if ranked[i] - ranked[i - 1] > 1e-5)
    threshold = float(ranked[gap - 1] + ranked[gap]) / 2
    result = agreement(threshold, "half")
    expected = {k for k, v in scores.items() if v > threshold}
    assert set(shard_samples(result.output)) == expected
    stage = report_of(result.output)["stages"][-1]
    assert stage["in"] == len(scores) and stage["out"] == len(expected) == result.kept
    assert stage["in"] == stage["out"] + sum(stage["dropped"].values())
    assert stage["dropped"] == {"low_caption_agreement": len(scores) - len(expected)}
    histogram = stage["histograms"]["caption_agreement"]
    assert sum(histogram["kept"]) == stage["out"] and sum(histogram["dropped"]) == stage["in"] - stage["out"]
    dropped = dropped_of(result.output)
    assert {k for k, (s, _) in dropped.items() if s == "caption_agreement"} == set(scores) - expected


# ------------------------------------------------------------------------------------------- LLaVA
@pytest.mark.slow
def test_a_llava_run_recaptions_with_its_answer_to_the_prompt(
    llava_run: Path, pool: Pool, tmp_path: Path
) -> None:
    from vlmforge.config.load import load_recipe
    from vlmforge.data.conversations import IMAGE
    from vlmforge.evaluate.vqa import answer
    from vlmforge.runs.artifacts import load_trained

    model, tokenizer, _, _ = load_trained(llava_run)
    recipe = load_recipe("finetune", llava_run / "recipe.yaml")
    stage = recipe.stages[-1]  # the stage whose weights are loaded: its template and normalisation
    prompt = "What digit is this?"

    def caption_alone(image: Any) -> str:
        x = pixels(image, recipe.model.vision.image_size, stage.data.mean, stage.data.std)
        new = recipe.model.max_text_tokens
        (said,) = answer(model, tokenizer, [f"{IMAGE}\n{prompt}"], [x], new, stage.template)
        return " ".join(said.split())

    steps = [recaption_with(llava_run, prompt=prompt)]
    result = curate.run(make_recipe(tmp_path, webdataset(pool), steps), progress=False)
    check_recaptioned(result, pool, caption_alone)


def fake_run(root: Path, recipe: str) -> Path:
    """A run directory holding only a shipped debug recipe: all the captioner check reads."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "recipes" / "debug" / f"{recipe}.yaml", root / "recipe.yaml")
    return root


def test_runs_that_cannot_caption_are_named_before_any_output(pool: Pool, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "curated").mkdir()
    shutil.copy(REPO / "recipes" / "curate" / "datacomp-metaclip.yaml", tmp_path / "curated" / "recipe.yaml")
    cases = {
        tmp_path / "absent": "does not exist",
        tmp_path / "empty": "not a run directory",
        tmp_path / "curated": "holds a curate recipe",
        fake_run(tmp_path / "clip", "clip-tiny"): "is a clip run, which cannot caption",
        fake_run(tmp_path / "mae", "mae-tiny"): "is a masked run, which cannot caption",
    }
    for run, message in cases.items():
        recipe = make_recipe(tmp_path, webdataset(pool), [recaption_with(run)])
        with pytest.raises(UserError, match=rf"steps\.recaption\.captioner\.run: .*{message}") as caught:
            curate.run(recipe, progress=False)
        assert "coca" in (caught.value.hint or "")
        assert not (tmp_path / "out").exists()  # checked before the output folder is claimed


def test_cli_exits_2_naming_the_captioner_of_a_clip_run(pool: Pool, tmp_path: Path) -> None:
    run = fake_run(tmp_path / "clip-run", "clip-tiny")
    recipe = {
        "name": "sieve",
        "input": webdataset(pool),
        "output": str(tmp_path / "out"),
        "model": {"kind": "run", "path": str(run)},
        "steps": [
            {
                "name": "sieve",
                "kind": "caption_agreement",
                "threshold": 0.5,
                "captioner": {"kind": "run", "run": str(run)},
            }
        ],
    }
    (tmp_path / "curate.yaml").write_text(json.dumps(recipe))
    proc = run_cli("curate", "-c", "curate.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "steps.sieve.captioner.run" in proc.stderr and "clip run" in proc.stderr
    assert "Traceback" not in proc.stderr
