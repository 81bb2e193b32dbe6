"""A folder that behaves as a small device: its usage is the size of the files under it, and a write through
Python's ``open`` that would go past the capacity writes what fits, then raises ``OSError(ENOSPC)`` as a
full disk does. Writes by C/C++/Rust code that opens files itself are not seen."""

from __future__ import annotations

import errno
import io
import os
from typing import Any


def used_bytes(root: str) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed while walking
                continue
    return total


class SmallDisk:
    def __init__(self, root: str | os.PathLike[str], capacity: int, real_open: Any = io.open) -> None:
        self.root, self.capacity, self._open = os.path.realpath(root), capacity, real_open

    def holds(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        """``open`` (and ``io.open``), seeing writes to files under the root."""
        handle = self._open(file, mode, *args, **kwargs)
        if isinstance(file, int) or not any(flag in mode for flag in "wax+"):
            return handle
        path = os.path.realpath(os.fspath(file))
        return _OnSmallDisk(handle, path, self) if self.holds(path) else handle


class _OnSmallDisk:
    """A file opened for writing on the small device: each write first checks the space left."""

    def __init__(self, handle: Any, path: str, disk: SmallDisk) -> None:
        self._handle, self._path, self._disk = handle, path, disk

    def write(self, data: Any) -> int:
        self._handle.flush()
        free = self._disk.capacity - used_bytes(self._disk.root)
        size = len(data.encode("utf-8")) if isinstance(data, str) else memoryview(data).nbytes
        if size > free:
            if free > 0:
                self._handle.write(data[:free])
                self._handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        return self._handle.write(data)

    def __enter__(self) -> _OnSmallDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __iter__(self) -> Any:
        return iter(self._handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)
