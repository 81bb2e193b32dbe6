"""``report.json`` (every sample accounted for per stage), PNG plots (funnel, score histograms, kept and
dropped examples) and ``report.html`` tying them together."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.curate import CurateRecipe
from vlmforge.curate.io import ShardRef, read_samples
from vlmforge.curate.pipeline import Decisions, write_json_atomic


def check_accounting(stages: list[dict[str, Any]], total: int, kept: int) -> None:
    """in = out + dropped for every stage, each stage starts where the last ended: or a bug is reported."""
    expected = total
    for stage in stages:
        dropped = sum(stage["dropped"].values())
        if stage["in"] != expected or stage["in"] != stage["out"] + dropped:
            raise RuntimeError(f"curate accounting broken at stage {stage['name']}: {stage}")
        expected = stage["out"]
    if expected != kept:
        raise RuntimeError(f"curate accounting broken: last stage keeps {expected}, {kept} kept")


def write_report(
    recipe: CurateRecipe,
    shards: list[ShardRef],
    decisions: Decisions,
    written: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    stages = [stage.to_json() for stage in decisions.stages]
    total, kept = len(decisions.keys), int(decisions.kept.sum())
    check_accounting(stages, total, kept)
    plots = recipe.output / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "name": recipe.name,
        "seed": recipe.seed,
        "engine": recipe.engine.kind,
        "total": total,
        "kept": kept,
        "dropped": total - kept,
        "stages": stages,
        "shards": [
            {
                "input": ref.label,
                "output": f"shards/{marker['shard']}",
                "samples": marker["samples"],
                "sha256": marker["sha256"],
            }
            for ref, marker in zip(shards, written, strict=True)
        ],
        **extra,
    }
    report["plots"] = [
        _funnel(stages, plots / "funnel.png"),
        *[
            _histograms(stage, plots / f"scores-{i:02d}-{stage['name']}.png")
            for i, stage in enumerate(stages)
            if stage["histograms"]
        ],
        *_grids(recipe, shards, decisions, plots),
    ]
    report["plots"] = [str(p.relative_to(recipe.output)) for p in report["plots"]]
    write_json_atomic(recipe.output / "report.json", report)
    _dropped_log(shards, decisions, recipe.output / "dropped.jsonl")
    (recipe.output / "report.html").write_text(_html(report), encoding="utf-8")
    return report


def _dropped_log(shards: list[ShardRef], decisions: Decisions, path: Path) -> None:
    """One line per dropped sample: input shard, key, the stage that dropped it and why."""
    lines = [
        json.dumps(
            {
                "shard": shards[int(decisions.shard_of[row])].label,
                "key": str(decisions.keys[row]),
                "stage": str(decisions.stage[row]),
                "reason": str(decisions.reason[row]),
            },
            ensure_ascii=False,
        )
        for row in np.nonzero(~decisions.kept)[0].tolist()
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _funnel(stages: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    labels = ["input", *[s["name"] for s in stages]]
    counts = [stages[0]["in"], *[s["out"] for s in stages]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1))
    bars = ax.barh(range(len(labels)), counts, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    for bar, count, before in zip(bars, counts, [counts[0], *counts[:-1]], strict=True):
        note = f"{count}" + (f"  (-{before - count})" if before > count else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + note, va="center", fontsize=8)
    ax.set_xlabel("samples remaining after the stage")
    ax.set_xlim(0, max([*counts, 1]) * 1.25)
    ax.set_title("curation funnel")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _histograms(stage: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    items = [(name, h) for name, h in stage["histograms"].items() if h["edges"]]
    fig, axes = plt.subplots(1, max(len(items), 1), figsize=(4 * max(len(items), 1), 3), squeeze=False)
    for ax, (name, hist) in zip(axes[0], items, strict=False):
        edges = np.asarray(hist["edges"])
        width, left = np.diff(edges), edges[:-1]
        ax.bar(left, hist["kept"], width=width, align="edge", color="#55a868", label="kept")
        ax.bar(
            left,
            hist["dropped"],
            width=width,
            align="edge",
            bottom=hist["kept"],
            color="#c44e52",
            label="dropped",
        )
        ax.set_title(f"{stage['name']}: {name}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _examples(decisions: Decisions, kept_n: int = 16, per_reason: int = 2) -> tuple[list[int], list[int]]:
    """The first kept samples, and the first few dropped samples of each (stage, reason), stage order."""
    kept = np.nonzero(decisions.kept)[0][:kept_n].tolist()
    order = {stage.name: i for i, stage in enumerate(decisions.stages)}
    dropped, seen = [], {}
    for row in np.nonzero(~decisions.kept)[0].tolist():
        label = (decisions.stage[row], decisions.reason[row])
        if seen.get(label, 0) < per_reason:
            seen[label] = seen.get(label, 0) + 1
            dropped.append(row)
    dropped.sort(key=lambda row: order[decisions.stage[row]])
    return kept, dropped[:32]


def _grids(recipe: CurateRecipe, shards: list[ShardRef], decisions: Decisions, plots: Path) -> list[Path]:
    kept, dropped = _examples(decisions)
    wanted = sorted(set(kept + dropped))
    images: dict[int, Any] = {}
    for shard in sorted({int(decisions.shard_of[r]) for r in wanted}):
        samples, _ = read_samples(shards[shard], recipe.input)
        for row in wanted:
            if decisions.shard_of[row] == shard:
                images[row] = _thumbnail(samples[int(decisions.position[row])].image)
    paths = []
    for name, rows in (("kept", kept), ("dropped", dropped)):
        if not rows:
            continue
        paths.append(plots / f"grid-{name}.png")
        labels = [
            decisions.keys[r] if name == "kept" else f"{decisions.stage[r]}\n{decisions.reason[r]}"
            for r in rows
        ]
        _grid([images.get(r) for r in rows], labels, f"{name} samples", paths[-1])
    return paths


def _thumbnail(data: bytes | None) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data or b"")) as opened:
            opened.load()
            image = opened.convert("RGB")
    except Exception:  # undecodable images are shown as an empty tile
        return None
    image.thumbnail((96, 96))
    return np.asarray(image)


def _grid(images: list[np.ndarray | None], labels: list[str], title: str, path: Path) -> None:
    plt = _pyplot()
    cols = min(8, len(images))
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        if image is not None:
            ax.imshow(image)
        else:
            ax.text(0.5, 0.5, "undecodable", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        ax.set_title("\n".join(line[:30] for line in label.split("\n")), fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _html(report: dict[str, Any]) -> str:
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{esc(s['name'])}</td><td>{esc(s['kind'])}</td><td>{s['in']}</td><td>{s['out']}</td>"
        f"<td>{esc(', '.join(f'{r}: {n}' for r, n in s['dropped'].items()))}</td>"
        f"<td>{s['measure_seconds']:.2f}</td><td>{s['decide_seconds']:.2f}</td></tr>"
        for s in report["stages"]
    )
    shards = "\n".join(
        f"<tr><td>{esc(s['input'])}</td><td>{esc(s['output'])}</td><td>{s['samples']}</td><td><code>{s['sha256'][:16]}</code></td></tr>"
        for s in report["shards"]
    )
    images = "\n".join(f'<p><img src="{esc(p)}" alt="{esc(p)}"></p>' for p in report["plots"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>curation report: {esc(report["name"])}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>curation report: {esc(report["name"])}</h1>
<p>{report["total"]} samples read, {report["kept"]} kept, {report["dropped"]} dropped
(engine {esc(report["engine"])}, seed {report["seed"]}).</p>
<h2>stages</h2>
<table><tr><th>stage</th><th>kind</th><th>in</th><th>out</th><th>dropped (reason: count)</th>
<th>measure s</th><th>decide s</th></tr>
{rows}
</table>
<h2>output shards</h2>
<table><tr><th>input</th><th>output</th><th>samples</th><th>sha256</th></tr>
{shards}
</table>
<h2>plots</h2>
{images}
</body></html>
"""
