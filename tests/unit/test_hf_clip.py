"""open_clip <-> transformers CLIP: the weight mapping both ways, what CLIPModel cannot express, the CLIP BPE
tokenizer built from open_clip's bundled vocabulary, and transformers folders as ``model.pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.interop import hf_clip
from vlmforge.models import transformers_clip

VOCAB = 26  # a word vocabulary: <pad>=0, <start>=1, <unk>=2, words, <end>=25
TINY = {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 16}
TINY_TEXT = {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2}


def open_clip_model(vision: dict[str, Any] | None = None, text: dict[str, Any] | None = None, **extra: Any):
    """A tiny open_clip CLIP with every weight random (LayerNorms and biases too, so a swapped or
    untransposed tensor shows in the features)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(32, TINY | (vision or {}), TINY_TEXT | (text or {}), **extra).eval()
    randomise(model)
    return model


def randomise(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if param.ndim == 1 else 0.0) * 0.1)


def captions(batch: int = 3, length: int = 16) -> torch.Tensor:
    """vlmforge's id layout: <start>, words, <end> (the largest id), padding 0."""
    ids = torch.zeros(batch, length, dtype=torch.long)
    for row, words in enumerate((5, 1, 14)[:batch]):
        ids[row, 0] = 1
        ids[row, 1 : 1 + words] = torch.randint(3, VOCAB - 1, (words,))
        ids[row, 1 + words] = VOCAB - 1
    return ids


def transformers_twin(model: torch.nn.Module) -> Any:
    from transformers import CLIPModel

    twin = CLIPModel(hf_clip.clip_config(model, 1, VOCAB - 1, 0)).eval()
    twin.load_state_dict(transformers_clip.hf_state(model.state_dict()), strict=True)
    return twin


def assert_same_features(model: torch.nn.Module, twin: Any, atol: float = 1e-5) -> None:
    images, text = torch.randn(2, 3, 16, 16), captions()
    with torch.no_grad():
        image_diff = model.encode_image(images) - twin.get_image_features(pixel_values=images).pooler_output
        text_diff = model.encode_text(text) - twin.get_text_features(input_ids=text).pooler_output
    assert image_diff.abs().max() <= atol and text_diff.abs().max() <= atol


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_weights_compute_the_same_features_in_transformers(quick_gelu: bool) -> None:
    model = open_clip_model(quick_gelu=quick_gelu)
    assert hf_clip.unsupported(model) == []
    twin = transformers_twin(model)
    assert twin.config.text_config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    assert_same_features(model, twin)
    assert torch.equal(twin.logit_scale, model.logit_scale)


def test_padding_is_invisible_to_the_pooled_text_feature() -> None:
    """transformers callers pad with other ids and pass an attention mask: the end token's feature stays."""
    model = open_clip_model()
    twin = transformers_twin(model)
    ids = captions()
    other_padding = torch.where(ids == 0, torch.full_like(ids, 7), ids)
    with torch.no_grad():
        want = model.encode_text(ids)
        got = twin.get_text_features(input_ids=other_padding, attention_mask=(ids != 0).long()).pooler_output
    assert (want - got).abs().max() <= 1e-5


def test_the_mapping_is_its_own_inverse() -> None:
    state = open_clip_model().state_dict()
    back = transformers_clip.open_clip_state(transformers_clip.hf_state(state))
    assert set(back) == set(state)
    assert all(torch.equal(back[k].reshape(state[k].shape), state[k]) for k in state)


@pytest.mark.parametrize(
    ("vision", "text", "extra", "named"),
    [
        ({"pool_type": "avg"}, {}, {}, "pool_type: avg"),
        ({"attentional_pool": True, "attn_pooler_heads": 2}, {}, {}, "attentional pooling"),
        ({"ls_init_value": 0.1}, {}, {}, "layer scale in the image tower"),
        ({"no_ln_pre": True}, {}, {}, "without ln_pre"),
        ({}, {"no_causal_mask": True}, {}, "without the causal mask"),
        ({}, {"pool_type": "last"}, {}, "text pooling 'last'"),
        ({}, {}, {"init_logit_bias": -10.0}, "logit bias"),
    ],
)
def test_what_clip_model_cannot_express_is_refused_by_name(
    vision: dict[str, Any], text: dict[str, Any], extra: dict[str, Any], named: str
) -> None:
    model = open_clip_model(vision, text, **extra)
    with pytest.raises(UserError) as caught:
        hf_clip.refuse_unsupported(model)
    assert named in caught.value.message
    assert "--format open_clip" in (caught.value.hint or "")


