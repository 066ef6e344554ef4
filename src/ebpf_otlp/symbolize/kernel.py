"""Kernel symbols from /proc/kallsyms (root sees real addresses)."""

from __future__ import annotations

import bisect
import threading
from array import array


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms"):
        self.path = path
        self._starts: array | None = None   # set last: not None means ready
        self._names = ""                      # every name, each followed by a newline
        self._ends = array("I")               # where each name's newline ends
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
        # Compact: 120k kernel functions as lists of Python ints and strs take ~15 MB; as
        # one string and two arrays, ~4 MB, for the agent's whole life.
        names = "".join(n + "\n" for _, n in entries)
        ends = array("I")
        pos = 0
        for _, n in entries:
            pos += len(n) + 1
            ends.append(pos)
        self._names, self._ends = names, ends
        self._starts = array("Q", (a for a, _ in entries))

    def lookup(self, addr: int) -> str | None:
        if self._starts is None:
            self.load()
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        return self._names[self._ends[i - 1] if i else 0:self._ends[i] - 1]
