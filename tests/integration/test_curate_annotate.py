"""`vlmforge curate annotate`: a stratified sample of a curation of the test pool goes out as Label Studio
tasks and a CSV, a simulated labeller's answers come back in Label Studio's JSON export format and as the
filled CSV, and each stage's agreement with them matches scikit-learn's weighted precision/recall/F1."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import last_json, run_cli
from tests.curate_pool import Pool, dropped_of, make_recipe
from vlmforge.errors import UserError
from vlmforge.verbs import curate
from vlmforge.verbs import curate_annotate as annotate

STEPS = [
    {"kind": "caption_length", "min_chars": 5, "max_words": 40},
    {"kind": "caption_complexity", "min_concepts": 2},
    {"kind": "repeated_tokens"},
    {"kind": "image_size", "min_side": 32},
    {"kind": "file_size", "max_bytes": 200000},
    {"kind": "exact_dedup"},
    {"kind": "near_dedup"},
]
DOUBTED = {"photo-coins", "photo-retina", "photo-moon", "digit-001"}  # kept, yet the labeller drops them


@pytest.fixture(scope="module")
def curated(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("annotate")
    recipe = make_recipe(root, {"kind": "webdataset", "shards": pool.shards}, STEPS)
    return curate.run(recipe, progress=False).output


def human_label(key: str, pool: Pool) -> str:
    """The simulated labeller: drops every planted problem and a few samples the filters keep."""
    return "drop" if key in pool.planted or key in DOUBTED else "keep"


def label_studio_export(folder: Path, pool: Pool) -> list[dict[str, Any]]:
    """tasks.json as Label Studio exports it once labelled (labelstud.io/guide/task_format): each task
    with an id and its annotations, one choices result each; one task also has a cancelled annotation."""
    tasks = json.loads((folder / "tasks.json").read_text())
    for n, task in enumerate(tasks):
        choice = human_label(task["data"]["key"], pool)
        result = {
            "from_name": "verdict",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [choice]},
        }
        task["id"] = 100 + n
        task["annotations"] = [
            {"id": n, "result": [result], "was_cancelled": False, "completed_by": 1, "task": 100 + n}
        ]
        if n == 0:
            task["annotations"].append({"id": 999, "result": [], "was_cancelled": True, "completed_by": 2})
    return tasks


def test_export_samples_every_stratum_with_its_decisions(curated: Path, pool: Pool, tmp_path: Path) -> None:
    result = annotate.export(curated, tmp_path / "a", per_stratum=3, seed=7)
    sample = json.loads((tmp_path / "a" / "sample.json").read_text())
    dropped = dropped_of(curated)
    planted = {
        f"dropped:{stage}:{reason}"
        for stage, reason in pool.planted.values()
        if stage in {s["kind"] for s in STEPS}
    }
    assert planted <= set(sample["strata"])  # each planted problem's (stage, reason) is a stratum
    readable = len(pool.keys)
    assert sum(s["population"] for s in sample["strata"].values()) == readable
    assert sample["bin_score"] == "near_dedup.nearest_bits"  # the last stage with a score
    assert {s for s in sample["strata"] if s.startswith("kept:")} == {
        f"kept:near_dedup.nearest_bits:q{i}" for i in range(1, 5)
    }
    for stratum, counts in result.strata.items():
        assert counts["sampled"] == min(3, counts["population"]), stratum
    for item in sample["items"]:
        stage, reason = dropped.get(item["key"], ("", ""))
        assert (item["stage"], item["reason"], item["kept"]) == (stage, reason, not stage)
        decisions = item["decisions"]
        assert list(decisions) == sample["stages"][: len(decisions)]
        assert [d for d in decisions.values() if d == "drop"] == ([] if item["kept"] else ["drop"])
        assert (tmp_path / "a" / item["image"]).stat().st_size > 0
    tasks = json.loads((tmp_path / "a" / "tasks.json").read_text())
    assert [t["data"]["sample_id"] for t in tasks] == [i["id"] for i in sample["items"]]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=" + sample["items"][0]["image"]
    again = annotate.export(curated, tmp_path / "b", per_stratum=3, seed=7)
    assert again.strata == result.strata
    assert json.loads((tmp_path / "b" / "sample.json").read_text())["items"] == sample["items"]
    annotate.export(curated, tmp_path / "c", per_stratum=3, seed=8)
    reseeded = json.loads((tmp_path / "c" / "sample.json").read_text())["items"]
    assert {i["key"] for i in reseeded} != {i["key"] for i in sample["items"]}  # the seed picks within strata
    with pytest.raises(UserError, match="not empty"):
        annotate.export(curated, tmp_path / "a")


def test_label_studio_and_csv_labels_give_the_same_agreement_as_scikit_learn(
    curated: Path, pool: Pool, tmp_path: Path
) -> None:
    from sklearn.metrics import precision_recall_fscore_support

    folder = tmp_path / "sample"
    annotate.export(curated, folder, per_stratum=4, seed=1)
    exported = tmp_path / "project-1-at-export.json"
    exported.write_text(json.dumps(label_studio_export(folder, pool)))
    from_json = annotate.import_labels(folder, exported)
    labels_json = json.loads((folder / "labels.json").read_text())

    with (folder / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (tmp_path / "filled.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"label": human_label(row["key"], pool).upper()})
    from_csv = annotate.import_labels(folder, tmp_path / "filled.csv")
    assert json.loads((folder / "labels.json").read_text()) == labels_json
    assert from_csv.report == from_json.report
    assert from_json.skipped == {"cancelled": 1, "unlabelled": 0}
    saved = json.loads((folder / "agreement.json").read_text())
    assert saved == json.loads(json.dumps(from_json.report))

    sample = json.loads((folder / "sample.json").read_text())
    labelled = {s: sum(i["stratum"] == s for i in sample["items"]) for s in sample["strata"]}
    for stage, report in from_json.report["stages"].items():
        reached = [i for i in sample["items"] if stage in i["decisions"]]
        truth = [labels_json[str(i["id"])] == "drop" for i in reached]
        predicted = [i["decisions"][stage] == "drop" for i in reached]
        weight = [sample["strata"][i["stratum"]]["population"] / labelled[i["stratum"]] for i in reached]
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, average="binary", sample_weight=weight, zero_division=np.nan
        )
        got = report["decision"]
        for mine, reference in ((got["precision"], p), (got["recall"], r), (got["f1"], f)):
            assert (mine is None and np.isnan(reference)) or mine == pytest.approx(reference, abs=1e-6), stage
    size = from_json.report["stages"]["image_size"]
    assert size["decision"]["precision"] == 1.0  # every drop it made is a planted problem
    assert size["thresholds"]["image_size.min_side"]["side"] == "below"
    curve = size["thresholds"]["image_size.min_side"]["curve"]
    assert [c["threshold"] for c in curve] == sorted(c["threshold"] for c in curve)
    assert curve[0]["drop_fraction"] == 0.0  # nothing lies below the smallest value


def test_cli_round_trip_and_bad_labels(curated: Path, pool: Pool, tmp_path: Path) -> None:
    folder = tmp_path / "cli-sample"
    proc = run_cli(
        "curate",
        "annotate",
        "export",
        str(curated),
        "--to",
        str(folder),
        "--per-stratum",
        "2",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    assert last_json(proc.stdout)["items"] == len(json.loads((folder / "sample.json").read_text())["items"])
    exported = tmp_path / "export.json"
    exported.write_text(json.dumps(label_studio_export(folder, pool)))
    proc = run_cli(
        "curate", "annotate", "import", str(folder), "--labels", str(exported), cwd=tmp_path, check=True
    )
    assert "image_size" in proc.stdout and "agreement.json" in proc.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,label\n0,maybe\n9999,keep\n")
    proc = run_cli("curate", "annotate", "import", str(folder), "--labels", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert "label 'maybe'" in proc.stderr and "sample_id 9999 is not in the sample" in proc.stderr
