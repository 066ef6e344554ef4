"""CPU sampling collector: perf events on every CPU → raw stack counts."""

from __future__ import annotations

import ctypes as ct
import time
from typing import Callable

from ebpf_otlp.pyframes import kernel as pykernel
from ebpf_otlp.pyframes.process import PythonProcess
from ebpf_otlp.signals.collector import Collector, StatsEnum
from ebpf_otlp.signals.targets import Targets
from ebpf_otlp.records import RawStackSample
from ebpf_otlp.signals.duty_cycle import SampleShare
from ebpf_otlp.runtime.maps import DoubleBuffer, drain
from ebpf_otlp.runtime.perf import attach_sampler, detach_sampler, online_cpus
from ebpf_otlp.unwind import unwinder
from ebpf_otlp.unwind.unwinder import (Unwinder, drain_stacks, frames, is_cut, kernel_frames,
                                       look_up_stacks)

# `enum stat` of bpf/cpu_sampler.bpf.c, in its order; the unwinder's counters follow.
STATS = StatsEnum(
    ("samples", "user collision", "user error", "kernel error", "counts full",
     "new task dropped", "start full", "switches", *pykernel.STATS), processed="samples",
    losses={"user collision": "user stack lost (stack-id collision)",
            "user error": "user stack lost (stack map full or unwind error)",
            "kernel error": "kernel stack lost (stack map full or walk error)",
            "counts full": "sample dropped (count map full)",
            "start full": "off-CPU period dropped (thread map full)",
            "new task dropped": "new process not announced (ring buffer full)", **pykernel.LOSSES},
    extra=unwinder.COUNTERS)


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


def map_sizes(hz: int, cpus: int, drain_seconds: float) -> tuple[int, int]:
    """Room for every sample of one drain interval, with headroom (distinct keys ≤ samples)."""
    per_drain = int(hz * cpus * drain_seconds * 2)
    keys = min(max(_pow2_at_least(per_drain), 4096), 1 << 18)
    # Stack ids are hashes into a table without chaining: n stacks in m slots collide about
    # n²/2m times, so the floor is profile-bpfcc's 16k slots (16 MB of kernel memory a set).
    stacks = min(max(_pow2_at_least(per_drain), 16384), 1 << 17)
    return keys, stacks




