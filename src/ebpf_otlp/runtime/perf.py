"""perf_event facts and attach helpers shared by samplers."""

from __future__ import annotations

from ebpf_otlp.errors import AgentError

# perf_event_attr type/config (linux/perf_event.h).
PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE = 0, 1
PERF_COUNT_HW_CPU_CYCLES, PERF_COUNT_SW_CPU_CLOCK, PERF_COUNT_SW_PAGE_FAULTS = 0, 0, 2
EVENTS = {
    "cpu-clock": (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK),
    "cpu-cycles": (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES),
    "page-faults": (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS),
}
# Events that count occurrences: sampled every N of them (a period), not N times a second.
COUNTED = {"page-faults": ("page_faults", "count")}


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    """Parse '0-3,5' into [0, 1, 2, 3, 5]."""
    with open(path) as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def max_sample_rate(path: str = "/proc/sys/kernel/perf_event_max_sample_rate") -> int:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 100000


def attach_sampler(bpf, fn_name: str, event: str, hz: int, period: int = 0) -> None:
    """Attach fn_name to `event` on every CPU, sampling at hz, or every `period` events for
    a counted event (page faults); with an error naming the fix."""
    ev_type, ev_config = EVENTS[event]
    from ebpf_otlp.runtime.loader import captured_stderr

    rate = dict(sample_period=period) if event in COUNTED else dict(sample_freq=hz)
    try:
        with captured_stderr():   # BCC's own "perf_event_open failed" line: the error says why
            bpf.attach_perf_event(ev_type=ev_type, ev_config=ev_config, fn_name=fn_name.encode(),
                                  cpu=-1, **rate)
    except Exception as e:
        hint = (" (this machine has no hardware counters: use --event cpu-clock)"
                if event == "cpu-cycles" else "")
        every = f"every {period} events" if event in COUNTED else f"at {hz} Hz"
        raise AgentError(f"cannot open perf event {event} {every}: {e}{hint}") from None


def detach_sampler(bpf, event: str) -> None:
    ev_type, ev_config = EVENTS[event]
    bpf.detach_perf_event(ev_type=ev_type, ev_config=ev_config)
