"""Parity of vlmforge's evaluation metrics with the official evaluation code.

coco_caption: ``vlmforge.evaluate.caption_metrics.caption_scores`` (pure-Python PTB tokenisation, BLEU,
ROUGE-L, CIDEr-D; METEOR through the jar) vs the COCO caption evaluation itself (pycocoevalcap: its Java
PTBTokenizer, then Bleu, Meteor, Rouge, Cider as pycocoevalcap/eval.py runs them) on generated-like captions:
seeded sets of images, each with 5 reference captions and one candidate built the way a captioner errs (words
dropped, swapped or repeated, a reference's wording paraphrased), written with the hyphens, contractions,
decimals, accents and symbols real captions have. Records each metric on both sides, the largest absolute
difference per metric over the sets, how many captions tokenise to different tokens, and the time each side
takes.

    python benchmarks/eval_parity.py [--sets 5] [--images 200]

Needs pycocoevalcap (the captions extra) and java on PATH. Writes benchmarks/results/eval_parity.json as
{"coco_caption": {...}}, one key per evaluation compared.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import random
import subprocess
import time
from typing import Any

from _common import write_result
from vlmforge.evaluate.caption_metrics import caption_scores
from vlmforge.evaluate.ptb_tokenizer import ptb_tokenize

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SUBJECTS = [
    "a man",
    "a woman",
    "two kids",
    "a 10-year-old boy",
    "the chef",
    "a brown dog",
    "a black-and-white cat",
    "a skateboarder",
    "a barista at the café",
    "an elderly couple",
    "a group of tourists",
    "a police officer",
    "a baby's stroller",
    "the team's goalkeeper",
    "a double-decker bus",
    "a red fire-truck",
]
ACTIONS = [
    "is riding",
    "isn't riding",
    "stands next to",
    "is sitting on",
    "can't reach",
    "walks past",
    "is holding",
    "looks at",
    "is jumping over",
    "they're cleaning",
    "won't leave",
    "is painting",
]
OBJECTS = [
    "a wooden bench",
    "a 3.5-inch screen",
    "a $5.99 sandwich",
    "a crêpe stand in São Paulo",
    "the U.S. flag",
    'a sign that says "50% off"',
    "a half-pipe (10-ft. tall)",
    "a jalapeño pizza & two sodas",
    "a 1,000-piece puzzle",
    "the old man's bike",
    "a T-shirt with a smiley :)",
    "an e-mail on a laptop",
    "a naïve drawing",
    "the 9:30 a.m. train",
    "a stop sign -- bent",
    "3 1/2 donuts",
    "a #12 jersey",
    "a well-lit kitchen",
    "a snow-covered mountain",
    "a hot-dog cart on 5th Ave.",
]
PLACES = [
    "in the park",
    "on a busy street",
    "at the beach",
    "inside a small shop",
    "near the station",
    "at night",
    "under a bright-blue sky",
    "next to a café's window",
    "on the sidewalk",
    "in a crowded market",
]
PARAPHRASES = {"a man": "a guy", "is riding": "rides", "a brown dog": "a dog", "is holding": "holds"}
ENDINGS = [".", "", "!", "...", " .", "?"]


def reference(rng: random.Random, scene: tuple[str, str, str, str]) -> str:
    """One human-like description of a scene, with optional detail and punctuation."""
    subject, action, obj, place = scene
    words = [subject, action, obj] + ([place] if rng.random() < 0.7 else [])
    text = " ".join(words)
    text = text[0].upper() + text[1:] if rng.random() < 0.8 else text
    return text + rng.choice(ENDINGS)


def candidate(rng: random.Random, scene: tuple[str, str, str, str]) -> str:
    """A caption as a model writes it: mostly right, sometimes a part swapped, a word dropped or repeated."""
    subject, action, obj, place = scene
    parts = [PARAPHRASES.get(subject, subject), PARAPHRASES.get(action, action), obj, place]
    if rng.random() < 0.5:
        parts[2] = rng.choice(OBJECTS)
    if rng.random() < 0.5:
        parts[3] = rng.choice(PLACES)
    words = " ".join(parts).split()
    if rng.random() < 0.3:
        del words[rng.randrange(len(words))]
    if rng.random() < 0.2:
        i = rng.randrange(len(words))
        words.insert(i, words[i])
    return " ".join(words) + rng.choice(["", ".", " ."])


def caption_set(seed: int, images: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    candidates, references = [], []
    for _ in range(images):
        scene = (rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(OBJECTS), rng.choice(PLACES))
        candidates.append(candidate(rng, scene))
        references.append([reference(rng, scene) for _ in range(5)])
    return candidates, references


def coco_scores(candidates: list[str], references: list[list[str]]) -> tuple[dict[str, float], dict]:
    """pycocoevalcap/eval.py's steps: PTBTokenizer (Java) on references and candidates, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(candidates)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = dict(zip(METRICS[:4], map(float, bleu), strict=True))
    scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores, {"gts": gts, "res": res}


