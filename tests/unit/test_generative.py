"""CoCa: decoding written in the project, captioning metrics, and the debug recipe end to end."""

from __future__ import annotations

import math

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.evaluate import caption_metrics
from vlmforge.evaluate.caption_metrics import bleu, caption_scores, cider_d
from vlmforge.generate import (
    Decoding,
    SpecialTokens,
    generate,
    penalise_repetitions,
    repeated_ngram_tokens,
)

# synthetic vocabulary for step functions: pad 0, start 1, words 2-4, end 5
SPECIAL = SpecialTokens(start=1, end=5, pad=0)


def constant_step(logits: list[float]):
    """Every prefix gets the same next-token logits."""
    table = torch.tensor(logits)
    return lambda prefixes, rows: table.expand(len(prefixes), -1).clone()


def markov_step(probs: dict[int, list[float]]):
    """Next-token probabilities that depend only on the last token."""
    table = torch.full((6, 6), 1e-9)
    for token, row in probs.items():
        table[token] = torch.tensor(row)
    return lambda prefixes, rows: table[prefixes[:, -1]].log()


@pytest.fixture(scope="module")
def tiny_coca():
    """The debug recipe's CoCa, randomly initialised, with a word vocabulary and some digit images."""
    from vlmforge.data.sources import train_val_split
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.models.generative import build_model

    recipe = load_recipe("pretrain", find_recipe("debug/coca-tiny"))
    train, _ = train_val_split(recipe.data)
    tokenizer = build_tokenizer(recipe.model.tokenizer, train.all_captions())
    torch.manual_seed(0)
    model = build_model(recipe.model, tokenizer.vocab_size).eval()
    images = torch.stack([train.image(i) for i in range(6)])
    special = SpecialTokens(tokenizer.start_id, tokenizer.end_id, tokenizer.pad_id)
    return recipe, model, tokenizer, images, special


def coca_generate(tiny_coca, settings: Decoding, images: torch.Tensor | None = None):
    from vlmforge.models.generative import decoder_step

    _, model, tokenizer, all_images, special = tiny_coca
    images = all_images if images is None else images
    return generate(decoder_step(model, images, tokenizer.vocab_size), len(images), special, settings)


# ------------------------------------------------------------------------------------------- decoding
def test_decoder_step_matches_the_teacher_forced_forward(tiny_coca) -> None:
    from vlmforge.models.generative import decoder_step

    _, model, tokenizer, images, _ = tiny_coca
    text = tokenizer(["a handwritten seven."] * len(images), 16)  # start a handwritten seven . end pad...
    with torch.no_grad():
        logits = model(images, text)["logits"]
    step = decoder_step(model, images, tokenizer.vocab_size)
    for length in (1, 3, 5):
        expected = logits[:, length - 1]
        got = step(text[:, :length], torch.arange(len(images)))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "controls", [{}, {"repetition_penalty": 1.5}, {"no_repeat_ngram": 2}], ids=["plain", "penalty", "ngram"]
)
def test_beam_of_one_is_greedy(tiny_coca, controls: dict) -> None:
    greedy = coca_generate(tiny_coca, Decoding("greedy", max_length=12, **controls))
    beam = coca_generate(tiny_coca, Decoding("beam", beam_size=1, max_length=12, **controls))
    assert beam.tokens == greedy.tokens
    assert beam.log_probs == pytest.approx(greedy.log_probs, abs=1e-9)


def test_beam_finds_a_caption_at_least_as_likely_as_greedy(tiny_coca) -> None:
    greedy = coca_generate(tiny_coca, Decoding("greedy", max_length=15))
    beam = coca_generate(tiny_coca, Decoding("beam", beam_size=4, max_length=15, length_penalty=0.0))
    assert all(b >= g - 1e-9 for b, g in zip(beam.log_probs, greedy.log_probs, strict=True))
    assert all(lp < 0 for lp in beam.log_probs)


