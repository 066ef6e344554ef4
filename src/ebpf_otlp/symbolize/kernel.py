"""Kernel symbols from /proc/kallsyms (root sees real addresses)."""

from __future__ import annotations

import bisect
import threading


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms"):
        self.path = path
        self._starts: list[int] | None = None   # set last: not None means ready
        self._names: list[str] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        """Parse kallsyms now (once; e.g. in a thread while BPF compiles)."""
        with self._lock:
            if self._starts is None:
                self._load()

    def _load(self) -> None:
        entries = []
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        addr = int(parts[0], 16)
                        if addr:
                            entries.append((addr, parts[2]))
        except OSError:
            pass
        entries.sort()
        self._names = [n for _, n in entries]
        self._starts = [a for a, _ in entries]

    def lookup(self, addr: int) -> str | None:
        if self._starts is None:
            self.load()
        i = bisect.bisect_right(self._starts, addr) - 1
        return self._names[i] if i >= 0 else None
