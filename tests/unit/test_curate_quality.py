"""Quality-score curate steps: the aesthetic head learns a visible property from a ratings CSV and ranks
held-out images by it; caption fluency under a tiny language model (random init, trained here for a few
steps) ranks word salad below fluent captions; both write scores, filter and plot in a curation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.curate_pool import chunk_of, make_recipe, report_of, shard_samples
from vlmforge.config.curate_models import OpenClipScorer
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Table
from vlmforge.curate.quality import load_aesthetic_head, mean_token_logprob, train_aesthetic_head
from vlmforge.curate.scorers import load_scorer
from vlmforge.curate.steps import build_steps
from vlmforge.errors import UserError

COLOURS = ["red", "blue", "green", "small", "large", "old"]
THINGS = ["car", "dog", "house", "boat", "tree", "cup"]
PLACES = ["on a street", "in a garden", "near the sea", "under a bridge"]


def textured(redness: float, seed: int) -> Any:
    """A noisy 32 x 32 image, ``redness`` (0..1) red and the rest blue: the visible property rated."""
    from PIL import Image

    colour = np.array([redness, 0.2, 1 - redness])
    noise = np.random.default_rng(seed).uniform(-0.15, 0.15, (32, 32, 3))
    return Image.fromarray((np.clip(colour + noise, 0, 1) * 255).astype(np.uint8))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


@pytest.fixture(scope="module")
def head_file(tmp_path_factory: pytest.TempPathFactory, scorer: dict[str, Path]) -> Path:
    """A head trained on 40 rated images whose rating is 10 x their redness."""
    root = tmp_path_factory.mktemp("ratings")
    lines = ["image,rating"]
    for i, level in enumerate(np.linspace(0.1, 0.9, 40)):
        textured(level, seed=i).save(root / f"r{i}.png")
        lines.append(f"r{i}.png,{10 * level:.3f}")
    (root / "ratings.csv").write_text("\n".join(lines) + "\n")
    model = load_scorer(OpenClipScorer(arch="tiny-clip", **{k: str(v) for k, v in scorer.items()}))
    train_aesthetic_head(root / "ratings.csv", model, root / "head.safetensors", hidden=(64, 16), epochs=300)
    return root / "head.safetensors"


def tiny_language_model(root: Path) -> Path:
    """A 1-layer GPT-2 with a word-level tokenizer, random init, trained for 40 steps on template
    captions "<adjective> <thing> <place>" (a test fixture, not a useful language model)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    sentences = [f"a {c} {t} {p}" for c, t, p in itertools.product(COLOURS, THINGS, PLACES)]
    words = sorted({w for s in sentences for w in s.split()})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", *words])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=32, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    ids = torch.tensor([[1, *tokenizer(s)["input_ids"]] for s in sentences])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def language_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_language_model(tmp_path_factory.mktemp("tiny-lm"))


def test_aesthetic_head_ranks_held_out_images_by_the_rated_property(
    head_file: Path, scorer: dict[str, Path], tmp_path: Path
) -> None:
    model = {"kind": "open_clip", "arch": "tiny-clip", **{k: str(v) for k, v in scorer.items()}}
    steps = [{"kind": "aesthetic_score", "head": str(head_file), "top_fraction": 0.5}]
    recipe = make_recipe(tmp_path, {"kind": "webdataset", "shards": "x.tar"}, steps, model=model)
    (step,) = build_steps(recipe, Resources(recipe))
    levels = np.random.default_rng(7).uniform(0.1, 0.9, 20)
    images = [textured(level, seed=100 + i) for i, level in enumerate(levels)]
    chunk = chunk_of(images, ["a picture"] * len(images))
    scores = step.measure(Batch(chunk, np.arange(len(images))))["aesthetic_score"]
    assert spearman(scores, levels) > 0.8
    decision = step.apply(Table(np.array(chunk.keys), {"aesthetic_score": scores}))
    assert decision.keep.sum() == 10 and levels[decision.keep].mean() > levels[~decision.keep].mean()
    assert set(decision.reason[~decision.keep]) == {"low_aesthetic_score"}


def test_text_quality_ranks_word_salad_below_fluent_captions(language_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(language_model, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(language_model, local_files_only=True)
    rng = np.random.default_rng(0)
    fluent = [f"a {c} {t} {p}" for c, t, p in zip(COLOURS, THINGS, PLACES * 2, strict=False)]
    salad = [" ".join(rng.permutation(s.split())) for s in fluent]
    scores = mean_token_logprob(model, tokenizer, fluent + salad, max_tokens=16)
    assert (scores[: len(fluent)] > scores[len(fluent) :]).all()
    assert np.isfinite(scores).all() and (scores < 0).all()
    empty = mean_token_logprob(model, tokenizer, [""], max_tokens=16)
    assert empty[0] == pytest.approx(-np.log(len(tokenizer)))  # nothing to predict: a uniform guess


def test_quality_steps_write_scores_filter_and_plot(
    head_file: Path, language_model: Path, scorer: dict[str, Path], tmp_path: Path
) -> None:
    from vlmforge.verbs import curate

    folder = tmp_path / "pool"
    folder.mkdir()
    rng = np.random.default_rng(1)
    lines = []
    for i in range(12):
        textured(0.1 + 0.07 * i, seed=200 + i).save(folder / f"i{i}.png")
        caption = f"a {COLOURS[i % 6]} {THINGS[i % 5]} {PLACES[i % 4]}"
        caption = caption if i % 2 else " ".join(rng.permutation(caption.split()))
        lines.append(json.dumps({"image": f"i{i}.png", "caption": caption}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    model = {"kind": "open_clip", "arch": "tiny-clip", **{k: str(v) for k, v in scorer.items()}}
    steps = [
        {"kind": "aesthetic_score", "head": str(head_file), "threshold": 2.0},
        {"kind": "text_quality", "model": str(language_model), "top_fraction": 0.5},
    ]
    source = {"kind": "folder", "path": str(folder)}
    recipe = make_recipe(tmp_path, source, steps, model=model, engine={"kind": "local", "workers": 1})
    curate.run(recipe, progress=False)
    report = report_of(recipe.output)
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["aesthetic_score"]["histograms"]["aesthetic_score"]["edges"]
    assert stages["text_quality"]["histograms"]["text_quality"]["edges"]
    assert any(p.startswith("plots/scores-") for p in report["plots"])
    kept = shard_samples(recipe.output)
    assert kept and len(kept) <= 6
    for sample in kept.values():
        scores = sample["json"]["curate"]["scores"]
        assert scores["aesthetic_score.aesthetic_score"] >= 2.0
        assert np.isfinite(scores["text_quality.text_quality"])


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    from vlmforge.curate.preflight import step_checks
    from vlmforge.curate.quality import load_language_model

    recipe = make_recipe(
        tmp_path,
        {"kind": "webdataset", "shards": "x.tar"},
        [{"kind": "text_quality", "model": str(tmp_path / "no-lm"), "threshold": -3.0}],
    )
    (check,) = step_checks(recipe.steps[0])
    with pytest.raises(UserError, match=r"config\.json missing"):
        check()
    with pytest.raises(UserError, match=r"config\.json missing"):
        load_language_model(tmp_path)
    with pytest.raises(UserError, match="file not found"):
        load_aesthetic_head(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a safetensors file"):
        load_aesthetic_head(tmp_path / "bad.safetensors")
    (tmp_path / "ratings.csv").write_text("image,score\na.png,3\n")
    with pytest.raises(UserError, match="missing column"):
        train_aesthetic_head(tmp_path / "ratings.csv", None, tmp_path / "h.safetensors")  # type: ignore[arg-type]
