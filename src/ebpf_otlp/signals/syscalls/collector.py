"""Syscall collector: raw sys_enter/sys_exit tracepoints → per (process, syscall) stats."""

from __future__ import annotations

import ctypes as ct
import platform

from ebpf_otlp import histogram
from ebpf_otlp.signals.syscalls import names as syscall_names
from ebpf_otlp.signals.collector import Collector, StatsEnum
from ebpf_otlp.signals.targets import Targets
from ebpf_otlp.errors import AgentError
from ebpf_otlp.records import ContainerInfo
from ebpf_otlp.signals.syscalls.records import SyscallStats
from ebpf_otlp.runtime import loader
from ebpf_otlp.signals.duty_cycle import DutyCycle
from ebpf_otlp.runtime.maps import DoubleBuffer, drain, percpu_counters
from ebpf_otlp.runtime.processes import CgroupIds, container_of
from ebpf_otlp.symbolize.procmaps import read_comm

# `enum syscalls_stat` of bpf/syscalls.bpf.c, in its order.
STATS = StatsEnum(("events", "calls map full", "errno map full", "start map full"), processed="events",
                  losses={"calls map full": "syscall dropped (calls map full)",
                          "errno map full": "errno dropped (errno map full)",
                          "start map full": "syscall not timed (entry-time map full)"})
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
                 follow_forks: bool = False, include_self: bool = False):
        super().__init__()
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
        stats: dict[tuple[int, int], SyscallStats] = {}
        for key, per_cpu in drain(self._bpf[f"calls_{idle}"]):
            s = stats.get((key.tgid, key.nr))
            if s is None:
                s = stats[(key.tgid, key.nr)] = SyscallStats(key.tgid, "", key.nr,
                                                             syscall_names.name(key.nr))
            for v in per_cpu:
                if v.count:
                    self._place(key.tgid, v.cgroup_id)
                    timed = v.count if key.timed else 0   # untimed entries carry no latency
                    s.merge(SyscallStats(key.tgid, v.comm.decode(errors="replace"), key.nr, "",
                                         v.count, v.errors, v.total_ns, v.min_ns, v.max_ns,
                                         v.bytes, hist={key.bucket: timed} if timed else {},
                                         timed=timed))
        for key, count in drain(self._bpf[f"errnos_{idle}"]):
            s = stats.get((key.tgid, key.nr))
            if s is not None:   # else its calls entry did not fit: counted as "calls map full"
                s.errnos[key.err] = s.errnos.get(key.err, 0) + count
        for s in stats.values():
            if not s.process_name:
                s.process_name = read_comm(s.pid) or ""
            s.container = self._containers.get(s.pid) or container_of(s.pid)
        self.counters = dict(zip(STATS.index, STATS.read(self._bpf["stats"], self.stats)))
        self.stats.share = self.timing_share
        self.stats.drains += 1
        return list(stats.values())

    def progress(self) -> str:
        """Syscalls counted up to now (the kernel's counter), between drains too."""
        seen = self.counters["events"] if self._bpf is None else \
            percpu_counters(self._bpf["stats"], 1)[0]
        return f"{seen} syscalls"

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
