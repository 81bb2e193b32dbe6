"""`vlmforge curate documents | assign-images | demo-documents`: interleaved image-text documents (seed
§3.1.3): OBELICS-style document-level curation, MMC4-style retrofitting of text-only documents with
images, and the offline demo corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmforge.config.curate_models import ScoringModel
from vlmforge.config.interleaved import DocumentCuration
from vlmforge.config.load import apply_overrides
from vlmforge.errors import UserError

__all__ = ["assign", "curate", "demo", "settings"]


def settings(overrides: list[str]) -> DocumentCuration:
    """The curation settings: OBELICS' defaults with ``key.path=value`` overrides."""
    try:
        return DocumentCuration.model_validate(apply_overrides({}, overrides))
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise UserError("--set: " + "; ".join(lines), hint="see `vlmforge curate documents --help`") from None


def _new_folder(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path}: exists and is not empty", hint="choose a new output folder")
    path.mkdir(parents=True, exist_ok=True)


def curate(patterns: list[str], output: Path, overrides: list[str]) -> dict[str, Any]:
    from vlmforge.curate.documents import curate_documents

    cfg = settings(overrides)
    _new_folder(output)
    report = curate_documents(patterns, output, cfg)
    return report | {"output": str(output), "settings": cfg.model_dump()}


def assign(
    patterns: list[str],
    images: Path,
    output: Path,
    model: ScoringModel,
    min_similarity: float,
    candidates: int,
) -> dict[str, Any]:
    from vlmforge.curate.assign import retrofit_corpus
    from vlmforge.curate.scorers import load_scorer

    scorer = load_scorer(model)
    _new_folder(output)
    return retrofit_corpus(patterns, images, output, scorer, min_similarity, candidates) | {
        "output": str(output)
    }


def demo(root: Path, documents: int, shards: int, seed: int) -> dict[str, Any]:
    from vlmforge.data.interleaved_demo import make_corpus

    _new_folder(root)
    corpus = make_corpus(root, documents, shards, seed)
    return {
        "shards": [str(p) for p in corpus.shards],
        "documents": len(corpus.keys),
        "planted_drops": len(corpus.planted),
        "planted_removals": sum(len(v) for v in corpus.removed.values()),
    }
