"""The three passes of a curation.

1. measure (per input shard, in parallel): read, decode, run every step's ``measure`` on the samples
   still alive; local steps prune at once. Columns go to ``work/measure/<shard>.npz``, then a marker.
2. decide (once, in input order): every step's ``apply`` on the samples reaching it, across shards.
3. write (per input shard, in parallel): the kept samples to ``shards/<shard>.tar``, then a marker.

A shard with a marker is not redone when the curation is resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.curate import CurateRecipe, runs_a_model
from vlmforge.curate.base import Resources, Step
from vlmforge.curate.batch import Batch, Decision, Table
from vlmforge.curate.io import OutputSample, ShardRef, decode, read_samples, write_shard
from vlmforge.curate.steps import build_steps

MEASURED = "__measured__"
_PROCESS: dict[str, tuple[Resources, list[Step]]] = {}


def process_steps(recipe_json: str) -> tuple[CurateRecipe, list[Step]]:
    """The recipe's steps with resources loaded once per process (models stay warm across shards)."""
    if recipe_json not in _PROCESS:
        recipe = CurateRecipe.model_validate_json(recipe_json)
        resources = Resources(recipe)
        _PROCESS[recipe_json] = (resources, build_steps(recipe, resources))
    resources, steps = _PROCESS[recipe_json]
    return resources.recipe, steps


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ measure
def measure_shard(task: tuple[str, ShardRef, str]) -> dict[str, Any]:
    """Pass 1 for one shard; returns (and writes) its completion marker."""
    recipe_json, ref, work = task
    recipe, steps = process_steps(recipe_json)
    threads = _single_thread(recipe)  # same numerics in every engine and worker count
    try:
        started = time.perf_counter()
        samples, shard_error = read_samples(ref, recipe.input)
        seconds = {"read": time.perf_counter() - started} | {s.name: 0.0 for s in steps}
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(samples), recipe.batch_size):
            parts.append(_measure_chunk(samples[start : start + recipe.batch_size], steps, recipe, seconds))
    finally:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
    out = Path(work) / "measure" / f"{ref.index:05d}"
    columns = _concat_parts(parts)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **columns)
    os.replace(tmp, out.with_suffix(".npz"))
    marker = {"shard": ref.label, "samples": len(samples), "error": shard_error, "seconds": seconds}
    write_json_atomic(out.with_suffix(".json"), marker)
    return marker


def _single_thread(recipe: CurateRecipe) -> int | None:
    if not any(runs_a_model(s) for s in recipe.steps):
        return None
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return previous


def _measure_chunk(
    samples: list[Any], steps: list[Step], recipe: CurateRecipe, seconds: dict[str, float]
) -> dict[str, np.ndarray]:
    started = time.perf_counter()
    chunk, reasons = decode(samples)
    seconds["read"] += time.perf_counter() - started
    n = len(samples)
    columns: dict[str, np.ndarray] = {
        "read/key": np.array(chunk.keys, dtype=str),
        "read/reason": reasons.astype(str),
        "read/caption": np.array(chunk.captions, dtype=str),
    }
    alive = reasons == ""
    for i, step in enumerate(steps):
        rows = np.nonzero(alive)[0]
        measured = np.zeros(n, dtype=bool)
        measured[rows] = True
        columns[f"{i}/{MEASURED}"] = measured
        if not len(rows):
            continue
        started = time.perf_counter()
        measured_cols = step.measure(Batch(chunk, rows))
        for name, values in measured_cols.items():
            columns[f"{i}/{name}"] = _scatter(values, rows, n)
        if step.local:
            decision = step.apply(Table(np.array(chunk.keys)[rows], measured_cols, recipe.seed))
            alive[rows[~decision.keep]] = False
        if step.rewrites_caption:
            for row, caption in zip(rows.tolist(), measured_cols["caption"].tolist(), strict=True):
                chunk.captions[row] = caption
            chunk.cache.pop("text_embedding", None)
        seconds[step.name] += time.perf_counter() - started
    return columns


