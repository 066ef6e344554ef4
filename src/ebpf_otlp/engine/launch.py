"""Launch mode (`ebpf-otlp profile -- CMD ARGS`), as `perf record -- CMD` and `strace -c CMD`.

The command is started at once but held before its exec, so its pid can go into the
kernel's filter; it runs only once the probes are attached (`release`), and so is
traced from its first instruction. Its exit ends the capture, and its exit status
becomes ebpf-otlp's.
"""

from __future__ import annotations

import os
import shutil
import signal

from ebpf_otlp.errors import AgentError

class LaunchedCommand:
    def __init__(self, argv: list[str]):
        if not argv:
            raise AgentError("nothing to launch: give a command after --")
        program = argv[0]
        if "/" in program:
            if not (os.path.isfile(program) and os.access(program, os.X_OK)):
                raise AgentError(f"cannot run {program}: not an executable file")
        else:   # searched here, so the command's trace has its one execve, as strace shows
            program = shutil.which(program)
            if program is None:
                raise AgentError(f"cannot run {argv[0]}: command not found in PATH")
        self.argv = list(argv)
        self._status: int | None = None
        # Forked here, not through a shell or subprocess (which returns only after the
        # exec): the child's only syscalls before the exec are a read and a close.
        hold_r, self._release = os.pipe()
        self._exec_errors, err_w = os.pipe()   # close-on-exec: EOF means the exec worked
        self.pid = os.fork()
        if self.pid == 0:   # the child
            try:
                os.close(self._release)
                os.close(self._exec_errors)
                if os.read(hold_r, 1) != b"\n":
                    os._exit(125)   # the agent gave up before attaching
                os.close(hold_r)
                for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)   # as a shell would start it
                os.execv(program, self.argv)
            except BaseException as e:   # noqa: BLE001 - the child must never return
                os.write(err_w, str(getattr(e, "strerror", None) or e).encode())
            finally:
                os._exit(127)
        os.close(hold_r)
        os.close(err_w)

    def release(self) -> None:
        """Let the command run: the probes are attached. Raises if its exec failed."""
        if self._release < 0:
            return
        os.write(self._release, b"\n")
        os.close(self._release)
        self._release = -1
        with os.fdopen(self._exec_errors, "rb") as errors:
            why = errors.read().decode(errors="replace")
        if why:
            self.wait()
            raise AgentError(f"cannot run {self.argv[0]}: {why}")

    def abandon(self) -> None:
        """The capture failed: a held command never runs; a released one is waited for,
        not left behind (a terminal's Ctrl-C reaches it too)."""
        if self._release >= 0:
            os.close(self._release)
            os.close(self._exec_errors)
            self._release = -1
        self.wait()

    def wait(self) -> int:
        while self._status is None:
            self._reap(0)
        return self._status

    def _reap(self, flags: int) -> None:
        if self._status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            self._status = 0
            return
        if pid:
            self._status = os.waitstatus_to_exitcode(status)

    def exited(self) -> bool:
        self._reap(os.WNOHANG)
        return self._status is not None

    def forward(self, signum: int) -> None:
        """Pass on a SIGTERM aimed at the agent; a terminal's SIGINT reached the command's
        process group already."""
        if signum == signal.SIGTERM and not self.exited():
            os.kill(self.pid, signum)

    @property
    def exit_status(self) -> int | None:
        """The command's status as a shell reports it (128 + N when killed by signal N)."""
        if not self.exited():
            return None
        return 128 - self._status if self._status < 0 else self._status

    def describe(self) -> str:
        return f"{' '.join(self.argv)} (pid {self.pid})"
