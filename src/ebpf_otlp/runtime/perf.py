"""perf_event facts and attach helpers shared by samplers."""

from __future__ import annotations

from ebpf_otlp.errors import AgentError

# perf_event_attr type/config (linux/perf_event.h).
PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE = 0, 1
PERF_COUNT_HW_CPU_CYCLES, PERF_COUNT_SW_CPU_CLOCK = 0, 0
EVENTS = {
    "cpu-clock": (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK),
    "cpu-cycles": (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES),
}


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


def attach_sampler(bpf, fn_name: str, event: str, hz: int) -> None:
    """Attach fn_name to `event` sampling at hz on every CPU, with an error naming the fix."""
    ev_type, ev_config = EVENTS[event]
    try:
        bpf.attach_perf_event(ev_type=ev_type, ev_config=ev_config, fn_name=fn_name.encode(),
                              sample_freq=hz, cpu=-1)
    except Exception as e:
        hint = (" (this machine has no hardware counters: use --event cpu-clock)"
                if event == "cpu-cycles" else "")
        raise AgentError(f"cannot open perf event {event} at {hz} Hz: {e}{hint}") from None


def detach_sampler(bpf, event: str) -> None:
    ev_type, ev_config = EVENTS[event]
    bpf.detach_perf_event(ev_type=ev_type, ev_config=ev_config)
