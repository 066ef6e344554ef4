"""Syscall collector: raw sys_enter/sys_exit tracepoints → per (process, syscall) stats."""

from __future__ import annotations

import ctypes as ct
import platform
import struct

from ebpf_otlp import histogram
from ebpf_otlp.signals.syscalls import names as syscall_names
from ebpf_otlp.signals.collector import Collector, StatsEnum
from ebpf_otlp.signals.targets import Targets
from ebpf_otlp.errors import AgentError
from ebpf_otlp.records import HOST, ContainerInfo
from ebpf_otlp.signals.syscalls.records import SyscallStats
from ebpf_otlp.runtime import loader
from ebpf_otlp.signals.duty_cycle import DutyCycle
from ebpf_otlp.runtime.maps import DoubleBuffer, drain, percpu_counters
from ebpf_otlp.runtime.processes import CgroupIds, container_of
from ebpf_otlp.symbolize.procmaps import read_comm

# `enum syscalls_stat` of bpf/syscalls.bpf.c, in its order.
STATS = StatsEnum(("events", "calls map full", "errno map full", "start map full", "hist map full",
                   "newcomers map full"), processed="events",
                  losses={"calls map full": "syscall dropped (calls map full)",
                          "errno map full": "errno dropped (errno map full)",
                          "start map full": "syscall not timed (entry-time map full)",
                          "hist map full": "latency not in its histogram (histogram map full)",
                          "newcomers map full": "folded process not counted (newcomers map full)"})
ENTER_FN = b"raw_tracepoint__sys_enter"   # what BCC names RAW_TRACEPOINT_PROBE(sys_enter)


