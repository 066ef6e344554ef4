"""`ebpf-otlp snapshot`: what the config names (profile, off-CPU, syscalls, trace-net, memleak),
captured at once for one duration, written as one timestamped bundle of files, for cron.

A bundle is built under a temporary name in the output root and renamed when complete,
so a run killed at any point leaves no bundle under a final name; one run at a time holds
the root's lock (a second exits 75, EX_TEMPFAIL); retention then removes old bundles,
never anything it did not create.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from rich.console import Console

from ebpf_otlp import config as cfg
from ebpf_otlp.errors import AgentError
from ebpf_otlp.export.console import text_console
from ebpf_otlp.engine.output_stage import OutputStage
from ebpf_otlp.export.sinks import FileTarget
from ebpf_otlp.engine.run import capture
from ebpf_otlp.signals import links, registry
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.runtime.privileges import missing_privileges
from ebpf_otlp.sessions.bundles import BundleStore, capture_entry, describe, write_manifest

@dataclass
class Part:
    """One capture of the bundle: its processor and the files it writes."""
    name: str                # its signal's
    processor: Processor
    files: list[FileTarget]

    @property
    def signal(self):
        return registry.BY_NAME[self.name]


def plan(config: cfg.Config, bundle: str) -> list[Part]:
    """A part for each signal the configuration's tables ask for, in the registry's order."""
    parts = []
    for signal in registry.SIGNALS:
        table = config.tables.get(signal.table)
        if table is None or not signal.wanted(table):
            continue
        processor = signal.processor(signal.settings(table, config.path))
        parts.append(Part(signal.name, processor, [FileTarget(os.path.join(bundle, name), fmt, signal.name)
                                                   for name, fmt in signal.bundle]))
    if not parts:
        raise AgentError(f"{config.path or 'the configuration'} names no capture: add a "
                         f"{', '.join('[' + t + ']' for t in registry.TABLES)} table")
    links.link([p.processor for p in parts])
    return parts


def run(config: cfg.Config, notices: Console, out: Console, verbose: bool = False) -> int:
    """Returns 0 when every capture ran, 1 when some failed (the bundle says why)."""
    why = missing_privileges()   # bad input, not a failed capture: one line, exit 2
    if why:
        raise AgentError(why)
    config.check_captures()   # a bad table: nothing written, not even the lock
    s = config.section("snapshot")
    store = BundleStore(s["output_root"], s["keep"], s["max_age"], s["max_total"]).open()
    with store.lock():
        store.clean()
        started = time.time()
        with store.build(started, tar=s["tar"]) as bundle:
            parts = plan(config, bundle.path)
            report = _capture(config, parts, bundle.path, s["duration"], notices, verbose)
            report["files"] = write_manifest(bundle.path, {"name": bundle.name, **report})["files"]
        final = bundle.final
        removed = store.retain(time.time())
    failed = [c for c in report["captures"] if c["status"] != "ok"]
    lost = sum(c.get("lost_total", 0) for c in report["captures"])
    line = (f"snapshot {final}: {len(report['files'])} files, "
            f"{sum(f['size'] for f in report['files'].values()) / 1e6:.1f} MB in "
            f"{report['duration_s']:.1f} s; losses: {lost or 'none'}"
            + (f"; removed {len(removed)} old bundle(s)" if removed else "")
            + (f"; FAILED: {', '.join(c['name'] + ' (' + c['error'] + ')' for c in failed)}"
               if failed else ""))
    out.print(line, highlight=False, soft_wrap=True)
    return 1 if failed else 0


def _capture(config: cfg.Config, parts: list[Part], bundle: str, duration: float,
             notices: Console, verbose: bool) -> dict:
    from ebpf_otlp.doctor.checks import Doctor

    with open(os.path.join(bundle, "doctor.json"), "w") as f:
        json.dump(Doctor().run().as_dict(), f, indent=1)
    processors = [p.processor for p in parts]
    otlp, spool = cfg.otlp_settings(config.tables.get("otlp", {}))
    quiet = text_console(quiet=True)   # one summary line for cron; the manifest lists the files
    stage = OutputStage.create(quiet, quiet, [t for p in parts for t in p.files], {},
                               otlp, spool, lambda: {p.collector.name: p.collector.stats
                                                     for p in processors})
    def what(started: list[Processor]) -> str:
        names = [p.name for p in parts if any(p.processor is s for s in started)]
        return f"capturing {', '.join(names)} for {duration:g} s"
    done = capture(processors, stage, notices, "snapshot", what if verbose else None, duration,
                   None, [], time.time_ns(), skip_failed=True)
    by_processor = {id(p): r for p, r in zip(done.processors, done.results)}
    captures = []
    for part in parts:
        r = by_processor.get(id(part.processor))
        signal = registry.of(r) if r is not None else None
        captures.append(capture_entry(
            part.name, signal.title if signal else part.name, signal.stats(r) if signal else None,
            [os.path.basename(t.path) for t in part.files if t in stage.written],
            error=done.failed.get(id(part.processor), "")))
    return {**describe(config, "snapshot", done.started_ns, done.ended_ns, captures),
            "stopped_by": done.stopped_by or None}
