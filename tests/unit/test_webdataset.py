"""WebDataset shards: index, security, accounting, exact-once splitting, `data check`, and a pretrain
run that stops above data.max_bad_fraction and completes below it. The shards are real tar files of
sklearn digits (PNG, JPEG, WebP) with planted problems."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.webdataset_shards import (
    ENTRIES,
    PER_SHARD,
    PLANTED,
    READ_TIME,
    add_member,
    encoded_image,
    shards_config,
)
from vlmforge.data.accounting import BadSample
from vlmforge.data.loader import CaptionedImages, collate
from vlmforge.data.shards import expand_braces, index_shard, resolve_shards, scan_shard
from vlmforge.data.sources import open_source
from vlmforge.data.tokenizers import WordVocab
from vlmforge.errors import UserError


# ---------------------------------------------------------------------------------------- finding
def test_brace_expansion_matches_bash() -> None:
    assert expand_braces("s/{00008..00011}.tar") == [f"s/{n:05d}.tar" for n in range(8, 12)]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("x{3..1}") == ["x3", "x2", "x1"]
    assert expand_braces("{a,b{0..1}}") == ["a", "b0", "b1"]
    assert expand_braces("plain.tar") == ["plain.tar"] and expand_braces("{x}") == ["{x}"]


def test_missing_shards_are_listed(shards: tuple[Path, dict[str, Any]]) -> None:
    root, _ = shards
    assert len(resolve_shards([str(root / "*.tar")])) == 3
    with pytest.raises(UserError, match=r"2 shard file\(s\) not found: .*00003\.tar"):
        resolve_shards([str(root / "{00001..00004}.tar")])


# ------------------------------------------------------------------------------------------ index
def test_index_records_offsets_captions_and_pairing_drops(shards: tuple[Path, dict[str, Any]]) -> None:
    root, written = shards
    index = scan_shard(root / "00000.tar")
    assert {d.key: d.reason for d in index.dropped} == {"000010": "missing_pair", "000020": "bad_caption"}
    assert all(d.shard == str(root / "00000.tar") for d in index.dropped)
    assert len(index.samples) == PER_SHARD - 2
    raw = (root / "00000.tar").read_bytes()
    for key, _, offset, size, caption in index.samples:
        assert raw[offset : offset + size] == written["images"][key]  # the offset points at the image bytes
        assert caption == written["captions"][key]
    assert index_shard(root / "00000.tar").samples == index.samples  # scanned, then cached


def test_the_index_cache_is_used_until_the_shard_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vlmforge.data.shards as shards_module

    monkeypatch.setenv("VLMFORGE_CACHE", str(tmp_path / "cache"))
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "a.png", encoded_image(np.zeros((8, 8), np.uint8), "PNG"))
        add_member(tar, "a.txt", b"first")
    assert [s[4] for s in index_shard(shard).samples] == ["first"]
    scans = []
    monkeypatch.setattr(shards_module, "scan_shard", lambda path: scans.append(path) or scan_shard(path))
    assert [s[4] for s in index_shard(shard).samples] == ["first"] and scans == []  # from the cache
    with tarfile.open(shard, "a") as tar:
        add_member(tar, "b.png", encoded_image(np.zeros((8, 8), np.uint8), "PNG"))
        add_member(tar, "b.txt", b"second")
    assert [s[4] for s in index_shard(shard).samples] == ["first", "second"] and scans == [shard]


def test_members_escaping_the_shard_are_refused(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        add_member(tar, "000000.txt", b"fine")
        add_member(tar, "../evil.txt", b"gotcha")
    with pytest.raises(UserError, match=r"evil\.tar: member '\.\./evil\.txt' has an absolute path or '\.\.'"):
        scan_shard(tmp_path / "evil.tar")
    with tarfile.open(tmp_path / "abs.tar", "w") as tar:
        add_member(tar, "/etc/passwd", b"x")
    with pytest.raises(UserError, match="absolute path"):
        scan_shard(tmp_path / "abs.tar")


def test_a_cut_tar_keeps_what_precedes_the_cut(shards: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = shards
    full = scan_shard(root / "00001.tar")
    *_, offset, size, _ = full.samples[10]
    (tmp_path / "cut.tar").write_bytes((root / "00001.tar").read_bytes()[: offset + size // 2])
    cut = scan_shard(tmp_path / "cut.tar")
    assert cut.samples == full.samples[:10]
    assert [(d.key, d.reason) for d in cut.dropped if d.reason == "truncated"] == [
        (full.samples[10][0], "truncated")
    ]


# ------------------------------------------------------------------------------------- accounting
def test_every_read_is_kept_or_dropped_with_its_reason(shards: tuple[Path, dict[str, Any]]) -> None:
    root, _ = shards
    data = open_source(shards_config(root))
    assert data.source_size == ENTRIES and len(data) == ENTRIES - 3
    assert sorted(d.reason for d in data.rejected) == ["bad_caption", "missing_pair", "missing_pair"]
    dataset = CaptionedImages(data, WordVocab.build(data.all_captions()), 8, seed=0)
    items = [dataset[(0, 0, i)] for i in range(len(data))]
    drops = [d for it in items for d in it["dropped"]]
    assert {(d["key"], d["reason"]) for d in drops} == {
        (f"{i:06d}", reason) for i, reason in PLANTED.items() if reason in READ_TIME
    }
    assert all(it["image"].shape == (3, 16, 16) for it in items)  # replaced, never missing
    bad = next(i for i, it in enumerate(items) if it["dropped"])
    assert torch.equal(items[bad]["image"], items[bad + 1]["image"])  # the next sample stands in
    with pytest.raises(BadSample, match=r"000003 of .*00000\.tar: decode_error"):
        data.image(bad)  # a direct reader gets a UserError naming shard and key


def test_evaluation_leaves_unreadable_images_out(shards: tuple[Path, dict[str, Any]]) -> None:
    from vlmforge.evaluate.tasks import encode_images

    class Flatten(torch.nn.Module):
        def encode_image(self, images: torch.Tensor, normalize: bool) -> torch.Tensor:
            return images.flatten(1)

    data = open_source(shards_config(shards[0]))
    features, kept, dropped = encode_images(Flatten(), data, batch_size=64)
    assert features.shape[0] == len(kept) == len(data) - 3
    assert sorted(d.reason for d in dropped) == sorted(READ_TIME)


def test_batches_carry_their_drops(shards: tuple[Path, dict[str, Any]]) -> None:
    data = open_source(shards_config(shards[0]))
    dataset = CaptionedImages(data, WordVocab.build(data.all_captions()), 8, seed=0)
    batch = collate([dataset[(0, 0, i)] for i in range(len(data))])
    assert batch["image"].shape == (len(data), 3, 16, 16)
    assert sorted(d["reason"] for d in batch["dropped"]) == sorted(READ_TIME)  # type: ignore[union-attr]
