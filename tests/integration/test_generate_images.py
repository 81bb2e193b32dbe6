"""`vlmforge curate generate-images` with a tiny random-init diffusers pipeline built here (a stand-in: its
images are noise-like, the point is the plumbing): K images per caption, grouped by caption id as
multi-positive training reads them, provenance in every row, reproducible seeds, shards, and bad input."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 8 px Stable Diffusion pipeline (UNet 8/16 channels, 1-block VAE, 1-layer CLIP text encoder,
    a byte-level BPE tokenizer trained on a few captions), saved as a pipeline folder. Not a real model."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from vlmforge.data.conversations import build_tokenizer

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    )
    tokenizer = build_tokenizer("bpe", ["a red circle", "a blue square on grass", "two cats"], 300)
    tokenizer.model_max_length = 16
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
        )
    )
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=diffusers.DDIMScheduler(clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = tmp_path_factory.mktemp("tiny-sd") / "pipeline"
    pipeline.save_pretrained(folder)
    return folder


FAST = ("--steps", "2", "--size", "8", "--batch-size", "3", "--device", "cpu", "--format", "json")


def _captions(tmp_path: Path) -> Path:
    path = tmp_path / "captions.jsonl"
    rows = [{"caption": "a red circle", "caption_id": "c1"}, {"caption": "two cats", "caption_id": "c2"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_folder_of_k_images_per_caption_with_provenance(tmp_path: Path, tiny_pipeline: Path) -> None:
    from PIL import Image

    from vlmforge.config.data import FolderData
    from vlmforge.data.folder import folder_set
    from vlmforge.data.grouping import caption_ids

    captions = _captions(tmp_path)
    args = ("curate", "generate-images", str(captions), "--pipeline", str(tiny_pipeline))
    proc = run_cli(*args, "--to", str(tmp_path / "a"), "--per-caption", "3", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generated 6/6 images" in proc.stderr
    assert last_json(proc.stdout)["images"] == 6
    rows = [json.loads(line) for line in (tmp_path / "a" / "captions.jsonl").open()]
    assert [row["caption_id"] for row in rows] == ["c1"] * 3 + ["c2"] * 3
    seeds = [row["synthetic"]["seed"] for row in rows]
    assert seeds == list(range(6))
    assert rows[0]["synthetic"]["prompt"] == "a red circle" and rows[0]["synthetic"]["steps"] == 2
    assert rows[0]["synthetic"]["pipeline"] == str(tiny_pipeline.resolve())
    images = [(tmp_path / "a" / row["image"]).read_bytes() for row in rows]
    assert len(set(images)) == 6  # every seed its own image
    assert Image.open(tmp_path / "a" / rows[0]["image"]).size == (8, 8)

    # the folder is a dataset multi-positive training reads: three images per caption id
    ids = caption_ids(folder_set(FolderData(kind="folder", path=tmp_path / "a", image_size=8))).tolist()
    assert len(ids) == 6 and [ids.count(value) for value in ids] == [3] * 6

    # the same seeds give the same images, whatever the batch size
    again = run_cli(
        *args,
        "--to",
        str(tmp_path / "b"),
        "--per-caption",
        "3",
        *FAST[:4],
        "--batch-size",
        "1",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rows_b = [json.loads(line) for line in (tmp_path / "b" / "captions.jsonl").open()]
    assert [(tmp_path / "b" / row["image"]).read_bytes() for row in rows_b] == images


def test_shards_layout_and_bad_input(tmp_path: Path, tiny_pipeline: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n\ntwo cats\n")
    args = ("curate", "generate-images", str(captions), "--pipeline", str(tiny_pipeline))
    proc = run_cli(
        *args, "--to", str(tmp_path / "s"), "--per-caption", "2", "--layout", "shards", *FAST, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with tarfile.open(tmp_path / "s" / "00000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("00000002.json").read())  # type: ignore[union-attr]
    assert len(names) == 12 and "00000003.png" in names and "00000000.txt" in names
    assert meta["caption_id"] == "3" and meta["synthetic"]["prompt"] == "two cats"  # ids: line numbers

    occupied = run_cli(*args, "--to", str(tmp_path / "s"), *FAST, cwd=tmp_path)
    assert occupied.returncode == 2 and "not empty" in occupied.stderr
    assert len(list((tmp_path / "s").iterdir())) == 2  # 00000.tar + generate.json, untouched

    missing = run_cli(
        "curate",
        "generate-images",
        str(captions),
        "--pipeline",
        str(tmp_path),
        "--to",
        str(tmp_path / "m"),
        *FAST,
        cwd=tmp_path,
    )
    assert (
        missing.returncode == 2 and "model_index.json" in missing.stderr and "Traceback" not in missing.stderr
    )
    clash = tmp_path / "clash.jsonl"
    clash.write_text('{"caption": "a", "caption_id": 1}\n{"caption": "b", "caption_id": 1}\n')
    refused = run_cli(
        "curate",
        "generate-images",
        str(clash),
        "--pipeline",
        str(tiny_pipeline),
        "--to",
        str(tmp_path / "c"),
        *FAST,
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "names two different captions" in refused.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "c").exists()


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from vlmforge.curate.synthetic import load_pipeline
    from vlmforge.errors import UserError

    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` raises ImportError
    with pytest.raises(UserError) as caught:
        load_pipeline(tmp_path, "cpu")
    assert "vlmforge[synthetic]" in (caught.value.hint or "")
