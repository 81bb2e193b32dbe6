"""Human labels read back (Label Studio JSON export, or the sample's CSV) and how well each curation
stage agrees with them: precision, recall and F1 of the stage's drop decision, and of a threshold on
each of its scores at every cut-off, so a threshold can be set on evidence.

"Drop" is the positive class. Each labelled item is weighted by its stratum's population over the number
of labelled items in it (a Horvitz-Thompson estimate), so the figures estimate the whole pool's, not the
over-sampled strata's."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.curate.annotate import CHOICE_NAME, LABELS
from vlmforge.errors import UserError, raise_all

MAX_THRESHOLDS = 50  # cut-offs per score: quantiles of the labelled items' values beyond this many


def read_sample(folder: Path) -> dict[str, Any]:
    path = folder / "sample.json"
    if not path.is_file():
        raise UserError(f"{path}: not found", hint="give the folder `vlmforge curate annotate export` wrote")
    return json.loads(path.read_text(encoding="utf-8"))


def read_labels(path: Path, ids: set[int]) -> tuple[dict[int, str], dict[str, int]]:
    """Labels by sample id from a Label Studio JSON export or the CSV, and counts of what was skipped
    (unlabelled, cancelled, annotators disagreeing). Unknown ids and labels are errors, all at once."""
    if not path.is_file():
        raise UserError(f"{path}: labels file not found", hint="a Label Studio JSON export or labels.csv")
    if path.suffix.lower() == ".json":
        votes, skipped, problems = _label_studio_votes(path)
    elif path.suffix.lower() == ".csv":
        votes, skipped, problems = _csv_votes(path)
    else:
        raise UserError(
            f"{path}: unknown labels format", hint="give a .json (Label Studio export) or .csv file"
        )
    problems += [UserError(f"{path}: sample_id {i} is not in the sample") for i in sorted(set(votes) - ids)]
    raise_all(problems)
    labels = {}
    for item_id, choices in votes.items():
        if len(set(choices)) > 1:
            skipped["disagreed"] = skipped.get("disagreed", 0) + 1
        elif choices:
            labels[item_id] = choices[0]
    skipped["unlabelled"] = len(ids) - len(labels) - skipped.get("disagreed", 0)
    return labels, skipped


def _label_studio_votes(path: Path) -> tuple[dict[int, list[str]], dict[str, int], list[UserError]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc}", hint="export the project as JSON") from None
    if not isinstance(tasks, list):
        raise UserError(f"{path}: expected a list of tasks", hint="export the project as JSON (not JSON-MIN)")
    votes: dict[int, list[str]] = {}
    skipped: Counter[str] = Counter()
    problems = []
    for n, task in enumerate(tasks):
        item_id = (task.get("data") or {}).get("sample_id") if isinstance(task, dict) else None
        if not isinstance(item_id, int):
            problems.append(
                UserError(f"{path}: task {n} has no data.sample_id", hint="import tasks.json as written")
            )
            continue
        votes[item_id] = []
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                skipped["cancelled"] += 1
                continue
            for result in annotation.get("result") or []:
                if result.get("from_name") == CHOICE_NAME and result.get("type") == "choices":
                    choice = ((result.get("value") or {}).get("choices") or [""])[0]
                    if choice not in LABELS:
                        problems.append(UserError(f"{path}: task {n}: choice {choice!r} is not keep or drop"))
                    else:
                        votes[item_id].append(choice)
    return votes, dict(skipped), problems


def _csv_votes(path: Path) -> tuple[dict[int, list[str]], dict[str, int], list[UserError]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"sample_id", "label"} <= set(rows[0]):
        raise UserError(
            f"{path}: needs columns sample_id and label", hint="fill the label column of labels.csv"
        )
    votes: dict[int, list[str]] = {}
    problems = []
    for line, row in enumerate(rows, start=2):
        label = (row["label"] or "").strip().lower()
        try:
            item_id = int(row["sample_id"])
        except ValueError:
            problems.append(UserError(f"{path}:{line}: sample_id {row['sample_id']!r} is not a number"))
            continue
        if label and label not in LABELS:
            problems.append(UserError(f"{path}:{line}: label {row['label']!r}", hint="keep, drop or empty"))
        votes[item_id] = [label] if label in LABELS else []
    return votes, {}, problems


def weighted_prf(truth: np.ndarray, predicted: np.ndarray, weight: np.ndarray) -> dict[str, float | None]:
    """Weighted precision, recall and F1 of the positive class, as scikit-learn's
    ``precision_recall_fscore_support(average='binary', sample_weight=...)``; None where undefined."""
    tp = float(weight[truth & predicted].sum())
    fp = float(weight[~truth & predicted].sum())
    fn = float(weight[truth & ~predicted].sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": _round(precision), "recall": _round(recall), "f1": _round(f1)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def agreement(sample: dict[str, Any], labels: dict[int, str]) -> dict[str, Any]:
    """Per stage: counts, the weighted P/R/F1 of its decision, and a threshold sweep over each score."""
    items = [i for i in sample["items"] if i["id"] in labels]
    labelled = Counter(i["stratum"] for i in items)
    weight_of = {s: v["population"] / labelled[s] for s, v in sample["strata"].items() if labelled[s]}
    stages = {}
    for stage in sample["stages"]:
        reached = [i for i in items if stage in i["decisions"]]
        truth = np.array([labels[i["id"]] == "drop" for i in reached], dtype=bool)
        dropped = np.array([i["decisions"][stage] == "drop" for i in reached], dtype=bool)
        weight = np.array([weight_of[i["stratum"]] for i in reached], dtype=np.float64)
        report: dict[str, Any] = {
            "labelled": len(reached),
            "dropped": int(dropped.sum()),
            "human_drop": int(truth.sum()),
            "decision": weighted_prf(truth, dropped, weight),
            "thresholds": {},
        }
        for name in sorted({n for i in reached for n in i["scores"] if n.startswith(f"{stage}.")}):
            values = np.array([i["scores"].get(name, np.nan) for i in reached], dtype=np.float64)
            report["thresholds"][name] = threshold_sweep(values, dropped, truth, weight)
        stages[stage] = report
    return {"labelled": len(items), "labels": dict(Counter(labels.values())), "stages": stages}


def threshold_sweep(
    values: np.ndarray, dropped: np.ndarray, truth: np.ndarray, weight: np.ndarray
) -> dict[str, Any]:
    """Drop below (or above) each cut-off; the side is the one the stage's own drops lie on (a score
    whose drops have the lower mean is a minimum). Cut-offs: the distinct values, or quantiles of them."""
    finite = np.isfinite(values)
    values, dropped, truth, weight = values[finite], dropped[finite], truth[finite], weight[finite]
    if not len(values):
        return {"side": None, "curve": [], "best_f1": None}
    high_drops = dropped.any() and (~dropped).any() and values[dropped].mean() > values[~dropped].mean()
    side = "above" if high_drops else "below"
    cuts = np.unique(values)
    if len(cuts) > MAX_THRESHOLDS:
        cuts = np.unique(np.quantile(values, np.linspace(0, 1, MAX_THRESHOLDS)))
    curve = []
    for cut in cuts.tolist():
        predicted = values > cut if side == "above" else values < cut
        share = float(weight[predicted].sum() / weight.sum())
        curve.append(
            {
                "threshold": round(cut, 6),
                "drop_fraction": round(share, 6),
                **weighted_prf(truth, predicted, weight),
            }
        )
    scored = [c for c in curve if c["f1"] is not None]
    best = max(scored, key=lambda c: c["f1"]) if scored else None
    return {"side": side, "curve": curve, "best_f1": best}
