"""Training and scoring an image classifier built by ``models.peft`` on labelled images: a plain
single-device loop (AdamW, warm-up + cosine, cross-entropy), deterministic for a seed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from vlmforge.config.training import OptimConfig
from vlmforge.data.classification import LabelledImages
from vlmforge.training.schedule import SCHEDULES

LOG_EVERY = 10


def batches(count: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of positions: reshuffled permutations of 0..count-1, one after the other, with
    the last partial batch of each pass kept."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(count)
        out += [order[i : i + batch_size] for i in range(0, count, batch_size)]
    return out[:steps]


def optimizer_for(module: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW on the trainable tensors; no decay on vectors (gains, biases) as in the project's pretraining."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    rest = [p for p in trainable if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def fit_classifier(
    classifier: nn.Module,
    train: LabelledImages,
    batch_size: int,
    steps: int,
    optim: OptimConfig,
    seed: int,
    device: torch.device,
    log: Callable[[dict[str, Any]], None],
    precision: str = "32",
) -> dict[str, Any]:
    """Minimise the cross-entropy of ``classifier(images)``; returns the last loss and the time."""
    torch.manual_seed(seed)
    optimizer = optimizer_for(classifier, optim)
    schedule = SCHEDULES[optim.schedule]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule(step, optim.warmup_steps, steps, optim.min_lr_ratio)
    )
    classifier.train()
    started, loss_value = time.perf_counter(), float("nan")
    for step, positions in enumerate(batches(len(train), batch_size, steps, seed)):
        images, labels = train.batch(positions)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits = classifier(images.to(device))
        loss = nn.functional.cross_entropy(logits.float(), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at step {step + 1}")
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            log({"step": step + 1, "loss": round(loss_value, 6), "lr": scheduler.get_last_lr()[0]})
    classifier.eval()
    return {"steps": steps, "loss": loss_value, "seconds": round(time.perf_counter() - started, 3)}


@torch.no_grad()
def predict(
    forward: Callable[[torch.Tensor], torch.Tensor],
    data: LabelledImages,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, labels) of ``forward`` over ``data`` in order, on the CPU."""
    outputs, labels = [], []
    for start in range(0, len(data), batch_size):
        images, batch_labels = data.batch(np.arange(start, min(start + batch_size, len(data))))
        outputs.append(forward(images.to(device)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(outputs), torch.cat(labels)


def accuracy(
    classifier: nn.Module, data: LabelledImages, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Top-1 accuracy of ``classifier`` on ``data``, overall and per class (in label order)."""
    classifier.eval()
    logits, labels = predict(classifier, data, batch_size, device)
    return scores(logits, labels, int(logits.shape[1]))


def scores(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, Any]:
    """{'top1': overall, 'per_class': [top-1 of each class's images, None for a class without any]}."""
    hits = (logits.argmax(dim=1) == labels).float()
    per_class = [
        float(hits[labels == c].mean()) if bool((labels == c).any()) else None for c in range(classes)
    ]
    return {"top1": float(hits.mean()), "per_class": per_class}