def test_clip_bpe_tokenizer_gives_open_clips_ids(tmp_path: Path) -> None:
    """Built from open_clip's bundled vocabulary, and again as AutoTokenizer reads it back from disk."""
    import open_clip
    from transformers import AutoTokenizer

    from vlmforge.interop.tokenizer_files import clip_bpe_tokenizer

    simple = open_clip.get_tokenizer("ViT-B-32")
    built = clip_bpe_tokenizer(simple, 77)
    built.save_pretrained(str(tmp_path))
    texts = [
        "a photo of a cat",
        "Two dogs, playing in the SNOW!!",  # "!" is id 0, the pad id, and still ordinary text
        "It's 3.14 o'clock   ",
        "naïve café — 東京",
        "word " * 100,  # truncated to 75 tokens between start and end
        "",
        "a caption with <|endoftext|> inside",  # text, not the special token, as in open_clip
    ]
    want = simple(texts, context_length=77)
    for fast in (built, AutoTokenizer.from_pretrained(str(tmp_path))):
        got = fast(texts, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
        assert torch.equal(got, want)


# ------------------------------------------------------------------ transformers folders as model.pretrained
def tiny_recipe(folder: Path, *overrides: str) -> Any:
    return load_recipe(
        "pretrain",
        find_recipe("debug/clip-tiny"),
        ["model.vision.pool_type=tok", "model.quick_gelu=true", f"model.pretrained={folder}", *overrides],
    )


def saved_transformers_clip(folder: Path, **changes: Any) -> Any:
    """A random transformers CLIPModel shaped like clip-tiny's towers, written by save_pretrained."""
    from transformers import CLIPConfig, CLIPModel

    text = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": VOCAB - 1}
    vision = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"image_size": 16, "patch_size": 4}
    config = CLIPConfig(text_config=text | changes, vision_config=vision, projection_dim=32)
    torch.manual_seed(1)
    model = CLIPModel(config).eval()
    randomise(model)
    model.save_pretrained(str(folder))
    return model


def test_a_transformers_clip_folder_loads_as_model_pretrained(tmp_path: Path) -> None:
    from vlmforge.models.contrastive import build_model

    reference = saved_transformers_clip(tmp_path)
    model = build_model(tiny_recipe(tmp_path).model, VOCAB).eval()
    assert_same_features(model, reference)


def test_a_mismatched_transformers_tensor_is_named_with_both_shapes(tmp_path: Path) -> None:
    from vlmforge.models.contrastive import build_model

    saved_transformers_clip(tmp_path, vocab_size=40)
    with pytest.raises(UserError) as caught:
        build_model(tiny_recipe(tmp_path).model, VOCAB)
    message = caught.value.message
    assert "text_model.embeddings.token_embedding.weight" in message
    assert "[40, 32]" in message and "[26, 32]" in message


def test_a_different_activation_is_refused(tmp_path: Path) -> None:
    from vlmforge.models.contrastive import build_model

    saved_transformers_clip(tmp_path)  # CLIPConfig's default: quick_gelu
    with pytest.raises(UserError) as caught:
        build_model(tiny_recipe(tmp_path, "model.quick_gelu=false").model, VOCAB)
    assert "quick_gelu" in caught.value.message and caught.value.hint == "set model.quick_gelu: true"


def test_a_folder_of_another_model_type_is_refused(tmp_path: Path) -> None:
    from vlmforge.models.contrastive import build_model

    (tmp_path / "config.json").write_text('{"model_type": "siglip"}')
    with pytest.raises(UserError, match="'siglip' model, not a transformers CLIPModel"):
        build_model(tiny_recipe(tmp_path).model, VOCAB)
