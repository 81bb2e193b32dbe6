"""`vlmforge finetune` on a contrastive model, from the CLI: each shipped debug method recipe tunes the
session's debug CLIP run; the method's tensors change, every frozen weight stays bit-for-bit the same,
and the trainable share is printed before training."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, last_json, run_cli

RECIPES = REPO / "recipes" / "debug"
SHARE = re.compile(r"trainable parameters: ([\d,]+) of ([\d,]+) \(([\d.e+-]+)%\)")


def _start_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from vlmforge.interop.inference import load_for_inference

    return {k: v.detach().clone() for k, v in load_for_inference(run_dir).model.state_dict().items()}


def _finetune(recipe: str, tiny_run: dict[str, Any], tmp_path: Path, *overrides: str) -> dict[str, Any]:
    proc = run_cli(
        "finetune",
        "-c",
        str(RECIPES / f"{recipe}.yaml"),
        f"init_from={tiny_run['run_dir']}",
        *overrides,
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    result = last_json(proc.stdout)
    share = SHARE.search(proc.stderr)
    assert share is not None, proc.stderr[-2000:]
    trainable, total = (int(share.group(i).replace(",", "")) for i in (1, 2))
    assert result["metrics"]["trainable"]["trainable"] == trainable
    assert result["metrics"]["trainable"]["total"] == total
    assert float(share.group(3)) == pytest.approx(100 * trainable / total, rel=1e-3)
    assert 0 <= result["metrics"]["zero_shot"]["top1"] <= 1
    assert 0 <= result["metrics"]["tuned"]["top1"] <= 1
    result["run_dir"] = tmp_path / result["run_dir"]
    return result


def _check_frozen_and_trained(
    run_dir: Path, start: dict[str, torch.Tensor], trained_prefix: str | None
) -> None:
    """Start weights (as ``clip.<name>``, LoRA-wrapped layers as ``<layer>.base_layer``) are unchanged
    unless they begin with ``trained_prefix``; then at least one changed. New tensors all changed."""
    tuned = load_file(str(run_dir / "model.safetensors"))
    initial = load_file(str(run_dir / "initial.safetensors"))
    base = {k.replace(".base_layer.", "."): v for k, v in tuned.items() if k.startswith("clip.")}
    changed = []
    for name, value in start.items():
        key = f"clip.{name}"
        assert key in base, key
        if trained_prefix and key.startswith(trained_prefix):
            changed.append(not torch.equal(base[key], value))
        else:
            assert torch.equal(base[key], value), f"frozen {key} changed"
    if trained_prefix:
        assert any(changed)
    assert initial, "the method adds trainable tensors"
    for name, value in initial.items():
        assert not torch.equal(tuned[name], value), f"trainable {name} did not change"


@pytest.mark.parametrize(
    ("recipe", "new"),
    [
        ("clip-coop-tiny", {"context"}),
        ("clip-vpt-tiny", {"visual_prompts"}),
        (
            "clip-adapter-tiny",
            {"visual_adapter.0.weight", "visual_adapter.2.weight", "text_adapter.0.weight"},
        ),
    ],
)
def test_prompt_and_adapter_methods(
    recipe: str, new: set[str], tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    result = _finetune(recipe, tiny_run, tmp_path)
    start = _start_weights(tiny_run["run_dir"])
    _check_frozen_and_trained(result["run_dir"], start, None)
    initial = load_file(str(result["run_dir"] / "initial.safetensors"))
    assert new <= set(initial)
    assert result["metrics"]["trainable"]["trainable"] == sum(v.numel() for v in initial.values())


def test_lora_adapts_named_layers_of_both_towers(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    result = _finetune("clip-lora-tiny", tiny_run, tmp_path)
    _check_frozen_and_trained(result["run_dir"], _start_weights(tiny_run["run_dir"]), None)
    initial = load_file(str(result["run_dir"] / "initial.safetensors"))
    assert any(k.startswith("clip.visual.transformer.resblocks.0.mlp.c_fc.lora_A") for k in initial)
    assert any(k.startswith("clip.transformer.resblocks.0.mlp.c_proj.lora_B") for k in initial)
    assert not any("ln_" in k or "token_embedding" in k for k in initial)


def test_full_finetune_with_wise_ft_curve(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    result = _finetune("clip-wiseft-tiny", tiny_run, tmp_path)
    _check_frozen_and_trained(result["run_dir"], _start_weights(tiny_run["run_dir"]), "clip.visual.")
    wise = result["metrics"]["wise_ft"]
    curve = {row["alpha"]: row["top1"] for row in wise["curve"]}
    assert sorted(curve) == [0.0, 0.25, 0.5, 0.75, 1.0]
    # alpha 0 is the zero-shot model itself (head = zero-shot class embeddings), 1 the finetuned one
    assert curve[0.0] == pytest.approx(result["metrics"]["zero_shot"]["top1"], abs=1e-6)
    assert curve[1.0] == pytest.approx(result["metrics"]["tuned"]["top1"], abs=1e-6)
    assert (result["run_dir"] / wise["plot"]).is_file()


def test_linear_probe_sweeps_c(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    result = _finetune("clip-linear-probe-tiny", tiny_run, tmp_path)
    probe = load_file(str(result["run_dir"] / "model.safetensors"))
    assert probe["weight"].shape == (10, 32) and probe["bias"].shape == (10,)
    assert result["metrics"]["trainable"]["trainable"] == 10 * 33
    sweep = result["metrics"]["linear_probe"]["sweep"]
    assert len(sweep) == 13
    best = max(row["val_top1"] for row in sweep)
    chosen = result["metrics"]["linear_probe"]["c"]
    assert next(row for row in sweep if row["c"] == chosen)["val_top1"] == best