class CpuSampler(Collector):
    """Samples stacks at `hz` and counts them per (thread, user stack, kernel stack) in
    the kernel's double-buffered maps; `drain()` returns what was counted since the last.

    With `off_cpu`, counts are nanoseconds spent off CPU (blocked or waiting to run) per
    stack the thread left the CPU with, from the sched_switch tracepoint; periods shorter
    than `min_block_ns` are left out. Above `switch_budget` switches a second (0: no
    limit), stacks are walked for a random share of switches, each weighed up.

    With `follow_forks`, processes the traced ones fork are traced too, from the kernel
    (launch mode). Each new process (and exec generation) is announced through a ring
    buffer; `on_new_process(pid, gen)` runs for it outside the callback, soon enough to
    read its maps while it lives.

    With `python` (and the table unwinder), the Python frames of processes named by
    walk_python() are walked in the kernel too (bpf/lib/python.inc); each stack new to its
    process comes through a ring buffer, and `on_python_stack(pid, frames)` runs for it
    outside the callback, so its code objects are read while the process lives."""

    def __init__(self, hz: int, pids: list[int] | None = None, user_stacks: bool = True,
                 kernel_stacks: bool = True, event: str = "cpu-clock",
                 drain_seconds: float = 2.0,
                 on_new_process: Callable[[int, int], object] = lambda pid, gen: None,
                 off_cpu: bool = False, min_block_ns: int = 1000, switch_budget: float = 0,
                 follow_forks: bool = False, period: int = 0, unwind: str = "fp",
                 comm: str | None = None, include_self: bool = False, python: bool = False,
                 on_python_stack: Callable[[int, tuple], object] = lambda pid, frames: None):
        super().__init__()
        self.sample_times = False   # each sample's time kept (set before start: links to requests)
        self._clock_offset = time.time_ns() - time.monotonic_ns()   # bpf_ktime → wall clock
        self.targets = Targets(list(pids or []), comm, follow_forks, include_self)
        self.unwinder = Unwinder(unwind if user_stacks else "fp")
        self.name = "off-cpu" if off_cpu else "cpu"
        self.interval_s = drain_seconds
        self._recent: dict[str, dict] = {}   # map name -> the stacks its last drain held
        self.follow_forks = follow_forks
        self.period = period
        self._announced: list[tuple[int, int, bool]] = []   # (pid, gen, held) from the ring buffer
        self.off_cpu = off_cpu
        self.min_block_ns = min_block_ns
        self.switch_budget = switch_budget
        self._share: SampleShare | None = None
        self._off_cpu_stacks: dict[int, tuple[int, ...]] = {}   # stacks_0 is never cleared
        self._off_cpu_user: dict[int, tuple[int, ...]] = {}     # nor user_stacks_0
        self._off_cpu_kernel: dict[int, tuple[int, ...]] = {}   # nor kernel_stacks_0
        self._off_cpu_python: dict[int, tuple] = {}              # nor py_stacks_0
        self._python = pykernel.KernelWalk(on_python_stack) if python and user_stacks else None
        self.hz = hz
        self.pids = list(pids or [])
        self.user_stacks = user_stacks
        self.kernel_stacks = kernel_stacks
        self.event = event
        self.drain_seconds = drain_seconds
        self.on_new_process = on_new_process
        self._bpf = None
        self._buffers: DoubleBuffer | None = None
        self.first_sample_unix_ns: int | None = None   # when the first process was announced

    def start(self) -> None:
        keys, stacks = map_sizes(self.hz, len(online_cpus()), self.drain_seconds)
        if self.off_cpu:   # keyed by blocking stack, not by sample: fewer keys, kept stacks
            keys, stacks = 1 << 16, 1 << 14
        defines = {
            "MAX_KEYS": keys, "MAX_STACKS": stacks, **self.targets.defines(),
            "USER_STACKS": self.user_stacks, "KERNEL_STACKS": self.kernel_stacks,
            "OFF_CPU": self.off_cpu, "MIN_BLOCK_NS": self.min_block_ns, "MAX_THREADS": 65536,
            "SAMPLE_TIMES": self.sample_times and not self.off_cpu,
        }   # with OFF_CPU, sched_switch attaches as the program loads (TRACEPOINT_PROBE)
        if self._python:
            defines.update(self._python.defines())
        self._bpf = self.unwinder.load("cpu_sampler", dict(defines, HOLD_NEW_CODE=self.follow_forks))
        if not self.unwinder.tables:   # the walk follows the table unwinder's
            self._python = None
        self.unwinder.hold(self._bpf, self.follow_forks)
        if self.unwinder.tables and not self.off_cpu and self.user_stacks:
            from bcc import BPF   # the walk's tail-called step (cpu_sampler.bpf.c: unwind_step)
            step = self._bpf.load_func(b"unwind_step", BPF.PERF_EVENT)
            self._bpf["walk_steps"][ct.c_int(0)] = ct.c_int(step.fd)
            if self._python:
                step = self._bpf.load_func(b"py_step", BPF.PERF_EVENT)
                self._bpf["walk_steps"][ct.c_int(1)] = ct.c_int(step.fd)
        # A launched command's tables come after its exec, when it is first sampled.
        self.unwinder.start([] if self.follow_forks else self.pids)
        self.targets.install(self._bpf)
        self._buffers = DoubleBuffer(self._bpf)
        self._bpf["new_tasks"].open_ring_buffer(self._on_new_task)
        if self._python:
            self._python.attach(self._bpf)
        if self.off_cpu:
            stats = self._bpf["stats"]
            self._share = SampleShare(self._keep_share, lambda: sum(stats[ct.c_int(STATS["switches"])]),
                                      budget_per_s=self.switch_budget)
            self._share.start()
        else:
            attach_sampler(self._bpf, "on_sample", self.event, self.hz, self.period)

    def walk_python(self, pid: int, proc: PythonProcess) -> None:
        """Walk the Python frames of process `pid` from its next sample."""
        if self._python:
            self._python.walk(pid, proc)

    def _keep_share(self, share: float) -> None:
        """Tell the off-CPU program which share of switches to walk (control[1], of 65536)."""
        self._bpf["control"][ct.c_int(1)] = ct.c_uint32(max(1, round(share * 65536)))

    def _on_new_task(self, _ctx, data, _size) -> None:
        """Only note it: the callback runs inside the poll, and reading maps can wait."""
        pid, gen, held = ct.cast(data, ct.POINTER(ct.c_uint32 * 3)).contents   # struct new_task
        if self.first_sample_unix_ns is None and not held:
            self.first_sample_unix_ns = time.time_ns()
        self._announced.append((pid, gen, bool(held)))

    def poll(self, timeout_ms: int) -> bool:
        """Wait for new-process announcements (up to timeout_ms)."""
        self._bpf.ring_buffer_poll(timeout_ms)
        return True

    def ring_fds(self) -> list[int]:
        return [self._bpf["new_tasks"].map_fd] + (self._python.ring_fds() if self._python else [])

    def handle_events(self) -> None:
        announced, self._announced = self._announced, []
        for pid, gen, held in announced:   # first: its maps, while it lives (a short command ends soon)
            if held:
                self._release(pid, gen)
            else:
                self.on_new_process(pid, gen)
        self.unwinder.seen(pid for pid, _gen, held in announced if not held)
        if self._python:
            self._python.handle_events()

    def _release(self, pid: int, gen: int) -> None:
        """A held process (hold.inc): its maps and tables now, then it runs on."""
        try:
            self.on_new_process(pid, gen)
        finally:
            self.unwinder.release(pid, self.stats)

    def drain(self) -> list[tuple[RawStackSample, int]]:
        """(stack, count) pairs counted since the previous drain; counts are samples, or
        nanoseconds off CPU."""
        records = self._read_buffer(self._buffers.flip())
        self._read_stats()
        self.stats.drains += 1
        self.unwinder.drained(raw.pid for raw, _n in records)
        return records

    def _read_buffer(self, which: int) -> list[tuple[RawStackSample, int]]:
        entries = drain(self._bpf[f"counts_{which}"])
        dwarf = self.unwinder.tables
        if dwarf:
            unwound = self._kept_stacks("user_stacks", which, {k.user_stack_hash for k, _v in entries},
                                        self._off_cpu_user, frames)
        else:
            walk = self._stack_walker(which)
        kernel = self._kept_stacks("kernel_stacks", which, {k.kernel_stack_hash for k, _v in entries},
                                   self._off_cpu_kernel, kernel_frames) if self.kernel_stacks else {}
        python = self._kept_stacks("py_stacks", which, {k.py_stack_hash for k, _v in entries},
                                   self._off_cpu_python, pykernel.frames) if self._python else {}
        records, wall = [], self._clock_offset
        for key, value in entries:
            user = unwound.get(key.user_stack_hash, ()) if dwarf else walk(key.user_stack_id)
            raw = RawStackSample(key.tgid, key.tid, key.comm.decode(errors="replace"),
                                 user, kernel.get(key.kernel_stack_hash, ()), key.gen, is_cut(user),
                                 python.get(key.py_stack_hash, ()),
                                 (key.slot << 20) + wall if key.slot else 0)
            records.append((raw, value))
        if not dwarf and self.user_stacks and not self.off_cpu:
            self._bpf[f"stacks_{which}"].clear()
        return records

    def _kept_stacks(self, name: str, which: int, wanted: set[int], off_cpu: dict, decode) -> dict:
        """hash -> frames of the stacks kept by content in map `name`_N (those the last drain
        decoded are not decoded again). Off-CPU stacks all live in set 0 and are never
        cleared: each is read once, when first counted."""
        if not self.off_cpu:
            got = self._recent[name] = drain_stacks(self._bpf[f"{name}_{which}"], decode,
                                                    self._recent.get(name))
            return got
        look_up_stacks(self._bpf[f"{name}_0"], wanted, off_cpu, decode)
        return off_cpu

    def _stack_walker(self, which: int):
        """stack id -> frames, for user stacks the kernel walked by frame pointers (stacks_N)."""
        if not self.user_stacks:
            return lambda _id: ()
        stacks = self._bpf["stacks_0" if self.off_cpu else f"stacks_{which}"]
        walked = self._off_cpu_stacks if self.off_cpu else {}

        def walk(stack_id: int) -> tuple[int, ...]:
            if stack_id < 0:
                return ()
            if stack_id not in walked:
                walked[stack_id] = tuple(stacks.walk(stack_id))
            return walked[stack_id]
        return walk

    def progress(self) -> str:
        """Samples taken up to now (the kernel's counter), between drains too."""
        taken = self.stats.processed if self._bpf is None else \
            sum(self._bpf["stats"][ct.c_int(STATS["samples"])])
        return f"{taken} {'periods' if self.off_cpu else 'samples'}"

    def _read_stats(self) -> None:
        total = STATS.read(self._bpf["stats"], self.stats)
        self.unwinder.report(self.stats, total[STATS.extra_start:])
        if self._python:
            self._python.report(self.stats, {n: total[STATS[n]] for n in pykernel.STATS})
        if self._share:
            self.stats.share = self._share.lowest_share

    def stop(self) -> list[tuple[RawStackSample, int]]:
        """Detach, then drain both buffers so samples taken up to the end are kept."""
        if self._bpf is None:
            return []
        if self.off_cpu:
            self._share.stop()
            self._bpf.detach_tracepoint(tp=b"sched:sched_switch")
        else:
            detach_sampler(self._bpf, self.event)
        self.unwinder.stop_holding(self.handle_pending)
        self.handle_pending()
        records = self.drain() + self.drain()
        self.unwinder.stop()
        self._bpf.cleanup()
        self._bpf = None
        return records

