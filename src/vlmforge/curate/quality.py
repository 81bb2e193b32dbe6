"""Quality scores (seed §3.1.4): a LAION-Aesthetics-style predictor on image embeddings, trainable from a CSV
of ratings, and caption fluency as minus the log perplexity under a local causal language model."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch
from vlmforge.curate.scorers import Scorer
from vlmforge.curate.scoring import ScoreRuleStep, image_embeddings
from vlmforge.errors import UserError

LAION_HIDDEN = (1024, 128, 64, 16)  # the LAION-Aesthetics predictor's MLP widths


class AestheticHead(torch.nn.Module):
    """The LAION-Aesthetics predictor's MLP (Schuhmann et al. 2022; LAION-AI/aesthetic-predictor): Linear
    layers of ``hidden`` widths with dropout between the first ones, then one output, on L2-normalised
    image embeddings of width ``width``."""

    def __init__(self, width: int, hidden: Sequence[int] = LAION_HIDDEN, dropout: float = 0.1) -> None:
        super().__init__()
        self.width, self.hidden = width, tuple(hidden)
        layers: list[torch.nn.Module] = []
        for size_in, size_out in zip((width, *hidden[:-1]), hidden, strict=True):
            layers += [torch.nn.Linear(size_in, size_out), torch.nn.Dropout(dropout)]
        self.mlp = torch.nn.Sequential(*layers, torch.nn.Linear((width, *hidden)[-1], 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlp(embeddings).squeeze(-1)


def save_aesthetic_head(head: AestheticHead, path: Path) -> None:
    """The head's weights as .safetensors, its widths in the file's metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = json.dumps({"width": head.width, "hidden": list(head.hidden)})
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path), {"aesthetic_head": shape})


def load_aesthetic_head(path: Path) -> AestheticHead:
    """A head saved by ``save_aesthetic_head``, in eval mode."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    hint = "train one with vlmforge.curate.quality.train_aesthetic_head(ratings.csv, scorer, path)"
    if not path.is_file():
        raise UserError(f"aesthetic_score.head: file not found: {path}", hint=hint)
    try:
        with safe_open(str(path), framework="pt") as f:
            shape = json.loads((f.metadata() or {}).get("aesthetic_head", "null"))
        state = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise UserError(f"aesthetic_score.head: {path} is not a safetensors file: {exc}", hint=hint) from None
    if not isinstance(shape, dict):
        raise UserError(f"aesthetic_score.head: {path} holds no aesthetic head (metadata missing)", hint=hint)
    head = AestheticHead(int(shape["width"]), [int(h) for h in shape["hidden"]])
    head.load_state_dict(state)
    return head.eval()


def read_ratings(path: Path) -> list[tuple[Path, float]]:
    """(image path, rating) rows of a CSV with columns ``image`` and ``rating``; relative image paths are
    resolved against the CSV's folder."""
    if not path.is_file():
        raise UserError(f"ratings file not found: {path}", hint="give a CSV with columns image,rating")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"image", "rating"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: missing column(s) {sorted(missing)}", hint="columns: image,rating")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append((path.parent / row["image"], float(row["rating"])))
            except (TypeError, ValueError):
                raise UserError(f"{path}:{line}: rating {row['rating']!r} is not a number") from None
    if len(rows) < 2:
        raise UserError(f"{path}: {len(rows)} rating(s); a head needs at least 2")
    return rows


def train_aesthetic_head(
    ratings_csv: Path,
    scorer: Scorer,
    output: Path,
    hidden: Sequence[int] = LAION_HIDDEN,
    epochs: int = 200,
    lr: float = 1e-3,
    seed: int = 0,
) -> AestheticHead:
    """Fit an ``AestheticHead`` to the CSV's ratings with the mean squared error (as the LAION predictor is
    trained on AVA / SAC ratings), full-batch AdamW, on ``scorer``'s image embeddings; saved to ``output``."""
    from PIL import Image, UnidentifiedImageError

    rows = read_ratings(ratings_csv)
    images = []
    for image_path, _ in rows:
        try:
            with Image.open(image_path) as image:
                images.append(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"{ratings_csv}: cannot read image {image_path}: {exc}") from None
    x = torch.from_numpy(scorer.images(images))
    y = torch.tensor([rating for _, rating in rows], dtype=torch.float32)
    torch.manual_seed(seed)
    head = AestheticHead(x.shape[1], hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    head.train()
    for _ in range(epochs):
        loss = torch.nn.functional.mse_loss(head(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_aesthetic_head(head.eval(), output)
    return head


def mean_token_logprob(model: Any, tokenizer: Any, texts: list[str], max_tokens: int) -> np.ndarray:
    """Mean log-probability of each text's tokens under causal LM ``model`` (minus the log perplexity),
    each predicted from those before it and the tokenizer's start token if it has one. A text with nothing
    to predict scores as a uniform guess over the vocabulary, log(1 / V)."""
    start = getattr(tokenizer, "bos_token_id", None)
    scores = np.full(len(texts), -np.log(len(tokenizer)))
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
        if start is not None and (ids.shape[1] == 0 or int(ids[0, 0]) != start):
            ids = torch.cat([torch.tensor([[start]]), ids], dim=1)
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        picked = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])
        scores[i] = float(picked.mean())
    return scores


def check_language_model(path: Path) -> None:
    """The language model's folder holds a transformers config (checked without loading it)."""
    if not (path / "config.json").is_file():
        raise UserError(
            f"text_quality.model: no transformers model folder at {path} (config.json missing)",
            hint="give a local transformers causal-LM folder (config.json, weights, tokenizer files)",
        )


def load_language_model(path: Path) -> tuple[Any, Any]:
    """A local transformers causal LM and its tokenizer, offline, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_language_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"text_quality.model: cannot load {path}: {str(exc).splitlines()[0]}") from None
    return model.eval(), tokenizer


class AestheticScoreStep(ScoreRuleStep):
    """The predicted aesthetic rating of each image (``config.curate_quality.AestheticScore``)."""

    kind = "aesthetic_score"
    score = "aesthetic_score"
    reason = "low_aesthetic_score"

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.head = load_aesthetic_head(cfg.head)  # a bad file is reported before any shard is read

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        embeddings = torch.from_numpy(image_embeddings(batch, self.resources.scorer()))
        with torch.no_grad():
            return {"aesthetic_score": self.head(embeddings).double().numpy()}


class TextQualityStep(ScoreRuleStep):
    """Caption fluency as minus the log perplexity (``config.curate_quality.TextQuality``)."""

    kind = "text_quality"
    score = "text_quality"
    reason = "low_text_quality"

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.model, self.tokenizer = load_language_model(cfg.model)

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        texts = list(batch.captions)
        return {"text_quality": mean_token_logprob(self.model, self.tokenizer, texts, self.cfg.max_tokens)}
