"""JSON export: the symbolized profile for scripts and jq."""

from __future__ import annotations

import json

from ebpf_otlp.records import Profile


def encode(profile: Profile) -> str:
    doc = {
        "event": profile.event,
        "sample_types": [{"type": t.type, "unit": t.unit} for t in profile.sample_types],
        "default_sample_type": profile.sample_types[profile.default_index].type,
        "period_type": {"type": profile.period_type.type, "unit": profile.period_type.unit},
        "period": profile.period,
        "frequency_hz": profile.frequency_hz,
        "start_ns": profile.start_ns,
        "duration_ns": profile.duration_ns,
        "totals": {t.type: profile.total(i) for i, t in enumerate(profile.sample_types)},
        "timing": profile.timing,
        "stats": profile.stats.as_dict(),
        "samples": [
            {
                "pid": s.pid, "tid": s.tid, "thread_name": s.thread_name,
                "process_name": s.process_name, "values": list(s.values),
                **s.container.attributes(),
                "frames": [{"function": f.function, "module": f.module,
                            "address": f"{f.address:#x}", "kernel": f.kernel,
                            **({"line": f.line, "frame_type": f.frame_type} if f.frame_type else {})}
                           for f in s.frames],
            }
            for s in profile.samples
        ],
    }
    return json.dumps(doc, indent=1) + "\n"
