"""A stratified sample of a finished curation for human labelling (seed §3.1.5, "Improving data quality
with human annotation"): strata are the dropped samples per (stage, reason) and the kept samples per
score bin; each stratum gives up to ``per_stratum`` samples chosen by a seeded hash of the key.

Written to the sample folder: ``sample.json`` (every sampled item with its stratum, scores and the
decision of each stage it reached, plus each stratum's population, which weights the agreement),
``images/``, ``tasks.json`` + ``label_config.xml`` (a Label Studio project) and ``labels.csv`` (the same
items for a spreadsheet)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.curate import CurateRecipe
from vlmforge.config.load import load_recipe
from vlmforge.curate.io import ShardRef, list_shards, read_samples
from vlmforge.curate.pipeline import Decisions, decide, process_steps
from vlmforge.curate.sampling import seeded_uniform
from vlmforge.errors import UserError

LABELS = ("keep", "drop")
CHOICE_NAME = "verdict"  # the Choices tag of the Label Studio config: its answers are read back
LABEL_CONFIG = f"""<View>
  <Image name="image" value="$image" maxWidth="512px"/>
  <Text name="caption" value="$caption"/>
  <Header value="Should this image-caption pair be in the training set?"/>
  <Choices name="{CHOICE_NAME}" toName="image" choice="single" showInline="true" required="true">
    <Choice value="keep"/>
    <Choice value="drop"/>
  </Choices>
