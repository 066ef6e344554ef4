"""A private two-namespace network for live network tests, with real traffic to check against.

    with NetLab() as lab:
        srv = lab.python("b", "tcp_traffic.py", "server", "--host", lab.B4, "--count", "5")
        port = wait_listening(srv)
        cli = lab.python("a", "tcp_traffic.py", "client", "--host", lab.B4,
                         "--port", str(port), "--count", "5")
        client, server = result(cli), result(srv)

For a tracer test, start the server first, then the client with "--wait-stdin" and
stdin=subprocess.PIPE as the workload of conftest.agent_around (which sends it "g"), then
read the server with result(srv).

Namespaces "a" and "b" (really ebpfotlp-a-<pid>-<n>, ebpfotlp-b-<pid>-<n>) are joined by a
veth pair: A4/B4 = 10.213.0.1/.2 (/24) and A6/B6 = fd00:213::1/::2 (/64, nodad so they work
at once); loopback is up in both. All test traffic stays in these namespaces or on
loopback. Packet loss comes from nftables rules in the RECEIVING namespace (no netem here):
`lab.drop("b", "tcp-data", port=P, every=5)` drops every 5th data segment arriving in b for
port P (retransmissions, yet the connection completes), `lab.drop("b", "syn", port=P)` drops
the SYNs arriving for P (a connect from a that times out). Rules sit on the input hook
because a drop in the sender's own output hook is not loss: the kernel reports it back to
TCP as a failed send (EPERM), which TCP simply sends again later, not as a retransmission.
Leaving the block kills what lab.run started and deletes the namespaces, also on failure.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import WORKLOADS, need

# The system python3 runs the workloads: standard library only, and the same binary (and
# so the same comm) as a user's script would be.
SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

_seq = itertools.count()
_NAME = re.compile(r"^ebpfotlp-[ab]-(\d+)-\d+$")
TABLE = "ebpfotlp"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "ip (iproute2) is not installed"
    if _ip("netns", "list", check=False).returncode != 0:
        return "`ip netns` does not work here"
    return None


def _sweep_stale() -> None:
    """Delete namespaces left by test processes that died without cleaning up."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _ip("netns", "del", name, check=False)