def token_mismatches(candidates: list[str], references: list[list[str]], tokenized: dict) -> int:
    """Captions whose ptb_tokenize tokens differ from the Java tokenizer's."""
    mismatches = sum(" ".join(ptb_tokenize(c)) != tokenized["res"][i][0] for i, c in enumerate(candidates))
    for i, refs in enumerate(references):
        mismatches += sum(
            " ".join(ptb_tokenize(r)) != t for r, t in zip(refs, tokenized["gts"][i], strict=True)
        )
    return mismatches


def coco_caption_parity(sets: int, images: int) -> dict[str, Any]:
    """vlmforge's caption_scores vs pycocoevalcap on ``sets`` seeded caption sets of ``images`` images."""
    runs, max_diff = [], dict.fromkeys(METRICS, 0.0)
    seconds = {"vlmforge": 0.0, "pycocoevalcap": 0.0}
    captions = mismatched = 0
    for seed in range(sets):
        candidates, references = caption_set(seed, images)
        start = time.perf_counter()
        theirs, tokenized = coco_scores(candidates, references)
        seconds["pycocoevalcap"] += time.perf_counter() - start
        start = time.perf_counter()
        ours = caption_scores(candidates, references)
        seconds["vlmforge"] += time.perf_counter() - start
        diff = {m: abs(float(ours[m]) - theirs[m]) for m in METRICS}
        max_diff = {m: max(max_diff[m], diff[m]) for m in METRICS}
        captions += images * 6
        mismatched += token_mismatches(candidates, references, tokenized)
        runs.append({"seed": seed, "pycocoevalcap": theirs, "vlmforge": {m: ours[m] for m in METRICS}})
        print(f"set {seed}: " + "  ".join(f"{m} {theirs[m]:.4f} (diff {diff[m]:.1e})" for m in METRICS))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "reference": f"pycocoevalcap {importlib.metadata.version('pycocoevalcap')} "
        "(PTBTokenizer stanford-corenlp-3.4.1.jar, Bleu, Meteor meteor-1.5.jar, Rouge, Cider)",
        "java": java,
        "sets": sets,
        "images_per_set": images,
        "references_per_image": 5,
        "max_abs_diff": max_diff,
        "captions": captions,
        "captions_tokenised_differently": mismatched,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "note": "vlmforge's METEOR runs the same jar through pycocoevalcap, so its difference comes from "
        "the tokenisation only; pycocoevalcap's seconds include starting its tokenizer and METEOR jars for "
        "every set, vlmforge's starting the METEOR jar once",
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=5)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    result = {"coco_caption": coco_caption_parity(args.sets, args.images)}
    print(f"max abs difference: {result['coco_caption']['max_abs_diff']}")
    print(f"wrote {write_result('eval_parity', result)}")


if __name__ == "__main__":
    main()
