"""`ebpf-otlp agent`: the configured collectors, continuously, one agent per host.

Time is cut into windows. At a cut every processor is drained and its result for the
window exported, then it starts the next window where that one ended: no sample is lost
or counted twice between windows. CPU and off-CPU profiles get a window of `window`
seconds; with a collector, syscall and network metrics are exported (as DELTA) every
`interval`, and connections as spans as they close. With no collector, each window's files
go to a directory of the output directory, under the same retention as snapshot bundles.

SIGTERM (or SIGINT) flushes the current window and exits; SIGHUP flushes it, reloads the
configuration and goes on.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from opentelemetry.sdk.metrics.export import AggregationTemporality
from rich.console import Console

from ebpf_otlp import config as cfg
from ebpf_otlp.export.console import text_console
from ebpf_otlp.engine.output_stage import OutputStage, batch
from ebpf_otlp.export.sinks import FileSink, FileTarget
from ebpf_otlp.gcpause import collect_frozen
from ebpf_otlp.errors import AgentError
from ebpf_otlp.engine.capture import Capture, StopOnSignal
from ebpf_otlp.runtime.privileges import missing_privileges
from ebpf_otlp.runtime.processes import limit_malloc_arenas, trim_heap
from ebpf_otlp.sessions import snapshot
from ebpf_otlp.records import CollectorStats
from ebpf_otlp.sessions.bundles import MADE_BY, BundleStore, capture_entry, describe, write_manifest
from ebpf_otlp.signals import registry
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.signals.profile import PROFILE


@dataclass
class Totals:
    windows: int = 0
    profiles: int = 0
    samples: int = 0            # in the exported windows
    kernel_samples: int = 0     # as the kernel counted them: the two must agree
    stats: dict[str, CollectorStats] = field(default_factory=dict)   # capture title -> the run's
    unwritten: int = 0          # windows whose files could not be made (each said on stderr)

    def summary(self) -> str:
        """The run in one line: the captures that ran, what each handled, losses by
        capture and cause ("none" said)."""
        done = []
        for title, stats in self.stats.items():
            if title == PROFILE.title:
                done.append(f"{title} {self.samples:,} CPU samples exported of {self.kernel_samples:,} "
                            f"taken in {self.profiles} profile(s)")
            else:
                done.append(f"{title} {stats.processed:,} events")
        lost = [f"{title} {n:,} {cause}" for title, stats in self.stats.items()
                for cause, n in sorted(stats.lost.items()) if n]
        if self.unwritten:
            lost.append(f"{self.unwritten:,} window(s) not written (the error is on stderr)")
        return (f"agent: {self.windows} window(s); {', '.join(done) or 'no capture ran'}; "
                f"losses: {'; '.join(lost) or 'none'}")


class _Windows:
    """Cuts windows of the processors it is given, from Capture's drain callback."""

    def __init__(self, parts: list[snapshot.Part], stage: OutputStage, store: BundleStore | None,
                 window_s: float, interval_s: float, config: cfg.Config | None = None,
                 notices: Console | None = None):
        self.parts, self.stage, self.store = parts, stage, store
        self.notices = notices or text_console(quiet=True)
        self.window_s, self.interval_s = window_s, interval_s
        self.config = config or cfg.Config()
        self.begin(None)
        self.totals = Totals()
        self._at_window: dict[str, CollectorStats] = {}   # each capture's counts at the last cut

    def begin(self, duration_s: float | None) -> None:
        """The first window starts now (the collectors just attached)."""
        self.window_start_ns = time.time_ns()
        now = time.monotonic()
        self.next_window, self.next_interval = now + self.window_s, now + self.interval_s
        self.deadline = now + duration_s if duration_s else float("inf")

    def on_drain(self, processor: Processor) -> None:
        if processor.streams and self.stage.otlp:   # e.g. spans as connections close
            self.stage.stream(processor.result(), time.time_ns())
        now = time.monotonic()
        # A tail shorter than half a window goes with the last window, not into one of its own.
        if now >= self.next_window and now + self.window_s / 2 < self.deadline:
            self.cut([p.processor for p in self.parts], whole=True)
            self.next_window = now + self.window_s
            self.next_interval = now + self.interval_s
        elif self.stage.otlp and now >= self.next_interval and now + self.interval_s / 2 < self.deadline:
            self.cut([p.processor for p in self.parts if not p.signal.windowed])
            self.next_interval = now + self.interval_s

    def cut(self, processors: list[Processor], final: bool = False, whole: bool = False) -> None:
        """Drain, export the window, start the next one where this one ended."""
        end = time.time_ns()
        if not final:   # at the end, stop() has drained everything already
            for p in processors:   # all before any result: the profile's request labels
                p.drain()          # (signals/links.py) see the window's last requests
        results = []
        for p in processors:
            results.append(p.result(end))
            if not final:
                p.reset(end)
        self.export(processors, results, end, whole or final)

    def export(self, processors: list[Processor], results: list, end: int, whole: bool) -> None:
        """`whole`: a window of every capture (files are written); else one interval's
        metrics (with a collector only)."""
        t = self.totals
        t.windows += whole
        for r in results:
            signal = registry.of(r)
            stats = t.stats[signal.title] = signal.stats(r)
            if signal is PROFILE and r.frequency_hz:
                t.profiles += 1
                t.samples += r.total(r.shown_index)
                t.kernel_samples = stats.processed
        if self.stage.otlp:
            for r in results:
                self.stage.stream(r, end)
            self.stage.otlp.export(batch(results))
            self.stage.reset_streams()
        if self.store and whole:
            try:
                self.write_files(results, end)
            except Exception as e:   # one window's files must not end a day-long agent: said, counted
                self.totals.unwritten += 1
                self.window_start_ns = end
                self.notices.print(f"agent: a window's files were not written: {type(e).__name__}: {e}",
                                   style="yellow", highlight=False, markup=False)
        if whole:
            collect_frozen()
            trim_heap()   # the window's symbolization and encoding peak, given back

    def write_files(self, results: list, end: int) -> None:
        """One bundle per window (the store builds it under a temporary name, then renames),
        its manifest a snapshot bundle's: with each capture's counts and losses in it."""
        with self.store.build(time.time()) as bundle:
            sink = FileSink([FileTarget(os.path.join(bundle.path, os.path.basename(t.path)), t.fmt, t.signal)
                             for part in self.parts for t in part.files])
            sink.export(batch(results))
            captures = []
            for r in results:
                signal = registry.of(r)
                stats = signal.stats(r)
                captures.append(capture_entry(
                    signal.name, signal.title, stats.since(self._at_window.get(signal.title)),
                    [os.path.basename(t.path) for t in sink.written if t.signal == signal.name]))
                self._at_window[signal.title] = stats
            write_manifest(bundle.path, {"window": True, **describe(
                self.config, "agent", self.window_start_ns, end, captures)}, made_by=MADE_BY[1])
        self.window_start_ns = end
        self.store.retain(time.time())


