"""`vlmforge export --format open_clip`: every open_clip-based debug recipe's run loads in open_clip itself
(``create_model_and_transforms("local-dir:...")``, ``get_tokenizer``) with the same embeddings, tokens,
image transform and — for CoCa — the same greedy captions as vlmforge computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import last_json, run_cli, start_cli

# The other open_clip-based debug recipes, a few steps each (trained side by side in one fixture).
RECIPES = ("siglip-tiny", "slip-tiny", "flip-tiny", "negclip-tiny")
CAPTIONS = ["a photo of the digit seven", "a handwritten 3, drawn badly!", "zebra"]


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cwd = tmp_path_factory.mktemp("export-runs")
    procs = {
        name: start_cli(
            "pretrain", "-c", f"debug/{name}", "train.max_steps=3", "eval=[]", "--format", "json", cwd=cwd
        )
        for name in RECIPES
    }
    runs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        runs[name] = cwd / last_json(stdout)["run_dir"]
    return runs


def export_here(run_dir: Path, output: Path, dtype: str = "fp32") -> dict[str, Any]:
    """The export verb in this process (the CLI path is tested once, below: a subprocess costs seconds)."""
    from vlmforge.verbs import export

    return export.run(run_dir, "open_clip", output, dtype=dtype).to_json()


def export_cli(run_dir: Path, output: Path, *args: str) -> dict[str, Any]:
    proc = run_cli(
        "export", str(run_dir), "--format", "open_clip", "-o", str(output), "--json", *args, cwd=output.parent
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return last_json(proc.stdout)


def open_clip_model(folder: Path) -> tuple[Any, Any, Any]:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def assert_same_embeddings(run_dir: Path, folder: Path) -> None:
    from vlmforge.runs.artifacts import load_trained

    ours, tokenizer, recipe, _ = load_trained(run_dir)
    theirs, _, their_tokenizer = open_clip_model(folder)
    ids = their_tokenizer(CAPTIONS)
    assert torch.equal(ids, tokenizer(CAPTIONS, ids.shape[1]))
    side = recipe.data.image_size
    images = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours.eval()
        image_diff = (theirs.encode_image(images) - ours.encode_image(images)).abs().max()
        text_diff = (theirs.encode_text(ids) - ours.encode_text(ids)).abs().max()
    assert image_diff <= 1e-5 and text_diff <= 1e-5, (image_diff, text_diff)


def test_clip_run_loads_in_open_clip_with_equal_embeddings_and_transform(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    from PIL import Image

    from vlmforge.data.images import square_tensor

    out = tmp_path / "clip-export"
    result = export_cli(tiny_run["run_dir"], out)
    assert set(result["files"]) == {
        "README.md",
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert not any(p.suffix in (".bin", ".pt", ".ckpt") for p in out.iterdir())  # safetensors only
    assert_same_embeddings(tiny_run["run_dir"], out)
    recorded = json.loads((out / "open_clip_config.json").read_text())["vlmforge"]  # for predict / eval
    assert len(recorded["zeroshot_templates"]) == 6 and recorded["classnames"][7] == "seven"
    card = (out / "README.md").read_text()
    assert "zeroshot" in card and "data fingerprint" in card and f"local-dir:{out}" in card
    # the image transform: a real, non-square photo-like image through open_clip's preprocess and vlmforge's
    _, preprocess, _ = open_clip_model(out)
    config = json.loads((out / "open_clip_config.json").read_text())["preprocess_cfg"]
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)  # h=30, w=40
    image = Image.fromarray(pixels)
    ours = square_tensor(
        image,
        config["size"],
        torch.tensor(config["mean"]).view(3, 1, 1),
        torch.tensor(config["std"]).view(3, 1, 1),
    )
    # vlmforge's transform is torchvision's Resize + CenterCrop arithmetic: the same pixels
    assert torch.equal(preprocess(image), ours)


@pytest.mark.parametrize("name", RECIPES)
def test_contrastive_variants_load_in_open_clip(
    name: str, short_runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / name
    export_here(short_runs[name], out)
    assert_same_embeddings(short_runs[name], out)
    config = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    if name == "siglip-tiny":  # the trained logit bias travels with the weights
        theirs, _, _ = open_clip_model(out)
        ours = torch.load(sorted((short_runs[name] / "checkpoints").glob("*.ckpt"))[-1], weights_only=True)
        assert torch.allclose(theirs.logit_bias.flatten(), ours["state_dict"]["model.logit_bias"].flatten())
    if name == "slip-tiny":  # SLIP's head serves its training loss only
        assert "ssl_head" not in json.dumps(config)


def test_coca_run_captions_token_for_token_in_open_clip(coca_run: Path, tmp_path: Path) -> None:
    from vlmforge.evaluate.captioning import coca_captions
    from vlmforge.generate import Decoding
    from vlmforge.runs.artifacts import load_trained

    out = tmp_path / "coca-export"
    export_here(coca_run, out)
    assert_same_embeddings(coca_run, out)
    ours, tokenizer, recipe, _ = load_trained(coca_run)
    theirs, _, their_tokenizer = open_clip_model(out)
    side = recipe.data.image_size
    images = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    settings = Decoding("greedy", max_length=8)
    expected = coca_captions(ours.eval(), tokenizer, images, settings)
    # greedy decoding with open_clip's own forward pass: CoCa(image, prefix) -> next-token logits
    vocab = tokenizer.vocab_size
    prefixes = torch.full((len(images), 1), tokenizer.start_id)
    done = torch.zeros(len(images), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(settings.max_length):
            logits = theirs(images, prefixes, output_labels=False)["logits"][:, -1, :vocab]
            token = torch.where(done, tokenizer.pad_id, logits.argmax(-1))
            prefixes = torch.cat([prefixes, token[:, None]], 1)
            done |= token == tokenizer.end_id
    assert [tokenizer.decode(row.tolist()) for row in prefixes] == expected
    assert their_tokenizer(["a"]).shape[1] == recipe.model.text.context_length


def test_bf16_export_loads_in_bf16(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    from safetensors import safe_open

    out = tmp_path / "clip-bf16"
    result = export_here(tiny_run["run_dir"], out, "bf16")
    assert result["dtype"] == "bf16"
    with safe_open(str(out / "open_clip_model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118 (safe_open is no dict) == {torch.bfloat16}
    model, _, _ = open_clip_model(out)
    assert model.visual.conv1.weight.abs().sum() > 0


def test_an_export_starts_a_new_vlmforge_run(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    """An open_clip export (and the run directory itself) is a valid ``model.pretrained``."""
    from vlmforge.config.load import load_recipe
    from vlmforge.models.contrastive import build_model
    from vlmforge.runs.artifacts import load_trained

    out = tmp_path / "clip-export"
    export_here(tiny_run["run_dir"], out)
    trained, tokenizer, _, _ = load_trained(tiny_run["run_dir"])
    for source in (out, tiny_run["run_dir"]):
        recipe = load_recipe("pretrain", tiny_run["run_dir"] / "recipe.yaml", [f"model.pretrained={source}"])
        started = build_model(recipe.model, tokenizer.vocab_size)
        for key, value in trained.state_dict().items():
            assert torch.equal(value, started.state_dict()[key]), (source, key)


def test_clip_benchmark_scores_the_export_as_vlmforge_scores_the_run(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """CLIP_benchmark's own loader (``load_open_clip("local-dir:...")``) and zero-shot code on the export
    give the top-1 / top-5 that vlmforge's zero-shot task gives the run on the same held-out digits."""
    from clip_benchmark.metrics import zeroshot_classification
    from clip_benchmark.models.open_clip import load_open_clip

    from vlmforge.config.evaluation import ZeroShotTask
    from vlmforge.data.sources import build_eval_data
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.runs.artifacts import load_trained

    out = tmp_path / "clip-export"
    export_here(tiny_run["run_dir"], out)
    model, _, tokenizer = load_open_clip(f"local-dir:{out}", pretrained=None)
    _, _, recipe, _ = load_trained(tiny_run["run_dir"])
    data = build_eval_data(recipe, None)
    images = torch.stack([data.image(i) for i in range(len(data))])
    labels = [data.label(i) for i in range(len(data))]
    dataset = torch.utils.data.TensorDataset(images, torch.tensor(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64)
    # CLIP_benchmark's classifier and classification pass; its accuracy() needs numpy < 2.4 (float() of a
    # 1-element array), so top-k is counted here from the logits it returns, by its formula
    classifier = zeroshot_classification.zero_shot_classifier(
        model.eval(),
        tokenizer,
        data.classnames,
        [t.replace("{}", "{c}") for t in data.prompts],  # CLIP_benchmark's placeholder is {c}
        "cpu",
        amp=False,
    )
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    top = logits.topk(5, 1).indices
    scores = {f"acc{k}": (top[:, :k] == target[:, None]).any(1).float().mean().item() for k in (1, 5)}
    # vlmforge's own zero-shot task on the run (in process: eval/ of the shared run is rewritten by other
    # tests that evaluate it on other data)
    ours, run_tokenizer, _, _ = load_trained(tiny_run["run_dir"])
    with torch.no_grad():
        recorded = evaluate_model(
            recipe.model, ours.eval(), run_tokenizer, recipe.model.text.context_length, data, [ZeroShotTask()]
        )["zeroshot"]
    assert scores["acc1"] == pytest.approx(recorded["top1"], abs=1e-6)
    assert scores["acc5"] == pytest.approx(recorded["top5"], abs=1e-6)