class SyscallCollector(Collector):
    """Counts (and with `latency`, times) syscalls in the kernel; `drain()` returns what
    was counted since the previous drain, merged per (process, syscall).

    Every call is counted. With `latency`, every call is timed while the traced syscall
    rate stays under `latency_budget` per second (0: no limit); above it the entry hook
    is time-shared (signals/duty_cycle.py) and the timed calls are a sample."""

    name = "syscalls"

    def __init__(self, pids: list[int] | None = None, comm: str | None = None,
                 syscalls: list[int] | None = None, latency: bool = True,
                 latency_budget: float = 0, max_keys: int = 262144, interval_s: float = 10.0,
                 follow_forks: bool = False, include_self: bool = False, name_after: int = 0):
        super().__init__()
        # Folding in the kernel only when every process is traced: those the user named (by
        # pid, by command name, or as a launched command) are always counted by pid.
        self.name_after = name_after if not pids and not comm and not follow_forks else 0
        self.targets = Targets(list(pids or []), comm, follow_forks, include_self)
        self.interval_s = interval_s
        self.follow_forks = follow_forks
        self.pids = list(pids or [])
        self.comm = comm
        self.syscalls = list(syscalls or [])
        self.latency = latency
        self.latency_budget = latency_budget
        self._duty: DutyCycle | None = None
        self._containers: dict[int, ContainerInfo] = {}
        self._cgroup_ids = CgroupIds()
        self.max_keys = max_keys
        self._bpf = None
        self._buffers: DoubleBuffer | None = None
        self.counters = dict.fromkeys(STATS.index, 0)
        self.start_store = ""   # where entry times live, said in notices

    def start(self) -> None:
        arch = {"x86_64": "ARCH_X86_64", "aarch64": "ARCH_ARM64"}.get(platform.machine())
        if arch is None:
            raise AgentError(f"syscalls: unsupported architecture {platform.machine()} "
                             "(x86_64 and arm64 are supported)")
        defines = {
            arch: True, "LATENCY": self.latency, **self.targets.defines(),
            "FILTER_SYSCALLS": bool(self.syscalls), "MAX_KEYS": self.max_keys,
            "MAX_ERRNOS": 16384, "MAX_THREADS": 65536,
            "NAME_AFTER": self.name_after or None, "MAX_SEEN": 65536,
        }
        try:   # entry times in task storage where the kernel allows it: cheapest
            self._bpf = loader.load("syscalls", {**defines, "TASK_STORAGE": self.latency})
            self.start_store = "task storage" if self.latency else "none"
        except AgentError:
            if not self.latency:
                raise
            self._bpf = loader.load("syscalls", defines)
            self.start_store = "hash by thread id"
        one = ct.c_uint8(1)
        self.targets.install(self._bpf)
        if self.syscalls:
            for nr in self.syscalls:
                self._bpf["syscall_filter"][ct.c_int(nr)] = one
        for name in syscall_names.READ_SYSCALLS + syscall_names.WRITE_SYSCALLS:
            nr = syscall_names.number(name)
            if nr is not None and nr < syscall_names.MAX_NR:
                self._bpf["io_syscalls"][ct.c_int(nr)] = one
        if self.latency:
            table = self._bpf["sub_bucket"]
            for m, sub in enumerate(histogram.sub_bucket_table()):
                table[ct.c_int(m)] = ct.c_uint8(sub)
        self._buffers = DoubleBuffer(self._bpf)
        # The raw tracepoints attached when BCC loaded the program (RAW_TRACEPOINT_PROBE).
        if self.latency:
            bpf, stats = self._bpf, self._bpf["stats"]
            self._duty = DutyCycle(
                attach=lambda: bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=ENTER_FN),
                detach=lambda: bpf.detach_raw_tracepoint(tp=b"sys_enter"),
                events=lambda: percpu_counters(stats, 1)[0],
                budget_per_s=self.latency_budget)
            self._duty.start()

    @property
    def timing_error(self) -> str | None:
        """Why timing stopped early (the entry hook failed to re-attach), if it did."""
        return str(self._duty.error) if self._duty and self._duty.error else None

    @property
    def timing_share(self) -> float:
        """The smallest share of time the entry hook was attached (1.0: every call timed)."""
        return self._duty.lowest_share if self._duty else 1.0

    def drain(self) -> list[SyscallStats]:
        idle = self._buffers.flip()
        bpf = self._bpf
        stats: dict[tuple, SyscallStats] = {}
        for key, per_cpu in drain(bpf[f"calls_{idle}"]):
            s = SyscallStats(key.tgid, "", key.nr, syscall_names.name(key.nr))
            for v in per_cpu:
                if not v.count:
                    continue
                if v.timed:
                    s.min_ns = v.min_ns if not s.timed else min(s.min_ns, v.min_ns)
                    s.max_ns = max(s.max_ns, v.max_ns)
                s.calls += v.count
                s.errors += v.errors
                s.timed += v.timed
                s.total_ns += v.total_ns
                s.bytes += v.bytes
                s.process_name = s.process_name or v.comm.decode(errors="replace")
                if key.tgid:
                    self._place(key.tgid, v.cgroup_id)
            if not key.tgid:    # folded in the kernel: its name and cgroup are the key
                s.process_name = _name(key)
                s.container = self._folded_container(key.cgroup_id)
            stats[_who(key)] = s
        if self.latency:
            for hk, n in drain(bpf[f"hist_{idle}"]):
                s = stats.get(_who(hk.call))
                if s is not None:
                    s.hist[hk.bucket] = s.hist.get(hk.bucket, 0) + n
        for ek, count in drain(bpf[f"errnos_{idle}"]):
            s = stats.get(_who(ek.call))
            if s is not None:   # else its calls entry did not fit: counted as "calls map full"
                s.errnos[ek.err] = s.errnos.get(ek.err, 0) + count
        if self.name_after:
            names = {(nk.comm_lo, nk.comm_hi, nk.cgroup_id): n for nk, n in drain(bpf[f"newcomers_{idle}"])}
            for (tgid, _nr, comm_lo, comm_hi, cgroup_id), s in stats.items():
                if not tgid:
                    s.folded = names.get((comm_lo, comm_hi, cgroup_id), 0)
        for s in stats.values():
            if s.pid:
                s.process_name = s.process_name or read_comm(s.pid) or ""
                s.container = self._containers.get(s.pid) or container_of(s.pid)
        self.counters = dict(zip(STATS.index, STATS.read(bpf["stats"], self.stats)))
        self.stats.share = self.timing_share
        self.stats.drains += 1
        return list(stats.values())

    def progress(self) -> str:
        """Syscalls counted up to now (the kernel's counter), between drains too."""
        seen = self.counters["events"] if self._bpf is None else \
            percpu_counters(self._bpf["stats"], 1)[0]
        return f"{seen} syscalls"

    def _folded_container(self, cgroup_id: int) -> ContainerInfo:
        found = self._cgroup_ids.lookup(cgroup_id)
        return found if found is not None else HOST

    def _place(self, pid: int, cgroup_id: int) -> None:
        """The container a process ran in, from the cgroup id the kernel saw (once per pid)."""
        if pid not in self._containers:
            found = self._cgroup_ids.lookup(cgroup_id)
            self._containers[pid] = found if found is not None else container_of(pid)

    def stop(self) -> list[SyscallStats]:
        """Detach, then return what both buffers still hold."""
        if self._bpf is None:
            return []
        if self._duty:
            self._duty.stop()
        for tp in (b"sys_enter", b"sys_exit"):
            try:
                self._bpf.detach_raw_tracepoint(tp=tp)
            except Exception:   # sys_enter: not attached in count-only mode or between windows
                pass
        rest = self.drain() + self.drain()
        self._bpf.cleanup()
        self._bpf = None
        return rest


def _who(key) -> tuple:
    """A calls-map key as a dict key: (tgid, nr) of a named process, or its name and cgroup."""
    return (key.tgid, key.nr, key.comm_lo, key.comm_hi, key.cgroup_id)


def _name(key) -> str:
    raw = struct.pack("<QQ", key.comm_lo, key.comm_hi)
    return raw.split(b"\0", 1)[0].decode(errors="replace")
