"""CoCa: decoding written in the project, captioning metrics, and the debug recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import last_json, pretrain_json, read_metrics, run_cli


# -------------------------------------------------------------------------------------------- metrics
def words(*texts: str) -> list[list[str]]:
    return [t.split() for t in texts]


@pytest.mark.slow
def test_coca_debug_recipe_trains_then_captions_digits(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from vlmforge.data.digits import CLASSNAMES

    result = pretrain_json(tmp_path, "debug/coca-tiny")
    run_dir = tmp_path / result["run_dir"]
    records = read_metrics(run_dir)
    assert records[-1]["loss"] < records[0]["loss"] - 1.0, [r["loss"] for r in records]
    assert records[-1]["caption"] < records[0]["caption"]
    assert records[-1]["contrastive"] < records[0]["contrastive"]
    held_out = result["metrics"]["eval"]
    assert held_out["captioning"]["Bleu_4"] > 0 and held_out["captioning"]["CIDEr"] > 0
    assert 0 < held_out["captioning"]["ROUGE_L"] <= 1
    assert "METEOR" in held_out["captioning"] or "METEOR_unavailable" in held_out["captioning"]
    assert held_out["zeroshot"]["top1"] > 0.2  # chance is 0.1

    task = "tasks=[{kind: captioning, method: beam, beam_size: 2, examples: 40}]"
    proc = run_cli("eval", "--run", str(run_dir), task, "--format", "json", cwd=tmp_path, check=True)
    metrics = last_json(proc.stdout)["metrics"]["captioning"]
    assert metrics["Bleu_4"] > 0 and metrics["CIDEr"] > 0 and metrics["beam_size"] == 2
    vocab = set(json.loads((run_dir / "tokenizer.json").read_text())["words"])
    examples = metrics["examples"]
    assert len(examples) == 40
    assert all(e["caption"] and set(e["caption"].split()) <= vocab for e in examples), examples
    labels = load_digits().target
    named = [CLASSNAMES[labels[int(e["key"].split("-")[1])]] in e["caption"].split() for e in examples]
    assert sum(named) >= 20, examples  # the digit shown is named far above chance (1 in 10)
    saved = json.loads((run_dir / "eval" / "captioning.json").read_text())
    assert saved["metrics"]["CIDEr"] == metrics["CIDEr"]
