"""``--format hf`` of a trained CLIP run: transformers' AutoModel and AutoProcessor load the folder and give
the run's own features, caption ids and image pixels; what CLIPModel cannot express is refused."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import pretrain_json, run_cli
from vlmforge.errors import UserError
from vlmforge.interop import hf_clip

CAPTIONS = ["a photo of the digit three", "Seven!", "an unheard-of word, then more words than fit " * 3]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """debug/clip-tiny for 5 steps, reading the class token (the shipped recipe mean-pools patches)."""
    cwd = tmp_path_factory.mktemp("hf-clip-run")
    result = pretrain_json(
        cwd, "debug/clip-tiny", "model.vision.pool_type=tok", "train.max_steps=5", "eval=[]"
    )
    return cwd / result["run_dir"]


@pytest.fixture(scope="module")
def trained(clip_run: Path) -> tuple[Any, Any, Any]:
    from vlmforge.runs.artifacts import load_trained

    model, tokenizer, recipe, _ = load_trained(clip_run)
    return model.eval(), tokenizer, recipe


@pytest.fixture(scope="module")
def exported(clip_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vlmforge export RUN --format hf`` as a user runs it."""
    out = tmp_path_factory.mktemp("hf-clip-export") / "clip-hf"
    run_cli("export", str(clip_run), "--format", "hf", "-o", str(out), cwd=out.parent, check=True)
    return out


def photo(width: int = 600, height: int = 400) -> Any:
    """A real photograph (scikit-learn's bundled sample), cropped to ``width`` x ``height``."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg")).crop((0, 0, width, height))


def test_transformers_loads_the_export_and_computes_the_runs_features(
    exported: Path, trained: tuple[Any, Any, Any]
) -> None:
    from transformers import AutoModel, AutoProcessor, CLIPModel, CLIPProcessor

    model, tokenizer, _ = trained
    hf_model, processor = AutoModel.from_pretrained(exported).eval(), AutoProcessor.from_pretrained(exported)
    assert isinstance(hf_model, CLIPModel) and isinstance(processor, CLIPProcessor)
    assert (exported / "README.md").is_file()  # the verb's model card beside transformers' files
    inputs = processor(
        text=CAPTIONS,
        images=[photo(), photo(400, 600)],
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )
    assert torch.equal(inputs["input_ids"], tokenizer(CAPTIONS, 16))
    with torch.no_grad():
        text = hf_model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        image = hf_model.get_image_features(pixel_values=inputs["pixel_values"])
        assert (text.pooler_output - model.encode_text(inputs["input_ids"])).abs().max() <= 1e-5
        assert (image.pooler_output - model.encode_image(inputs["pixel_values"])).abs().max() <= 1e-5
    assert hf_model.logit_scale.item() == pytest.approx(model.logit_scale.item())


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_the_image_processor_gives_the_trained_pixels(
    exported: Path, trained: tuple[Any, Any, Any], backend: str
) -> None:
    """Equal to float precision (1e-6). One case differs, and 600x400 avoids it: transformers floors the
    centre crop's offset where torchvision and vlmforge round it half to even, so when the resized long side
    exceeds the crop by 4k+3 pixels (640x427 -> 23x16: offset 3 against 4) the crop is one pixel apart."""
    from transformers import AutoImageProcessor

    from vlmforge.data.images import square_tensor

    _, _, recipe = trained
    data = recipe.data
    mean, std = torch.tensor(data.mean).view(3, 1, 1), torch.tensor(data.std).view(3, 1, 1)
    images = AutoImageProcessor.from_pretrained(exported, backend=backend)
    for image in (photo(), photo(400, 600)):
        pixels = images(images=image, return_tensors="pt")["pixel_values"][0]
        assert (pixels - square_tensor(image, data.image_size, mean, std)).abs().max() <= 1e-6


def test_a_bf16_export_holds_bf16_weights(
    clip_run: Path, tmp_path: Path, trained: tuple[Any, Any, Any]
) -> None:
    from safetensors import safe_open
    from transformers import AutoModel

    hf_clip.export(clip_run, tmp_path, None, torch.bfloat16)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}  # noqa: SIM118
    hf_model = AutoModel.from_pretrained(tmp_path)
    assert hf_model.dtype == torch.bfloat16
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got = hf_model.get_image_features(pixel_values=images.bfloat16()).pooler_output.float()
        want = trained[0].encode_image(images)
    assert torch.allclose(got, want, atol=0.1, rtol=0.05)  # bf16 keeps about 3 significant digits


def test_the_export_loads_back_as_model_pretrained(exported: Path, trained: tuple[Any, Any, Any]) -> None:
    from vlmforge.models.contrastive import build_model

    model, tokenizer, recipe = trained
    again = build_model(recipe.model.model_copy(update={"pretrained": exported}), tokenizer.vocab_size)
    state = model.state_dict()
    assert all(torch.equal(v.reshape(state[k].shape), state[k]) for k, v in again.state_dict().items())


def edited_copy(run_dir: Path, tmp_path: Path, **model_fields: Any) -> Path:
    """The run with fields of its saved recipe's model section changed (same weights)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text())
    for dotted, value in model_fields.items():
        section = recipe["model"]
        *parents, leaf = dotted.split("__")
        for parent in parents:
            section = section[parent]
        section[leaf] = value
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return copy


def test_a_mean_pooled_run_is_refused_with_the_reason(clip_run: Path, tmp_path: Path) -> None:
    run = edited_copy(clip_run, tmp_path, vision__pool_type="avg")
    with pytest.raises(UserError) as caught:
        hf_clip.export(run, tmp_path / "out", None, torch.float32)
    assert "pool_type: avg" in caught.value.message
    assert "--format open_clip" in (caught.value.hint or "")


def test_a_siglip_run_is_refused_with_the_reason(clip_run: Path, tmp_path: Path) -> None:
    run = edited_copy(clip_run, tmp_path, kind="siglip")
    with pytest.raises(UserError) as caught:
        hf_clip.export(run, tmp_path / "out", None, torch.float32)
    assert "SiglipModel" in caught.value.message and "logit bias" in caught.value.message
