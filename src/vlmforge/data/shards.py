"""Finding WebDataset tar shards and indexing them: one pass over the tar headers per shard, cached.

The index records, per sample, where its image bytes lie in the shard (offset, size) and its caption,
so that a sample is later read with one ``pread`` and the data can be indexed by position (see
``webds``). Pairing problems are found here: an image without a caption, a caption without an image,
an empty or non-UTF-8 caption, a member cut off by the end of the file. Members with absolute paths,
``..`` components, links or device files are refused: the shard is rejected as a whole.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vlmforge.data.accounting import Drop
from vlmforge.errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXT = "txt"
INDEX_VERSION = 1
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's rule: key = up to the first dot


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion with the ``braceexpand`` package webdataset uses: ``{000..012}``
    (zero-padded), ``{a,b}``, nesting; ``{x}`` stays literal."""
    from braceexpand import braceexpand

    return list(braceexpand(pattern))


def resolve_shards(patterns: list[str], field: str = "data.shards") -> list[Path]:
    """Every shard file the patterns (paths, brace ranges, globs) name, in order; a missing file or an
    empty glob is an error naming ``field``, the recipe field the patterns come from."""
    found: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        for name in expand_braces(pattern):
            if glob.has_magic(name):
                matches = sorted(glob.glob(name))
                found += [Path(m) for m in matches]
                missing += [] if matches else [name]
            elif Path(name).is_file():
                found.append(Path(name))
            else:
                missing.append(name)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(
            f"{field}: {len(missing)} shard file(s) not found: {shown}",
            hint="check the path and brace range, e.g. 'shards/{00000..00009}.tar' (quote it in a shell)",
        )
    if not found:
        raise UserError(f"{field}: no shard files given", hint=f"e.g. {field}='shards/*.tar'")
    return found


@dataclass
class ShardIndex:
    """A shard's usable samples as ``(key, image_ext, offset, size, caption)`` and its dropped entries."""

    path: Path
    samples: list[tuple[str, str, int, int, str]] = field(default_factory=list)
    dropped: list[Drop] = field(default_factory=list)


def _check_member(shard: Path, member: tarfile.TarInfo) -> None:
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", member.name):
        raise UserError(
            f"{shard}: member {member.name!r} has an absolute path or '..'; the shard is refused",
            hint="rebuild the shard with relative member names (img2dataset writes key.jpg, key.txt)",
        )
    if not (member.isfile() or member.isdir()):
        raise UserError(
            f"{shard}: member {member.name!r} is a link or special file; the shard is refused",
            hint="shards hold regular files only: rebuild it without links",
        )


def _open_tar(path: Path) -> tarfile.TarFile:
    with path.open("rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            raise UserError(
                f"{path}: compressed shards cannot be read by offset",
                hint="store shards as plain .tar (img2dataset's default), e.g. gunzip them first",
            )
    try:
        return tarfile.open(path, "r:")
    except tarfile.ReadError as exc:
        raise UserError(
            f"{path}: not a readable tar file ({exc})", hint="is this a WebDataset shard?"
        ) from None


def scan_shard(path: Path) -> ShardIndex:
    """Read a shard's headers and captions (image bytes are skipped) into its index."""
    file_size = path.stat().st_size
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    index = ShardIndex(path)
    with _open_tar(path) as tar:
        last_key = None
        try:
            for member in tar:
                _check_member(path, member)
                if member.isdir():
                    continue
                match = _KEY_EXT.match(member.name)
                key, ext = (match.group(1), match.group(2).lower()) if match else (member.name, "")
                members.setdefault(key, {}).setdefault(ext, member)
                last_key = key
        except tarfile.ReadError as exc:  # the file ends inside a header or a member
            group = members.get(last_key, {}) if last_key is not None else {}
            detail = f"the tar ends at byte {file_size} ({exc}); any later samples are lost"
            drop = cut_drop(path, last_key, group, detail)
            members.pop(drop.key, None)  # an unpaired last key is the sample that was cut
            index.dropped.append(drop)
        for key, group in members.items():
            _index_sample(tar, path, file_size, key, group, index)
    return index


def cut_drop(path: Path | str, last_key: str | None, extensions: Iterable[str], detail: str) -> Drop:
    """The one sample a tar cut short is counted as losing (``truncated``): the last key when the cut fell
    before its image and caption were both reached, else a placeholder after it (the samples that
    followed). ``extensions``: the members of the last key whose headers were read. ``vlmforge data
    check``, training and curation all count a cut tar this way."""
    seen = set(extensions)
    paired = CAPTION_EXT in seen and any(e in seen for e in IMAGE_EXTS)
    lost = f"(after {last_key})" if paired else (last_key or "(start)")
    return Drop(str(path), lost, "truncated", detail)


def _index_sample(
    tar: tarfile.TarFile,
    path: Path,
    file_size: int,
    key: str,
    group: dict[str, tarfile.TarInfo],
    index: ShardIndex,
) -> None:
    image_ext = next((e for e in IMAGE_EXTS if e in group), None)
    caption = group.get(CAPTION_EXT)
    if image_ext is None or caption is None:
        what = "no image (.jpg/.jpeg/.png/.webp)" if image_ext is None else "no caption (.txt)"
        index.dropped.append(
            Drop(str(path), key, "missing_pair", f"{what}; members: {', '.join(sorted(group))}")
        )
        return
    image = group[image_ext]
    cut = [m.name for m in (image, caption) if m.offset_data + m.size > file_size]
    if cut:
        index.dropped.append(
            Drop(str(path), key, "truncated", f"{', '.join(cut)} runs past the end of the file")
        )
        return
    raw = tar.extractfile(caption).read()  # type: ignore[union-attr]
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        index.dropped.append(
            Drop(str(path), key, "bad_caption", f"not UTF-8 ({exc.reason} at byte {exc.start})")
        )
        return
    if not text:
        index.dropped.append(Drop(str(path), key, "bad_caption", "empty caption"))
        return
    index.samples.append((key, image_ext, image.offset_data, image.size, text))


def cache_dir() -> Path:
    """Where shard indexes are kept: ``$VLMFORGE_CACHE/shard-index`` (default ~/.cache/vlmforge)."""
    root = Path(os.environ.get("VLMFORGE_CACHE", Path.home() / ".cache" / "vlmforge"))
    return root / "shard-index"


def index_shard(path: Path) -> ShardIndex:
    """The shard's index from the cache when the file is unchanged (same size and mtime), else a scan."""
    resolved = path.resolve()
    stat = resolved.stat()
    stamp = {
        "version": INDEX_VERSION,
        "path": str(resolved),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    cached = cache_dir() / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:24]}.json"
    if cached.is_file():
        try:
            saved = json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("stamp") == stamp:
            return ShardIndex(
                path,
                [tuple(s) for s in saved["samples"]],  # type: ignore[misc]
                [Drop(str(path), **{k: v for k, v in d.items() if k != "shard"}) for d in saved["dropped"]],
            )
    index = scan_shard(path)
    payload = {"stamp": stamp, "samples": index.samples, "dropped": [d.to_json() for d in index.dropped]}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, cached)  # atomic: ranks indexing the same shard never see a torn file
    except OSError:  # a read-only cache only costs a rescan next time
        pass
    return index