class NetLab:
    """Two namespaces joined by a veth pair; see the module docstring."""

    A4, B4 = "10.213.0.1", "10.213.0.2"
    A6, B6 = "fd00:213::1", "fd00:213::2"

    def __init__(self):
        need(_netns_unavailable())
        n = next(_seq)
        self.names = {"a": f"ebpfotlp-a-{os.getpid()}-{n}", "b": f"ebpfotlp-b-{os.getpid()}-{n}"}
        self.procs: list[subprocess.Popen] = []
        self._tables: set[str] = set()

    # -- set-up and clean-up

    def __enter__(self) -> "NetLab":
        _sweep_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        a, b = self.names["a"], self.names["b"]
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        # Made inside a with its peer inside b, so no interface ever sits in the host's
        # namespace (no clash with other tests, nothing for the host to route).
        _ip("-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
            "netns", b)
        for ns, v4, v6 in (("a", self.A4, self.A6), ("b", self.B4, self.B6)):
            name = self.names[ns]
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "0", missing_ok=True)
            self.sysctl(ns, "net.ipv6.conf.lo.disable_ipv6", "0", missing_ok=True)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{v4}/24", "dev", "veth0")
            _ip("-n", name, "-6", "addr", "add", f"{v6}/64", "dev", "veth0", "nodad")
            _ip("-n", name, "link", "set", "veth0", "up")
            # Since 6.5 a SYN is retried linearly tcp_syn_linear_timeouts (4) more times
            # than TCP_SYNCNT says; 0 makes TCP_SYNCNT=1 time out in ~3 s as it used to.
            self.sysctl(ns, "net.ipv4.tcp_syn_linear_timeouts", "0", missing_ok=True)
        self._wait_up()

    def _wait_up(self, timeout: float = 5.0) -> None:
        """Until both ends see the carrier, traffic across the veth would be dropped."""
        deadline = time.monotonic() + timeout
        for ns in ("a", "b"):
            while "LOWER_UP" not in _ip("-n", self.names[ns], "link", "show", "veth0").stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"veth0 in {self.names[ns]} never came up")
                time.sleep(0.02)

    def close(self) -> None:
        """Kill what we started, then delete both namespaces; never raises."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for name in self.names.values():
            # Anything else still in the namespace was started by our workloads.
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", name, check=False)

    # -- running things inside

    def ns(self, ns: str) -> str:
        """The real namespace name for "a"/"b" (a full name is passed through)."""
        return self.names.get(ns, ns)

    def addr(self, ns: str, family: int = 4) -> str:
        return {("a", 4): self.A4, ("b", 4): self.B4, ("a", 6): self.A6, ("b", 6): self.B6}[
            (ns, family)]

    def run(self, ns: str, argv: list[str], **popen_kw) -> subprocess.Popen:
        """Start argv inside the namespace; `ip netns exec` execs it, so the pid is argv's."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(ns), *argv], **popen_kw)
        self.procs.append(p)
        return p

    def python(self, ns: str, script: str, *args: str, **popen_kw) -> subprocess.Popen:
        """Run tests/workloads/SCRIPT with the system python3, stdout/stderr as text pipes."""
        popen_kw.setdefault("stdout", subprocess.PIPE)
        popen_kw.setdefault("stderr", subprocess.PIPE)
        popen_kw.setdefault("text", True)
        return self.run(ns, [SYSTEM_PYTHON, str(WORKLOADS / script), *args], **popen_kw)

    def sysctl(self, ns: str, key: str, value: str, missing_ok: bool = False) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        r = subprocess.run(["ip", "netns", "exec", self.ns(ns), "sh", "-c",
                            f'[ -e "{path}" ] || exit 3; echo {value} > "{path}"'],
                           capture_output=True, text=True)
        if r.returncode == 3 and missing_ok:
            return
        if r.returncode != 0:
            raise RuntimeError(f"sysctl {key}={value} in {self.ns(ns)}: {r.stderr.strip()}")

    # -- packet loss with nftables

    def nft(self, ns: str, script: str) -> None:
        """Run an nft script (as for `nft -f`) inside the namespace."""
        nft = shutil.which("nft")
        need(None if nft else "nft (Debian package nftables) is not installed")
        r = subprocess.run(["ip", "netns", "exec", self.ns(ns), nft, "-f", "-"],
                           input=script, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nft in {self.ns(ns)} failed: {r.stderr.strip()}\n{script}")

    def _ensure_table(self, ns: str) -> None:
        if ns in self._tables:
            return
        self.nft(ns, f"""
            table inet {TABLE} {{
                chain output {{ type filter hook output priority 0; policy accept; }}
                chain input {{ type filter hook input priority 0; policy accept; }}
            }}""")
        self._tables.add(ns)

    def drop(self, ns: str, kind: str, port: int, every: int = 1, hook: str = "input",
             match: str = "dport") -> str:
        """Add a counted drop rule in the namespace's `hook` chain; returns the rule.

        ns is the receiving side (see the module docstring for why input, not output).

        kind "tcp-data": TCP segments to (match="dport") or from ("sport") `port` that carry
            data, i.e. no SYN/FIN/RST and longer than any bare ACK (> 120 bytes of IP packet,
            so at least ~20 bytes of payload); every `every`-th one (numgen inc mod N == 0,
            so the first is dropped). The connection still completes, with retransmissions.
        kind "syn": connection requests (SYN without ACK) to `port`, every `every`-th
            (default all): a connect that times out (ETIMEDOUT).
        kind "udp": every `every`-th UDP datagram to/from `port`.
        Note: before segmentation offload a dropped skb may hold several segments.
        """
        if hook not in ("output", "input") or match not in ("dport", "sport"):
            raise ValueError(f"hook {hook!r} / match {match!r}")
        nth = "" if every <= 1 else f"numgen inc mod {every} == 0 "
        if kind == "tcp-data":
            rule = (f"tcp {match} {port} tcp flags & (syn | fin | rst) == 0 "
                    f"meta length > 120 {nth}counter drop")
        elif kind == "syn":
            rule = f"tcp {match} {port} tcp flags & (syn | ack) == syn {nth}counter drop"
        elif kind == "udp":
            rule = f"udp {match} {port} {nth}counter drop"
        else:
            raise ValueError(f"unknown drop kind {kind!r}")
        self._ensure_table(ns)
        self.nft(ns, f"add rule inet {TABLE} {hook} {rule}\n")
        return rule

    def dropped(self, ns: str) -> int:
        """Packets dropped so far by this lab's rules in the namespace (from the counters)."""
        if ns not in self._tables:
            return 0
        r = subprocess.run(["ip", "netns", "exec", self.ns(ns), "nft", "-j", "list", "table",
                            "inet", TABLE], capture_output=True, text=True, check=True)
        total = 0
        for item in json.loads(r.stdout)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += expr["counter"]["packets"]
        return total


# -- reading the workloads


def wait_listening(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """Wait for a workload's `listening HOST PORT` line on stderr; returns PORT."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("listening "):
                sel.close()
                return int(line.split()[-1])
    sel.close()
    proc.kill()
    raise AssertionError(f"workload never listened; stderr: {''.join(seen)[-2000:]}")


def result(proc: subprocess.Popen, timeout: float = 60.0, check: bool = True,
           stdin: str | None = None) -> dict:
    """Wait for a workload and return its JSON document (check: it must exit 0)."""
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"workload {proc.args} timed out; stderr: {err[-2000:]}")
    if check and proc.returncode != 0:
        raise AssertionError(f"workload {proc.args} exited {proc.returncode}: "
                             f"{err[-2000:]}\n{out[-2000:]}")
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError(f"workload {proc.args} printed no JSON: {out[-2000:]!r} "
                             f"stderr: {err[-2000:]}") from None
