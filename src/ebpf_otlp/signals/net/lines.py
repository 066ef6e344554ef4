"""trace-net's line per connection (in the spirit of tcplife), printed by a thread of its own.

The loop that reads the ring buffer only hands connections over: a terminal slower than
the connections (a busy server makes thousands a second) must never hold it up, or the
ring fills and connections are lost. What the terminal cannot take in time is left out
and said so in a line ("N connections not shown"); every connection is still in the
summary, the JSON lines and the spans.
"""

from __future__ import annotations

import collections
import os
import threading
import time

from rich.console import Console

from ebpf_otlp.signals.net.table import HEADER, line
from ebpf_otlp.signals.net.records import Connection

BOLD, RED, RESET = "\x1b[1m", "\x1b[31m", "\x1b[0m"


class ConnectionLines:
    """A line is written at most `max_delay_s` after its connection was handed over (the
    drain that read it); older lines are counted, not written. So the terminal runs at
    most that far behind, and the end waits for it no longer than that."""

    BATCH = 512

    def __init__(self, console: Console, max_delay_s: float = 1.0):
        self._fd = console.file.fileno()   # the real stdout: not a progress display's proxy
        self._color = console.is_terminal and console.color_system is not None
        self.max_delay_s = max_delay_s
        self.not_shown = 0
        self._chunks: collections.deque = collections.deque()   # [handed-over time, connections]
        self._closing = False
        self._header = True
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="connection-lines", daemon=True)
        self._thread.start()

    def add(self, connections: list[Connection]) -> None:
        """Never blocks, whatever the terminal does."""
        if connections:
            with self._cond:
                self._chunks.append([time.monotonic(), list(connections)])
                self._cond.notify()

    @property
    def waiting(self) -> int:
        """Lines handed over, not yet written."""
        with self._cond:
            return sum(len(c[1]) for c in self._chunks)

    def close(self) -> None:
        """Write what is still due (for at most max_delay_s), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _next(self) -> tuple[list[Connection], int]:
        """The next lines to write, and how many before them are too late to write."""
        with self._cond:
            while not self._chunks and not self._closing:
                self._cond.wait()
            late = 0
            now = time.monotonic()
            while self._chunks and now - self._chunks[0][0] > self.max_delay_s:
                late += len(self._chunks.popleft()[1])
            if not self._chunks:
                return [], late
            chunk = self._chunks[0][1]
            batch, chunk[:] = chunk[:self.BATCH], chunk[self.BATCH:]
            if not chunk:
                self._chunks.popleft()
            return batch, late

    def _run(self) -> None:
        while True:
            batch, late = self._next()
            self.not_shown += late
            if not batch and not late:
                return   # closing, and nothing is left
            text = "".join(self._text(c) for c in batch)
            if late:
                text = self._styled(f"... {late} connections not shown: the terminal fell behind "
                                    "(all are in the summary, -o and the spans)", BOLD) + text
            try:
                self._write(text)
            except OSError:   # the terminal went away (a closed pipe): nothing more is shown
                with self._cond:
                    self.not_shown += sum(len(c[1]) for c in self._chunks)
                    self._chunks.clear()
                    self._closing = True

    def _text(self, c: Connection) -> str:
        out = ""
        if self._header:
            self._header = False
            out = self._styled(HEADER, BOLD)
        return out + self._styled(line(c), RED if c.failed else "")
    def _styled(self, text: str, style: str) -> str:
        return f"{style}{text}{RESET}\n" if style and self._color else text + "\n"

    def _write(self, text: str) -> None:
        data = text.encode(errors="replace")
        while data:
            data = data[os.write(self._fd, data):]