</View>
"""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class ExportResult:
    folder: Path
    items: int
    strata: dict[str, dict[str, int]]  # stratum -> {"population", "sampled"}

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "items": self.items, "strata": self.strata}


def load_curation(output: Path) -> tuple[CurateRecipe, list[ShardRef], Decisions]:
    """The recipe, input shards and every sample's decisions of the curation in ``output`` (the decide
    pass re-run on its saved measurements, so scores of dropped samples are there too)."""
    recipe_file, measured = output / "recipe.yaml", output / "work" / "measure"
    if not recipe_file.is_file() or not measured.is_dir():
        raise UserError(
            f"{output}: not a finished curation (no recipe.yaml or work/measure/)",
            hint="point at the output folder of `vlmforge curate`",
        )
    recipe = load_recipe("curate", recipe_file)
    assert isinstance(recipe, CurateRecipe)
    shards = list_shards(recipe.input)
    missing = [ref.label for ref in shards if not (measured / f"{ref.index:05d}.json").is_file()]
    if missing:
        raise UserError(
            f"{output}: the curation has not measured {len(missing)} shard(s), e.g. {missing[0]}",
            hint="run `vlmforge curate` on the recipe again to finish it",
        )
    _, steps = process_steps(recipe.model_dump_json())
    return recipe, shards, decide(recipe, steps, shards, output / "work")


def strata_of(decisions: Decisions, bin_score: str | None, bins: int) -> np.ndarray:
    """Per sample: ``dropped:<stage>:<reason>``, or ``kept`` / ``kept:<score>:q<i>`` (quantile bin of the
    kept samples' ``bin_score``); samples the read stage dropped have no image to judge ("")."""
    strata = np.array(
        [f"dropped:{s}:{r}" for s, r in zip(decisions.stage, decisions.reason, strict=True)], dtype=object
    )
    strata[decisions.stage == "read"] = ""
    kept = np.nonzero(decisions.kept)[0]
    strata[kept] = "kept"
    if bin_score is None or not len(kept):
        return strata
    if bin_score not in decisions.scores:
        raise UserError(
            f"--bin-score {bin_score!r}: the curation has no such score",
            hint=f"one of: {', '.join(sorted(decisions.scores)) or '(none: omit --bin-score)'}",
        )
    values = decisions.scores[bin_score][kept]
    edges = np.quantile(values[np.isfinite(values)], np.linspace(0, 1, bins + 1)[1:-1])
    for row, value in zip(kept.tolist(), values.tolist(), strict=True):
        strata[row] = f"kept:{bin_score}:q{int(np.searchsorted(edges, value, side='right')) + 1}"
    return strata


def default_bin_score(decisions: Decisions) -> str | None:
    """The first score of the last stage that has one (the pipeline's final ranking, e.g. CLIPScore)."""
    for stage in reversed(decisions.stages):
        names = [n for n in decisions.scores if n.startswith(f"{stage.name}.")]
        if names:
            return names[0]
    return None


def choose(decisions: Decisions, strata: np.ndarray, per_stratum: int, seed: int) -> list[int]:
    """Up to ``per_stratum`` rows of each stratum, the lowest seeded hashes of their keys (so the choice
    does not depend on input order, shard count or engine); rows in stratum then hash order."""
    chosen: list[int] = []
    for stratum in sorted(set(strata.tolist()) - {""}):
        rows = np.nonzero(strata == stratum)[0].tolist()
        rows.sort(key=lambda r: seeded_uniform(seed, "annotate", decisions.keys[r]))
        chosen.extend(rows[:per_stratum])
    return chosen


def stage_decisions(decisions: Decisions, row: int) -> dict[str, str]:
    """``keep`` or ``drop`` for each stage after read that the sample reached."""
    names = [s.name for s in decisions.stages[1:]]
    if decisions.kept[row]:
        return dict.fromkeys(names, "keep")
    last = names.index(decisions.stage[row])
    return {name: ("drop" if i == last else "keep") for i, name in enumerate(names[: last + 1])}


def item_of(decisions: Decisions, row: int, item_id: int, stratum: str, image: str) -> dict[str, Any]:
    scores = {
        name: round(float(values[row]), 6)
        for name, values in decisions.scores.items()
        if np.isfinite(values[row])
    }
    return {
        "id": item_id,
        "key": str(decisions.keys[row]),
        "stratum": stratum,
        "image": image,
        "caption": str(decisions.caption[row]),
        "kept": bool(decisions.kept[row]),
        "stage": str(decisions.stage[row]),
        "reason": str(decisions.reason[row]),
        "scores": scores,
        "decisions": stage_decisions(decisions, row),
    }


def export_sample(
    output: Path,
    folder: Path,
    per_stratum: int = 20,
    seed: int = 0,
    bin_score: str | None = None,
    bins: int = 4,
    image_prefix: str = "/data/local-files/?d=",
) -> ExportResult:
    """Write the stratified sample of the curation in ``output`` to ``folder`` (new or empty)."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder}: exists and is not empty", hint="choose a new folder for the sample")
    recipe, shards, decisions = load_curation(output)
    bin_score = bin_score or default_bin_score(decisions)
    strata = strata_of(decisions, bin_score, bins)
    rows = choose(decisions, strata, per_stratum, seed)
    (folder / "images").mkdir(parents=True)
    items = []
    for item_id, row in enumerate(rows):
        image = _save_image(recipe, shards, decisions, row, folder / "images", item_id)
        items.append(item_of(decisions, row, item_id, str(strata[row]), image))
    population = {s: int((strata == s).sum()) for s in sorted(set(strata.tolist()) - {""})}
    summary = {
        s: {"population": n, "sampled": sum(i["stratum"] == s for i in items)} for s, n in population.items()
    }
    sample = {
        "curation": str(output),
        "seed": seed,
        "per_stratum": per_stratum,
        "bin_score": bin_score,
        "stages": [s.name for s in decisions.stages[1:]],
        "strata": summary,
        "not_sampled": {"read": int((decisions.stage == "read").sum())},
        "items": items,
    }
    (folder / "sample.json").write_text(
        json.dumps(sample, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_label_studio(folder, items, image_prefix)
    write_csv(folder / "labels.csv", items)
    return ExportResult(folder, len(items), summary)


def _save_image(
    recipe: CurateRecipe, shards: list[ShardRef], decisions: Decisions, row: int, images: Path, item_id: int
) -> str:
    """The sample's original image bytes under ``images/``; its path relative to the sample folder."""
    samples, _ = read_samples(shards[int(decisions.shard_of[row])], recipe.input)
    sample = samples[int(decisions.position[row])]
    name = f"{item_id:05d}-{_UNSAFE.sub('_', sample.key)[:60]}.{sample.ext or 'bin'}"
    (images / name).write_bytes(sample.image or b"")
    return f"images/{name}"


def write_label_studio(folder: Path, items: list[dict[str, Any]], image_prefix: str) -> None:
    """Label Studio tasks (``[{"data": {...}}]``, labelstud.io/guide/tasks) and the labelling config.
    The default prefix serves files from the sample folder when Label Studio runs with
    LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<folder>."""
    tasks = [
        {
            "data": {
                "image": f"{image_prefix}{item['image']}",
                "caption": item["caption"],
                "sample_id": item["id"],
                "key": item["key"],
                "stratum": item["stratum"],
            }
        }
        for item in items
    ]
    (folder / "tasks.json").write_text(
        json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (folder / "label_config.xml").write_text(LABEL_CONFIG, encoding="utf-8")


CSV_COLUMNS = ("sample_id", "key", "stratum", "image", "caption", "label")


def write_csv(path: Path, items: list[dict[str, Any]]) -> None:
    """One row per item with an empty ``label`` column to fill with keep or drop."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for item in items:
            writer.writerow([item["id"], item["key"], item["stratum"], item["image"], item["caption"], ""])
