"""Transfer progress on stderr (bytes, rate, time left): rich bars on a terminal, plain lines in a pod's log;
thread-safe, since boto3 reports from its worker threads."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from strata.release.stores import Advance

Start = Callable[[str, int], Advance]
LOGGED = 1 << 20  # in a log, files under 1 MiB get no line
STEPS = 10  # and files over 64 MiB a line every 10%
BIG = 64 << 20


@contextmanager
def transfers(enabled: bool = True) -> Iterator[Start]:
    """Yield start(description, total_bytes) -> advance(n_bytes); disabled, it yields no-op bars."""
    if not enabled:
        yield lambda description, total: (lambda n: None)
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda description, total: _LogLine(_stderr_line, description, total)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(bar_width=24), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:

        def start(description: str, total: int) -> Advance:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        yield start


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _LogLine:
    """advance(n) for a log: `pull model/x.gguf: 1.0/4.0 GB (25%), 85.3 MB/s` at each step and at the end."""

    def __init__(self, emit: Callable[[str], None], description: str, total: int) -> None:
        self.emit, self.description, self.total = emit, description, total
        self.done, self.shown, self.started, self.lock = 0, 0, time.monotonic(), threading.Lock()
        self.step = max(1, total // STEPS) if total >= BIG else total

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.total < LOGGED or (self.done - self.shown < self.step and self.done < self.total):
                return
            self.shown = self.done
            rate = self.done / max(time.monotonic() - self.started, 1e-6)
            self.emit(f"{self.description}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB "
                      f"({100 * self.done / max(self.total, 1):.0f}%), {rate / 1e6:.1f} MB/s")
