"""The model card (``README.md``) of an export: what was trained, on what, for how long, how well, at
what cost, and how to load it — read from the run directory's own records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmforge import __version__
from vlmforge.storage import read_json

LOAD_SNIPPETS = {
    "open_clip": """import open_clip

model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{dir}")
tokenizer = open_clip.get_tokenizer("local-dir:{dir}")""",
    "hf": """from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{dir}")
processor = AutoProcessor.from_pretrained("{dir}")""",
    "timm": """import timm

model = timm.create_model("local-dir:{dir}")
config = timm.data.resolve_data_config({{}}, model=model)
transform = timm.data.create_transform(**config)""",
}


def model_card(run_dir: Path, fmt: str, kind: str, stage: str | None, dtype: str, out: Path) -> str:
    """Markdown: the recipe, data fingerprint, steps, evaluation results, planned vs actual cost,
    vlmforge version, and the lines that load the export."""
    manifest = _read(run_dir / "manifest.json")
    result = _read(run_dir / "result.json")
    lines = [
        f"# {run_dir.parent.name} ({kind})",
        "",
        f"Exported by vlmforge {__version__} as `{fmt}` ({dtype}) from the run `{run_dir.name}`"
        + (f", stage `{stage}`" if stage else "")
        + ".",
        "",
        "## Training",
        "",
        f"- status: {result.get('status', 'unknown')}, steps: {result.get('steps', 'unknown')}",
        f"- data fingerprint: `{manifest.get('data_fingerprint', 'unknown')}`",
        f"- seed: {manifest.get('seed', 'unknown')}",
        f"- vlmforge commit: `{manifest.get('git_sha') or 'unknown'}`",
        *_cost_lines(run_dir),
        "",
        "## Evaluation",
        "",
        *_eval_lines(run_dir),
        "",
        "## Loading",
        "",
        "```python",
        LOAD_SNIPPETS[fmt].format(dir=out),
        "```",
        "",
        "## Recipe",
        "",
        "```yaml",
        (run_dir / "recipe.yaml").read_text(encoding="utf-8").rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def _cost_lines(run_dir: Path) -> list[str]:
    """Planned vs measured: what ``plan.json`` predicted and ``actual.json`` recorded, where both exist."""
    plan, actual = _read(run_dir / "plan.json"), _read(run_dir / "actual.json")
    lines = []
    if plan:
        flops = plan.get("total_flops")
        lines.append(
            f"- planned: {plan.get('devices', '?')} x {plan.get('accelerator') or plan.get('device', '?')}"
            + (f", {flops:.3g} FLOPs" if isinstance(flops, int | float) else "")
        )
    if actual:
        lines.append(
            f"- measured: {actual.get('wall_seconds', '?')} s of training on {actual.get('world_size', '?')} "
            f"process(es), {actual.get('samples_per_second', '?')} samples/s"
        )
    return lines


def _eval_lines(run_dir: Path) -> list[str]:
    """One line per ``eval/<task>.json`` (finetune runs: per stage), numbers as the run recorded them."""
    files = sorted(run_dir.glob("eval/*.json")) + sorted(run_dir.glob("stages/*/eval/*.json"))
    if not files:
        return ["No evaluation recorded in the run directory (run `vlmforge eval --run RUN_DIR`)."]
    lines = []
    for path in files:
        record = _read(path)
        metrics = record.get("metrics", record)
        shown = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "seconds"}
        where = path.relative_to(run_dir)
        lines.append(f"- `{where}` on {record.get('data', 'its data')}: {json.dumps(shown)}")
    return lines