def run(config: cfg.Config, notices: Console, out: Console, duration_s: float | None = None) -> int:
    while True:
        reload = _run_once(config, notices, out, duration_s)
        if not reload:
            return 0
        notices.print("SIGHUP: reloading the configuration", style="yellow")
        config = config.reloaded()


def _run_once(config: cfg.Config, notices: Console, out: Console, duration_s: float | None) -> bool:
    why = missing_privileges()
    if why:
        raise AgentError(why)
    limit_malloc_arenas(2)   # a day-long process: not one arena of free memory per thread
    a = config.section("agent")
    otlp, spool = cfg.otlp_settings(config.tables.get("otlp", {}))
    store = None if otlp else BundleStore(a["output_dir"], a["keep"], a["max_age"], a["max_total"]).open()
    if store:
        store.clean()
    parts = snapshot.plan(config, store.root if store else "")
    processors = [p.processor for p in parts]
    for p in processors:   # windows are cut at drains: drain at least as often as they end
        p.collector.interval_s = min(p.collector.interval_s, a["window"], a["interval"])
    quiet = text_console(quiet=True)
    stage = OutputStage.create(quiet, quiet, [], {}, otlp, spool,
                               lambda: {p.collector.name: p.collector.stats for p in processors},
                               a["interval"])
    if stage.otlp:
        stage.otlp.metric_temporality = AggregationTemporality.DELTA   # each export: one window
    windows = _Windows(parts, stage, store, a["window"], a["interval"], config, notices)
    with StopOnSignal(extra=(signal.SIGHUP,)) as stop:
        cap = Capture(processors, stop, notices, duration_s, label="agent", skip_failed=True,
                      on_drain=windows.on_drain)
        try:
            cap.start()
        except BaseException:
            stage.abort()
            raise
        windows.begin(duration_s)
        for part in parts:
            if id(part.processor) in cap.failed:
                notices.print(f"{part.name} cannot run: {cap.failed[id(part.processor)]}", style="yellow")
        windows.parts = [p for p in parts if id(p.processor) not in cap.failed]
        windows.totals.stats = {p.signal.title: CollectorStats() for p in windows.parts}   # in order
        where = f"to {otlp.endpoint}" if otlp else f"into {store.root}"
        notices.print(f"agent: {', '.join(p.name for p in windows.parts)}; windows of "
                      f"{a['window']:g} s, exported {where}", highlight=False)
        cap.run()
        windows.cut(cap.processors, final=True)   # the current window, up to the stop
        stage.close()
    out.print(windows.totals.summary() + (f"; {stage.otlp.summary()}" if stage.otlp else ""),
              highlight=False, soft_wrap=True)
    return stop.signum == signal.SIGHUP
