"""What `vlmforge curate` reads and checks before it starts: shard patterns as training takes them, a cut
tar counted as `vlmforge data check` counts it, a folder's rows that lead outside it, and the pre-flight
that names every missing input at once without creating anything."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEBUG_RECIPE
from tests.curate_pool import make_recipe
from tests.hostile.checks import files_under
from vlmforge.config.curate import FolderInput, ShardsInput
from vlmforge.curate.io import ShardRef, list_shards, read_samples
from vlmforge.data.shards import scan_shard
from vlmforge.errors import UserError
from vlmforge.verbs import curate


def png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, shade, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar(path: Path, keys: list[str], extras: tuple[str, ...] = ("json",)) -> None:
    with tarfile.open(path, "w") as tar:
        for n, key in enumerate(keys):
            members = [("png", png(40 * n)), ("txt", f"caption {key}".encode())]
            members += [(ext, json.dumps({"key": key}).encode()) for ext in extras]
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------------ shard patterns
def test_input_shards_take_what_training_takes(tmp_path: Path) -> None:
    for name in ("a-0", "a-1", "b-x"):
        write_tar(tmp_path / f"{name}.tar", [name])
    listed = list_shards(ShardsInput(shards=[str(tmp_path / "a-{0..1}.tar"), str(tmp_path / "b-*.tar")]))
    assert [Path(ref.path).name for ref in listed] == ["a-0.tar", "a-1.tar", "b-x.tar"]
    assert [ref.index for ref in listed] == [0, 1, 2]
    assert len(list_shards(ShardsInput(shards=str(tmp_path / "*.tar")))) == 3  # one string: a glob
    with pytest.raises(UserError, match=r"input\.shards: 2 shard file\(s\) not found: .*c-\*\.tar"):
        list_shards(ShardsInput(shards=[str(tmp_path / "a-{0..2}.tar"), str(tmp_path / "c-*.tar")]))
    source = {"kind": "webdataset", "shards": ["rel/{0..1}.tar", "x/*.tar"]}
    recipe = make_recipe(tmp_path, source, [{"kind": "exact_dedup"}])
    absolute = curate.absolute_paths(recipe).input.shards  # worker processes may run in another folder
    assert absolute == [str(Path.cwd() / "rel/{0..1}.tar"), str(Path.cwd() / "x/*.tar")]


# --------------------------------------------------------------------------- a cut tar: one accounting
def cut_points(path: Path) -> dict[str, int]:
    """Byte offsets to cut the shard at: inside and at the end of each member's header and data."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    points = {}
    for m in members[3:9]:  # the second and third samples: a cut before, inside and after each member
        points[f"{m.name}:header"] = m.offset + 100
        points[f"{m.name}:data"] = m.offset_data + max(1, m.size // 2)
        points[f"{m.name}:end"] = m.offset_data + m.size
    return points


@pytest.mark.parametrize("extras", [("json",), ()], ids=["with-json", "png-txt-only"])
def test_a_cut_tar_is_counted_as_data_check_counts_it(tmp_path: Path, extras: tuple[str, ...]) -> None:
    write_tar(tmp_path / "full.tar", ["s0", "s1", "s2", "s3"], extras)
    data = (tmp_path / "full.tar").read_bytes()
    for where, offset in cut_points(tmp_path / "full.tar").items():
        cut = tmp_path / "cut.tar"
        cut.write_bytes(data[:offset])
        index = scan_shard(cut)
        samples, _ = read_samples(ShardRef(0, str(cut)), ShardsInput(shards=str(cut)))
        checked = sorted(d.key for d in index.dropped if d.reason == "truncated")
        curated = sorted(s.key for s in samples if s.error == "truncated")
        assert curated == checked, where
        assert [s.key for s in samples if not s.error] == [s[0] for s in index.samples], where
        assert len(samples) == len(index.samples) + len(index.dropped), where


# ------------------------------------------------------------------------------ folder input rows
def test_folder_input_counts_rows_leading_outside_and_lines_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "in.png").write_bytes(png(10))
    (tmp_path / "out.png").write_bytes(png(200))
    (root / "link.png").symlink_to(tmp_path / "out.png")
    rows = [json.dumps({"image": n, "caption": "c"}).encode() for n in ("in.png", "../out.png", "link.png")]
    (root / "captions.jsonl").write_bytes(b"\n".join([*rows, b'{"image": "in.png", "caption": "\xff"}']))
    for allow, expected in ((False, ["", "unsafe_path", "unsafe_path"]), (True, ["", "", ""])):
        cfg = FolderInput(path=root, allow_outside=allow)
        (ref,) = list_shards(cfg)
        samples, _ = read_samples(ref, cfg)
        assert [s.error for s in samples] == [*expected, "caption_not_utf8"]
        assert [s.key for s in samples][-1] == "line 4"
        read = [s.image for s in samples if s.image is not None]
        assert (png(200) in read) is allow  # the outside file is opened only when the recipe allows it


