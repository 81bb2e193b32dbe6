"""`vlmforge curate annotate`: export a stratified sample of a curation for human labelling, and import
the labels back with an agreement report per stage (seed §3.1.5)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.curate.agreement import agreement, read_labels, read_sample
from vlmforge.curate.annotate import ExportResult, export_sample

__all__ = ["ExportResult", "ImportResult", "export", "import_labels"]


@dataclass
class ImportResult:
    folder: Path
    labelled: int
    skipped: dict[str, int]
    report: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": str(self.folder / "labels.json"),
            "agreement": str(self.folder / "agreement.json"),
            "labelled": self.labelled,
            "skipped": self.skipped,
            **self.report,
        }


# Exporting is one library call: the verb names it so the CLI reaches it through the verbs layer.
export = export_sample


def import_labels(folder: Path, labels_file: Path) -> ImportResult:
    """Labels from ``labels_file`` into ``folder``/labels.json and the agreement into agreement.json."""
    sample = read_sample(folder)
    labels, skipped = read_labels(labels_file, {item["id"] for item in sample["items"]})
    by_id = {str(i): label for i, label in sorted(labels.items())}
    (folder / "labels.json").write_text(json.dumps(by_id, indent=1) + "\n", encoding="utf-8")
    report = agreement(sample, labels)
    (folder / "agreement.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return ImportResult(folder, len(labels), skipped, report)
