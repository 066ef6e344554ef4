"""The one BCC loader: every collector compiles its program from bpf/ through here."""

import contextlib
import os
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime.headers import use_headers
from ebpf_otlp.runtime.privileges import missing_privileges
from ebpf_otlp.runtime.processes import trim_heap
from ebpf_otlp.runtime.tracefs import ensure_tracefs


def bpf_dir() -> Path:
    """bpf/ inside the installed wheel, or at the top of a source checkout (editable install)."""
    packaged = Path(str(resources.files("ebpf_otlp"))) / "bpf"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "bpf"
    if checkout.is_dir():
        return checkout
    raise AgentError(f"the BPF programs are missing (looked in {packaged} and {checkout}): reinstall ebpf-otlp")


def import_bcc():
    try:
        import bcc  # noqa: F401  (the distribution's python3-bpfcc)
    except ImportError:
        raise AgentError("BCC is not installed for this Python: apt-get install python3-bpfcc "
                         "(Fedora: python3-bcc) and use a venv made with --system-site-packages") from None
    return bcc


def prepare() -> None:
    """Everything that must hold before any program loads; raises AgentError naming the fix."""
    why = missing_privileges()
    if why:
        raise AgentError(why)
    use_headers()
    ensure_tracefs()


def cflags_for(defines: dict[str, object]) -> list[str]:
    flags = []
    for name, value in sorted(defines.items()):
        if value is True:
            flags.append(f"-D{name}")
        elif value is not False and value is not None:   # 0 is a value (an offset, say)
            flags.append(f"-D{name}={value}")
    return flags


@contextlib.contextmanager
def captured_stderr():
    """Collect what clang and libbpf print to fd 2, so a failure can say why in one line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        text = []
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text.append(buf.read().decode(errors="replace"))


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error:" in line:
            return line.strip()
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return lines[-1] if lines else "no compiler output"


IMPORT = re.compile(r"^// #import (\S+)$", re.M)


def source(path: Path) -> str:
    """The program's text with each `// #import NAME` line replaced by bpf/lib/NAME.

    Not #include: BCC rewrites map calls (`stats.lookup(...)`) only in the main file, so
    code shared between programs is spliced into it as text."""
    def splice(m: re.Match) -> str:
        lib = path.parent / "lib" / m.group(1)
        if not lib.is_file():
            raise AgentError(f"{path.name} imports {m.group(1)}, missing from {lib.parent}: "
                             "reinstall ebpf-otlp")
        return f"// {m.group(1)}\n{lib.read_text()}"
    return IMPORT.sub(splice, path.read_text())


def load(program: str, defines: dict[str, object] | None = None):
    """Compile bpf/<program>.bpf.c with -D defines and return the BCC BPF object."""
    prepare()
    bcc = import_bcc()
    src = bpf_dir() / f"{program}.bpf.c"
    if not src.is_file():
        raise AgentError(f"no BPF program named {program} in {src.parent}")
    text = source(src)
    flags = cflags_for(defines or {}) + ["-Wno-macro-redefined", "-Wno-unused-value"]
    with captured_stderr() as log:
        try:
            bpf = bcc.BPF(text=text.encode(), cflags=flags)
        except Exception as e:  # BCC raises bare Exception for compile and load failures
            failure = e
        else:
            trim_heap()   # a BCC compile peaks at ~60 MB that glibc would keep cached
            return bpf
    if "compile" in str(failure).lower():
        raise AgentError(f"compiling {src.name} failed: {_first_error(''.join(log))}; "
                         "check the kernel headers ('ebpf-otlp doctor')")
    why = str(failure).strip()
    if "super-user privileges" in why and missing_privileges() is None:
        why = ("the kernel refused it (EPERM) though this process has the privileges: a "
               "kernel policy (lockdown, an LSM) or a missing feature forbids this program type")
    raise AgentError(f"loading {src.name} failed: {why} ({_first_error(''.join(log))})")
