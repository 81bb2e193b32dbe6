"""Data sources, tokenizer and the deterministic, resumable, rank-aware batch sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmforge.config.schema import DigitsData, FolderData
from vlmforge.data.base import split_indices
from vlmforge.data.digits import digits_set
from vlmforge.data.folder import folder_set
from vlmforge.data.loader import CaptionedImages, DataPosition, GlobalBatchSampler
from vlmforge.data.sources import train_val_split
from vlmforge.data.tokenizers import WordVocab
from vlmforge.errors import UserError


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    train, val = train_val_split(DigitsData())
    assert (len(train), len(val)) == (1437, 360)
    assert not set(train.indices) & set(val.indices)
    val_counts = np.bincount([val.label(i) for i in range(len(val))], minlength=10)
    assert val_counts.min() >= 35  # every digit held out in proportion (~36 each)
    again = train_val_split(DigitsData(image_size=24))
    assert np.array_equal(val.indices, again[1].indices)


def test_digits_images_are_upscaled_and_normalised() -> None:
    data = digits_set(DigitsData(image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3))
    image = data.image(0)
    assert image.shape == (3, 16, 16)
    assert float(image.min()) >= -1.0 - 1e-6 and float(image.max()) <= 1.0 + 1e-6
    assert data.captions_of(0)[0] == "a photo of the digit zero."


def test_split_without_val_keeps_everything() -> None:
    train, val = split_indices(10, None, 0.0)
    assert len(train) == 10 and len(val) == 0


def test_word_tokenizer_layout_matches_open_clip_pooling() -> None:
    vocab = WordVocab.build(["a handwritten three.", "the number one."])
    ids = vocab(["a handwritten one.", "an unseen word"], context_length=8)
    assert ids.shape == (2, 8)
    assert int(ids[0, 0]) == 1  # start token
    assert int(ids[0].argmax()) == 5 and int(ids[0, 5]) == vocab.end_id  # end token is the largest id
    assert vocab.decode(ids[0].tolist()) == "a handwritten one ."
    assert int(ids[1, 1]) == vocab.stoi["<unk>"]


def _epoch_batches(sampler: GlobalBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return [[index for _, _, index in batch] for batch in sampler]


def test_sampler_epoch_is_a_permutation_and_seeded() -> None:
    sampler = GlobalBatchSampler(100, 20, 20, seed=3)
    batches = _epoch_batches(sampler, 0)
    flat = [i for b in batches for i in b]
    assert len(flat) == 100 and len(set(flat)) == 100
    assert batches == _epoch_batches(GlobalBatchSampler(100, 20, 20, seed=3), 0)
    assert batches != _epoch_batches(GlobalBatchSampler(100, 20, 20, seed=4), 0)
    assert batches != _epoch_batches(sampler, 1)


@pytest.mark.parametrize(("world", "micro"), [(2, 10), (2, 5), (4, 5)])
def test_ranks_share_each_global_batch_exactly(world: int, micro: int) -> None:
    single = _epoch_batches(GlobalBatchSampler(103, 20, 20, seed=0), 2)
    per_rank = [
        _epoch_batches(GlobalBatchSampler(103, 20, micro, rank=r, world_size=world), 2) for r in range(world)
    ]
    accumulate = 20 // (micro * world)
    for step, global_batch in enumerate(single):
        seen = [
            i
            for r in range(world)
            for b in per_rank[r][step * accumulate : (step + 1) * accumulate]
            for i in b
        ]
        assert sorted(seen) == sorted(global_batch)  # no sample missed or repeated across ranks


def test_resume_skips_exactly_what_was_consumed() -> None:
    full = _epoch_batches(GlobalBatchSampler(100, 10, 5, seed=1), 4)
    resumed = _epoch_batches(GlobalBatchSampler(100, 10, 5, seed=1, resume=DataPosition(4, 7)), 4)
    assert resumed == full[7:]
    later = _epoch_batches(GlobalBatchSampler(100, 10, 5, seed=1, resume=DataPosition(4, 7)), 5)
    assert len(later) == len(full)  # the next epoch starts from its beginning


def test_caption_choice_is_deterministic_and_varies_by_epoch() -> None:
    data = digits_set(DigitsData())
    vocab = WordVocab.build(data.all_captions())
    dataset = CaptionedImages(data, vocab, 16, seed=0)
    first = [dataset[(0, 0, i)]["text"] for i in range(50)]
    again = [CaptionedImages(data, vocab, 16, seed=0)[(0, 0, i)]["text"] for i in range(50)]
    other_epoch = [dataset[(1, 0, i)]["text"] for i in range(50)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other_epoch, strict=True))


def test_folder_source_reads_images_captions_and_labels(digits_folder: Path) -> None:
    data = folder_set(FolderData(path=digits_folder, image_size=16))
    assert len(data) == 120
    assert data.image(3).shape == (3, 16, 16)
    assert data.classnames == sorted(data.classnames or [])
    assert data.captions_of(0)[0].startswith("a handwritten")
    assert data.fingerprint == folder_set(FolderData(path=digits_folder, image_size=16)).fingerprint


def test_folder_csv_captions(tmp_path: Path, digits_folder: Path) -> None:
    import shutil

    shutil.copy(digits_folder / "img000.png", tmp_path / "a.png")
    (tmp_path / "caps.csv").write_text("image,caption\na.png,a digit\n")
    data = folder_set(FolderData(path=tmp_path, captions="caps.csv", image_size=8))
    assert data.captions_of(0) == ["a digit"] and data.labels is None


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "broken.jpg", "caption": "x"}) + "\n")
    data = folder_set(FolderData(path=tmp_path, image_size=8))
    with pytest.raises(UserError, match=r"broken\.jpg"):
        data.image(0)


def test_training_counts_a_corrupt_folder_image_and_reads_the_next(
    tmp_path: Path, digits_folder: Path
) -> None:
    import shutil

    shutil.copy(digits_folder / "img000.png", tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = [{"image": "broken.png", "caption": "x"}, {"image": "good.png", "caption": "y"}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = folder_set(FolderData(path=tmp_path, image_size=8))
    item = CaptionedImages(data, WordVocab.build(["x", "y"]), 4, seed=0)[(0, 0, 0)]
    assert item["index"] == 0 and torch.equal(item["image"], data.image(1))
    assert [(d["key"], d["reason"]) for d in item["dropped"]] == [("broken.png", "decode_error")]


def test_missing_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "nope.png", "caption": "x"}) + "\n")
    with pytest.raises(UserError, match=r"missing: .*nope\.png"):
        folder_set(FolderData(path=tmp_path))
    with pytest.raises(UserError, match="folder not found"):
        folder_set(FolderData(path=tmp_path / "absent"))


def test_bad_caption_rows_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "captions.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{not json\n')
    with pytest.raises(UserError, match=r"captions\.jsonl:2"):
        folder_set(FolderData(path=tmp_path))


# ------------------------------------------------------------------------ folder: hostile captions
def _square(path: Path, side: int) -> None:
    from PIL import Image

    Image.new("RGB", (side, side), (90, 30, 200)).save(path)


def test_folder_paths_leading_outside_are_dropped_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    _square(root / "in.png", 12)
    _square(tmp_path / "out.png", 20)
    (root / "sub" / "link.png").symlink_to(tmp_path / "out.png")
    (root / "inner-link.png").symlink_to(root / "in.png")  # a link that stays inside is fine
    names = [
        "in.png",
        "sub/../in.png",
        "inner-link.png",
        "../out.png",
        str(tmp_path / "out.png"),
        "sub/link.png",
    ]
    rows = [{"image": name, "caption": f"row {n}"} for n, name in enumerate(names)]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    data = folder_set(FolderData(path=root, image_size=8))
    assert data.keys == names[:3] and data.source_size == 6
    assert [(d.key, d.reason) for d in data.rejected] == [(n, "unsafe_path") for n in names[3:]]
    assert all("allow_outside" in d.detail for d in data.rejected)

    allowed = folder_set(FolderData(path=root, image_size=8, allow_outside=True))
    assert allowed.keys == names and not allowed.rejected
    assert allowed.image(3).shape == (3, 8, 8)  # the outside image, read because the recipe opted in


def test_caption_lines_that_are_not_utf8_are_counted(tmp_path: Path) -> None:
    _square(tmp_path / "a.png", 8)
    good = json.dumps({"image": "a.png", "caption": "fine"}).encode()
    (tmp_path / "captions.jsonl").write_bytes(
        good + b'\n{"image": "a.png", "caption": "caf\xe9"}\n' + good + b"\n"
    )
    data = folder_set(FolderData(path=tmp_path, image_size=8))
    assert data.captions == [["fine"], ["fine"]] and data.source_size == 3
    (drop,) = data.rejected
    assert (drop.key, drop.reason) == ("line 2", "bad_caption") and "not UTF-8" in drop.detail

    (tmp_path / "caps.csv").write_bytes(b'image,caption\na.png,ok\na.png,na\xefve\na.png,"two\nlines"\n')
    csv_data = folder_set(FolderData(path=tmp_path, captions="caps.csv", image_size=8))
    assert csv_data.captions == [["ok"], ["two\nlines"]]
    assert [(d.key, d.reason) for d in csv_data.rejected] == [("line 3", "bad_caption")]


def test_data_check_reads_a_folder(tmp_path: Path) -> None:
    from vlmforge.data.check import check_source

    for name in ("a.png", "b.png"):
        _square(tmp_path / name, 10)
    (tmp_path / "bad.png").write_bytes(b"no image")
    rows = [("a.png", "one two"), ("b.png", "three"), ("bad.png", "x"), ("../a.png", "y")]
    lines = [json.dumps({"image": i, "caption": c}).encode() for i, c in rows] + [b'{"caption": "\xff"}']
    (tmp_path / "captions.jsonl").write_bytes(b"\n".join(lines))
    report = check_source(FolderData(path=tmp_path, image_size=8)).to_json()
    assert (report["entries"], report["kept"]) == (5, 2)
    assert report["dropped"] == {"decode_error": 1, "bad_caption": 1, "unsafe_path": 1}
    assert report["shards"] == [{"shard": str(tmp_path), "entries": 5, "kept": 2, "dropped": 3}]
    assert report["caption_words"]["max"] == 2 and report["image_width"] == {
        "min": 10.0, "median": 10.0, "mean": 10.0, "max": 10.0
    }  # fmt: skip
    assert report["over_budget"]
