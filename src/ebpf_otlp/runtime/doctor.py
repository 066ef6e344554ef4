"""`ebpf-otlp doctor`: try each kernel capability for real and say what follows from it."""

from __future__ import annotations

import ctypes as ct
import os
import platform
import re
from dataclasses import asdict, dataclass

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime import loader
from ebpf_otlp.runtime.headers import find_headers
from ebpf_otlp.runtime.perf import EVENTS
from ebpf_otlp.runtime.privileges import missing_privileges
from ebpf_otlp.runtime.tracefs import ensure_tracefs


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class Doctor:
    def __init__(self):
        self.checks: list[Check] = []
        self.facts: dict[str, str] = {}

    def check(self, name: str, fn) -> bool:
        try:
            with loader.captured_stderr():   # libbpf's own complaints; the check says why
                detail = fn() or "ok"
            self.checks.append(Check(name, True, detail))
            return True
        except Exception as e:  # each probe reports its own failure and the rest go on
            self.checks.append(Check(name, False, _first_line(e)))
            return False

    def ok(self, name: str) -> bool:
        return any(c.name == name and c.ok for c in self.checks)

    def run(self) -> "Doctor":
        self.facts["kernel"] = platform.release()
        self.facts["machine"] = platform.machine()
        self.check("btf", _btf)
        self.check("privileges", _privileges)
        bcc_ok = self.check("bcc", _bcc)
        self.check("kernel headers", lambda: find_headers().how)
        self.check("tracefs", lambda: f"mounted at {ensure_tracefs()}")
        self.check("libc symbols", _libc_symbols)
        self.check("cgroup v2", _cgroup2)
        if not (bcc_ok and self.ok("privileges") and self.ok("kernel headers")):
            return self
        try:
            bpf = loader.load("doctor_probes", {"DOCTOR_PID": os.getpid()})
        except AgentError as e:
            self.checks.append(Check("compile", False, str(e)))
            return self
        self.checks.append(Check("compile", True, "BCC compiled and loaded a program"))
        received: list[int] = []
        bpf["events"].open_ring_buffer(
            lambda _c, data, _s: received.append(ct.cast(data, ct.POINTER(ct.c_uint32)).contents.value))
        for event in ("cpu-clock", "cpu-cycles"):
            kind = "software" if event == "cpu-clock" else "hardware"
            self.check(f"perf event {event} ({kind})", lambda e=event: _perf(bpf, e))
        self.check("kprobe program load", lambda: _load(bpf, "on_kprobe", "KPROBE"))
        self.check("kprobe attach", lambda: _kprobe(bpf))
        self.check("uprobe attach", lambda: _uprobe(bpf))
        self.check("tracepoint attach", lambda: _tracepoint(bpf))
        self.check("raw tracepoint attach", lambda: _raw_tracepoint(bpf))
        self.check("ring buffer", lambda: _ringbuf(bpf, received))
        self.check("map batch ops", lambda: _batch(bpf))
        self.check("tcp tracepoints", lambda: _tracepoints_exist(
            "sock/inet_sock_set_state", "tcp/tcp_retransmit_skb", "tcp/tcp_probe"))
        self.check("syscall tracepoints", lambda: _tracepoints_exist(
            "raw_syscalls/sys_enter", "raw_syscalls/sys_exit"))
        bpf.cleanup()
        self.check("fentry attach", _fentry)
        return self

    def commands(self) -> dict[str, str]:
        """Which commands work here, and through which hook."""
        ok = self.ok
        base = ok("compile") and ok("tracefs")
        out = {}
        if base and (ok("perf event cpu-clock (software)") or ok("perf event cpu-cycles (hardware)")):
            ev = "cpu-cycles or cpu-clock" if ok("perf event cpu-cycles (hardware)") else "cpu-clock only"
            out["profile"] = f"yes ({ev})"
        else:
            out["profile"] = "no: needs perf events"
        if base and ok("kprobe attach"):
            out["trace-net"] = "yes (kprobes)"
        elif base and ok("tcp tracepoints"):
            out["trace-net"] = "yes (tracepoints; kprobes unavailable)"
        else:
            out["trace-net"] = "no: needs kprobes or the sock/tcp tracepoints"
        out["syscalls"] = "yes (raw tracepoints sys_enter/sys_exit)" if base and ok("raw tracepoint attach") \
            else "no: needs raw tracepoints"
        out["memleak"] = "yes (uprobes)" if base and ok("uprobe attach") else "no: needs uprobes"
        return out

    def as_dict(self) -> dict:
        return {"facts": self.facts, "checks": [asdict(c) for c in self.checks],
                "commands": self.commands()}


