"""`vlmforge curate`: filter, deduplicate, balance and re-caption an image-text pool (seed §3.1).

``run(recipe)`` measures every input shard in parallel (local processes or Ray), decides once in input
order, writes the kept samples as WebDataset shards, and reports every sample's fate. Work is resumable
per shard and the output is byte-identical for the same input, recipe and seed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vlmforge.config.curate import CurateRecipe
from vlmforge.config.load import dump_recipe
from vlmforge.curate.engine import run_tasks
from vlmforge.curate.io import ShardRef, input_fingerprint, list_shards
from vlmforge.curate.pipeline import (
    decide,
    kept_payload,
    measure_shard,
    payload_digest,
    process_steps,
    write_json_atomic,
    write_output_shard,
)
from vlmforge.curate.preflight import checks, output_problem
from vlmforge.curate.progress import PassProgress
from vlmforge.curate.report import write_report
from vlmforge.errors import UserError, collect, raise_all

__all__ = ["CurateResult", "preflight", "run"]


@dataclass
class CurateResult:
    output: Path
    total: int
    kept: int
    stages: list[dict[str, Any]]
    shards: list[dict[str, Any]]
    measured_now: list[int] = field(default_factory=list)
    written_now: list[int] = field(default_factory=list)
    seconds: float = 0.0
    ffcv: dict[str, Any] | None = None  # the .beton written with --write ffcv

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "report": str(self.output / "report.json"),
            "html": str(self.output / "report.html"),
            "total": self.total,
            "kept": self.kept,
            "stages": [{k: s[k] for k in ("name", "kind", "in", "out", "dropped")} for s in self.stages],
            "shards": self.shards,
            "measured_now": self.measured_now,
            "written_now": self.written_now,
            "seconds": round(self.seconds, 3),
            "ffcv": self.ffcv,
        }


def run(recipe: CurateRecipe, progress: bool = True) -> CurateResult:
    """Curate ``recipe.input`` into ``recipe.output`` (resuming a matching earlier curation there)."""
    started = time.perf_counter()
    recipe = absolute_paths(recipe)
    raise_all(preflight(recipe))
    shards = list_shards(recipe.input)
    output, work = recipe.output, recipe.output / "work"
    recipe_json = recipe.model_dump_json()
    _, steps = process_steps(recipe_json)  # vocabulary files and captioners checked up front
    if recipe.model is not None:
        # loaded once here, before the output is claimed (an unloadable model leaves nothing behind):
        # forked local workers inherit it, pass 2 reuses it
        steps[0].resources.scorer()
    _claim_output(recipe, shards)

    todo = [ref for ref in shards if not (work / "measure" / f"{ref.index:05d}.json").is_file()]
    measuring = PassProgress("measure", len(todo)) if progress else None
    t0 = time.perf_counter()
    run_tasks(
        recipe.engine,
        measure_shard,
        [(recipe_json, ref, str(work)) for ref in todo],
        lambda marker: measuring.update(marker["samples"]) if measuring else None,
    )
    if measuring:
        measuring.close()
    t1 = time.perf_counter()
    decisions = decide(recipe, steps, shards, work)
    t2 = time.perf_counter()

    payloads = [kept_payload(decisions, ref.index) for ref in shards]
    pending = [ref for ref in shards if not _written(output, ref.index, payloads[ref.index])]
    writing = PassProgress("write", len(pending)) if progress else None
    run_tasks(
        recipe.engine,
        write_output_shard,
        [(recipe_json, ref, str(output), payloads[ref.index]) for ref in pending],
        lambda marker: writing.update(marker["samples"]) if writing else None,
    )
    if writing:
        writing.close()
    t3 = time.perf_counter()
    written = [json.loads((work / "write" / f"{ref.index:05d}.json").read_text()) for ref in shards]
    total = len(decisions.keys)
    extra = {
        "seconds": {
            "measure": round(t1 - t0, 3),
            "decide": round(t2 - t1, 3),
            "write": round(t3 - t2, 3),
            "total": round(time.perf_counter() - started, 3),
        },
        "measure_samples_per_s": round(total / (t1 - t0), 1) if todo and t1 > t0 else None,
        "measured_now": [ref.index for ref in todo],
        "written_now": [ref.index for ref in pending],
    }
    if recipe.ffcv is not None:
        extra["ffcv"] = write_curated_beton(output, recipe.ffcv)
    report = write_report(recipe, shards, decisions, written, extra)
    return CurateResult(
        output,
        total,
        report["kept"],
        report["stages"],
        report["shards"],
        extra["measured_now"],
        extra["written_now"],
        time.perf_counter() - started,
        extra.get("ffcv"),
    )


def preflight(recipe: CurateRecipe) -> list[UserError]:
    """Every problem ``run`` would stop on before its first side effect (``vlmforge validate`` reports the
    same), all of them rather than the first: the input, each file, folder, run, vocabulary, captioner
    and optional package the recipe names, and whether the output folder may be claimed (checked here,
    never created)."""
    recipe = absolute_paths(recipe)
    shards: list[ShardRef] = []

    def listed() -> None:
        shards.extend(list_shards(recipe.input))
        if not shards:
            raise UserError("input: no samples found", hint="check input.shards / input.path")

    problems = collect([listed, *checks(recipe)])
    return problems + collect([lambda: _check_output(recipe, shards or None)])


def write_curated_beton(output: Path, cfg: Any) -> dict[str, Any]:
    """``<output>/curated.beton`` from the kept shards; kept as is when it already holds exactly them."""
    from vlmforge.config.schema import WebDatasetData
    from vlmforge.data.ffcv import read_info, sidecar, write_beton
    from vlmforge.data.webds import webdataset_set

    path = output / "curated.beton"
    # mean 0, std 1: the writer stores the resized pixels themselves
    kept = WebDatasetData(
        shards=[str(output / "shards" / "*.tar")], image_size=cfg.side, mean=(0, 0, 0), std=(1, 1, 1)
    )
    data = webdataset_set(kept)
    if path.is_file() and sidecar(path).is_file():
        info = read_info(path)
        if info["source_fingerprint"] == data.fingerprint and info["side"] == cfg.side:
            return {"path": str(path), "count": info["count"], "written_now": False}
    info = write_beton(data, path, kept.mean, kept.std, cfg.jpeg_quality)
    return {"path": str(path), "count": info["count"], "written_now": True, "dropped": len(info["dropped"])}


def absolute_paths(model: Any) -> Any:
    """Every relative path in the recipe made absolute, so worker processes (any cwd) find them."""
    import os

    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = value.absolute()
        elif isinstance(value, BaseModel):
            updates[name] = absolute_paths(value)
        elif isinstance(value, list):
            updates[name] = [absolute_paths(v) if isinstance(v, BaseModel) else v for v in value]
    if getattr(model, "kind", None) == "webdataset":
        updates["shards"] = [os.path.abspath(pattern) for pattern in model.shards]
    return model.model_copy(update=updates)


def _fingerprint(recipe: CurateRecipe, shards: list[ShardRef]) -> str:
    """What the output depends on: everything but the engine, plus the input files' sizes."""
    content = recipe.model_dump(mode="json", exclude={"engine"})
    text = json.dumps(content, sort_keys=True) + input_fingerprint(shards)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_output(recipe: CurateRecipe, shards: list[ShardRef] | None) -> None:
    """Refuse an output folder that holds something else: another curation (another recipe or input),
    or files not written by a curation. ``shards`` None: the input is wrong, so whether an earlier
    curation there is this one is decided once it is fixed."""
    output = recipe.output
    output_problem(output)
    state = output / "state.json"
    if state.is_file():
        if shards is None:
            return
        try:
            saved = json.loads(state.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):  # unreadable: not a state this code wrote
            saved = None
        if saved != _fingerprint(recipe, shards):
            raise UserError(
                f"output: {output} holds a curation of another recipe or input",
                hint="choose another output folder, or delete this one to start over",
            )
    elif output.is_dir() and any(output.iterdir()):
        raise UserError(
            f"output: {output} exists and is not a curation output folder",
            hint="choose a new or empty folder",
        )


def _claim_output(recipe: CurateRecipe, shards: list[ShardRef]) -> None:
    """Create the output folder, or check that it holds this very curation (then it is resumed)."""
    _check_output(recipe, shards)
    output = recipe.output
    for sub in ("work/measure", "work/write", "shards"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    (output / "recipe.yaml").write_text(dump_recipe(recipe))
    write_json_atomic(output / "state.json", {"fingerprint": _fingerprint(recipe, shards)})


def _written(output: Path, index: int, payload: list[dict[str, Any]]) -> bool:
    marker = output / "work" / "write" / f"{index:05d}.json"
    if not marker.is_file() or not (output / "shards" / f"{index:05d}.tar").is_file():
        return False
    return json.loads(marker.read_text()).get("payload") == payload_digest(payload)
