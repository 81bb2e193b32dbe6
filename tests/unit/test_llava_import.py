"""A LLaVA recipe starts from what users have: ``model.vision.pretrained`` names an open_clip local-dir
folder (as ``vlmforge export`` and open_clip's ``save_for_hf`` write it) or a transformers CLIPVisionModel
folder, and the vision encoder then computes that tower's hidden states; ``model.pretrained`` names a whole
transformers LLaVA folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError


def open_clip_folder(folder: Path, quick_gelu: bool) -> torch.nn.Module:
    """An open_clip CLIP whose image tower has debug/llava-tiny's vision sizes, saved by open_clip."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=2, width=32, head_width=16, mlp_ratio=2.0, patch_size=4, image_size=16)
    text = CLIPTextCfg(context_length=16, vocab_size=40, width=32, heads=2, layers=1)
    model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()
    model.visual.image_mean, model.visual.image_std = (0.5,) * 3, (0.5,) * 3

    class NoTokenizer:
        def save_pretrained(self, folder: Path) -> None:
            pass

    config = {"embed_dim": 32, "quick_gelu": quick_gelu}
    save_for_hf(model, NoTokenizer(), config, str(folder))  # type: ignore[arg-type]
    return model


def llava_cfg(*overrides: str):
    return load_recipe("finetune", find_recipe("debug/llava-tiny"), list(overrides)).model


def open_clip_hidden_states(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The tower's tokens after its last block (before ln_post): what LLaVA's encoder returns."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(len(x), 1, -1), x], 1) + v.positional_embedding
    return v.transformer(v.ln_pre(x))


def test_an_open_clip_folder_starts_the_llava_vision_encoder(tmp_path: Path) -> None:
    from vlmforge.models.llava import build_model

    theirs = open_clip_folder(tmp_path / "clip", quick_gelu=False)
    cfg = llava_cfg(f"model.vision.pretrained={tmp_path / 'clip'}", "model.vision.quick_gelu=false")
    llava = build_model(cfg, vocab_size=50).eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = llava.model.vision_tower(pixel_values=images).last_hidden_state
        assert torch.allclose(ours, open_clip_hidden_states(theirs, images), atol=1e-5)


def test_a_tower_of_another_activation_or_size_is_refused(tmp_path: Path) -> None:
    from vlmforge.models.llava import build_model

    open_clip_folder(tmp_path / "clip", quick_gelu=False)
    with pytest.raises(UserError, match="GELU") as wrong_act:
        build_model(llava_cfg(f"model.vision.pretrained={tmp_path / 'clip'}"), vocab_size=50)
    assert "model.vision.quick_gelu=false" in str(wrong_act.value.hint)
    with pytest.raises(UserError, match=r"model\.vision\.pretrained"):
        build_model(
            llava_cfg(
                f"model.vision.pretrained={tmp_path / 'clip'}",
                "model.vision.quick_gelu=false",
                "model.vision.intermediate_size=128",
            ),
            vocab_size=50,
        )


def test_a_transformers_clip_vision_folder_starts_the_llava_vision_encoder(tmp_path: Path) -> None:
    import transformers

    from vlmforge.models.llava import build_model

    config = transformers.CLIPVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=4,
        image_size=16,
        hidden_act="quick_gelu",
    )
    torch.manual_seed(0)
    theirs = transformers.CLIPVisionModel(config).eval()
    theirs.save_pretrained(tmp_path / "vision")
    llava = build_model(llava_cfg(f"model.vision.pretrained={tmp_path / 'vision'}"), vocab_size=50).eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(pixel_values=images).last_hidden_state
        assert torch.allclose(
            llava.model.vision_tower(pixel_values=images).last_hidden_state, expected, atol=1e-6
        )


def test_a_whole_transformers_llava_folder_starts_the_model(tmp_path: Path) -> None:
    """``model.pretrained``: every weight of a LlavaForConditionalGeneration that save_pretrained wrote."""
    import transformers

    from vlmforge.models.llava import build_model, hf_config

    cfg = llava_cfg()
    torch.manual_seed(5)
    theirs = transformers.LlavaForConditionalGeneration(hf_config(cfg, 50, 4)).eval()
    theirs.save_pretrained(tmp_path / "llava")
    ours = build_model(llava_cfg(f"model.pretrained={tmp_path / 'llava'}"), vocab_size=50, image_id=4)
    for key, value in theirs.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key
    with pytest.raises(UserError, match=r"model\.pretrained: the pretrained weights do not match"):
        build_model(
            llava_cfg(f"model.pretrained={tmp_path / 'llava'}", "model.llm.intermediate_size=256"), 50
        )