def test_beam_beats_greedy_when_the_best_first_token_leads_nowhere() -> None:
    # start -> 2 (0.6) -> end (0.3): 0.18;  start -> 3 (0.4) -> end (0.9): 0.36
    step = markov_step(
        {1: [0, 0, 0.6, 0.4, 0, 0], 2: [0, 0, 0.25, 0.25, 0.2, 0.3], 3: [0, 0, 0.05, 0, 0.05, 0.9]}
    )
    greedy = generate(step, 1, SPECIAL, Decoding("greedy", max_length=4))
    beam = generate(step, 1, SPECIAL, Decoding("beam", beam_size=2, max_length=4, length_penalty=0.0))
    assert greedy.tokens == [[2, 5]] and greedy.log_probs[0] == pytest.approx(math.log(0.18), abs=1e-5)
    assert beam.tokens == [[3, 5]] and beam.log_probs[0] == pytest.approx(math.log(0.36), abs=1e-5)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_end_token_stops_each_caption_and_max_length_caps_the_rest(method: str) -> None:
    # row r emits word 2 until its prefix has r + 2 tokens, then the end token; row 3 never ends
    def step(prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(prefixes), 6)
        ends = (prefixes.shape[1] >= rows + 2) & (rows < 3)
        logits[:, 2] = torch.where(ends, 0.0, 5.0)
        logits[:, 5] = torch.where(ends, 5.0, -5.0)
        return logits

    out = generate(step, 4, SPECIAL, Decoding(method, beam_size=3, max_length=6))
    assert out.tokens == [[2, 5], [2, 2, 5], [2, 2, 2, 5], [2] * 6]


def test_no_repeat_ngram_blocks_repeats() -> None:
    step = constant_step([0.0, 0.0, 3.0, 2.0, 1.0, -9.0])  # always prefers word 2
    free = generate(step, 1, SPECIAL, Decoding("greedy", max_length=8)).tokens[0]
    assert free == [2] * 8
    for method in ("greedy", "beam"):
        for n in (1, 2, 3):
            settings = Decoding(method, beam_size=2, max_length=8, no_repeat_ngram=n)
            ids = generate(step, 1, SPECIAL, settings).tokens[0]
            grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
            assert len(grams) == len(set(grams)), (method, n, ids)
    assert generate(step, 1, SPECIAL, Decoding("greedy", max_length=8, no_repeat_ngram=1)).tokens[0] == [
        2,
        3,
        4,
        5,
    ]


def test_repetition_penalty_discourages_repeats() -> None:
    step = constant_step([0.0, 0.0, 2.0, 1.5, -1.0, -9.0])
    assert generate(step, 1, SPECIAL, Decoding("greedy", max_length=6)).tokens[0] == [2] * 6
    penalised = generate(step, 1, SPECIAL, Decoding("greedy", max_length=6, repetition_penalty=2.0))
    # 2.0 / 2 = 1.0 < 1.5 picks 3; once both were seen both are divided once (presence, not counts): 2 again
    assert penalised.tokens[0] == [2, 3, 2, 2, 2, 2]


def test_logit_processors() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    out = penalise_repetitions(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]
    assert repeated_ngram_tokens([2, 3, 4, 2, 3], 3) == [4]
    assert repeated_ngram_tokens([2, 3, 4, 2, 3], 2) == [4]
    assert repeated_ngram_tokens([2, 3, 4, 2, 3], 1) == [2, 3, 4, 2, 3]
    assert repeated_ngram_tokens([2], 3) == []


def test_decoding_is_deterministic_and_batch_independent(tiny_coca) -> None:
    settings = Decoding("beam", beam_size=3, max_length=8, repetition_penalty=1.2)
    batched = coca_generate(tiny_coca, settings)
    assert coca_generate(tiny_coca, settings).tokens == batched.tokens
    images = tiny_coca[3]
    one_by_one = [coca_generate(tiny_coca, settings, images[i : i + 1]).tokens[0] for i in range(len(images))]
    assert one_by_one == batched.tokens


