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


# The exit status of `ebpf-otlp doctor` (2 stays the CLI's status for bad input).
EXIT_USABLE = 0          # at least one command can run here
EXIT_NOTHING_USABLE = 1  # no command can: the failed checks say why

PERF_CLOCK = "perf event cpu-clock (software)"
PERF_CYCLES = "perf event cpu-cycles (hardware)"
# Every command goes through loader.load: privileges, headers and tracefs, then BCC compiles.
_LOAD = ("privileges", "bcc", "kernel headers", "tracefs", "compile")
# The CPU sampler program always carries TRACEPOINT_PROBE(sched, sched_process_exec).
_EXEC_TP = "tracepoint sched:sched_process_exec"
_SWITCH_TP = "tracepoint sched:sched_switch"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Command:
    """A command that exists, and whether it can run here (detail: the hook, or why not)."""
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

    def _needs(self, *names: str) -> str | None:
        """Why a command cannot run: the required checks that failed (None: all passed).
        Checks skipped after an earlier failure are not named; that failure is."""
        failed = [n for n in names if not self.ok(n)]
        if not failed:
            return None
        tried = {c.name for c in self.checks}
        return "no: needs " + ", ".join([n for n in failed if n in tried] or failed)

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
        self.check(_EXEC_TP, lambda: _attach_tracepoint(bpf, "sched:sched_process_exec"))
        self.check(_SWITCH_TP, lambda: _attach_tracepoint(bpf, "sched:sched_switch"))
        self.check("map batch ops", lambda: _batch(bpf))
        self.check("tcp tracepoints", lambda: _tracepoints_exist(
            "sock/inet_sock_set_state", "sock/sock_send_length", "sock/sock_recv_length",
            "tcp/tcp_retransmit_skb", "tcp/tcp_receive_reset", "tcp/tcp_destroy_sock",
            "tcp/tcp_probe"))
        self.check("tcp_sock offsets from BTF", _tcp_offsets)
        self.check("TLS libraries", _tls_coverage)
        self.check("syscall tracepoints", lambda: _tracepoints_exist(
            "raw_syscalls/sys_enter", "raw_syscalls/sys_exit"))
        bpf.cleanup()
        self.check("fentry attach", _fentry)
        return self

    def command_verdicts(self) -> list[Command]:
        """The commands that exist, each with the checks it cannot run without."""
        out = []
        why = self._needs(*_LOAD, _EXEC_TP)
        if why is None and not (self.ok(PERF_CLOCK) or self.ok(PERF_CYCLES)):
            why = self._needs(*_LOAD, _EXEC_TP, PERF_CLOCK)
        if why is None:
            ev = ("cpu-clock or cpu-cycles" if self.ok(PERF_CLOCK) and self.ok(PERF_CYCLES)
                  else "cpu-clock" if self.ok(PERF_CLOCK) else "--event cpu-cycles only")
            out.append(Command("profile", True, f"yes (perf event {ev})"))
        else:
            out.append(Command("profile", False, why))
        why = self._needs(*_LOAD, _EXEC_TP, _SWITCH_TP)
        out.append(Command("profile --off-cpu", why is None, why or "yes (tracepoint sched:sched_switch)"))
        why = self._needs(*_LOAD, "raw tracepoint attach", "syscall tracepoints")
        out.append(Command("syscalls", why is None, why or "yes (raw tracepoints sys_enter/sys_exit)"))
        hooks = "tcp tracepoints" if self.ok("tcp tracepoints") or not self.ok("kprobe attach") \
            else "kprobe attach"
        why = self._needs(*_LOAD, "btf", "tcp_sock offsets from BTF", hooks)
        tls = ", HTTPS through OpenSSL uprobes" if self.ok("TLS libraries") and self.ok("uprobe attach") else ""
        out.append(Command("trace-net", why is None, why or (
            f"yes (tracepoints sock:inet_sock_set_state, tcp:*{tls})" if hooks == "tcp tracepoints"
            else f"yes (kprobes tcp_set_state, ...{tls})")))
        why = self._needs(*_LOAD, "uprobe attach")
        out.append(Command("memleak", why is None, why or "yes (uprobes on the allocator)"))
        return out

    def commands(self) -> dict[str, str]:
        """Command name to verdict: "yes (the hook)" or "no: needs <failed checks>"."""
        return {c.name: c.detail for c in self.command_verdicts()}

    @property
    def usable_commands(self) -> list[str]:
        return [c.name for c in self.command_verdicts() if c.ok]

    @property
    def exit_status(self) -> int:
        """Non-zero when nothing can run here, so scripts and provisioning can gate on it."""
        return EXIT_USABLE if self.usable_commands else EXIT_NOTHING_USABLE

    def as_dict(self) -> dict:
        return {"facts": self.facts, "checks": [asdict(c) for c in self.checks],
                "commands": self.commands(), "usable_commands": self.usable_commands,
                "exit_status": self.exit_status}


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
    for tp in (b"sys_enter", b"sys_exit"):   # the two `syscalls` attaches
        bpf.attach_raw_tracepoint(tp=tp, fn_name=b"on_raw_tracepoint")
        bpf.detach_raw_tracepoint(tp=tp)
    return "attached to sys_enter and sys_exit"


def _attach_tracepoint(bpf, tp: str) -> str:
    bpf.attach_tracepoint(tp=tp.encode(), fn_name=b"on_tracepoint")
    bpf.detach_tracepoint(tp=tp.encode())
    return f"attached to {tp}"


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


def _tcp_offsets() -> str:
    from ebpf_otlp.signals.net.collector import field_offsets

    offsets = field_offsets()
    return f"{len(offsets)} fields of tcp_sock and sock"


def _tls_coverage() -> str:
    """Which processes' HTTPS trace-net sees: OpenSSL's libssl is probed; GnuTLS, Go's
    crypto/tls and a statically linked OpenSSL are not."""
    from ebpf_otlp.signals.net.collector import libssl_files, mapped_files

    openssl, gnutls, mapped = set(), set(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        files = mapped_files(pid, "/libssl.so", "/libgnutls.so")
        if not files:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        ssl = [p for p in files if "/libssl.so" in p]
        mapped += ssl
        if ssl:
            openssl.add(name)
        if len(ssl) < len(files):
            gnutls.add(name)
    libraries = libssl_files(mapped)
    if not libraries:
        raise RuntimeError("no OpenSSL libssl here: trace-net sees plaintext HTTP only")
    out = (f"trace-net probes OpenSSL in {', '.join(libraries)}; mapped now by "
           f"{', '.join(sorted(openssl)) or 'no process'}")
    if gnutls:
        out += f"; not seen: GnuTLS in {', '.join(sorted(gnutls))}"
    return out + " (Go's crypto/tls and a statically linked OpenSSL are not seen either)"


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
