"""The capture engine: one loop and one signal handler for any number of collectors.

Each processor's collector is started (its BPF program compiled while the processor
prepares symbols in a thread), then the loop sleeps in a ring-buffer poll until the next
drain is due, drains each collector on its own interval into its processor, and ends at
the duration, on SIGINT/SIGTERM, or when a launched command exits. A signal only ends the
loop: every collector is then stopped and drained, so what was gathered is kept.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime.maps import RingWaiter
from ebpf_otlp.runtime.processes import set_thread_nice
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.engine.launch import LaunchedCommand


class StopOnSignal:
    """While active, SIGINT and SIGTERM set `stopped` instead of killing the process.

    A second SIGINT falls back to the default (KeyboardInterrupt), for a stuck run.
    SIGCHLD only wakes the loop, so a launched command's exit is seen at once.
    """

    def __init__(self, extra: tuple[int, ...] = ()):
        self.extra = extra       # more signals that stop the loop (the agent: SIGHUP, to reload)
        self.stopped = False
        self.signal_name = ""
        self.signum = 0
        self._saved = {}
        # Handlers wake the loop through a pipe: they run in the main thread between any two
        # bytecodes, even inside a threading.Event's own lock (a SIGCHLD during the set() of
        # another: that deadlocked with the launched command held stopped).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; wake at once when a signal arrives."""
        if self.stopped:
            return True
        woke = bool(select.select([self._wake_r], [], [], timeout)[0])
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        return woke or self.stopped

    def _wake(self) -> None:
        with contextlib.suppress(OSError):   # full: a wakeup is pending anyway
            os.write(self._wake_w, b"\0")

    def _handle(self, signum, _frame):
        self.stopped = True
        self._wake()
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _child(self, _signum, _frame):
        self._wake()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, *self.extra):
            self._saved[sig] = signal.signal(sig, self._handle)
        self._saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._child)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False


