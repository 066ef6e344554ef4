"""trace-net on the terminal: a line per connection as it closes (in the spirit of
tcplife), and at the end a summary per process and peer, of requests (HTTP, gRPC) per
process and route, and of database statements per process, operation and table."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ebpf_otlp.signals.net.records import Connection, DbOperation, HttpRequest, NetReport, endpoint
from ebpf_otlp.signals.net.routes import route_of

HEADER = (f"{'PID':>7} {'COMM':<15} {'LADDR:LPORT':<28} {'RADDR:RPORT':<28} {'TX_KB':>8} "
          f"{'RX_KB':>8} {'MS':>9} {'RETR':>5} RESULT")


def printable(text: str) -> str:
    """A command name is the process's to choose: an escape sequence in it is shown, not obeyed."""
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def line(c: Connection) -> str:
    ms = f"{c.duration_ns / 1e6:.2f}" if c.duration_ns is not None else "-"
    return (f"{c.pid:>7} {printable(c.process_name)[:15]:<15} {endpoint(c.local_address, c.local_port):<28} "
            f"{endpoint(c.peer_address, c.peer_port):<28} {c.bytes_sent / 1024:>8.1f} "
            f"{c.bytes_received / 1024:>8.1f} {ms:>9} {c.retransmits:>5} {c.result}")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def render_summary(report: NetReport, console: Console, top: int = 20) -> None:
    groups: dict[tuple, list[Connection]] = defaultdict(list)
    for c in report.connections:
        groups[(c.pid, c.process_name, c.role, *c.server)].append(c)
    t = Table(title=f"TCP connections by process and peer ({len(report.connections)} over "
                    f"{report.duration_ns / 1e9:.1f} s, {report.hooks})", title_justify="left")
    for col in ("pid", "process", "role", "server", "conns", "failed", "p50 ms", "p99 ms",
                "TX KB", "RX KB", "retrans", "rtt ms"):
        t.add_column(col, justify="left" if col in ("process", "role", "server") else "right")
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    for (pid, name, role, address, port), conns in ranked:
        durations = [c.duration_ns / 1e6 for c in conns if c.duration_ns is not None]
        rtts = [c.srtt_us / 1e3 for c in conns if c.srtt_us]
        cell = lambda v: "-" if v is None else f"{v:.2f}"   # noqa: E731
        t.add_row(str(pid), Text(name), role or "?", Text(endpoint(address, port)), str(len(conns)),
                  str(sum(c.failed for c in conns)), cell(_percentile(durations, 0.5)),
                  cell(_percentile(durations, 0.99)), f"{sum(c.bytes_sent for c in conns) / 1024:.1f}",
                  f"{sum(c.bytes_received for c in conns) / 1024:.1f}",
                  str(sum(c.retransmits for c in conns)), cell(_percentile(rtts, 0.5)))
    console.print(t)
    if report.udp:
        u = Table(title="UDP by process and peer", title_justify="left")
        for col in ("pid", "process", "direction", "peer", "datagrams", "KB"):
            u.add_column(col, justify="left" if col in ("process", "direction", "peer") else "right")
        for f in sorted(report.udp, key=lambda f: -f.bytes)[:top]:
            u.add_row(str(f.pid), Text(f.process_name), f.direction,
                      endpoint(f.peer_address, f.peer_port) if f.peer_address else "(unconnected)",
                      str(f.datagrams), f"{f.bytes / 1024:.1f}")
        console.print(u)
    if report.requests:
        render_requests(report.requests, console, top)
    if report.db:
        render_db(report.db, console, top)


def render_requests(requests: list[HttpRequest], console: Console, top: int) -> None:
    groups: dict[tuple, list[HttpRequest]] = defaultdict(list)
    for r in requests:
        if r.rpc_system:        # a gRPC method names itself: no ids to fold
            groups[(r.pid, r.process_name, r.kind, r.rpc_system, r.target)].append(r)
        else:
            groups[(r.pid, r.process_name, r.kind, r.method, r.route or route_of(r.target))].append(r)
    t = Table(title=f"Requests by process and route ({len(requests)})", title_justify="left")
    for col in ("pid", "process", "side", "method", "route", "requests", "errors", "p50 ms",
                "p90 ms", "p99 ms"):
        t.add_column(col, justify="left" if col in ("process", "side", "method", "route") else "right")
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    for (pid, name, kind, method, route), rs in ranked:
        ms = [r.duration_ns / 1e6 for r in rs]
        t.add_row(str(pid), Text(name), kind, method, Text(route), str(len(rs)), str(sum(r.failed for r in rs)),
                  *(f"{_percentile(ms, q):.2f}" for q in (0.5, 0.9, 0.99)))
    console.print(t)


def render_db(operations: list[DbOperation], console: Console, top: int) -> None:
    """Per process, system, operation and table: statements, errors, latency."""
    groups: dict[tuple, list[DbOperation]] = defaultdict(list)
    for op in operations:
        groups[(op.pid, op.process_name, op.kind, op.system, op.namespace, op.operation, op.collection)].append(op)
    t = Table(title=f"Database statements by process, operation and table ({len(operations)})",
              title_justify="left")
    for col in ("pid", "process", "side", "system", "database", "operation", "table", "count", "errors",
                "p50 ms", "p99 ms"):
        t.add_column(col, justify="right" if col in ("pid", "count", "errors", "p50 ms", "p99 ms") else "left")
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    for (pid, name, kind, system, database, operation, table), ops in ranked:
        ms = [op.duration_ns / 1e6 for op in ops if op.duration_ns is not None]
        pct = [_percentile(ms, q) for q in (0.5, 0.99)]
        t.add_row(str(pid), Text(name), kind, system, Text(database), Text(operation), Text(table),
                  str(len(ops)), str(sum(op.failed for op in ops)),
                  *("" if p is None else f"{p:.2f}" for p in pct))
    console.print(t)
