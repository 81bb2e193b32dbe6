"""`vlmforge predict` and `vlmforge eval --model` on transformers folders: a LLaVA run's export answers the
digit PNGs and the held-out questions as the run does, a CLIP folder saved by transformers (random, tiny,
its tokenizer built offline) ranks class names exactly as transformers scores them, and a model type
that is not read here exits 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import last_json, run_cli
from vlmforge.data.digits import CLASSNAMES

transformers = pytest.importorskip("transformers")

PROMPT = "What digit is this?"
CLIP_PROMPT = "a photo of a {}."
CLIP_SIDE = 24  # the digit PNGs are 32 px: resized, then cropped


def _json(cwd: Path, *args: str) -> dict[str, Any]:
    return last_json(run_cli(*args, "--format", "json", cwd=cwd, check=True).stdout)


@pytest.fixture(scope="module")
def llava_export(llava_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlmforge.interop.hf_llava import export

    out = tmp_path_factory.mktemp("hf-llava") / "model"
    out.mkdir()
    export(llava_run, out, None, torch.float32)
    return out


def test_a_llava_export_answers_as_its_run(
    llava_run: Path, llava_export: Path, digits_folder: Path, tmp_path: Path
) -> None:
    pattern = str(digits_folder / "img00*.png")
    from_run = _json(tmp_path, "predict", str(llava_run), pattern, "--prompt", PROMPT)
    from_export = _json(tmp_path, "predict", str(llava_export), pattern, "--prompt", PROMPT)
    assert (from_export["source_kind"], from_export["model_kind"]) == ("transformers folder", "llava")
    answers = [p["answer"] for p in from_run["predictions"]]
    assert len(answers) == 10 and set(answers) <= set(CLASSNAMES)
    assert [p["answer"] for p in from_export["predictions"]] == answers
    assert not list(llava_export.glob("eval")), "predict writes nothing"


def test_eval_model_on_a_llava_export_matches_the_run(
    llava_run: Path, llava_export: Path, tmp_path: Path
) -> None:
    from vlmforge.config.schema import EvalRecipe
    from vlmforge.verbs import evaluate

    on_run = evaluate.run(EvalRecipe(run=llava_run, output=tmp_path / "run-eval")).metrics["vqa"]
    on_export = _json(tmp_path, "eval", "--model", str(llava_export), "--data", "digits-conversations")
    assert on_export["data"] == "digits-vqa:val"  # the held-out questions the run kept
    vqa = on_export["metrics"]["vqa"]
    assert vqa["samples"] == on_run["samples"] == 360
    assert vqa["accuracy"] == on_run["accuracy"] > 0.1  # chance: 0.1
    assert vqa["examples"] == on_run["examples"]
    assert (llava_export / "eval" / "vqa.json").is_file()


# ----------------------------------------------------------------------------------------------- clip
def _word_tokenizer() -> Any:
    """A CLIP-style tokenizer built offline: lower-cased words of the digits' prompts, <start> $A <end>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from vlmforge.data.digits import TEMPLATES

    texts = [*TEMPLATES, CLIP_PROMPT, *CLASSNAMES]
    words = sorted({w for t in texts for w in t.replace("{}", " ").replace(".", " . ").lower().split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<start>", *words, "<end>"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    end = len(vocab) - 1
    core.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>", special_tokens=[("<start>", 2), ("<end>", end)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<start>", eos_token="<end>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny ``CLIPModel`` with its processor, as ``save_pretrained`` writes them."""
    tokenizer = _word_tokenizer()
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    text = {"vocab_size": len(tokenizer), "max_position_embeddings": 16, "pad_token_id": 0}
    text |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = transformers.CLIPConfig(
        text_config=text | small, vision_config={"image_size": CLIP_SIDE, "patch_size": 8} | small
    )
    torch.manual_seed(0)
    images = transformers.CLIPImageProcessor(
        size={"shortest_edge": CLIP_SIDE},
        crop_size={"height": CLIP_SIDE, "width": CLIP_SIDE},
        resample=3,  # bicubic
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    )
    out = tmp_path_factory.mktemp("hf-clip") / "model"
    transformers.CLIPModel(config).save_pretrained(str(out))
    transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(str(out))
    return out


def _transformers_probabilities(folder: Path, files: list[Path]) -> torch.Tensor:
    """transformers' own zero-shot probabilities: ``logits_per_image.softmax``, the images through the
    folder's image processor (its PIL backend: the arithmetic of vlmforge's square transform)."""
    from PIL import Image

    model = transformers.CLIPModel.from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    images = transformers.AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    pixels = images(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")
    texts = tokenizer([CLIP_PROMPT.format(c) for c in CLASSNAMES], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**texts, pixel_values=pixels["pixel_values"]).logits_per_image.softmax(dim=-1)


def test_a_transformers_clip_folder_ranks_classes_as_transformers_does(
    clip_folder: Path, digits_folder: Path, tmp_path: Path
) -> None:
    files = sorted(digits_folder.glob("img00*.png"))
    names = ",".join(CLASSNAMES)
    args = ("--classes", names, "--template", CLIP_PROMPT, "--top", str(len(CLASSNAMES)))
    predicted = _json(tmp_path, "predict", str(clip_folder), *map(str, files), *args)
    assert (predicted["source_kind"], predicted["model_kind"]) == ("transformers folder", "clip")
    expected = _transformers_probabilities(clip_folder, files)
    for row, prediction in zip(expected, predicted["predictions"], strict=True):
        ours = {label["label"]: label["score"] for label in prediction["labels"]}
        theirs = dict(zip(CLASSNAMES, row.tolist(), strict=True))
        assert ours.keys() == theirs.keys()
        assert max(abs(ours[name] - theirs[name]) for name in CLASSNAMES) <= 1e-5


def test_eval_model_on_a_transformers_clip_folder(clip_folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval"
    result = _json(tmp_path, "eval", "--model", str(clip_folder), "--data", "digits", f"output={output}")
    zero_shot = result["metrics"]["zeroshot"]
    assert result["data"] == "digits:val" and zero_shot["samples"] == 360 and zero_shot["classes"] == 10
    assert 0 <= zero_shot["top1"] <= 1 and "image_to_text_R@1" in result["metrics"]["retrieval"]
    assert (output / "zeroshot.json").is_file() and not (clip_folder / "eval").exists()


def test_a_model_type_not_read_here_exits_2(digits_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    proc = run_cli(
        "predict", str(folder), str(digits_folder / "img000.png"), "--classes", "a,b", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model_type 'bert' is not read here" in proc.stderr and "llava, clip, siglip" in proc.stderr
