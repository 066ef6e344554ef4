"""The trace-net signal's settings ([trace_net], `ebpf-otlp trace-net`): the one copy of its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp import values as v
from ebpf_otlp.signals.net.routes import check_pattern
from ebpf_otlp.signals.signal import from_table, toml

HOOKS = ("auto", "tracepoints", "kprobes")
# http: HTTP/1.x and HTTP/2; grpc: gRPC calls (over HTTP/2); postgres, mysql: PostgreSQL's and
# MySQL's (and MariaDB's) statements; redis: Redis commands
PROTOCOLS = ("http", "grpc", "postgres", "mysql", "redis")
HEAD_BYTES = (128, 256, 512, 1024, 2048)   # the kernel copies a power of two


def _routes(x) -> list[str]:
    return [check_pattern(p) for p in v.strings(x)]


def protocols(x) -> list[str]:
    """"http,grpc,postgres,mysql,redis" or a list of names; "none" (or []) for connections only."""
    items = [i.strip() for i in x.split(",")] if isinstance(x, str) else v.strings(x) if x else []
    if items == ["none"]:
        return []
    bad = [i for i in items if i not in PROTOCOLS]
    if bad or len(set(items)) != len(items) or "" in items:
        raise ValueError(f"a list of {', '.join(PROTOCOLS)} (each once), or none")
    return items


def _head_bytes(x) -> int:
    n = v.positive_int(x)
    if n not in HEAD_BYTES:
        raise ValueError(f"one of {', '.join(map(str, HEAD_BYTES))}")
    return n


@dataclass
class NetSettings:
    pids: list[int] = field(default_factory=list, metadata=toml("pids", v.PIDS))
    comm: str | None = field(default=None, metadata=toml("comm", v.comm))
    ports: list[int] = field(default_factory=list, metadata=toml("ports", v.ints(1, 65535)))
    hooks: str = field(default="auto", metadata=toml("hooks", v.choice(*HOOKS)))
    # RTT histogram from every ACK (tcp:tcp_probe)
    rtt: bool = field(default=False, metadata=toml("rtt", v.boolean))
    udp: bool = field(default=True, metadata=toml("udp", v.boolean))
    max_conns: int = field(default=65536, metadata=toml("max_connections", v.positive_int))
    interval_s: float = 10.0           # how often metrics are exported
    follow_forks: bool = False
    include_self: bool = field(default=False, metadata=toml("include_self", v.boolean))
    # request spans for these protocols: "http" (HTTP/1.x, HTTP/2), "grpc", "postgres", "mysql",
    # "redis"; []: connections only
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS),
                                 metadata=toml("protocols", lambda x: protocols(x)))
    # HTTP over TLS: uprobes on OpenSSL's SSL_read/SSL_write, plaintext linked to its socket
    tls: bool = field(default=True, metadata=toml("tls", v.boolean))
    # route patterns ("/users/{id}"): the route a request's path matched, in spans and metrics
    routes: list[str] = field(default_factory=list, metadata=toml("routes", lambda x: _routes(x)))
    # database statements as sent, literals and all (default: literals replaced by ?)
    raw_queries: bool = field(default=False, metadata=toml("raw_queries", v.boolean))
    # bytes copied from the start of each send and receive of an HTTP connection
    head_bytes: int = field(default=512, metadata=toml("head_bytes", lambda x: _head_bytes(x)))

    @classmethod
    def from_table(cls, t: dict, path: str = "<config>") -> "NetSettings":
        return from_table(cls, t, path, "trace_net")