def _btf() -> str:
    path = "/sys/kernel/btf/vmlinux"
    if not os.path.exists(path):
        raise RuntimeError("no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF")
    return f"{path} ({os.path.getsize(path) // 1024} KiB)"


def _privileges() -> str:
    why = missing_privileges()
    if why:
        raise RuntimeError(why)
    return "root" if os.geteuid() == 0 else "CAP_BPF + CAP_PERFMON"


def _bcc() -> str:
    bcc = loader.import_bcc()
    return f"BCC {getattr(bcc, '__version__', '?')} at {os.path.dirname(bcc.__file__)}"


def _perf(bpf, event: str) -> str:
    ev_type, ev_config = EVENTS[event]
    bpf.attach_perf_event(ev_type=ev_type, ev_config=ev_config, fn_name=b"on_perf",
                          sample_freq=99, cpu=-1)
    bpf.detach_perf_event(ev_type=ev_type, ev_config=ev_config)
    return "attached at 99 Hz on every CPU"


def _load(bpf, fn: str, kind: str) -> str:
    bpf.load_func(fn.encode(), getattr(loader.import_bcc().BPF, kind))
    return "verifier accepted it"


def _kprobe(bpf) -> str:
    if not os.path.exists(os.path.join(ensure_tracefs(), "kprobe_events")):
        raise RuntimeError("no kprobe_events in tracefs: the kernel is built without CONFIG_KPROBES")
    target = bpf.get_syscall_fnname("getppid")
    bpf.attach_kprobe(event=target, fn_name=b"on_kprobe")
    bpf.detach_kprobe(event=target)
    return f"attached to {target.decode()}"


def _uprobe(bpf) -> str:
    bpf.attach_uprobe(name=b"c", sym=b"getppid", fn_name=b"on_uprobe")
    bpf.detach_uprobe(name=b"c", sym=b"getppid")
    return "attached to libc getppid"


def _tracepoint(bpf) -> str:
    bpf.attach_tracepoint(tp=b"syscalls:sys_enter_getppid", fn_name=b"on_tracepoint")
    return "attached to syscalls:sys_enter_getppid"


def _raw_tracepoint(bpf) -> str:
    bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_raw_tracepoint")
    bpf.detach_raw_tracepoint(tp=b"sys_enter")
    return "attached to sys_enter"


def _ringbuf(bpf, received: list[int]) -> str:
    for _ in range(3):
        os.getppid()
    bpf.ring_buffer_poll(200)
    if 4 not in received:
        raise RuntimeError("no event arrived through the ring buffer from the tracepoint")
    return f"{len(received)} events delivered"


def _batch(bpf) -> str:
    table = bpf["batch_test"]
    table[ct.c_uint32(1)] = ct.c_uint64(2)
    items = list(table.items_lookup_and_delete_batch())
    if len(items) != 1 or len(table) != 0:
        raise RuntimeError("lookup-and-delete batch returned the wrong entries")
    return "lookup-and-delete batch works"


def _tracepoints_exist(*names: str) -> str:
    root = ensure_tracefs()
    missing = [n for n in names if not os.path.isdir(os.path.join(root, "events", n))]
    if missing:
        raise RuntimeError(f"missing: {', '.join(missing)}")
    return ", ".join(n.replace("/", ":") for n in names)


def _libc_symbols() -> str:
    """Whether profiles can name libc's internal functions (Debian strips them)."""
    from ebpf_otlp.symbolize.elf import ElfObject

    path = next((line.split()[-1] for line in open("/proc/self/maps")
                 if re.search(r"/libc(?:-[0-9.]+)?\.so[.0-9]*$", line)), None)
    if path is None:
        raise RuntimeError("no libc mapped in this process")
    with open(path, "rb") as f:
        elf = ElfObject(f, path)
        elf.symbols   # reads them, and notes where from
        source = elf.symbol_source
    if source == ".dynsym":
        raise RuntimeError(f"{path} is stripped and no debug file is installed: its internal "
                           "functions show as libc.so.6+0x…; install libc6-dbg (Debian) or "
                           "glibc-debuginfo (Fedora)")
    return f"{path}: {'its own .symtab' if source == '.symtab' else source}"


def _cgroup2() -> str:
    from ebpf_otlp.runtime.processes import cgroup2_mount

    mount = cgroup2_mount()
    if not mount:
        raise RuntimeError("not mounted: container.id only for processes still alive when read")
    return f"mounted at {mount}: syscalls places even exited processes in their containers"


def _fentry() -> str:
    bpf = loader.load("doctor_fentry")
    bpf.cleanup()
    return "attached to vfs_read"
