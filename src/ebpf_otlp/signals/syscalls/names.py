"""Syscall numbers ↔ names for the running architecture, and errno names.

Numbers come from libseccomp (libseccomp2, on every Debian and Ubuntu system), which
keeps per-architecture tables current; BCC's own table is x86_64-only and stale.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import errno
import functools

MAX_NR = 1024   # the BPF side's filter and I/O tables have this many slots

# Read/write-family syscalls whose positive return is a byte count (for --files).
READ_SYSCALLS = ("read", "pread64", "readv", "preadv", "preadv2", "recvfrom", "recvmsg")
WRITE_SYSCALLS = ("write", "pwrite64", "writev", "pwritev", "pwritev2", "sendto", "sendmsg",
                  "sendfile")


@functools.lru_cache(maxsize=1)
def _libs():
    try:
        seccomp = ctypes.CDLL("libseccomp.so.2")
    except OSError:   # find_library runs ldconfig: only when the usual name fails
        seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so")
    seccomp.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    seccomp.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    seccomp.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    seccomp.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    return seccomp, libc


@functools.lru_cache(maxsize=None)
def table() -> dict[int, str]:
    """Every syscall number of this architecture (SCMP_ARCH_NATIVE) with its name."""
    seccomp, libc = _libs()
    out = {}
    for nr in range(MAX_NR):
        ptr = seccomp.seccomp_syscall_resolve_num_arch(0, nr)
        if ptr:
            out[nr] = ctypes.string_at(ptr).decode()
            libc.free(ptr)
    return out


def name(nr: int) -> str:
    return table().get(nr, f"syscall_{nr}")


def number(syscall: str) -> int | None:
    for nr, n in table().items():
        if n == syscall:
            return nr
    if syscall.startswith("syscall_") and syscall[8:].isdigit():
        return int(syscall[8:])
    return None


def suggestions(syscall: str) -> list[str]:
    return difflib.get_close_matches(syscall, table().values(), n=3, cutoff=0.6)


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, f"E{err}")
