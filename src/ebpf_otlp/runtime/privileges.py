"""Can this process load BPF programs and open perf events?"""

import os

# What every command may need (docs/config.md): BPF and perf events, BCC and tracefs,
# other processes' maps and memory, locked memory, kernel symbol addresses.
CAPABILITIES = ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE",
                "CAP_DAC_READ_SEARCH", "CAP_SYSLOG")

# Capability bit numbers from linux/capability.h.
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_cap(caps: int, bit: int) -> bool:
    return bool(caps >> bit & 1)


def missing_privileges(caps: int | None = None) -> str | None:
    """Return why BPF cannot be used, or None when root or CAP_BPF+CAP_PERFMON suffice."""
    if caps is None:
        caps = effective_capabilities()
    if has_cap(caps, CAP_SYS_ADMIN):
        return None
    if has_cap(caps, CAP_BPF) and has_cap(caps, CAP_PERFMON):
        return None
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return (f"running as {who} without CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON: run with sudo, "
            "or start it with ambient capabilities (file capabilities do not reach a Python "
            "script), e.g. systemd's AmbientCapabilities=" + " ".join(CAPABILITIES))
