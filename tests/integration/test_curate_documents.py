"""`vlmforge curate documents | assign-images` through the CLI: the demo corpus is
curated with every planted problem caught, bad settings exit 2, and text-only documents get images
with their similarity in the document JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import last_json, run_cli
from vlmforge.data.interleaved import Document, read_documents, write_documents
from vlmforge.verbs import curate_documents


def test_demo_corpus_is_curated_through_the_cli(tmp_path: Path) -> None:
    made = curate_documents.demo(tmp_path / "corpus", documents=30, shards=2, seed=0)  # demo-documents' verb
    assert made["documents"] == 42 and made["planted_drops"] == 6
    args = ("curate", "documents", "corpus/docs-*.tar", "--to", "out", "--format", "json")
    report = last_json(run_cli(*args, cwd=tmp_path, check=True).stdout)
    assert (report["total"], report["kept"]) == (42, 36)
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").open()]
    assert len(dropped) == 6 and report["settings"]["images"]["min_side"] == 150
    bad = run_cli(
        "curate", "documents", "corpus/docs-*.tar", "--to", "o2", "--set", "images.min_side=-3", cwd=tmp_path
    )
    assert bad.returncode == 2 and "images.min_side" in bad.stderr
    taken = run_cli(*args, cwd=tmp_path)
    assert taken.returncode == 2 and "not empty" in taken.stderr


def test_text_only_documents_get_images_through_the_cli(scorer: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    pool = tmp_path / "pool"
    pool.mkdir()
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (32, 32), colour).save(pool / f"{colour}.png")
    docs = [Document("page", ["A red square. A green field. A blue sky."], [None])]
    write_documents(tmp_path / "text.tar", docs)
    args = [
        "--arch",
        "tiny-clip",
        "--checkpoint",
        str(scorer["checkpoint"]),
        "--model-config",
        str(scorer["config"]),
    ]
    proc = run_cli(
        "curate", "assign-images", "text.tar", "--images", "pool", "--to", "out", *args,
        "--min-similarity", "-1", "--format", "json", cwd=tmp_path, check=True,
    )  # fmt: skip
    assert last_json(proc.stdout)["images"] == 3
    (doc,) = read_documents(tmp_path / "out" / "shards" / "00000.tar")
    names = sorted(p.meta["image"] for p in doc.pictures)
    assert names == ["blue.png", "green.png", "red.png"]
    assert all(isinstance(p.meta["similarity"], float) for p in doc.pictures)
    missing = run_cli("curate", "assign-images", "text.tar", "--images", "pool", "--to", "o2", cwd=tmp_path)
    assert missing.returncode == 2 and "--run" in missing.stderr
