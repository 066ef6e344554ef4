"""Kernel symbols from /proc/kallsyms (root sees real addresses), and the kernel's build ID
from /sys/kernel/notes (what perf and pprof match a vmlinux or debuginfo by)."""

from __future__ import annotations

import bisect
import struct
import threading
from array import array

NT_GNU_BUILD_ID = 3
_NOTE = struct.Struct("=III")   # namesz, descsz, type: the kernel's own byte order


def build_id_from_notes(notes: bytes) -> str:
    """The GNU build ID (hex) in a run of ELF notes, as /sys/kernel/notes holds the kernel
    image's; "" if there is none."""
    at = 0
    while at + _NOTE.size <= len(notes):
        namesz, descsz, kind = _NOTE.unpack_from(notes, at)
        name_at = at + _NOTE.size
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if desc_at + descsz > len(notes):
            break
        if kind == NT_GNU_BUILD_ID and notes[name_at:name_at + namesz].rstrip(b"\0") == b"GNU":
            return notes[desc_at:desc_at + descsz].hex()
        at = end
    return ""


def kernel_build_id(path: str = "/sys/kernel/notes") -> str:
    try:
        with open(path, "rb") as f:
            return build_id_from_notes(f.read())
    except OSError:
        return ""


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms", notes: str = "/sys/kernel/notes"):
        self.path = path
        self.build_id = kernel_build_id(notes)
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
