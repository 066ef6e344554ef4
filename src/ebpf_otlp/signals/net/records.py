"""The net signal's records: TCP connections, UDP flows, and the report of a window."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp.records import HOST, CollectorStats, ContainerInfo


def endpoint(address: str, port: int) -> str:
    """address:port, an IPv6 address in brackets (RFC 3986), as ss and curl print them."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(slots=True)   # thousands a window: no __dict__ each
class Connection:
    """One TCP connection, from its start (or the capture's) to its close (or the capture's
    end, `result == "open"`). Times are wall-clock ns; bytes are the kernel's own totals
    (acked sent, received) at close, or what the owner sent and received while open."""
    pid: int                    # the owner: the connecting process, or the one that accepted
    process_name: str
    role: str                   # "client", "server", or "" when it began before the capture
    family: int                 # 4 or 6
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int
    start_ns: int               # 0: began before the capture
    end_ns: int                 # 0: still open at the end
    handshake_ns: int | None = None   # client: SYN_SENT → ESTABLISHED
    bytes_sent: int = 0
    bytes_received: int = 0
    segs_in: int = 0
    segs_out: int = 0
    retransmits: int = 0
    srtt_us: int | None = None  # smoothed RTT at close
    result: str = "normal"      # normal, reset_sent, reset_received, refused, timed_out, failed, open
    error: str = ""             # the socket's errno name, if it had one
    container: ContainerInfo = HOST

    RESULTS_FAILED = ("refused", "timed_out", "failed", "reset_sent", "reset_received")

    @property
    def failed(self) -> bool:
        return self.result in self.RESULTS_FAILED

    @property
    def duration_ns(self) -> int | None:
        return self.end_ns - self.start_ns if self.start_ns and self.end_ns else None

    @property
    def server(self) -> tuple[str, int]:
        """The server side's address and port: the peer for a client, us for a server."""
        return (self.local_address, self.local_port) if self.role == "server" else \
            (self.peer_address, self.peer_port)


@dataclass(slots=True)
class UdpFlow:
    """UDP traffic of one process to or from one peer (unconnected sockets: peer '')."""
    pid: int
    process_name: str
    direction: str              # "transmit" or "receive" (network.io.direction)
    family: int
    peer_address: str
    peer_port: int
    bytes: int = 0
    datagrams: int = 0
    container: ContainerInfo = HOST

    @property
    def key(self) -> tuple:
        return (self.pid, self.direction, self.peer_address, self.peer_port)


# gRPC status codes a server reports as its own error (the RPC conventions); a client
# reports every code but OK.
GRPC_SERVER_ERRORS = {2, 4, 12, 13, 14, 15}   # UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS


@dataclass(slots=True)
class HttpRequest:
    """One HTTP/1.x or HTTP/2 request and its response (a gRPC call: `rpc_system` "grpc"),
    seen from one side: `kind` "server" (we received it) or "client" (we sent it). Times
    are wall-clock ns: from the request's first bytes to the response's last (`ended_by`
    says how that end was known)."""
    pid: int
    process_name: str
    kind: str
    method: str
    target: str                 # as on the request line: path and query
    version: str                # "1.1"
    status: int | None          # None: no response came
    start_ns: int
    end_ns: int
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int
    family: int
    host: str = ""              # the Host header
    user_agent: str = ""
    traceparent: str = ""       # a W3C traceparent header, as sent
    request_body_bytes: int = 0
    response_body_bytes: int = 0
    ended_by: str = "framing"   # framing, close, next request, capture end
    container: ContainerInfo = HOST
    scheme: str = "http"        # "https": the plaintext of OpenSSL calls
    route: str = ""             # the user's route pattern the path matched (--route), if one
    rpc_system: str = ""        # "grpc": a gRPC call (content-type application/grpc)
    grpc_status: int | None = None   # from the trailers; None: none came
    tid: int = 0                # the thread that sent or received the request's first bytes
    trace_id: str = ""          # its span's, hex: the traceparent's trace, or a new one
    span_id: str = ""

    @property
    def rpc_service(self) -> str:
        """"/pkg.Service/Method" → "pkg.Service"."""
        return self.target.lstrip("/").partition("/")[0]

    @property
    def rpc_method(self) -> str:
        return self.target.lstrip("/").partition("/")[2].partition("?")[0]

    @property
    def server(self) -> tuple[str, int]:
        """The server side's socket address and port: ours when we served it."""
        return (self.local_address, self.local_port) if self.kind == "server" else \
            (self.peer_address, self.peer_port)

    @property
    def failed(self) -> bool:
        """As the conventions say: no response, a 5xx, or a 4xx seen by the client; for a
        gRPC call, its status (any but OK for a client, the server's own errors for it)."""
        if self.rpc_system and self.grpc_status is not None:
            return self.grpc_status != 0 if self.kind == "client" else self.grpc_status in GRPC_SERVER_ERRORS
        return self.status is None or self.status >= 500 or (self.status >= 400 and self.kind == "client")

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class DbOperation:
    """One database statement run, read from the wire, seen from one side: `kind` "client"
    (we sent it) or "server" (the traced process is the database). `query` is the text
    with its literals replaced by `?` unless the user asked for it raw; `status_code`
    the server's error code (PostgreSQL's SQLSTATE), "" when it succeeded."""
    pid: int
    process_name: str
    kind: str
    system: str                 # OpenTelemetry's db.system.name: "postgresql"
    namespace: str              # the database
    operation: str              # SELECT, INSERT, ...
    collection: str             # the table the statement names, "" when none
    query: str
    status_code: str
    start_ns: int
    end_ns: int
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int
    family: int
    user: str = ""
    error: str = ""             # the server's error message
    rows: int | None = None     # as the server counted them (a command tag's), if it said
    prepared: str = ""          # the named statement it ran
    truncated: bool = False     # its text went past the bytes the kernel keeps
    ended_by: str = "framing"   # framing, close, capture end
    container: ContainerInfo = HOST
    tid: int = 0

    @property
    def server(self) -> tuple[str, int]:
        return (self.local_address, self.local_port) if self.kind == "server" else \
            (self.peer_address, self.peer_port)

    @property
    def failed(self) -> bool:
        return bool(self.status_code) or self.end_ns == 0

    @property
    def duration_ns(self) -> int | None:
        return self.end_ns - self.start_ns if self.end_ns else None


def traceparent_ids(header: str) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a W3C traceparent header (version 00), or None."""
    parts = header.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    return (trace_id, span_id, flags) if trace_id and span_id else None


@dataclass
class NetReport:
    """What `trace-net` gathered: connections (closed, and open at the end), UDP flows,
    the RTT histogram from every ACK (log2 µs buckets) with --rtt, HTTP requests, and
    database operations."""
    connections: list[Connection]
    udp: list[UdpFlow]
    start_ns: int
    duration_ns: int
    hooks: str                  # "tracepoints" or "kprobes": which path was used
    collection: CollectorStats = field(default_factory=CollectorStats)
    rtt_log2_us: dict[int, int] = field(default_factory=dict)
    requests: list[HttpRequest] = field(default_factory=list)
    db: list[DbOperation] = field(default_factory=list)
