"""Facts about target processes that every command checks or reports: liveness, and the
container and Kubernetes pod a process runs in (from its cgroup path), so an SRE can tell
which workload a stack or a syscall belongs to, and a Collector's k8sattributes processor
can add the pod's name and namespace from the container ID or pod UID."""

from __future__ import annotations

import os
import re
import time

from ebpf_otlp.records import ContainerInfo

COMM_MAX = 15   # TASK_COMM_LEN - 1: what the kernel keeps of a command name

# cgroup path components as container runtimes and the kubelet name them:
#   docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>.scope (systemd)
#   /docker/<id>, /kubepods/burstable/pod<uid>/<id> (cgroupfs)
_CONTAINER = re.compile(r"^(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?$")
_POD = re.compile(r"^(?:kubepods-(?:besteffort-|burstable-|guaranteed-)?)?pod"
                  r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$")


def set_thread_nice(native_id: int | None, nice: int | None = None) -> None:
    """A thread's own nice value (Linux keeps one per thread; new threads inherit their
    creator's); None: the process's, i.e. its main thread's. Quietly nothing for a thread
    that has ended."""
    try:
        if native_id:
            os.setpriority(os.PRIO_PROCESS, native_id,
                           os.getpriority(os.PRIO_PROCESS, os.getpid()) if nice is None else nice)
    except OSError:
        pass


def _libc():
    import ctypes
    return ctypes.CDLL(None)


def trim_heap() -> None:
    """Give the OS the pages glibc's malloc holds free, in every arena (malloc_trim): after a
    BCC compile or a window's symbolization the peak's memory would otherwise stay resident
    (the agent at ~85 MB anonymous instead of ~25 MB after a compile). Not glibc: nothing."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


M_ARENA_MAX = -8


def limit_malloc_arenas(n: int) -> None:
    """At most `n` malloc arenas (glibc makes one per thread up to 8 per CPU, each keeping
    its own free memory: 4-6 MB apiece in a long-running agent). Call before threads start."""
    try:
        _libc().mallopt(M_ARENA_MAX, n)
    except (OSError, AttributeError):
        pass


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T stopped, Z zombie, ...); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    return process_state(pid) not in (None, "Z", "X")


def process_name(pid: int) -> str | None:
    """The command name the kernel keeps (/proc/PID/comm), None once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


PF_KTHREAD = 0x00200000   # task flags: a kernel thread


def kernel_thread(pid: int) -> str | None:
    """The name of a kernel thread (no user space: no heap, no user stacks), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, tail = f.read().rsplit(")", 1)
        flags = int(tail.split()[6])
    except (OSError, IndexError, ValueError):
        return None
    return head.split("(", 1)[1] if flags & PF_KTHREAD else None


def parse_cgroup_path(path: str) -> ContainerInfo:
    """The container ID and pod UID named in one cgroup path."""
    container = pod = ""
    for part in path.split("/"):
        if m := _CONTAINER.match(part):
            container = m.group(1)
        elif m := _POD.match(part):
            pod = m.group(1).replace("_", "-")
    return ContainerInfo(container, pod)


def parse_cgroup(text: str) -> ContainerInfo:
    """The container ID and pod UID in a /proc/PID/cgroup text (cgroup v1 or v2 lines)."""
    for line in text.splitlines():
        info = parse_cgroup_path(line.split(":", 2)[-1])
        if info != ContainerInfo():
            return info
    return ContainerInfo()


class CgroupIds:
    """cgroup v2 ids (what bpf_get_current_cgroup_id returns: the directory's inode) →
    container, found by walking the cgroup2 mount. The kernel records the id at the
    event, so a process that has exited by the time user space looks is still placed."""

    def __init__(self, mount: str | None = None):
        self.mount = mount if mount is not None else cgroup2_mount()
        self._known: dict[int, ContainerInfo] = {}
        self._walked_at = float("-inf")

    def lookup(self, cgroup_id: int) -> ContainerInfo | None:
        """The container of a cgroup id; None if no such cgroup is found."""
        # New cgroups appear all the time; re-walk for an unknown id, at most once a second.
        if cgroup_id not in self._known and self.mount and time.monotonic() - self._walked_at > 1:
            self._walk()
        return self._known.get(cgroup_id)

    def _walk(self) -> None:
        self._walked_at = time.monotonic()
        for top, _, _ in os.walk(self.mount):
            try:
                ino = os.stat(top).st_ino
            except OSError:
                continue
            if ino not in self._known:
                self._known[ino] = parse_cgroup_path(top[len(self.mount):] or "/")


def cgroup2_mount() -> str | None:
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


def container_of(pid: int) -> ContainerInfo:
    """Where a live process runs; empty on the host or once the process is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return parse_cgroup(f.read())
    except OSError:
        return ContainerInfo()
