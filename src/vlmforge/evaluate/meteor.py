"""METEOR 1.5 (Denkowski & Lavie 2014) exactly as the COCO caption evaluation computes it: through
pycocoevalcap's ``Meteor`` wrapper, which runs the evaluation's own ``meteor-1.5.jar`` (``-l en -norm``, with
its paraphrase table) in Java. No maintained pure-Python METEOR 1.5 exists (nltk's ``meteor_score`` is a
different variant without paraphrases and gives other numbers), so the metric is only reported where
pycocoevalcap (the ``captions`` extra) and a Java runtime are installed.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from functools import cache
from typing import Any

INSTALL_HINT = (
    "install the captions extra (pip install 'vlmforge[captions]', which brings pycocoevalcap and its "
    "METEOR 1.5 jar) and a Java runtime (e.g. apt-get install default-jre-headless)"
)


def meteor_unavailable_reason() -> str | None:
    """Why METEOR cannot be computed here (with what to install), or None when it can."""
    missing = []
    if importlib.util.find_spec("pycocoevalcap") is None:
        missing.append("pycocoevalcap is not installed")
    if shutil.which("java") is None:
        missing.append("java is not on PATH")
    return f"{' and '.join(missing)}: {INSTALL_HINT}" if missing else None


def meteor(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """Corpus METEOR 1.5 of tokenised captions (one candidate per image against all its references), as
    pycocoevalcap/meteor/meteor.py computes it; needs pycocoevalcap and java (meteor_unavailable_reason)."""
    if not candidates:
        return 0.0
    res = {i: [" ".join(cand)] for i, cand in enumerate(candidates)}
    gts = {i: [" ".join(ref) for ref in refs] for i, refs in enumerate(references)}
    score, _ = _scorer().compute_score(gts, res)
    return float(score)


@cache
def _scorer() -> Any:
    """One METEOR process for the whole run: the jar takes seconds to load its paraphrase table."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()