def _scatter(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    full = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    if values.dtype.kind == "f":
        full[:] = np.nan
    full[rows] = values
    return full


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Chunks into one array per column; a column a chunk lacks (no row reached the step) is filled."""
    names = sorted({name for part in parts for name in part})
    columns = {}
    for name in names:
        template = next(part[name] for part in parts if name in part)
        pieces = []
        for part in parts:
            n = len(part["read/key"])
            pieces.append(part[name] if name in part else np.zeros((n, *template.shape[1:]), template.dtype))
        columns[name] = np.concatenate(pieces)
    return columns


# ------------------------------------------------------------------------------------------- decide
@dataclass
class StageReport:
    name: str
    kind: str
    n_in: int
    n_out: int
    dropped: dict[str, int]
    measure_seconds: float
    decide_seconds: float
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "in": self.n_in,
            "out": self.n_out,
            "dropped": self.dropped,
            "measure_seconds": round(self.measure_seconds, 4),
            "decide_seconds": round(self.decide_seconds, 4),
            "histograms": self.histograms,
            "info": self.info,
        }


@dataclass
class Decisions:
    """The outcome for every input sample, in input order."""

    shard_of: np.ndarray
    position: np.ndarray
    keys: np.ndarray
    kept: np.ndarray
    stage: np.ndarray  # the stage that dropped the sample ("" if kept)
    reason: np.ndarray
    caption: np.ndarray
    original_caption: np.ndarray
    scores: dict[str, np.ndarray]
    stages: list[StageReport]
    texts: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample strings ("" where none)


def decide(recipe: CurateRecipe, steps: list[Step], shards: list[ShardRef], work: Path) -> Decisions:
    """Pass 2: apply every step in order to the samples reaching it, across all shards."""
    loaded = [dict(np.load(work / "measure" / f"{ref.index:05d}.npz")) for ref in shards]
    markers = [json.loads((work / "measure" / f"{ref.index:05d}.json").read_text()) for ref in shards]
    sizes = [len(cols["read/key"]) if "read/key" in cols else 0 for cols in loaded]
    shard_of = np.repeat(np.arange(len(shards)), sizes)
    position = np.concatenate([np.arange(s) for s in sizes]) if sizes else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    keys = _gather(loaded, "read/key", sizes)
    read_reason = _gather(loaded, "read/reason", sizes).astype(object)
    caption = _gather(loaded, "read/caption", sizes).astype(object)
    original = caption.copy()
    alive = read_reason == ""
    stage = np.where(alive, "", "read").astype(object)
    reason = np.where(alive, "", read_reason).astype(object)
    read_seconds = sum(m["seconds"]["read"] for m in markers)
    stages = [
        StageReport(
            "read", "read", len(keys), int(alive.sum()), _counts(read_reason[~alive]), read_seconds, 0.0
        )
    ]
    stages[0].info["shard_errors"] = {m["shard"]: m["error"] for m in markers if m["error"]}
    scores: dict[str, np.ndarray] = {}
    texts: dict[str, np.ndarray] = {}
    for i, step in enumerate(steps):
        rows = np.nonzero(alive)[0]
        started = time.perf_counter()
        columns = _columns_for(loaded, offsets, i, rows)
        decision = (
            step.apply(Table(keys[rows], columns, recipe.seed))
            if len(rows)
            else Decision.from_reasons(np.zeros(0, dtype=object))
        )
        elapsed = time.perf_counter() - started
        dropped = rows[~decision.keep]
        stage[dropped], reason[dropped] = step.name, decision.reason[~decision.keep]
        alive[dropped] = False
        if step.rewrites_caption and len(rows):
            caption[rows] = columns["caption"]
        report = StageReport(
            step.name,
            step.cfg.kind,
            len(rows),
            int(decision.keep.sum()),
            _counts(decision.reason[~decision.keep]),
            sum(m["seconds"].get(step.name, 0.0) for m in markers),
            elapsed,
            info=decision.info,
        )
        for name, values in decision.scores.items():
            full = scores.setdefault(f"{step.name}.{name}", np.full(len(keys), np.nan))
            full[rows] = values
            report.histograms[name] = histogram(np.asarray(values, np.float64), decision.keep)
        for name, values in decision.texts.items():
            texts.setdefault(f"{step.name}.{name}", np.full(len(keys), "", dtype=object))[rows] = values
        stages.append(report)
    return Decisions(shard_of, position, keys, alive, stage, reason, caption, original, scores, stages, texts)


def _gather(loaded: list[dict[str, np.ndarray]], name: str, sizes: list[int]) -> np.ndarray:
    pieces = [cols[name] for cols, size in zip(loaded, sizes, strict=True) if size]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=str)


def _columns_for(
    loaded: list[dict[str, np.ndarray]], offsets: np.ndarray, step: int, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Step ``step``'s columns at global ``rows``, gathered from the shards that hold them."""
    prefix = f"{step}/"
    pieces: dict[str, list[np.ndarray]] = {}
    for s, cols in enumerate(loaded):
        local = rows[(rows >= offsets[s]) & (rows < offsets[s + 1])] - offsets[s]
        if not len(local):
            continue
        measured = cols[prefix + MEASURED][local]
        if not measured.all():
            raise RuntimeError(f"shard {s}: step {step} was not measured on rows {local[~measured][:5]}")
        for name, values in cols.items():
            if name.startswith(prefix) and not name.endswith(MEASURED):
                pieces.setdefault(name[len(prefix) :], []).append(values[local])
    return {name: np.concatenate(parts) for name, parts in pieces.items()}


def _counts(reasons: np.ndarray) -> dict[str, int]:
    return dict(sorted(Counter(str(r) for r in reasons).items()))


def histogram(values: np.ndarray, keep: np.ndarray, bins: int = 20) -> dict[str, Any]:
    """Counts of kept and dropped samples per bin, over the finite values."""
    finite = np.isfinite(values)
    if not finite.any():
        return {"edges": [], "kept": [], "dropped": []}
    low, high = float(values[finite].min()), float(values[finite].max())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    kept = np.histogram(values[finite & keep], edges)[0]
    dropped = np.histogram(values[finite & ~keep], edges)[0]
    return {"edges": [round(float(e), 6) for e in edges], "kept": kept.tolist(), "dropped": dropped.tolist()}


# -------------------------------------------------------------------------------------------- write
def kept_payload(decisions: Decisions, shard: int) -> list[dict[str, Any]]:
    """What pass 3 needs of one shard: position, caption and scores of each kept sample."""
    rows = np.nonzero(decisions.kept & (decisions.shard_of == shard))[0]
    payload = []
    for row in rows.tolist():
        scores = {
            name: round(float(values[row]), 6)
            for name, values in decisions.scores.items()
            if np.isfinite(values[row])
        }
        entry = {
            "position": int(decisions.position[row]),
            "caption": str(decisions.caption[row]),
            "scores": scores,
        }
        if decisions.caption[row] != decisions.original_caption[row]:
            entry["original_caption"] = str(decisions.original_caption[row])
        texts = {name: str(values[row]) for name, values in decisions.texts.items() if values[row]}
        if texts:
            entry["texts"] = texts
        payload.append(entry)
    return payload


def payload_digest(payload: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def write_output_shard(task: tuple[str, ShardRef, str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Pass 3 for one shard: its kept samples, original bytes and keys, new caption, scores in JSON."""
    recipe_json, ref, output, payload = task
    recipe = CurateRecipe.model_validate_json(recipe_json)
    samples, _ = read_samples(ref, recipe.input)
    out = []
    for entry in payload:
        sample = samples[entry["position"]]
        curated = {"source": ref.label, "scores": entry["scores"]}
        if "original_caption" in entry:
            curated["original_caption"] = entry["original_caption"]
        if "texts" in entry:
            curated["texts"] = entry["texts"]
        meta = dict(sample.meta) | {"key": sample.key, "curate": curated}
        out.append(OutputSample(sample.key, sample.ext, sample.image or b"", entry["caption"], meta))
    path = Path(output) / "shards" / f"{ref.index:05d}.tar"
    marker = {
        "shard": path.name,
        "samples": len(out),
        "sha256": write_shard(path, out),
        "payload": payload_digest(payload),
    }
    write_json_atomic(Path(output) / "work" / "write" / f"{ref.index:05d}.json", marker)
    return marker
