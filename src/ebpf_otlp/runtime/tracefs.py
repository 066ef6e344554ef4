"""tracefs must be mounted for tracepoint and uprobe attach; many VMs boot without it."""

import ctypes
import os

from ebpf_otlp.errors import AgentError

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"


def tracefs_path() -> str | None:
    """The mounted tracing directory, if any."""
    for path in (TRACEFS, DEBUGFS_TRACING):
        if os.path.exists(os.path.join(path, "events")):
            return path
    return None


def _mount(source: bytes, target: bytes, fstype: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source, target, fstype, 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ensure_tracefs() -> str:
    """Mount tracefs at /sys/kernel/tracing when nothing is mounted; return the path."""
    path = tracefs_path()
    if path:
        return path
    try:
        _mount(b"nodev", TRACEFS.encode(), b"tracefs")
    except OSError as e:
        raise AgentError(
            f"tracefs is not mounted and mounting it at {TRACEFS} failed ({e.strerror}): "
            f"run 'mount -t tracefs nodev {TRACEFS}' as root") from None
    if not tracefs_path():
        raise AgentError(f"tracefs mounted at {TRACEFS} but has no events/: "
                         "the kernel lacks CONFIG_FTRACE/tracepoints")
    return TRACEFS