# ------------------------------------------------------------------------------------- pre-flight
def hostile_recipe(tmp_path: Path, **extra: Any) -> Any:
    write_tar(tmp_path / "pool.tar", ["s0", "s1"])
    missing = tmp_path / "missing"
    steps = [
        {"kind": "datacomp_text", "vocabulary_file": str(missing / "vocab.txt")},
        {"kind": "datacomp_image", "target_images": str(missing / "targets")},
        {"kind": "metaclip_balance", "vocabulary_file": str(missing / "entries.txt")},
        {"kind": "text_spotting", "detector": {"kind": "east", "model": str(missing / "east.pb")}},
        {"kind": "recaption", "captioner": {"kind": "python", "target": "no_such_module:factory"}},
        {
            "kind": "caption_agreement",
            "threshold": 0.5,
            "captioner": {"kind": "run", "run": str(missing / "coca-run")},
        },
    ]
    model = {"kind": "open_clip", "arch": "tiny", "checkpoint": str(missing / "w.pt")}
    source = {"kind": "webdataset", "shards": str(tmp_path / "pool.tar")}
    return make_recipe(tmp_path, source, steps, model=model, **extra)


EXPECTED = [  # (field named, the missing path) of each problem
    ("model.checkpoint", "w.pt"),
    ("steps.datacomp_text.vocabulary_file", "vocab.txt"),
    ("steps.datacomp_image.target_images", "targets"),
    ("steps.metaclip_balance.vocabulary_file", "entries.txt"),
    ("detector.model", "east.pb"),
    ("steps.recaption.captioner.target", "no_such_module"),
    ("steps.caption_agreement.captioner.run", "coca-run"),
]


def test_preflight_names_every_missing_input_at_once(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("not a curation")
    recipe = hostile_recipe(tmp_path)
    before = files_under(tmp_path)
    problems = curate.preflight(recipe)
    assert len(problems) == len(EXPECTED) + 1, [p.message for p in problems]
    for (field, path), problem in zip(EXPECTED, problems, strict=False):
        assert problem.message.startswith(field) and path in problem.message, problem.message
    assert "exists and is not a curation output folder" in problems[-1].message
    with pytest.raises(UserError, match=f"{len(problems)} problems"):
        curate.run(recipe, progress=False)
    assert files_under(tmp_path) == before  # neither check nor run created or changed anything


def test_preflight_checks_the_output_without_creating_it(tmp_path: Path) -> None:
    write_tar(tmp_path / "pool.tar", ["s0"])
    source = {"kind": "webdataset", "shards": str(tmp_path / "pool.tar")}
    steps = [{"kind": "caption_length", "min_words": 1}]
    recipe = make_recipe(tmp_path, source, steps)
    assert curate.preflight(recipe) == [] and not recipe.output.exists()
    curate.run(recipe, progress=False)
    assert curate.preflight(recipe) == []  # its own earlier curation: resumable
    assert [p.message for p in curate.preflight(recipe.model_copy(update={"seed": 3}))] == [
        f"output: {recipe.output} holds a curation of another recipe or input"
    ]
    (tmp_path / "file").write_text("x")
    (under_file,) = curate.preflight(recipe.model_copy(update={"output": tmp_path / "file" / "out"}))
    file = tmp_path / "file"
    assert under_file.message == f"output: {file} is a file, so {file / 'out'} cannot be created"


def test_run_scorer_needs_a_pretrain_run_with_a_checkpoint(tmp_path: Path) -> None:
    from vlmforge.config.curate_models import RunScorer
    from vlmforge.curate.preflight import check_scorer

    with pytest.raises(UserError, match=r"model\.path: .*nothing does not exist"):
        check_scorer(RunScorer(path=tmp_path / "nothing"))
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match=r"model\.path: .* is not a run directory"):
        check_scorer(RunScorer(path=run))
    shutil.copy(DEBUG_RECIPE, run / "recipe.yaml")  # a pretrain run that never saved a checkpoint
    with pytest.raises(UserError, match=r"model\.path: .*run: no checkpoint found"):
        check_scorer(RunScorer(path=run))
    with pytest.raises(UserError, match=r"model\.checkpoint: file not found: .*last\.ckpt"):
        check_scorer(RunScorer(path=run, checkpoint=run / "last.ckpt"))
    (run / "last.ckpt").write_bytes(b"weights")
    check_scorer(RunScorer(path=run, checkpoint=run / "last.ckpt"))  # found: loading it is run's job


@pytest.mark.skipif(importlib.util.find_spec("ffcv") is not None, reason="the ffcv extra is installed")
def test_an_ffcv_output_without_the_extra_is_a_preflight_problem(tmp_path: Path) -> None:
    write_tar(tmp_path / "pool.tar", ["s0"])
    source = {"kind": "webdataset", "shards": str(tmp_path / "pool.tar")}
    recipe = make_recipe(tmp_path, source, [{"kind": "exact_dedup"}], ffcv={"side": 32})
    (problem,) = curate.preflight(recipe)
    assert "ffcv" in problem.message and "pip install 'vlmforge[ffcv]'" in (problem.hint or "")
