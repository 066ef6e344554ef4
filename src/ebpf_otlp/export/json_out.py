"""JSON export: the symbolized profile for scripts and jq."""

from __future__ import annotations

import json

from ebpf_otlp.records import Profile


def encode(profile: Profile) -> str:
    doc = {
        "event": profile.event,
        "value_type": list(profile.value_type),
        "frequency_hz": profile.frequency_hz,
        "period_ns": profile.period_ns,
        "start_ns": profile.start_ns,
        "duration_ns": profile.duration_ns,
        "total_samples": profile.total_samples,
        "timing": profile.timing,
        "stats": {**vars(profile.stats), "lost_stacks": profile.stats.lost_stacks},
        "samples": [
            {
                "pid": s.pid, "tid": s.tid, "thread_name": s.thread_name,
                "process_name": s.process_name, "count": s.count,
                **s.container.attributes(),
                "frames": [{"function": f.function, "module": f.module,
                            "address": f"{f.address:#x}", "kernel": f.kernel}
                           for f in s.frames],
            }
            for s in profile.samples
        ],
    }
    return json.dumps(doc, indent=1) + "\n"
