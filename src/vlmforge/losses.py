"""Losses as small functions returning named terms; ``loss`` is the total that is optimised."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, objective: object
) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE over the (gathered) batch (Radford et al. 2021, eq. in Fig. 3).

    ``objective`` is an ``open_clip.ClipLoss`` configured for this rank (local loss, gather-with-grad).
    """
    contrastive = objective(image_features, text_features, logit_scale)  # type: ignore[operator]
    return {"loss": contrastive, "contrastive": contrastive}


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    objective: object,
) -> dict[str, torch.Tensor]:
    """Pairwise sigmoid loss, -sum log sigmoid(z_ij (t x_i.y_j + b)) / batch (Zhai et al. 2023, Alg. 1).

    ``objective`` is an ``open_clip.SigLipLoss`` for this rank (exchanges text features across ranks).
    """
    sigmoid = objective(image_features, text_features, logit_scale, logit_bias)  # type: ignore[operator]
    return {"loss": sigmoid, "sigmoid": sigmoid}


def negclip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    all_image: torch.Tensor,
    all_text: torch.Tensor,
    all_negative: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """InfoNCE whose image->text softmax runs over the N captions and their N hard negatives, text->image
    unchanged (NegCLIP, Yuksekgonul et al. 2023, §4).

    Queries are this rank's ``image_features``/``text_features`` (or all of them); ``all_*`` are the N
    gathered features; ``labels`` index each query's pair in ``all_*``. ``hard_negative`` is the part of
    the loss the negatives add (>= 0); ``hard_negative_acc`` the fraction of images that score their caption
    above its own negative.
    """
    n = all_text.shape[0]
    image_to_text = logit_scale * image_features @ torch.cat([all_text, all_negative]).T  # [queries, 2N]
    text_to_image = logit_scale * text_features @ all_image.T
    with_negatives = F.cross_entropy(image_to_text, labels)
    contrastive = (with_negatives + F.cross_entropy(text_to_image, labels)) / 2
    added = (with_negatives - F.cross_entropy(image_to_text[:, :n], labels)) / 2
    positive, negative = image_to_text.gather(1, torch.stack([labels, labels + n], dim=1)).unbind(1)
    return {
        "loss": contrastive,
        "contrastive": contrastive,
        "hard_negative": added.detach(),
        "hard_negative_acc": (positive > negative).float().mean().detach(),
    }


