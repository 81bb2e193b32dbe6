"""Parity of vlmforge's evaluation metrics with the official evaluation code.

coco_caption: ``vlmforge.evaluate.caption_metrics.caption_scores`` (pure-Python PTB tokenisation, BLEU,
ROUGE-L, CIDEr-D; METEOR through the jar) vs the COCO caption evaluation itself (pycocoevalcap: its Java
PTBTokenizer, then Bleu, Meteor, Rouge, Cider as pycocoevalcap/eval.py runs them) on generated-like captions:
seeded sets of images, each with 5 reference captions and one candidate built the way a captioner errs (words
dropped, swapped or repeated, a reference's wording paraphrased), written with the hyphens, contractions,
decimals, accents and symbols real captions have. Records each metric on both sides, the largest absolute
difference per metric over the sets, how many captions tokenise to different tokens, and the time each side
takes.

clip_benchmark: one debug CLIP run (``vlmforge pretrain -c debug/clip-tiny``) evaluated by vlmforge's
zero-shot and retrieval tasks, and its open_clip export by CLIP_benchmark's own code (its loader, zero-shot
classifier and retrieval ``evaluate``) on the same held-out digits.

    python benchmarks/eval_parity.py [--parts coco_caption clip_benchmark] [--sets 5] [--images 200]

coco_caption needs pycocoevalcap (the captions extra) and java on PATH; clip_benchmark the dev extra. Writes
benchmarks/results/eval_parity.json, one key per evaluation compared (a part not run keeps its last result).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import RESULTS_DIR, write_result
from vlmforge.evaluate.caption_metrics import caption_scores
from vlmforge.evaluate.ptb_tokenizer import ptb_tokenize

PARTS = ("coco_caption", "clip_benchmark")
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


def _vlmforge(*args: str, cwd: Path) -> str:
    """``vlmforge ARGS`` in a subprocess that must succeed; its stdout."""
    command = [sys.executable, "-m", "vlmforge_cli", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def clip_benchmark_parity(work: Path) -> dict[str, Any]:
    """Zero-shot classification and retrieval of one trained debug CLIP run: vlmforge's eval tasks on the
    run vs CLIP_benchmark's own code (its ``load_open_clip("local-dir:...")``, zero-shot classifier and
    retrieval ``evaluate``) on the run's open_clip export, on the same held-out digits."""
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval
    from clip_benchmark.models.open_clip import load_open_clip

    from vlmforge.config.evaluation import RetrievalTask, ZeroShotTask
    from vlmforge.data.sources import build_eval_data
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.runs.artifacts import load_trained

    out = _vlmforge("pretrain", "-c", "debug/clip-tiny", "--yes", "--format", "json", cwd=work)
    run_dir = work / json.loads(out.strip().splitlines()[-1])["run_dir"]
    export = work / "export"
    _vlmforge("export", str(run_dir), "--format", "open_clip", "-o", str(export), cwd=work)
    model, _, tokenizer = load_open_clip(f"local-dir:{export}", pretrained=None)
    model.eval()
    ours, run_tokenizer, recipe, _ = load_trained(run_dir)
    data = build_eval_data(recipe, None)
    images = torch.stack([data.image(i) for i in range(len(data))])
    labels = torch.tensor([data.label(i) for i in range(len(data))])
    captions = [data.captions_of(i)[i % len(data.captions_of(i))] for i in range(len(data))]
    with torch.no_grad():
        recorded = evaluate_model(
            recipe.model,
            ours.eval(),
            run_tokenizer,
            recipe.model.text.context_length,
            data,
            [ZeroShotTask(), RetrievalTask(match="pair", ks=[1, 5, 10])],
        )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=64)
    classifier = zeroshot_classification.zero_shot_classifier(
        model, tokenizer, data.classnames, [t.replace("{}", "{c}") for t in data.prompts], "cpu", amp=False
    )
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    top = logits.topk(5, 1).indices  # its accuracy() breaks on numpy >= 2.4; its formula here
    theirs = {f"top{k}": float((top[:, :k] == target[:, None]).any(1).float().mean()) for k in (1, 5)}
    pairs = [(images[i], [captions[i]]) for i in range(len(data))]
    retrieval_loader = torch.utils.data.DataLoader(
        pairs,
        batch_size=64,
        collate_fn=lambda batch: (torch.stack([b[0] for b in batch]), [b[1] for b in batch]),
    )
    retrieved = zeroshot_retrieval.evaluate(
        model, retrieval_loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10]
    )
    for k in (1, 5, 10):
        theirs[f"image_to_text_R@{k}"] = retrieved[f"text_retrieval_recall@{k}"]
        theirs[f"text_to_image_R@{k}"] = retrieved[f"image_retrieval_recall@{k}"]
    ours_flat = {**{k: recorded["zeroshot"][k] for k in ("top1", "top5")}}
    ours_flat |= {k: v for k, v in recorded["retrieval"].items() if "_R@" in k}
    distinct = len(set(captions))
    return {
        "run": "debug/clip-tiny, held-out digits",
        "samples": len(data),
        "distinct_captions": distinct,
        "vlmforge": ours_flat,
        "clip_benchmark": theirs,
        "abs_difference": {k: abs(ours_flat[k] - theirs[k]) for k in ours_flat},
        "note": "retrieval with match: pair; repeated captions tie exactly -- vlmforge counts a tie as its "
        "expected value over a random order, CLIP_benchmark takes torch.topk's order",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--sets", type=int, default=5)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    previous = RESULTS_DIR / "eval_parity.json"
    result = json.loads(previous.read_text()) if previous.is_file() else {}
    if "coco_caption" in args.parts:
        result["coco_caption"] = coco_caption_parity(args.sets, args.images)
        print(f"coco_caption max abs difference: {result['coco_caption']['max_abs_diff']}")
    if "clip_benchmark" in args.parts:
        with tempfile.TemporaryDirectory() as work:
            result["clip_benchmark"] = clip_benchmark_parity(Path(work))
        print(f"clip_benchmark abs difference: {result['clip_benchmark']['abs_difference']}")
    print(f"wrote {write_result('eval_parity', result)}")


if __name__ == "__main__":
    main()