class Capture:
    """Runs processors' collectors together until the end; `run()` returns when every
    collector has been stopped and drained into its processor."""

    MAX_SLEEP_S = 0.5

    def __init__(self, processors: Sequence[Processor], stop: StopOnSignal, notices: Console,
                 duration_s: float | None = None, launch: LaunchedCommand | None = None,
                 on_drain: Callable[[Processor], None] = lambda p: None, label: str = "capturing",
                 skip_failed: bool = False):
        self.processors = list(processors)
        self.stop = stop
        self.notices = notices
        self.duration_s = duration_s
        self.launch = launch
        self.on_drain = on_drain
        self.label = label
        self.started_ns = 0          # all attached (and a launched command released)
        self.ended_ns = 0
        self.started: list[Processor] = []
        self._helper: threading.Thread | None = None
        self.skip_failed = skip_failed     # a snapshot goes on without what cannot start
        self.failed: dict[int, str] = {}   # id(processor) -> why it did not start

    def start(self) -> None:
        """Compile and attach every collector; on failure, stop those already started."""
        # Symbols load while clang compiles (ctypes releases the GIL), and go on loading
        # after the attach if need be: sampling never waits for them.
        self._helper = threading.Thread(target=self._prepare, name="prepare", daemon=True)
        self._helper.start()
        try:
            for p in self.processors:
                try:
                    p.collector.start()
                except AgentError as e:
                    if not self.skip_failed:
                        raise
                    self.failed[id(p)] = str(e)
                    continue
                self.started.append(p)
        except BaseException:
            self.abort()
            raise
        self.processors = list(self.started)
        self.started_ns = time.time_ns()
        self._unnice_helper()
        for p in self.processors:
            p.reset()   # windows start at attach
        if self.launch:
            self.launch.release()

    def _unnice_helper(self) -> None:
        """The compile is done: what prepare() still has to read, the output needs (the
        run's end waits for it), so it goes on at the agent's own priority."""
        if self._helper.is_alive():
            set_thread_nice(self._helper.native_id)

    def abort(self) -> None:
        """The capture cannot go on: stop what started; a held command never runs."""
        try:
            self.stop_all()
        finally:
            if self.launch:
                self.launch.abandon()

    def _prepare(self) -> None:
        set_thread_nice(threading.get_native_id(), 19)   # the compile first where CPUs are few
        for p in self.processors:
            try:
                p.prepare()
            except Exception:   # a head start only: anything missed is read on demand
                pass

    def run(self) -> None:
        """After start(): loop until the end, then stop every collector, so each processor
        holds all that was gathered."""
        try:
            self._loop()
        finally:
            self.ended_ns = time.time_ns()
            self.stop_all()
            self._helper.join()
        if self.stop.stopped and self.launch:
            self.launch.forward(self.stop.signum)

    def _done(self, deadline: float) -> bool:
        return (self.stop.stopped or time.monotonic() >= deadline
                or (self.launch is not None and self.launch.exited()))

    def _loop(self) -> None:
        now = time.monotonic()
        deadline = now + self.duration_s if self.duration_s else float("inf")
        due = {id(p): now + p.collector.interval_s for p in self.processors}
        due[0] = deadline   # with nothing started (a snapshot whose captures all failed): wait
        pollers = [p.collector for p in self.processors if p.collector.poll(0)]
        for p in self.processors:   # what that poll took (a launched command's first exec)
            p.collector.handle_events()
        rings = RingWaiter({c: c.ring_fds() for c in pollers}) if len(pollers) > 1 else None
        try:
            self._turns(deadline, due, pollers, rings)
        finally:
            if rings:
                rings.close()

    def _turns(self, deadline: float, due: dict, pollers: list, rings: RingWaiter | None) -> None:
        with _progress(self.notices, self.label, self.duration_s) as bar:
            while not self._done(deadline):
                now = time.monotonic()
                wait = max(0.0, min(min(due.values()) - now, deadline - now, self.MAX_SLEEP_S))
                # Sleep where events arrive: the ring buffer of the one collector that has
                # one, or all of theirs at once. Signals wake either wait.
                if len(pollers) == 1:
                    pollers[0].poll(max(1, int(wait * 1000)))
                elif pollers:   # the others are read at their drains
                    woken = rings.wait(wait)
                    for c, fds in rings.owners:
                        if woken & fds:
                            c.poll(0)
                else:
                    self.stop.wait(wait)
                for p in self.processors:
                    p.collector.handle_events()
                now = time.monotonic()
                for p in self.processors:
                    if now >= due[id(p)]:
                        p.drain()
                        due[id(p)] = time.monotonic() + p.collector.interval_s
                        self.on_drain(p)
                if bar.shown:   # each collector's progress reads its kernel counters: only for a bar
                    bar.show(" · ".join(p.collector.progress() for p in self.processors))

    def stop_all(self) -> None:
        """Stop every started collector, keeping what each still held, even if one fails."""
        failure = None
        for p in self.started:
            try:
                p.add(p.collector.stop())
            except Exception as e:   # the others still get stopped and drained
                failure = failure or e
        self.started = []
        if failure:
            raise failure


class _progress:
    """A transient progress line on a terminal; nothing when stderr is not one, or
    without a label (what the terminal shows is progress enough)."""

    def __init__(self, console: Console, label: str, duration_s: float | None):
        self.console, self.label, self.duration_s = console, label, duration_s
        self._progress = None
        self._start = time.monotonic()

    def __enter__(self) -> "_progress":
        if self.console.is_terminal and self.label:
            self._progress = Progress(TextColumn("{task.description}", style="bold", markup=False),
                                      BarColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.fields[status]}", markup=False),
                                      console=self.console, transient=True)
            self._task = self._progress.add_task(self.label, total=self.duration_s or None, status="")
            self._progress.start()
        return self

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def show(self, status: str) -> None:
        if self._progress:
            self._progress.update(self._task, completed=time.monotonic() - self._start, status=status)

    def __exit__(self, *exc):
        if self._progress:
            self._progress.stop()
        return False
