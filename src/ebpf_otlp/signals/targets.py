"""Which processes a collector traces, in one place for every collector and both sides
(bpf/lib/targets.inc): the pid filter and what it forks, the command-name filter,
ebpf-otlp's own processes (left out unless asked), and the pid namespace whose ids the
user gives and reads.
"""

from __future__ import annotations

import functools
import os
import struct
import ctypes as ct
from dataclasses import dataclass, field

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime.processes import COMM_MAX

MAX_PIDS = 4096              # named targets
MAX_PIDS_FOLLOWED = 65536    # launch mode: what the targets fork joins them
MAX_SELF = 4096              # ebpf-otlp and its helper processes (and their threads)
TRACED, WAITS_FOR_EXEC = 1, 2  # pid_filter values: launch mode traces from the exec
INIT_PID_NS = 0xEFFFFFFC     # PROC_PID_INIT_INO: the host's pid namespace

TASK_FIELDS = {"OFF_TASK_GROUP_LEADER": "task_struct.group_leader",
               "OFF_TASK_COMM": "task_struct.comm", "OFF_TASK_PID": "task_struct.pid",
               "OFF_TASK_THREAD_PID": "task_struct.thread_pid",
               "OFF_PID_LEVEL": "pid.level", "OFF_PID_NUMBERS": "pid.numbers"}


def comm_words(comm: str) -> tuple[int, int]:
    """The name as the kernel stores it (TASK_COMM_LEN bytes, NUL padded), as two u64."""
    raw = comm.encode()[:COMM_MAX].ljust(COMM_MAX + 1, b"\0")
    return struct.unpack("<QQ", raw)


@functools.cache
def task_offsets() -> dict[str, int]:
    """task_struct and struct pid fields at the running kernel's offsets (read once)."""
    from ebpf_otlp.runtime.btf import kernel_offsets

    try:
        found = kernel_offsets(TASK_FIELDS, sizes={"SIZEOF_UPID": "upid"})
    except OSError as e:
        raise AgentError(f"cannot read the kernel's BTF ({e.strerror}: /sys/kernel/btf/vmlinux): "
                         "needed for task_struct (CONFIG_DEBUG_INFO_BTF)") from None
    except KeyError as e:
        raise AgentError(f"cannot name processes as their pid namespace does: {e.args[0]}") from None
    return found


@functools.cache
def pid_namespace() -> tuple[int, int] | None:
    """(dev, inode) of ebpf-otlp's pid namespace when it is not the host's, else None.

    Pids the user gives and reads are this namespace's (its /proc), so the kernel side
    translates; a /proc that belongs to another namespace cannot be matched up."""
    st = os.stat("/proc/self/ns/pid")
    if st.st_ino == INIT_PID_NS:
        return None
    if os.readlink("/proc/self") != str(os.getpid()):
        raise AgentError("ebpf-otlp runs in a pid namespace but /proc belongs to another one: "
                         "mount this namespace's /proc (unshare --pid --fork --mount-proc) or "
                         "run in the host's")
    return st.st_dev, st.st_ino


def own_processes() -> set[int]:
    """ebpf-otlp's process and every process descended from it (unwind-table builders), to
    leave out. Read from every process's parent in /proc/*/stat: the per-thread `children`
    files can miss a child forked while they are read (proc(5) says they are not reliable)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue   # gone meanwhile
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += parents.get(pid, [])
    return found


@dataclass
class Targets:
    """What a collector's program traces. Empty pids: every process (but ebpf-otlp's own,
    unless include_self). follow_forks is launch mode: the pids are held commands, traced
    from their exec on, with all they fork."""
    pids: list[int] = field(default_factory=list)
    comm: str | None = None
    follow_forks: bool = False
    include_self: bool = False

    @property
    def exclude_self(self) -> bool:
        return not self.pids and not self.include_self

    def defines(self) -> dict[str, object]:
        out: dict[str, object] = {
            "FILTER_PIDS": bool(self.pids), "FOLLOW_FORKS": self.follow_forks and bool(self.pids),
            "MAX_PIDS": MAX_PIDS_FOLLOWED if self.follow_forks else MAX_PIDS,
            "EXCLUDE_SELF": self.exclude_self, "MAX_SELF": MAX_SELF, "SELF_TGID": os.getpid(),
            **task_offsets()}
        if self.comm:
            lo, hi = comm_words(self.comm)
            out.update(FILTER_COMM_LO=f"{lo:#x}ULL", FILTER_COMM_HI=f"{hi:#x}ULL")
        ns = pid_namespace()
        if ns:
            out.update(PIDNS_DEV=f"{ns[0]:#x}ULL", PIDNS_INO=f"{ns[1]:#x}ULL")
        return out

    def install(self, bpf) -> None:
        """Fill the program's maps, after it loaded: its fork hook is attached by then, so
        a helper forked after the walk below is caught there, one forked before by it."""
        one = ct.c_uint8(1)
        state = ct.c_uint8(WAITS_FOR_EXEC if self.follow_forks else TRACED)
        for pid in self.pids:
            bpf["pid_filter"][ct.c_uint32(pid)] = state
        if self.exclude_self:   # ebpf-otlp's own pid is compiled in (SELF_TGID)
            table = bpf["self_pids"]
            for pid in own_processes():
                table[ct.c_uint32(pid)] = one

    def kernel_sets(self, bpf) -> tuple[set[int], set[int]]:
        """(the pid filter, ebpf-otlp's own processes) as the kernel holds them now, with
        what it followed, for records filtered after the fact."""
        def keys(name: str, on: bool) -> set[int]:
            return {k.value for k in bpf[name].keys()} if on else set()
        return keys("pid_filter", bool(self.pids)), keys("self_pids", self.exclude_self)

    def comm_matches(self, name: str) -> bool:
        """The same test as the kernel's, for records named after the fact."""
        return not self.comm or name == self.comm.encode()[:COMM_MAX].decode(errors="ignore")
