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


def mounted_at(mounts: str = "/proc/self/mounts") -> str | None:
    """Where tracefs is mounted (whether or not this user may read it), if anywhere."""
    try:
        with open(mounts) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "tracefs" and fields[1] in (TRACEFS, DEBUGFS_TRACING):
                    return fields[1]
    except OSError:
        pass
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
    mounted = mounted_at()
    if mounted:   # there, but closed to this user (mounted with mode 0700)
        mode = oct(os.stat(mounted).st_mode & 0o777)
        raise AgentError(f"tracefs at {mounted} is not readable as uid {os.geteuid()} "
                         f"(mode {mode[2:]}): run as root, or remount it readable "
                         f"(mount -o remount,mode=755 {mounted})")
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