def test_tokenizers_expose_the_ids_decoding_needs() -> None:
    from vlmforge.data.tokenizers import OpenClipBPE, WordVocab

    words = WordVocab.build(["a handwritten seven."])
    ids = words(["a handwritten seven."], 8)[0].tolist()
    assert (
        ids[0] == words.start_id == 1 and words.pad_id == 0 and ids[5] == words.end_id == words.vocab_size - 1
    )
    assert words.decode(ids) == "a handwritten seven ."
    bpe = OpenClipBPE("coca_ViT-B-32")
    ids = bpe(["a photo of a cat"], 12)[0].tolist()
    assert ids[0] == bpe.start_id and bpe.end_id in ids and ids[-1] == bpe.pad_id == 0
    assert bpe.decode(ids) == "a photo of a cat"


# -------------------------------------------------------------------------------------------- metrics
def words(*texts: str) -> list[list[str]]:
    return [t.split() for t in texts]


def test_bleu_on_hand_computed_examples() -> None:
    same = bleu(words("the cat sat on the mat"), [words("the cat sat on the mat")])
    assert all(v == pytest.approx(1.0) for v in same.values())
    # Papineni et al. 2002 §2.1: modified unigram precision 2/7 (no brevity penalty: closest ref is 7 words)
    papineni = bleu(
        words("the the the the the the the"), [words("the cat is on the mat", "there is a cat on the mat")]
    )
    # no matching bigram: the COCO evaluation's smoothing (1e-15 / 1e-9) leaves a tiny BLEU-2, not 0
    assert papineni["Bleu_1"] == pytest.approx(2 / 7) and 0 < papineni["Bleu_2"] < 1e-6
    # p1 = 6/6, p2 = 2/5 (cat sat, sat on): BLEU-2 = sqrt(0.4)
    assert bleu(words("a cat sat on the mat"), [words("the cat sat on a mat")])["Bleu_2"] == pytest.approx(
        math.sqrt(0.4)
    )
    short = bleu(words("the cat"), [words("the cat is on the mat")])  # brevity penalty exp(1 - 6/2)
    assert short["Bleu_1"] == pytest.approx(math.exp(-2)) and short["Bleu_2"] == pytest.approx(math.exp(-2))
    # no trigram at all: p3 = (0 + 1e-15) / (0 + 1e-9), COCO's smoothing
    assert short["Bleu_3"] == pytest.approx(math.exp(-2) * (1e-15 / 1e-9) ** (1 / 3))


def test_bleu_matches_torchmetrics_on_a_corpus() -> None:
    text = pytest.importorskip("torchmetrics.functional.text")
    candidates = ["a cat sat on the mat today", "there is a dog in the garden", "one two three four five"]
    references = [
        ["the cat sat on the mat", "a cat was sitting on a mat"],
        ["a dog is in the garden", "there is a dog outside"],
        ["one two three four", "five four three two one zero"],
    ]
    ours = bleu([c.split() for c in candidates], [[r.split() for r in refs] for refs in references])
    theirs = float(text.bleu_score(candidates, references, n_gram=4))
    assert ours["Bleu_4"] == pytest.approx(theirs, abs=1e-6) and theirs > 0


def test_cider_d_on_hand_computed_examples() -> None:
    # 2 images, so an n-gram in one image's references has idf log(2/1); identical 4+-word captions score 10
    refs = [words("a b c d"), words("e f g h")]
    assert cider_d(words("a b c d", "e f g h"), refs) == pytest.approx(10.0)
    # "a b" vs "a b": orders 1-2 cosine 1, orders 3-4 empty -> 10 * 2/4; "c e" vs "c d": unigram cosine 1/2
    assert cider_d(words("a b", "c e"), [words("a b"), words("c d")]) == pytest.approx((5.0 + 1.25) / 2)
    # clipping and length damping: "a b b" vs "a b": unigram cosine 2/sqrt(10) (b's 2 clipped to 1 in the
    # dot product), bigram cosine 1/sqrt(2), Gaussian penalty exp(-1 / (2 * 6^2))
    expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    assert cider_d(words("a b b", "c d"), [words("a b"), words("c d")]) == pytest.approx((expected + 5.0) / 2)
    assert cider_d(words("x y", "z w"), [words("a b"), words("c d")]) == 0.0


