"""Snapshots of /proc/PID/maps, taken while a process lives so it symbolizes after it exits
(with the container it ran in, which is gone with it too, and its vDSO's image, which no
file holds)."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from ebpf_otlp.records import HOST, ContainerInfo
from ebpf_otlp.runtime.processes import container_of

VDSO = "[vdso]"


@dataclass(frozen=True)
class MapEntry:
    start: int
    end: int
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    @property
    def file_key(self) -> tuple[str, int]:
        return (self.dev, self.inode)


def parse_maps(text: str) -> list[MapEntry]:
    """Executable mappings from the text of /proc/PID/maps, sorted by start."""
    entries = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or "x" not in parts[1]:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        path = parts[5].strip() if len(parts) > 5 else ""
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        entries.append(MapEntry(start, end, int(parts[2], 16), parts[3], int(parts[4]), path))
    entries.sort(key=lambda e: e.start)
    return entries


def read_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


@dataclass
class ProcessSnapshot:
    pid: int
    name: str                 # the process's comm (thread group leader)
    exe: str
    entries: list[MapEntry]
    container: ContainerInfo = HOST
    vdso: bytes = b""         # the [vdso] mapping's ELF image, b"" if unread

    def __post_init__(self):
        self._starts = [e.start for e in self.entries]

    def find(self, addr: int) -> MapEntry | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.entries[i].end:
            return self.entries[i]
        return None


def read_vdso(pid: int | str, entries: list[MapEntry]) -> bytes:
    """The image of the process's [vdso] mapping, from its memory; b"" if it has none or
    it cannot be read (gone, or ptrace rules)."""
    entry = next((e for e in entries if e.path == VDSO), None)
    if entry is None:
        return b""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            return os.pread(mem.fileno(), entry.end - entry.start, entry.start)
    except (OSError, OverflowError):
        return b""


def own_vdso() -> bytes:
    """This process's vDSO image (the kernel maps the same one into every 64-bit process)."""
    try:
        with open("/proc/self/maps") as f:
            return read_vdso("self", parse_maps(f.read()))
    except OSError:
        return b""


def snapshot(pid: int) -> ProcessSnapshot | None:
    """Read a live process's maps; None once it is gone."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            entries = parse_maps(f.read())
    except OSError:
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    name = read_comm(pid) or os.path.basename(exe) or str(pid)
    return ProcessSnapshot(pid, name, exe.removesuffix(" (deleted)"), entries, container_of(pid),
                           read_vdso(pid, entries))
