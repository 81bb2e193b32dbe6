"""The linear probe: multinomial logistic regression on frozen image features — scored as an evaluation
(``linear_probe_accuracy``) and used as a finetuning method, its L2 strength picked on a validation split
of the training images (Radford et al. 2021, appendix A.3) and refit on every training image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlmforge.data.classification import stratified_split
from vlmforge.errors import UserError


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    c: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Multinomial logistic regression on frozen features, standardised with the training statistics
    (the linear probe of Radford et al. 2021 §3.2; MAE's probe normalises features the same way, §4);
    ``predicted``: its class for each test feature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(train_features.numpy(), train_labels.numpy())
    return {
        "top1": float(probe.score(test_features.numpy(), test_labels.numpy())),
        "train_top1": float(probe.score(train_features.numpy(), train_labels.numpy())),
        "predicted": probe.predict(test_features.numpy()).tolist(),
    }


def choose_c(
    features: torch.Tensor,
    labels: torch.Tensor,
    c_values: list[float],
    fraction: float,
    max_iter: int,
    seed: int,
) -> dict[str, Any]:
    """{'c': the C with the best validation accuracy (the smallest among ties: the strongest
    regularisation), 'sweep': [{c, val_top1}]}."""
    fit, val = stratified_split(labels.numpy(), fraction, seed)
    if len(val) == 0 or len(np.unique(labels.numpy()[fit])) < len(np.unique(labels.numpy())):
        raise UserError(
            "the linear probe's C sweep needs a validation image of every class and a training image left",
            hint="use data.shots of 2 or more",
        )
    sweep = []
    for c in sorted(c_values):
        scored = linear_probe_accuracy(features[fit], labels[fit], features[val], labels[val], c, max_iter)
        sweep.append({"c": c, "val_top1": scored["top1"]})
    best = max(sweep, key=lambda row: (row["val_top1"], -row["c"]))
    return {"c": best["c"], "sweep": sweep}


def fitted_probe(
    features: torch.Tensor, labels: torch.Tensor, c: float, max_iter: int
) -> dict[str, torch.Tensor]:
    """The probe fitted on all ``features`` as one linear layer on raw features: the standardisation
    folded into ``weight`` [classes, dim] and ``bias`` [classes]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = features.numpy()
    scaler = StandardScaler().fit(x)
    probe = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(x), labels.numpy())
    weight = probe.coef_ / scaler.scale_
    bias = probe.intercept_ - weight @ scaler.mean_
    if weight.shape[0] == 1:  # two classes: sklearn keeps the second class's logit against a zero one
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    return {"weight": torch.from_numpy(weight).float(), "bias": torch.from_numpy(bias).float()}