def test_caption_scores_tokenise_like_coco(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caption_metrics, "meteor_unavailable_reason", lambda: "not needed here")
    scores = caption_scores(["A handwritten seven ."], [["a handwritten seven.", "the number seven."]])
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR_unavailable", "ROUGE_L", "CIDEr"}
    assert scores["Bleu_1"] == pytest.approx(1.0) and scores["ROUGE_L"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ recipes and eval
def test_recipes_validate_and_plan_as_generative() -> None:
    from vlmforge.planning.phases import family_of

    for name in ("debug/coca-tiny", "coca/vit-b-32"):
        recipe = load_recipe("pretrain", find_recipe(name))
        assert recipe.model.kind == "coca" and family_of(recipe) == "generative"
    real = load_recipe("pretrain", find_recipe("coca/vit-b-32"))
    assert real.model.arch == "coca_ViT-B-32"
    assert (real.model.contrastive_weight, real.model.caption_weight) == (1.0, 2.0)


def test_bad_coca_settings_are_user_errors() -> None:
    path = find_recipe("debug/coca-tiny")
    with pytest.raises(UserError, match=r"decoder\.width 48 must equal vision\.width 64"):
        load_recipe("pretrain", path, ["model.decoder.width=48"])
    with pytest.raises(UserError, match="CoCa arch"):
        load_recipe("pretrain", path, ["model={kind: coca, arch: ViT-B-32}"])
    with pytest.raises(UserError, match="captioning"):
        load_recipe("pretrain", find_recipe("debug/clip-tiny"), ["eval=[{kind: captioning}]"])
    with pytest.raises(UserError, match="max_length 16 is longer"):  # caught before training, not after
        load_recipe("pretrain", path, ["eval=[{kind: captioning, max_length: 16}]"])


def test_captioning_max_length_must_fit_the_context(tiny_coca) -> None:
    from vlmforge.config.schema import CaptioningTask
    from vlmforge.data.sources import train_val_split
    from vlmforge.evaluate.captioning import captioning
    from vlmforge.evaluate.tasks import EvalContext

    recipe, model, tokenizer, _, _ = tiny_coca
    _, val = train_val_split(recipe.data)
    context = EvalContext(model, tokenizer, 16, val, 64, image_features=torch.zeros(len(val), 1))
    with pytest.raises(UserError, match="max_length 16"):
        captioning(context, CaptioningTask(max_length=16))


def test_captioning_returns_coco_keys_and_every_prediction(
    tiny_coca, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from vlmforge.config.schema import CaptioningTask
    from vlmforge.data.sources import train_val_split
    from vlmforge.evaluate.captioning import captioning
    from vlmforge.evaluate.tasks import EvalContext

    monkeypatch.setattr(caption_metrics, "meteor_unavailable_reason", lambda: "not needed here")
    recipe, model, tokenizer, _, _ = tiny_coca
    _, val = train_val_split(recipe.data)
    few = val.subset(np.arange(5), "few")
    context = EvalContext(model, tokenizer, 16, few, 2, image_features=torch.zeros(len(few), 1))
    metrics = captioning(context, CaptioningTask(method="greedy", max_length=6, examples=2))
    assert {"Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr", "METEOR_unavailable"} <= set(metrics)
    predictions = metrics["predictions"]
    assert [p["image"] for p in predictions] == [few.key(i) for i in range(5)]
    assert all(p["references"] == few.captions_of(i) for i, p in enumerate(predictions))
    assert [e["caption"] for e in metrics["examples"]] == [predictions[i]["caption"] for i in (0, 2)]
