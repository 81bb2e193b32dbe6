"""`vlmforge finetune -c debug/llava-anyres-tiny` from the CLI: a LLaVA-NeXT (anyres) stage trains, is
evaluated, its folder loads in transformers as ``LlavaNextForConditionalGeneration``, and its export
loads there with a processor that tiles images of any shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import last_json, run_cli
from vlmforge.config.shipped import find_recipe

transformers = pytest.importorskip("transformers")

ANYRES_TINY = find_recipe("debug/llava-anyres-tiny")


def test_anyres_stage_trains_from_the_cli_and_loads_in_transformers(tmp_path: Path) -> None:
    short = ("stages.0.max_steps=2", "stages.1.max_steps=3", "stages.0.batch_size=8", "stages.1.batch_size=8")
    short = (*short, "eval.0.max_samples=8")
    proc = run_cli("finetune", "-c", str(ANYRES_TINY), *short, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc.stdout)
    assert result["status"] == "completed" and result["steps"] == 2 + 3
    assert 0.0 <= result["metrics"]["eval"]["vqa"]["accuracy"] <= 1.0
    stage = tmp_path / result["run_dir"] / "stages" / "instruct"
    config = json.loads((stage / "config.json").read_text())
    assert config["architectures"] == ["LlavaNextForConditionalGeneration"]
    assert config["image_grid_pinpoints"][0] == [32, 32] and config["image_seq_length"] == 88

    from vlmforge.config.load import load_recipe
    from vlmforge.models.llava import trained_model
    from vlmforge.models.llava_anyres import vision_inputs

    recipe = load_recipe("finetune", tmp_path / result["run_dir"] / "recipe.yaml")
    ours = trained_model(
        recipe.model,
        config["text_config"]["vocab_size"],
        config["image_token_index"],
        stage / "model.safetensors",
    )
    theirs = transformers.LlavaNextForConditionalGeneration.from_pretrained(str(stage)).eval()
    ids = torch.tensor([[1] + [config["image_token_index"]] * 88 + [5, 6]])
    images = vision_inputs(theirs, torch.randn(1, 3, 32, 32))
    with torch.no_grad():
        assert torch.allclose(
            ours(input_ids=ids, **images).logits, theirs(input_ids=ids, **images).logits, atol=1e-5
        )

    from PIL import Image

    from vlmforge.interop.hf_llava import export
    from vlmforge.tiling import anyres_tokens

    out = tmp_path / "export"
    out.mkdir()
    export(tmp_path / result["run_dir"], out, None, torch.float32)
    processor = transformers.AutoProcessor.from_pretrained(str(out))
    exported = transformers.LlavaNextForConditionalGeneration.from_pretrained(str(out)).eval()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit is this?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    for height, width in ((32, 32), (40, 64), (30, 16), (20, 60)):
        image = Image.new("RGB", (width, height))
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        placeholders = int((inputs["input_ids"] == config["image_token_index"]).sum())
        assert placeholders == anyres_tokens((height, width), recipe.model.grid_pinpoints, 16, 4)
        with torch.no_grad():
            assert exported(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]
