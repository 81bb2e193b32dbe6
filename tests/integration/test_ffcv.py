"""FFCV (`data.kind: ffcv`, `vlmforge curate --write ffcv`): the written file holds the source's samples at
the training side, training on it sees exactly the samples vlmforge's sampler picks (same ids as the same
run on the source), and without the extra the user gets the install hint. FFCV needs system libraries, so
the tests that run it skip where the `ffcv` extra is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import last_json, needs_ffcv, run_cli
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FfcvData
from vlmforge.config.shipped import find_recipe
from vlmforge.data.sources import open_source


@needs_ffcv
@pytest.mark.slow
def test_training_on_ffcv_sees_the_samples_of_the_same_run_on_the_source(
    digits_beton: Path, tmp_path: Path
) -> None:
    from vlmforge.verbs import pretrain

    common = ["train.max_steps=12", "train.record_sample_ids=true", "eval=[]", f"output_dir={tmp_path}"]
    ffcv = ["data.kind=ffcv", f"data.path={digits_beton}", "data.val_fraction=0.2", "name=on-ffcv"]
    runs = {}
    for name, extra in (("digits", ["name=on-digits"]), ("ffcv", ffcv)):
        result = pretrain.run(load_recipe("pretrain", find_recipe("debug/clip-tiny"), [*common, *extra]))
        assert result is not None and result.status == "completed"
        runs[name] = result.run_dir
    steps = {
        name: [json.loads(line) for line in (run / "samples" / "rank-0.jsonl").read_text().splitlines()]
        for name, run in runs.items()
    }
    assert [s["ids"] for s in steps["ffcv"]] == [s["ids"] for s in steps["digits"]]
    ids = [i for s in steps["ffcv"] for i in s["ids"]]
    assert len(ids) == len(set(ids)) == 12 * 32  # within one epoch: every sample at most once
    losses = {
        name: [
            json.loads(line)["loss"]
            for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line
        ]
        for name, run in runs.items()
    }
    assert losses["ffcv"][0] == pytest.approx(losses["digits"][0], rel=0.05)  # same samples, JPEG pixels


@needs_ffcv
@pytest.mark.slow
def test_curate_writes_ffcv_and_keeps_it_when_nothing_changed(tmp_path: Path) -> None:
    from PIL import Image

    pool = tmp_path / "pool"
    pool.mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(pool / f"{i}.png")
        caption = "a photo of noise" if i % 4 else "x"  # every 4th is too short: dropped
        rows.append(json.dumps({"image": f"{i}.png", "caption": caption}))
    (pool / "captions.jsonl").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "curate.yaml"
    recipe.write_text(
        f"name: tiny\ninput: {{kind: folder, path: {pool}}}\noutput: {tmp_path / 'out'}\n"
        "steps:\n  - {kind: caption_length, min_words: 2}\n"
    )
    args = ("curate", "-c", str(recipe), "--write", "ffcv", "ffcv.side=32", "--format", "json")
    first = last_json(run_cli(*args, cwd=tmp_path, check=True).stdout)
    assert first["kept"] == 18 and first["ffcv"]["count"] == 18 and first["ffcv"]["written_now"]
    stored = open_source(FfcvData(path=Path(first["ffcv"]["path"]), image_size=32))
    assert len(stored) == 18 and stored.image(0).shape == (3, 32, 32)
    assert all(c == ["a photo of noise"] for c in stored.captions)
    again = last_json(run_cli(*args, cwd=tmp_path, check=True).stdout)
    assert again["ffcv"]["count"] == 18 and not again["ffcv"]["written_now"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ffcv"]["count"] == 18


def test_write_option_accepts_only_ffcv(tmp_path: Path) -> None:
    out = run_cli("curate", "-c", "curate/datacomp-metaclip", "--write", "parquet", cwd=tmp_path)
    assert out.returncode == 2 and "only extra output format is ffcv" in out.stderr
    assert "Traceback" not in out.stderr and not any(tmp_path.iterdir())  # nothing written
