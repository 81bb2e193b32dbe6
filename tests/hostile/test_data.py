"""Hostile data through the real CLI: a folder source whose captions file points outside the folder or holds
a line that is not UTF-8, a curate recipe naming files that do not exist, ``--write ffcv`` without the
extra, a tar cut short, shard lists and globs, and ``data check`` on a folder. Each case asserts the exit
code, the message, that no traceback was printed and what is (not) on disk afterwards."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import last_json, run_cli
from tests.hostile.checks import files_under, leftovers, no_traceback

OUTSIDE_CAPTION = "a caption for a file outside the folder"


def png(width: int, height: int, shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 255 - shade, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def good_folder(folder: Path, n: int = 3) -> list[dict[str, str]]:
    """``n`` 24x24 images inside ``folder``; their caption rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (folder / f"in{i}.png").write_bytes(png(24, 24, 60 * i))
        rows.append({"image": f"in{i}.png", "caption": f"a small coloured square number {i}"})
    return rows


def write_tar(path: Path, keys: list[str]) -> None:
    """An img2dataset-layout shard: key.png (24x24) + key.txt per key."""
    with tarfile.open(path, "w") as tar:
        for n, key in enumerate(keys):
            for name, data in (
                (f"{key}.png", png(24, 24, 40 * n)),
                (f"{key}.txt", f"caption of {key}".encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def curate_recipe(path: Path, source: dict[str, Any], output: Path, **extra: Any) -> Path:
    """A model-free curation recipe (JSON is YAML) over ``source`` into ``output``."""
    recipe = {
        "name": "hostile",
        "input": source,
        "output": str(output),
        "steps": [{"kind": "caption_length", "min_words": 1}],
        **extra,
    }
    path.write_text(json.dumps(recipe))
    return path


def data_check(cwd: Path, data: dict[str, Any]) -> Any:
    """``vlmforge data check -c debug/clip-tiny data=DATA --format json``."""
    return run_cli(
        "data", "check", "-c", "debug/clip-tiny", f"data={json.dumps(data)}", "--format", "json", cwd=cwd
    )


def output_texts(output: Path) -> list[str]:
    """Every caption written to the output shards."""
    texts = []
    for shard in sorted((output / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".txt"):
                    texts.append(tar.extractfile(member).read().decode())  # type: ignore[union-attr]
    return texts


def read_stage(output: Path) -> dict[str, Any]:
    return json.loads((output / "report.json").read_text())["stages"][0]


# ------------------------------------------------------------------ 1. paths leading out of the folder
def escaping_folder(tmp_path: Path) -> Path:
    """A folder whose captions name three files outside it: '../outside.png', '/etc/passwd' and a symlink
    to the outside file; the outside image is 77x55, so reading it would show in the image sizes."""
    folder = tmp_path / "data"
    rows = good_folder(folder)
    (tmp_path / "outside.png").write_bytes(png(77, 55, 200))
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    rows += [
        {"image": "../outside.png", "caption": OUTSIDE_CAPTION},
        {"image": "/etc/passwd", "caption": OUTSIDE_CAPTION},
        {"image": "link.png", "caption": OUTSIDE_CAPTION},
    ]
    write_rows(folder / "captions.jsonl", rows)
    return folder


def test_folder_entries_leading_outside_are_counted_never_read(tmp_path: Path) -> None:
    folder = escaping_folder(tmp_path)
    data = {"kind": "folder", "path": str(folder), "image_size": 16}
    proc = data_check(tmp_path, data)
    no_traceback(proc.stderr)
    assert proc.returncode == 1, proc.stderr  # 3 of 6 bad: a run would stop
    report = last_json(proc.stdout)
    assert report["dropped"] == {"unsafe_path": 3} and report["kept"] == 3
    assert {d["key"] for d in report["bad_samples"]} == {"../outside.png", "/etc/passwd", "link.png"}
    assert report["image_width"]["max"] == 24  # the 77-pixel-wide outside image was never decoded
    assert "a run would stop" in proc.stderr

    # the explicit opt-in reads them: the outside image decodes, /etc/passwd is no image
    opted = data_check(tmp_path, data | {"allow_outside": True, "max_bad_fraction": 1.0})
    no_traceback(opted.stderr)
    assert opted.returncode == 0, opted.stderr
    report = last_json(opted.stdout)
    assert report["dropped"] == {"decode_error": 1} and report["image_width"]["max"] == 77


def test_curate_never_reads_outside_its_input_folder(tmp_path: Path) -> None:
    folder = escaping_folder(tmp_path)
    recipe = curate_recipe(tmp_path / "r.yaml", {"kind": "folder", "path": str(folder)}, tmp_path / "out")
    proc = run_cli("curate", "-c", str(recipe), "--format", "json", cwd=tmp_path)
    no_traceback(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    read = read_stage(tmp_path / "out")
    assert (read["in"], read["out"], read["dropped"]) == (6, 3, {"unsafe_path": 3})
    texts = output_texts(tmp_path / "out")
    assert len(texts) == 3 and OUTSIDE_CAPTION not in texts


# ------------------------------------------------------------------------ 2. a caption line not UTF-8
def test_a_non_utf8_caption_line_is_counted_not_a_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    rows = good_folder(folder)
    lines = [json.dumps(row).encode() for row in rows]
    lines.insert(1, b'{"image": "in0.png", "caption": "caf\xe9 au lait"}')  # Latin-1, not UTF-8
    (folder / "captions.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    proc = run_cli("data", "check", str(folder), "--format", "json", cwd=tmp_path)
    no_traceback(proc.stderr)
    assert proc.returncode == 1, proc.stderr  # 1 of 4 bad is above the default 1%
    report = last_json(proc.stdout)
    assert (report["entries"], report["kept"], report["dropped"]) == (4, 3, {"bad_caption": 1})
    (bad,) = report["bad_samples"]
    assert bad["key"] == "line 2" and "not UTF-8" in bad["detail"]

    recipe = curate_recipe(tmp_path / "r.yaml", {"kind": "folder", "path": str(folder)}, tmp_path / "out")
    curated = run_cli("curate", "-c", str(recipe), "--format", "json", cwd=tmp_path)
    no_traceback(curated.stderr)
    assert curated.returncode == 0, curated.stderr
    assert read_stage(tmp_path / "out")["dropped"] == {"caption_not_utf8": 1}
    assert sorted(output_texts(tmp_path / "out")) == sorted(row["caption"] for row in rows)


# ----------------------------------------------------------------- 3. every missing input named at once
def test_curate_names_every_missing_input_before_writing_anything(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_rows(folder / "captions.jsonl", good_folder(folder))
    output = tmp_path / "occupied"
    output.mkdir()
    (output / "notes.txt").write_text("someone else's file")
    steps = [
        {"kind": "clip_score", "threshold": 0.2},
        {"kind": "datacomp_image", "target_images": str(tmp_path / "no-targets")},
        {"kind": "metaclip_balance", "vocabulary_file": str(tmp_path / "no-metadata.txt")},
    ]
    recipe = curate_recipe(
        tmp_path / "r.yaml",
        {"kind": "folder", "path": str(folder)},
        output,
        model={"kind": "run", "path": str(tmp_path / "no-run")},
        steps=steps,
    )
    before = files_under(tmp_path)
    expected = ["model.path", "no-run", "no-targets", "no-metadata.txt", f"output: {output} exists"]
    for verb in ("validate", "curate"):
        proc = run_cli(verb, "-c", str(recipe), cwd=tmp_path)
        no_traceback(proc.stderr)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("error:") == 4, proc.stderr  # all four problems, in one go
        for text in expected:
            assert text in proc.stderr, (text, proc.stderr)
    assert files_under(tmp_path) == before and not leftovers(tmp_path)  # nothing created or changed


# ------------------------------------------------------------------------ 4. --write ffcv without ffcv
@pytest.mark.skipif(importlib.util.find_spec("ffcv") is not None, reason="the ffcv extra is installed")
def test_write_ffcv_without_the_extra_is_refused_before_curating(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_rows(folder / "captions.jsonl", good_folder(folder))
    recipe = curate_recipe(tmp_path / "r.yaml", {"kind": "folder", "path": str(folder)}, tmp_path / "out")
    proc = run_cli("curate", "-c", str(recipe), "--write", "ffcv", cwd=tmp_path)
    no_traceback(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert "ffcv" in proc.stderr and "pip install 'vlmforge[ffcv]'" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before any work
    section = run_cli("validate", "-c", str(recipe), "ffcv={side: 32}", cwd=tmp_path)
    assert section.returncode == 2 and "pip install 'vlmforge[ffcv]'" in section.stderr
    no_traceback(section.stderr)


# ----------------------------------------------------------------- 5. a tar cut short: one accounting
def test_curate_counts_the_cut_sample_of_a_truncated_tar_as_data_check_does(tmp_path: Path) -> None:
    write_tar(tmp_path / "full.tar", ["s0", "s1", "s2", "s3"])
    with tarfile.open(tmp_path / "full.tar") as tar:
        image = tar.getmember("s2.png")
    cut = tmp_path / "cut.tar"
    cut.write_bytes((tmp_path / "full.tar").read_bytes()[: image.offset_data + image.size // 2])

    check = run_cli("data", "check", str(cut), "--format", "json", cwd=tmp_path)
    no_traceback(check.stderr)
    assert check.returncode == 1, check.stderr  # 1 of 3 lost is above the default 1%
    checked = last_json(check.stdout)
    assert (checked["entries"], checked["kept"], checked["dropped"]) == (3, 2, {"truncated": 1})

    recipe = curate_recipe(tmp_path / "r.yaml", {"kind": "webdataset", "shards": str(cut)}, tmp_path / "out")
    proc = run_cli("curate", "-c", str(recipe), "--format", "json", cwd=tmp_path)
    no_traceback(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    read = read_stage(tmp_path / "out")
    assert (read["in"], read["out"], read["dropped"]) == (3, 2, {"truncated": 1})
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert (
        [(d["key"], d["reason"]) for d in dropped]
        == [(d["key"], d["reason"]) for d in checked["bad_samples"]]
        == [("s2", "truncated")]
    )


# ----------------------------------------------------------- 6. input.shards: lists, globs, brace ranges
def test_curate_input_shards_take_lists_globs_and_brace_ranges(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    for n, name in enumerate(["a-0", "a-1", "b-x", "b-y"]):
        write_tar(pool / f"{name}.tar", [f"{name}-{i}" for i in range(n + 1)])
    source = {"kind": "webdataset", "shards": [str(pool / "a-{0..1}.tar"), str(pool / "b-*.tar")]}
    recipe = curate_recipe(tmp_path / "r.yaml", source, tmp_path / "out")
    proc = run_cli("curate", "-c", str(recipe), "--format", "json", cwd=tmp_path)
    no_traceback(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert result["total"] == result["kept"] == 1 + 2 + 3 + 4
    assert [Path(s["input"]).name for s in result["shards"]] == ["a-0.tar", "a-1.tar", "b-x.tar", "b-y.tar"]

    glob_only = run_cli(
        "curate", "-c", str(recipe), "input.shards=pool/*.tar", "output=out-glob", "--format", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert glob_only.returncode == 0 and last_json(glob_only.stdout)["total"] == 10, glob_only.stderr

    none = run_cli(
        "curate", "-c", str(recipe), "input.shards=[pool/a-0.tar, pool/c-*.tar]", "output=o", cwd=tmp_path
    )
    no_traceback(none.stderr)
    assert none.returncode == 2 and "input.shards" in none.stderr and "c-*.tar" in none.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- 7. data check on a folder
def test_data_check_reads_a_folder_source(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    rows = good_folder(folder, n=4)
    (folder / "broken.png").write_bytes(b"not an image")
    write_rows(folder / "captions.jsonl", [*rows, {"image": "broken.png", "caption": "a broken file"}])
    before = files_under(tmp_path)

    by_recipe = data_check(tmp_path, {"kind": "folder", "path": "data", "image_size": 16})
    by_path = run_cli("data", "check", "data", "--format", "json", cwd=tmp_path)
    for proc in (by_recipe, by_path):
        no_traceback(proc.stderr)
        assert proc.returncode == 1, proc.stderr  # 1 of 5 bad
        report = last_json(proc.stdout)
        assert (report["entries"], report["kept"], report["dropped"]) == (5, 4, {"decode_error": 1})
        assert [(s["entries"], s["kept"], s["dropped"]) for s in report["shards"]] == [(5, 4, 1)]
        assert report["shards"][0]["shard"].endswith("data")
        assert report["caption_words"]["max"] == 6 and report["image_width"]["max"] == 24
    assert files_under(tmp_path) == before  # a check writes nothing

    table = run_cli("data", "check", "data", cwd=tmp_path)
    assert table.returncode == 1 and "broken.png" in table.stdout and "decode_error" in table.stdout
    no_traceback(table.stderr)
