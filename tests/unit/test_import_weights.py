"""``model.pretrained`` reads weights the way the ecosystem writes them: files open_clip saves (with or
without ``module.`` prefixes, pickled or safetensors), open_clip's own ``save_for_hf`` folders, a named
open_clip architecture with a checkpoint (the same embeddings as open_clip's own loading), and — never
downloading with HF_HUB_OFFLINE=1 — open_clip tags and hub names from the local caches, else a message
naming the file and where to place it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.models.contrastive import build_model
from vlmforge.weights import resolve

VOCAB = 40


def tiny_cfg(*overrides: str):
    return load_recipe("pretrain", find_recipe("debug/clip-tiny"), list(overrides)).model


def open_clip_tiny() -> torch.nn.Module:
    """A random-init open_clip CLIP with the debug recipe's towers, built by open_clip itself."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(3)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=4, image_size=16, pool_type="avg")
    text = CLIPTextCfg(context_length=16, vocab_size=VOCAB, width=32, heads=2, layers=1)
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()


def assert_same_outputs(
    theirs: torch.nn.Module, ours: torch.nn.Module, side: int = 16, ctx: int = 16
) -> None:
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(1, VOCAB - 1, (2, ctx), generator=torch.Generator().manual_seed(0))
    ids[:, -1] = VOCAB - 1
    with torch.no_grad():
        assert torch.allclose(theirs.encode_image(images), ours.eval().encode_image(images), atol=1e-6)
        assert torch.allclose(theirs.encode_text(ids), ours.encode_text(ids), atol=1e-6)


@pytest.mark.parametrize("layout", ["plain.bin", "ddp.pt", "lightning.ckpt", "weights.safetensors"])
def test_state_dicts_saved_by_open_clip_load_with_or_without_prefixes(layout: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    theirs = open_clip_tiny()
    state = theirs.state_dict()
    path = tmp_path / layout
    if layout == "plain.bin":
        torch.save(state, path)
    elif layout == "ddp.pt":  # open_clip's training script saves {"state_dict": module.-prefixed keys}
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout == "lightning.ckpt":
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    ours = build_model(tiny_cfg(f"model.pretrained={path}"), vocab_size=VOCAB)
    assert_same_outputs(theirs, ours)


def test_a_folder_open_clip_saved_for_the_hub_loads(tmp_path: Path) -> None:
    from open_clip.push_to_hf_hub import save_for_hf

    class NoTokenizer:  # the weights are what is imported; the caption vocabulary is the recipe's
        def save_pretrained(self, folder: Path) -> None:
            pass

    theirs = open_clip_tiny()
    theirs.visual.image_mean, theirs.visual.image_std = (0.5,) * 3, (0.5,) * 3  # create_model sets these
    save_for_hf(theirs, NoTokenizer(), {"embed_dim": 32}, str(tmp_path / "hub-folder"))  # type: ignore[arg-type]
    assert resolve(tmp_path / "hub-folder", None).name == "open_clip_model.safetensors"
    ours = build_model(tiny_cfg(f"model.pretrained={tmp_path / 'hub-folder'}"), vocab_size=VOCAB)
    assert_same_outputs(theirs, ours)


@pytest.mark.slow
def test_named_architecture_with_a_checkpoint_matches_open_clip(tmp_path: Path) -> None:
    """``model.arch: ViT-S-32`` + ``pretrained: FILE`` gives open_clip's own embeddings for that file."""
    import open_clip

    torch.manual_seed(0)
    source = open_clip.create_model("ViT-S-32")
    path = tmp_path / "vit-s-32.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    theirs = open_clip.create_model("ViT-S-32", pretrained=str(path)).eval()
    cfg = load_recipe(
        "pretrain",
        find_recipe("debug/clip-tiny"),
        [
            "model.vision=null",
            "model.text=null",
            "model.arch=ViT-S-32",
            f"model.pretrained={path}",
            "model.tokenizer.kind=open_clip",
            "data.image_size=224",
        ],
    ).model
    ours = build_model(cfg, vocab_size=49408)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ids = open_clip.get_tokenizer("ViT-S-32")(["a photo of a cat", "a diagram"])
    with torch.no_grad():
        assert torch.allclose(theirs.encode_image(images), ours.eval().encode_image(images), atol=1e-5)
        assert torch.allclose(theirs.encode_text(ids), ours.encode_text(ids), atol=1e-5)


def _fake_hub_cache(cache: Path, repo: str, filename: str) -> Path:
    """The Hugging Face cache layout (models--org--name/snapshots/<commit>/file, refs/main)."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"weights")
    return snapshot / filename


def test_open_clip_tags_resolve_from_the_local_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as missing:
        resolve("openai", "ViT-B-32")
    assert "timm/vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin" in str(missing.value.hint)
    assert str(tmp_path) in str(missing.value.hint)
    placed = _fake_hub_cache(tmp_path, "timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin")
    assert resolve("openai", "ViT-B-32") == placed
    with pytest.raises(UserError, match="nor an open_clip pretrained tag of ViT-B-32"):
        resolve("not-a-tag", "ViT-B-32")


def test_hub_names_resolve_from_the_local_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="not in the Hugging Face cache") as missing:
        resolve("openai/clip-vit-base-patch32", None)
    assert "huggingface-cli download openai/clip-vit-base-patch32" in str(missing.value.hint)
    placed = _fake_hub_cache(tmp_path, "openai/clip-vit-base-patch32", "config.json")
    assert resolve("openai/clip-vit-base-patch32", None) == placed.parent  # a transformers folder


def test_the_curation_scorer_takes_quick_gelu_from_the_tag() -> None:
    """OpenAI's ViT-B-32 weights were trained with QuickGELU: scoring with GELU would be another network."""
    from vlmforge.config.curate_models import OpenClipScorer
    from vlmforge.curate.scorers import quick_gelu

    assert quick_gelu(OpenClipScorer(arch="ViT-B-32", checkpoint="openai"))
    assert not quick_gelu(OpenClipScorer(arch="ViT-B-32", checkpoint="laion2b_s34b_b79k"))
    assert not quick_gelu(OpenClipScorer(arch="ViT-B-32", checkpoint="weights/mine.pt"))
    assert not quick_gelu(OpenClipScorer(arch="ViT-B-32", checkpoint="openai", quick_gelu=False))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecates TorchScript; OpenAI's files are it
def test_a_torchscript_archive_loads_as_openai_clip_files_do(tmp_path: Path) -> None:
    """OpenAI's original CLIP ``.pt`` files are TorchScript archives with open_clip's parameter names."""
    theirs = open_clip_tiny()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(ScriptedWeights(theirs.state_dict())), str(path))
    ours = build_model(tiny_cfg(f"model.pretrained={path}"), vocab_size=VOCAB)
    assert_same_outputs(theirs, ours)


class ScriptedWeights(torch.nn.Module):
    """A module whose state dict is exactly ``state`` (as OpenAI's scripted model's is), for torch.jit."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, value in state.items():
            *path, leaf = name.split(".")
            module: torch.nn.Module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, torch.nn.Module())
                module = getattr(module, part)
            module.register_buffer(leaf, value.clone())

    def forward(self) -> int:
        return 0
