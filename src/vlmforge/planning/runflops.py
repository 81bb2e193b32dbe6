"""FLOPs per sample and trainable parameters of a published training run, from its CSV row.

Contrastive and masked models are counted on the real open_clip architecture (meta device) at the run's
resolution, text length and patch dropout; LLaVA-style runs add the LLM's 2·N FLOPs per token forward and
4·N backward when it trains (2·N when frozen: activation gradients still flow to the projector), as in
Kaplan et al. 2020 (C = 6·N·D). A run trained with activation checkpointing runs the checkpointed forward
again in backward (Chen et al. 2016, 'Training Deep Nets with Sublinear Memory Cost'): one more forward of
the trained model (of the LLM for LLaVA-style runs, whose frozen vision tower runs without gradients).
The parameters one sample passes through, trained or frozen, set the utilisation (``row_model_params``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from vlmforge.planning.flops import count_on_meta

# Parameters of the LLMs that appear in LLaVA-style runs (model cards / papers).
LLM_PARAMS = {
    "llama-7b": 6.74e9,
    "llama-13b": 13.0e9,
    "vicuna-7b": 6.74e9,
    "vicuna-13b": 13.0e9,
    "llama-2-7b": 6.74e9,
    "llama-2-13b": 13.0e9,
    "mistral-7b": 7.24e9,
    "yi-34b": 34.4e9,
    "flan-t5-xl": 2.85e9,
    "flan-t5-xxl": 11.1e9,
    "mobilellama-1.4b": 1.36e9,
    "mobilellama-2.7b": 2.7e9,
    "qwen-7b": 7.7e9,
    "phi-2": 2.7e9,
}
# Rows whose hours cover several training stages, split as the row's cited source runs them:
# (samples, what trains) per stage, in order, summing to the row's samples_seen.
# LLaVA-Lightning: haotian-liu/LLaVA scripts/train_lightning.sh (@a8c742f) pretrains the projector alone
# for one epoch of blip_laion_cc_sbu_558k, then tunes projector + LLM (FSDP) for one epoch of
# llava_instruct_80k.
STAGE_SPLITS: dict[str, tuple[tuple[int, str], ...]] = {
    "LLaVA-Lightning-7B (stage 1 + 2)": ((558_000, "projector"), (80_000, "projector+llm")),
}
# Rows trained with activation checkpointing where the row's notes do not say so but the training script of
# its cited source passes --gradient_checkpointing True: haotian-liu/LLaVA README @7c63df1 (v1 commands),
# scripts/train_lightning.sh @a8c742f, scripts/v1_5/{pretrain,finetune}.sh; Meituan-AutoML/MobileVLM run.sh
# @688fdec (the V2 pretrain and multi-task stages its README runs).
CHECKPOINTED_NAME_PREFIXES = ("LLaVA-", "MobileVLM V2")
# Text tokens per sample when a run does not state them: LLaVA stage-1 caption pairs are short, stage-2
# conversations long (LLaVA-1.5 data: ~60 and ~500 tokens on average).
DEFAULT_TEXT_TOKENS = {"projector": 64, "other": 512}


def number(value: str | None) -> float | None:
    """A CSV cell as a float; blank, unparseable, NaN or infinite -> None."""
    try:
        parsed = float(value) if value else None
    except ValueError:
        return None
    return parsed if parsed is not None and math.isfinite(parsed) else None


@functools.lru_cache(maxsize=256)
def open_clip_flops(
    arch: str,
    image_size: int | None,
    text_len: int | None,
    kept: float,
    trained: str,
    recompute: bool = False,
) -> float:
    """Training FLOPs for one image-text sample through an open_clip model (meta device); ``recompute``
    adds the second forward of activation checkpointing."""
    import open_clip

    kwargs: dict[str, Any] = {"device": "meta"}
    if image_size:
        kwargs["force_image_size"] = image_size
    if text_len:
        kwargs["force_context_length"] = text_len
    if kept < 1:
        kwargs["force_patch_dropout"] = 1 - kept

    def build() -> torch.nn.Module:
        from vlmforge.models.contrastive import quiet_random_init

        with quiet_random_init():
            model = open_clip.create_model(arch, pretrained=None, **kwargs)
        if trained == "text":  # locked-image tuning: the image tower is frozen
            for param in model.visual.parameters():
                param.requires_grad_(False)
        return model

    def step(model: torch.nn.Module) -> torch.Tensor:
        size = model.visual.image_size
        side = size[0] if isinstance(size, tuple | list) else size
        image = torch.empty(1, 3, side, side, device="meta")
        text = torch.zeros(1, text_len or model.context_length, dtype=torch.long, device="meta")
        out = model(image, text)
        tensors = out.values() if isinstance(out, dict) else out
        return sum(t.float().sum() for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())

    count = count_on_meta(build, step)
    return float(count.train + (count.forward if recompute else 0))


@functools.lru_cache(maxsize=64)
def open_clip_image_forward_flops(arch: str, image_size: int | None) -> float:
    import open_clip

    kwargs: dict[str, Any] = {"device": "meta"}
    if image_size:
        kwargs["force_image_size"] = image_size

    def build() -> torch.nn.Module:
        from vlmforge.models.contrastive import quiet_random_init

        with quiet_random_init():
            return open_clip.create_model(arch, pretrained=None, **kwargs).visual

    def step(visual: torch.nn.Module) -> torch.Tensor:
        size = visual.image_size
        side = size[0] if isinstance(size, tuple | list) else size
        with torch.no_grad():
            return visual(torch.empty(1, 3, side, side, device="meta")).sum()

    return float(count_on_meta(build, step).forward)


def _arch(name: str) -> str:
    return name.replace("(frozen)", "").split("+")[0].strip().split(" ")[0]


def _image_tokens(description: str, arch: str, image_size: int | None) -> int:
    """Visual tokens fed to the LLM: one per patch, 32 learned queries behind a Q-Former (BLIP-2), a
    quarter of the patches behind MobileVLM's LDP projector (2x2 pooling)."""
    if "q-former" in description.lower():
        return 32
    parts = arch.split("-")
    patch = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 14
    tokens = ((image_size or 224) // patch) ** 2
    return tokens // 4 if "ldp" in description.lower() else tokens


def row_stages(row: dict[str, str]) -> list[dict[str, str]]:
    """The row as the stages it trains, one row each (samples_seen and trained per stage): a row whose
    figure covers several stages of different cost is counted stage by stage, not as its last stage."""
    split = STAGE_SPLITS.get(row.get("name", ""))
    if split is None:
        return [row]
    return [row | {"samples_seen": str(samples), "trained": trained} for samples, trained in split]


def is_checkpointed(row: dict[str, str]) -> bool:
    """Was the run trained with activation checkpointing: its notes or citation say so, or its cited
    training script does (``CHECKPOINTED_NAME_PREFIXES``)."""
    text = f"{row.get('notes', '')} {row.get('source_citation', '')}".lower()
    return "checkpointing" in text or row.get("name", "").startswith(CHECKPOINTED_NAME_PREFIXES)


def row_flops_per_sample(row: dict[str, str]) -> float | None:
    """FLOPs per training sample for a published-run row, or None when its model cannot be counted."""
    from vlmforge.config.schema import open_clip_architectures

    known = open_clip_architectures()
    arch = _arch(row.get("vision_arch", ""))
    image_size = int(number(row.get("image_res", "")) or 0) or None
    trained = row.get("trained", "") or "all"
    llm = _arch(row.get("llm_arch", "")).lower()
    if llm:
        if llm not in LLM_PARAMS or arch not in known:
            return None
        tokens = _image_tokens(row.get("vision_arch", ""), arch, image_size) + (
            number(row.get("text_len", ""))
            or DEFAULT_TEXT_TOKENS["projector" if trained == "projector" else "other"]
        )
        llm_trained = "llm" in trained
        # forward 2·N·T; backward 4·N·T when the LLM trains, 2·N·T (activation grads only) when frozen;
        # checkpointing repeats the forward
        passes = (6 if llm_trained else 4) + (2 if is_checkpointed(row) else 0)
        llm_flops = passes * LLM_PARAMS[llm] * tokens
        return open_clip_image_forward_flops(arch, image_size) + llm_flops
    if trained == "qformer" and arch in known:  # BLIP-2 stage 1: frozen image tower, trained Q-Former
        queries_and_text = 32 + (number(row.get("text_len", "")) or 32)
        return open_clip_image_forward_flops(arch, image_size) + 6 * QFORMER_PARAMS * queries_and_text
    if arch not in known or trained not in ("all", "text"):
        return None
    text_len = int(number(row.get("text_len", "")) or 0) or None
    kept = number(row.get("kept_patch_fraction", "")) or 1.0
    return open_clip_flops(arch, image_size, text_len, kept, trained, is_checkpointed(row))


# Trainable parameters of the bridges that appear in published runs: LLaVA's projector (LLaVA-1.5's
# two-layer MLP 1024 -> 5120 -> 5120 is 31M; LLaVA v1's linear layer 5M) and BLIP-2's Q-Former (188M, paper).
PROJECTOR_PARAMS = 2.0e7
QFORMER_PARAMS = 1.88e8


@functools.lru_cache(maxsize=64)
def open_clip_params(arch: str, trained: str) -> float:
    """Trainable parameters of an open_clip model (the text tower alone when ``trained`` is 'text')."""
    import open_clip

    from vlmforge.models.contrastive import quiet_random_init

    with quiet_random_init():
        model = open_clip.create_model(arch, pretrained=None, device="meta")
    total = sum(p.numel() for p in model.parameters())
    return float(total - sum(p.numel() for p in model.visual.parameters()) if trained == "text" else total)


@functools.lru_cache(maxsize=64)
def open_clip_visual_params(arch: str) -> float:
    """Parameters of an open_clip model's image tower (what a LLaVA-style model keeps of it)."""
    import open_clip

    from vlmforge.models.contrastive import quiet_random_init

    with quiet_random_init():
        model = open_clip.create_model(arch, pretrained=None, device="meta")
    return float(sum(p.numel() for p in model.visual.parameters()))


def row_model_params(row: dict[str, str]) -> float | None:
    """Parameters one sample of a published run passes through, trained or frozen (what sets its
    utilisation): the open_clip model; or its image tower plus the Q-Former (BLIP-2) and, for LLaVA-style
    runs, the projector and the LLM. None when the model is not known."""
    from vlmforge.config.schema import open_clip_architectures

    arch = _arch(row.get("vision_arch", ""))
    if arch not in open_clip_architectures():
        return None
    llm = _arch(row.get("llm_arch", "")).lower()
    qformer = QFORMER_PARAMS if "q-former" in row.get("vision_arch", "").lower() else 0.0
    if llm:
        if llm not in LLM_PARAMS:
            return None
        return open_clip_visual_params(arch) + qformer + PROJECTOR_PARAMS + LLM_PARAMS[llm]
    if row.get("trained", "") == "qformer":
        return open_clip_visual_params(arch) + QFORMER_PARAMS
    return open_clip_params(arch, "all")


def row_trainable_params(row: dict[str, str]) -> float | None:
    """Parameters a published run trains (what its gradient all-reduce moves), or None if unknown."""
    from vlmforge.config.schema import open_clip_architectures

    trained = row.get("trained", "") or "all"
    llm = _arch(row.get("llm_arch", "")).lower()
    if trained == "qformer":
        return QFORMER_PARAMS
    if trained == "projector":
        return PROJECTOR_PARAMS
    if "llm" in trained:
        return LLM_PARAMS[llm] + PROJECTOR_PARAMS if llm in LLM_PARAMS else None
    arch = _arch(row.get("vision_arch", ""))
    return open_clip_params(arch, trained) if arch in open_clip_architectures() else None
