"""One process trains a run directory at a time: ``<run>/.lock`` names its holder (host, PID, the PID's
start time), created exclusively (``O_EXCL``, which shared filesystems honour too) and removed when the
process exits. A lock whose process is gone from this host (killed with -9, a crashed node rebooted) is
stale and taken over; a lock held from another host is refused with its holder named."""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError

LOCK = ".lock"


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc): tells a live holder from a new process
    that reused its PID. None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process named by a lock on this host still runs (and is the same process)."""
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except (OverflowError, ValueError):
        return False
    started = holder.get("started")
    return started is None or process_start(pid) in (None, started)


def _holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_start(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def lock_run_dir(run_dir: Path) -> None:
    """Take the run directory's lock for this process (released at exit), or refuse naming the holder."""
    path = run_dir / LOCK
    me = _holder()
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                return  # already ours
            if holder.get("host") == me["host"] and not _alive(holder):
                path.unlink(missing_ok=True)  # its process is gone: stale
                continue
            raise UserError(
                f"{run_dir} is being trained by another process (pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {holder.get('since')})",
                hint=f"wait for it to finish, or stop it; if it is surely gone (another host), delete {path}",
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(me) + "\n")
        atexit.register(release_run_dir, run_dir)
        return
    raise UserError(f"{path}: could not take the lock", hint="check that the folder is writable")


def release_run_dir(run_dir: Path) -> None:
    """Remove the lock if this process holds it."""
    path = run_dir / LOCK
    holder = _read(path)
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # being written right now, or damaged: nobody identifiable
    return data if isinstance(data, dict) else {}
