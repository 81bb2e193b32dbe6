"""``--format timm``: tiny trained runs' image encoders loaded back with timm's ``local-dir:`` source give
vlmforge's image features, and timm's transform built from the exported config gives vlmforge's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import last_json, start_cli
from vlmforge.interop import exporter
from vlmforge.runs.artifacts import load_trained

pytestmark = pytest.mark.slow  # four short training runs (about a minute on two cores)

SHORT = ["train.max_steps=5", "eval=[]"]
# name -> recipe and overrides: MAE (no projection, mean pooling), FLAVA (projection), CLIP with both poolings
RUNS = {
    "mae": ("debug/mae-tiny", []),
    "flava": ("debug/flava-tiny", []),
    "clip-avg": ("debug/clip-tiny", []),
    "clip-tok": ("debug/clip-tiny", ["model.vision.pool_type=tok"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four tiny runs, trained side by side (each is mostly interpreter start-up); one thread each, so
    that they share the cores rather than spin against each other."""
    cwd = tmp_path_factory.mktemp("timm-runs")
    started = {}
    for name, (recipe, overrides) in RUNS.items():
        folder = cwd / name
        folder.mkdir()
        args = ("pretrain", "-c", recipe, *overrides, *SHORT, "--format", "json")
        started[name] = (folder, start_cli(*args, cwd=folder, env={"OMP_NUM_THREADS": "1"}))
    finished = {}
    for name, (folder, proc) in started.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"
        finished[name] = folder / last_json(stdout)["run_dir"]
    return finished


def export_timm(run_dir: Path, out: Path, dtype: torch.dtype = torch.float32) -> Path:
    out.mkdir()
    exporter("timm", load_trained(run_dir)[2].model.kind)(run_dir, out, None, dtype)
    return out


def timm_model(folder: Path) -> Any:
    import timm

    return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()


def images(count: int = 4, side: int = 16) -> torch.Tensor:
    return torch.randn(count, 3, side, side, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(RUNS))
def test_timm_gives_vlmforge_image_features_and_tokens(
    runs: dict[str, Path], name: str, tmp_path: Path
) -> None:
    model = load_trained(runs[name])[0].eval()
    loaded = timm_model(export_timm(runs[name], tmp_path / "timm"))
    x = images()
    with torch.no_grad():
        expected = model.encode_image(x)
        assert torch.allclose(loaded(x), expected, atol=1e-5, rtol=0), (loaded(x) - expected).abs().max()
        tokens = model.visual.forward_intermediates(
            x, indices=1, normalize_intermediates=True, output_fmt="NLC", output_extra_tokens=True
        )
        expected_tokens = torch.cat(
            [tokens["image_intermediates_prefix"][-1], tokens["image_intermediates"][-1]], dim=1
        )
        assert torch.allclose(loaded.forward_features(x), expected_tokens, atol=1e-5, rtol=0)
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    pool = {"mae": "avg", "flava": "avg", "clip-avg": "avg", "clip-tok": "token"}[name]
    assert config["model_args"]["global_pool"] == pool
    # MAE's image feature is the pooled encoder output itself: no head; the others keep their projection
    assert config["num_classes"] == (0 if name == "mae" else 32)


def test_a_new_head_for_finetuning_keeps_the_encoder(runs: dict[str, Path], tmp_path: Path) -> None:
    import timm

    folder = export_timm(runs["flava"], tmp_path / "timm")
    model = load_trained(runs["flava"])[0].eval()
    finetune = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=10).eval()
    x = images()
    with torch.no_grad():
        assert finetune(x).shape == (4, 10)
        pooled = finetune.forward_head(finetune.forward_features(x), pre_logits=True)
        # the pre-projection pooled feature: open_clip's pooling before ``proj``
        visual = model.visual
        expected = visual._pool(visual.transformer(visual._embeds(x)))[0]
        assert torch.allclose(pooled, expected, atol=1e-5, rtol=0)


def test_bf16_export_loads_as_the_bf16_rounded_encoder(runs: dict[str, Path], tmp_path: Path) -> None:
    from safetensors import safe_open

    folder = export_timm(runs["mae"], tmp_path / "timm", torch.bfloat16)
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}  # noqa: SIM118
    model = load_trained(runs["mae"])[0].eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.to(torch.bfloat16).float())
        x = images()
        assert torch.allclose(timm_model(folder)(x), model.encode_image(x), atol=1e-5, rtol=0)


def test_timm_transform_is_the_training_transform(runs: dict[str, Path], tmp_path: Path) -> None:
    """A photo through timm's eval transform (from the exported pretrained_cfg) and through vlmforge's
    ``square_tensor``: the same PIL bicubic resize of the short side, centre crop and normalisation."""
    import timm.data
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from vlmforge.data.images import square_tensor

    folder = export_timm(runs["clip-avg"], tmp_path / "timm")
    config = timm.data.resolve_data_config({}, model=timm_model(folder))
    assert config["input_size"] == (3, 16, 16) and config["interpolation"] == "bicubic"
    transform = timm.data.create_transform(**config)
    recipe = load_trained(runs["clip-avg"])[2]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (recipe.data.mean, recipe.data.std))
    photo = Image.fromarray(load_sample_image("china.jpg"))  # 640 x 427
    # 640 x 480: the long side resizes to 21.33 pixels, which vlmforge rounds and torchvision truncates to
    # the same 21, and both centre the crop at 2: the same pixels, so equal up to float rounding
    aligned = photo.resize((640, 480))
    assert torch.allclose(transform(aligned), square_tensor(aligned, 16, mean, std), atol=1e-6, rtol=0)
    # 640 x 427 -> 23.98: vlmforge rounds to 24 columns, torchvision truncates to 23 (both then crop 16 from
    # column 4), a 4% horizontal stretch at this tiny size; in pixel units (0..1) the two differ by about
    # 0.03 on average on this photo, and the gap shrinks as the image size grows
    gap = ((transform(photo) - square_tensor(photo, 16, mean, std)) * std).abs().mean()
    assert gap < 0.05, gap
