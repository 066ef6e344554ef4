"""The capture loop every command runs: until the duration ends or SIGINT/SIGTERM arrives.

A signal only ends the loop; the caller then drains and writes what was gathered.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class StopOnSignal:
    """While active, SIGINT and SIGTERM set `stopped` instead of killing the process.

    A second SIGINT falls back to the default (KeyboardInterrupt), for a stuck run.
    """

    def __init__(self):
        self.stopped = False
        self.signal_name = ""
        self._saved = {}
        self._event = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; wake at once when a signal arrives."""
        return self._event.wait(timeout)

    def _handle(self, signum, _frame):
        self.stopped = True
        self._event.set()
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False


def run_capture(step: Callable[[], None], duration_s: float | None, console: Console,
                stop: StopOnSignal, status: Callable[[], str] = lambda: "",
                label: str = "capturing") -> None:
    """Call `step` (which blocks briefly, e.g. a 100 ms poll) until the duration ends or
    `stop` is signalled; show progress on a terminal."""
    start = time.monotonic()
    deadline = start + duration_s if duration_s else None
    progress = None
    if console.is_terminal:
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                            console=console, transient=True)
        task = progress.add_task(label, total=duration_s or None, status="")
        progress.start()
    try:
        while not stop.stopped and (deadline is None or time.monotonic() < deadline):
            step()
            if progress:
                progress.update(task, completed=time.monotonic() - start, status=status())
    finally:
        if progress:
            progress.stop()
