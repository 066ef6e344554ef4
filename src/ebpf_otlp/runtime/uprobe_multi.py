"""Uprobe sessions (Linux 6.13+): a uprobe_multi link in session mode, made with the bpf()
syscall, since BCC has no wrapper for it.

A session program runs at a function's entry and, only when it returned 0 there, again
at the return: a heap profiler pays the return trap for sampled calls only."""

from __future__ import annotations

import ctypes as ct
import os
import platform

BPF_LINK_CREATE = 28
BPF_TRACE_UPROBE_SESSION = 57           # enum bpf_attach_type (include/uapi/linux/bpf.h)
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_libc = ct.CDLL(None, use_errno=True)


class _UprobeMultiAttr(ct.Structure):
    """union bpf_attr's link_create, with its uprobe_multi member."""
    _fields_ = [("prog_fd", ct.c_uint32), ("target_fd", ct.c_uint32), ("attach_type", ct.c_uint32),
                ("flags", ct.c_uint32), ("path", ct.c_uint64), ("offsets", ct.c_uint64),
                ("ref_ctr_offsets", ct.c_uint64), ("cookies", ct.c_uint64), ("cnt", ct.c_uint32),
                ("um_flags", ct.c_uint32), ("pid", ct.c_uint32), ("pad", ct.c_uint32 * 17)]


def link_session(prog_fd: int, path: str, offsets: list[int], pid: int = 0) -> int:
    """A session link of the program on `offsets` (file offsets) of `path`, in process
    `pid` only (0: every process). Returns the link's fd; raises OSError."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(0, f"uprobe sessions: unsupported architecture {platform.machine()}")
    c_path = ct.create_string_buffer(path.encode())
    c_offsets = (ct.c_uint64 * len(offsets))(*offsets)
    attr = _UprobeMultiAttr(prog_fd=prog_fd, attach_type=BPF_TRACE_UPROBE_SESSION,
                            path=ct.addressof(c_path), offsets=ct.addressof(c_offsets),
                            cnt=len(offsets), pid=pid)
    # syscall() is variadic and reads longs: 32-bit ints would leave garbage above them.
    fd = _libc.syscall(ct.c_long(nr), ct.c_long(BPF_LINK_CREATE), ct.byref(attr),
                       ct.c_long(ct.sizeof(attr)))
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, f"uprobe session link: {os.strerror(err)}")
    return fd
