"""Run a saved training recipe as its own ``vlmforge <verb>`` process, as a user or a launch script would.

A sweep trains its children this way, one after another: each child gets a fresh interpreter (its own
seeding, devices and memory, nothing left over from the previous child) and exactly the code path of
``vlmforge pretrain|finetune|align``. SIGTERM and SIGINT sent to the parent are passed on to the child,
which saves a checkpoint and exits 143 / 130; the parent then stops too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

# The training commands' exit codes (cli/vlmforge_cli/common.py), read back as run outcomes.
STATUS_OF_EXIT = {0: "completed", 3: "diverged", 130: "interrupted", 143: "preempted"}
STOPPING = ("interrupted", "preempted")  # the user or the scheduler asked everything to stop


def train_command(verb: str, recipe_path: Path) -> list[str]:
    """The command that trains ``recipe_path``, resuming its newest unfinished run if there is one."""
    return [sys.executable, "-m", "vlmforge_cli", verb, "-c", str(recipe_path), "--resume", "auto", "--yes"]


@contextmanager
def _forwarding_signals(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """While ``child`` runs, SIGTERM and SIGINT received here are sent on to it (it checkpoints)."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_recipe_process(verb: str, recipe_path: Path, log_path: Path) -> str:
    """Train ``recipe_path`` with ``vlmforge <verb>`` in a child process; its stdout and stderr go to
    ``log_path`` (appended: a resumed child keeps its earlier attempts' lines) and to this stderr.
    Returns the outcome: completed, diverged, interrupted, preempted or failed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # its own process group: a Ctrl-C at the terminal reaches it once, through this process (a
        # second SIGINT would abort it without a checkpoint)
        child = subprocess.Popen(
            train_command(verb, recipe_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        with _forwarding_signals(child):
            assert child.stdout is not None
            for line in child.stdout:
                log.write(line)
                log.flush()
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
            code = child.wait()
    return STATUS_OF_EXIT.get(code, "failed")
