"""Progress of a curation pass on stderr: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class PassProgress:
    """Shards done and samples/s of one pass (measure or write)."""

    def __init__(self, title: str, shards: int, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.title, self.shards, self.every_s = title, shards, every_s
        self.stream = stream or sys.stderr
        self.done = self.samples = 0
        self.started = self._printed = time.perf_counter()
        self._bar: Any = None
        if shards and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"[bold]{title}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("shards  {task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._task = self._bar.add_task(title, total=shards, rate="")
            self._bar.start()

    @property
    def rate(self) -> float:
        return self.samples / max(time.perf_counter() - self.started, 1e-9)

    def update(self, samples: int) -> None:
        self.done += 1
        self.samples += samples
        rate = f"{self.samples} samples, {self.rate:,.0f} samples/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=rate)
            return
        now = time.perf_counter()
        if self.done == self.shards or now - self._printed >= self.every_s:
            self._printed = now
            print(
                f"curate {self.title}: {self.done}/{self.shards} shards, {rate}", file=self.stream, flush=True
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
