"""LLaVA variants beyond LLaVA-1.5: MAPL's mapper as the projector (its shape and token count, what the
planner counts) and LLaMA-Adapter stages, each finetuned from the CLI with the frozen parts unchanged and
the transformers export they cannot have refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import pytest
import torch

from tests.conftest import last_json, run_cli
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError

pytest.importorskip("transformers")

MAPL = find_recipe("debug/llava-mapl-tiny")
ADAPTER = find_recipe("debug/llava-adapter-tiny")
LLAVA = find_recipe("debug/llava-tiny")


def _recipe(path: Path, *overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", path, list(overrides)))


def test_mapper_gives_query_tokens_whatever_the_patch_count() -> None:
    from vlmforge.models.llava_projectors import MaplProjector

    cfg = _recipe(MAPL).model
    assert cfg.image_tokens == cfg.mapper.queries == 4  # not the 16 patches of a 16 px image at 4 px
    projector = MaplProjector(cfg.vision.width, cfg.llm.hidden_size, cfg.mapper)
    for patches in (16, 49):
        out = projector(torch.randn(3, patches, cfg.vision.width))
        assert out.shape == (3, 4, cfg.llm.hidden_size)
    # the outputs depend on the image: the queries attend to the patches
    a, b = projector(torch.randn(2, 16, cfg.vision.width))
    assert not torch.allclose(a, b)


def test_heads_must_divide_the_mapper_width() -> None:
    with pytest.raises(UserError, match="not divisible by heads"):
        _recipe(MAPL, "model.mapper.heads=3")


def test_planner_counts_fewer_image_tokens() -> None:
    from vlmforge.planning.phases import recipe_model_costs

    # 64 queries on a 224 px, 14 px-patch encoder (256 patches): LLM FLOPs shrink with the image tokens
    sizes = ("model.vision.image_size=224", "model.vision.patch_size=14")
    sizes += ("model.llm.max_position_embeddings=512",)
    mapl = recipe_model_costs(_recipe(MAPL, *sizes, "model.mapper.queries=64"))
    patches = recipe_model_costs(_recipe(LLAVA, *sizes))
    for counted, per_patch in zip(mapl, patches, strict=True):
        assert counted.flops_per_sample < per_patch.flops_per_sample


def test_mapl_finetunes_from_the_cli_and_refuses_transformers_export(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    short = ("stages.0.max_steps=6", "stages.1.max_steps=6", "eval=[]")
    proc = run_cli("finetune", "-c", str(MAPL), *short, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / last_json(proc.stdout)["run_dir"]
    align = load_file(run_dir / "stages" / "align" / "model.safetensors")
    instruct = load_file(run_dir / "stages" / "instruct" / "model.safetensors")
    mapper = [name for name in align if "multi_modal_projector." in name]
    assert any(name.endswith("queries") for name in mapper)
    assert any(not torch.equal(align[name], instruct[name]) for name in mapper)  # stage 2 trains it
    vision = [name for name in align if "vision_tower." in name]
    assert vision and all(torch.equal(align[name], instruct[name]) for name in vision)  # frozen

    out = tmp_path / "hf"
    refused = run_cli("export", str(run_dir), "--format", "hf", "-o", str(out), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "MAPL" in refused.stderr and "Traceback" not in refused.stderr
    assert not out.exists() or not any(out.iterdir())


def test_adapter_stage_trains_only_adapters_from_the_cli(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    short = ("stages.0.max_steps=2", "stages.1.max_steps=4", "stages.2.max_steps=6", "eval=[]")
    proc = run_cli("finetune", "-c", str(ADAPTER), *short, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    share = re.search(
        r"stage instruct: adapter, .*trainable parameters: [\d,]+ of [\d,]+ \(([\d.]+)%\)", proc.stderr
    )
    assert share and 0 < float(share.group(1)) < 5  # the adapters, biases, scales and norms only
    run_dir = tmp_path / last_json(proc.stdout)["run_dir"]
    before = load_file(run_dir / "stages" / "caption" / "model.safetensors")
    after = load_file(run_dir / "stages" / "instruct" / "model.safetensors")
    assert before.keys() == after.keys()  # the stage's scales were folded away
    frozen = [
        n for n in before if "vision_tower." in n or "multi_modal_projector." in n or "embed_tokens" in n
    ]
    assert all(torch.equal(before[n], after[n]) for n in [*frozen, "lm_head.weight"])
    gates = [n for n in before if n.endswith("adaption.gate")]
    assert gates and all(not torch.equal(before[n], after[n]) for n in gates)
    # a frozen linear map changes only by its folded per-output scale: each row a multiple of the old one
    name = "model.language_model.layers.0.mlp.down_proj.weight"
    ratio = after[name] / before[name]
    assert not torch.equal(before[name], after[name])
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)

    refused = run_cli("export", str(run_dir), "--format", "hf", "-o", str(tmp_path / "hf"), cwd=tmp_path)
    assert refused.returncode == 2 and "LLaMA-Adapter" in refused.stderr, refused.stderr[-2000:]