def multi_positive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    all_image: torch.Tensor,
    all_text: torch.Tensor,
    logit_scale: torch.Tensor,
    caption_ids: torch.Tensor,
    all_caption_ids: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Symmetric cross-entropy H(p, softmax(logits)) where p spreads each query's mass equally over every
    gathered sample of the other modality sharing its caption id (StableRep, Tian et al. 2023, eq. 2;
    the image-text term of the official ``MultiPosConLossMM``). With distinct ids it is CLIP's InfoNCE.

    Queries are this rank's features and ``caption_ids`` (or all of them); ``all_*`` the N gathered ones.
    ``positives`` is the mean number of positives a query has among the N.
    """
    matches = (caption_ids[:, None] == all_caption_ids[None, :]).to(image_features.dtype)  # [queries, N]
    target = matches / matches.sum(1, keepdim=True)  # every query matches at least its own pair
    image_to_text = logit_scale * image_features @ all_text.T
    text_to_image = logit_scale * text_features @ all_image.T
    contrastive = (F.cross_entropy(image_to_text, target) + F.cross_entropy(text_to_image, target)) / 2
    return {"loss": contrastive, "contrastive": contrastive, "positives": matches.sum(1).mean().detach()}


def cross_augmented_loss(
    weak: tuple[torch.Tensor, torch.Tensor],
    all_weak: tuple[torch.Tensor, torch.Tensor],
    strong: tuple[list[torch.Tensor], list[torch.Tensor]],
    all_strong: tuple[list[torch.Tensor], list[torch.Tensor]],
    logit_scale: torch.Tensor,
    strong_logit_scale: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
) -> dict[str, torch.Tensor]:
    """CLIP-rocket's loss (Fini et al. 2023, §3; ``CL2LLoss`` of facebookresearch/clip-rocket): InfoNCE on
    the weak (image, text) views, and for each of the V x V pairings of a strong image view with a strong
    caption view an InfoNCE with label smoothing at its own temperature; per direction the weak term and the
    mean strong term are averaged with weights 1 and V, then the two directions are averaged.

    ``weak``/``strong`` are this rank's queries (image, text), the strong ones a list of V views each;
    ``all_*`` the N gathered keys; ``labels`` each query's index among the keys. Features are normalised
    here. ``contrastive`` and ``augmented`` are the symmetric weak and strong terms."""
    image, text = (F.normalize(f, dim=-1) for f in weak)
    all_image, all_text = (F.normalize(f, dim=-1) for f in all_weak)
    weak_i2t = F.cross_entropy(logit_scale * image @ all_text.T, labels)
    weak_t2i = F.cross_entropy(logit_scale * text @ all_image.T, labels)
    images, texts = ([F.normalize(f, dim=-1) for f in views] for views in strong)
    all_images, all_texts = ([F.normalize(f, dim=-1) for f in views] for views in all_strong)

    def mean_over_pairings(queries: list[torch.Tensor], keys: list[torch.Tensor]) -> torch.Tensor:
        losses = [
            F.cross_entropy(strong_logit_scale * q @ k.T, labels, label_smoothing=label_smoothing)
            for q in queries
            for k in keys
        ]
        return torch.stack(losses).mean()

    strong_i2t, strong_t2i = mean_over_pairings(images, all_texts), mean_over_pairings(texts, all_images)
    views = len(images)
    i2t = (weak_i2t + views * strong_i2t) / (1 + views)
    t2i = (weak_t2i + views * strong_t2i) / (1 + views)
    return {
        "loss": (i2t + t2i) / 2,
        "contrastive": ((weak_i2t + weak_t2i) / 2).detach(),
        "augmented": ((strong_i2t + strong_t2i) / 2).detach(),
    }


def nt_xent_loss(
    view1: torch.Tensor,
    view2: torch.Tensor,
    all_view1: torch.Tensor,
    all_view2: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """SimCLR's NT-Xent over 2N views (Chen et al. 2020, eq. 1): each view's positive is the other view of
    its image, its negatives the other 2N - 2 views; cosine similarity over ``temperature``.

    Queries are this rank's ``view1``/``view2`` embeddings (or all of them), ``all_view*`` the N gathered
    ones, ``labels`` each query's index in ``all_view*``."""
    n = all_view1.shape[0]
    queries = F.normalize(torch.cat([view1, view2]), dim=-1)
    keys = F.normalize(torch.cat([all_view1, all_view2]), dim=-1)
    logits = queries @ keys.T / temperature  # [2 queries, 2N]
    own = torch.cat([labels, labels + n])
    other = torch.cat([labels + n, labels])
    logits = logits.masked_fill(F.one_hot(own, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(logits, other)


def coca_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    objective: object,
    contrastive_weight: float,
    caption_weight: float,
) -> dict[str, torch.Tensor]:
    """lambda_con * InfoNCE + lambda_cap * next-token cross-entropy of the caption given the image, padding
    ignored (CoCa, Yu et al. 2022, §3.2).

    ``objective`` is an ``open_clip.CoCaLoss`` with unit weights for this rank; the recipe's weights are
    applied here so that both terms are logged unweighted.
    """
    contrastive, caption = objective(  # type: ignore[operator]
        image_features, text_features, logits, labels, logit_scale
    )
    total = contrastive_weight * contrastive + caption_weight * caption
    return {"loss": total, "contrastive": contrastive, "caption": caption}


def answer_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Summed log-probability of each row's labelled (answer) tokens under next-token ``logits`` [B,T,V]."""
    targets = labels[:, 1:]
    scored = targets != ignore_index
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logps.gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
    return (picked * scored).sum(1)


def chosen_nll(
    policy_chosen: torch.Tensor, chosen_labels: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean negative log-likelihood per chosen answer token, from summed log-probs [B] and the rows'
    labels (RPO, Pang et al. 2024, eq. 3; TRL ``DPOTrainer``'s ``nll_loss`` under ``rpo_alpha``)."""
    tokens = (chosen_labels[:, 1:] != ignore_index).sum().clamp(min=1)
    return -policy_chosen.sum() / tokens


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    kind: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """DPO, -log sigmoid(beta h) with h = log-ratio(chosen) - log-ratio(rejected) (Rafailov et al. 2023,
    eq. 7; ``label_smoothing`` e: -(1-e) log sigmoid(beta h) - e log sigmoid(-beta h)), or IPO,
    (h - 1/(2 beta))^2 (Azar et al. 2023, eq. 17), on summed answer log-probs [B].

    Rewards are the implicit beta * log(policy / reference); ``reward_accuracy`` is the fraction of pairs
    whose chosen reward is higher, ``reward_margin`` the mean reward difference."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    h = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {kind!r}")
    chosen_reward, rejected_reward = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    return {
        "loss": losses.mean(),
        "reward_accuracy": (chosen_reward > rejected_reward).float().mean(),
        "reward_margin": (chosen_reward - rejected_reward).mean(),
        "chosen_reward": chosen_reward.mean(),
        "rejected_reward": rejected_reward.mean(),
    }


def box_loss(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """X-VLM's box loss (Zeng et al. 2022, §3.4.1; ``get_bbox_loss`` of github.com/zengyan-97/X-VLM):
    L1 on normalised (cx, cy, w, h), summed over the 4 coordinates, plus 1 - GIoU (Rezatofighi et al.
    2019, ``torchvision.ops.generalized_box_iou_loss``), both averaged over the boxes; boxes [B, 4] in
    normalised x1, y1, x2, y2."""
    from torchvision.ops import box_convert, generalized_box_iou_loss

    centred = [box_convert(boxes, "xyxy", "cxcywh") for boxes in (predicted, target)]
    l1 = F.l1_loss(*centred, reduction="sum") / len(target)
    giou = generalized_box_iou_loss(predicted, target, reduction="mean")
    return {"box": l1 + giou, "box_l1": l1.detach(), "box_giou": giou.detach()}
