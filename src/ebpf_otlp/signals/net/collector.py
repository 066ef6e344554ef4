"""TCP connection collector: socket state changes → one Connection per connection, and
UDP bytes per process and peer (bpf/tcp_life.bpf.c)."""

from __future__ import annotations

import ctypes as ct
import dataclasses
import errno
import gc
import functools
import ipaddress
import os
import random
import socket
import struct
import time
from typing import NamedTuple

from ebpf_otlp.signals.collector import Collector, StatsEnum
from ebpf_otlp.signals.targets import Targets
from ebpf_otlp.errors import AgentError
from ebpf_otlp.gcpause import gc_paused
from ebpf_otlp.records import HOST
from ebpf_otlp.signals.net.http1 import Call, Http1Connection
from ebpf_otlp.signals.net.http2 import Http2Connection, Stream
from ebpf_otlp.signals.net.mysql import MySqlConnection
from ebpf_otlp.signals.net.postgres import PgConnection
from ebpf_otlp.signals.net.records import Connection, DbOperation, HttpRequest, UdpFlow, traceparent_ids
from ebpf_otlp.signals.net.redis import HEAD as REDIS_HEAD, RedisConnection
from ebpf_otlp.signals.net.db import KEEP as DB_KEEP, StatementParser
from ebpf_otlp.signals.net.routes import Routes
from ebpf_otlp.runtime import loader
from ebpf_otlp.runtime.maps import drain
from ebpf_otlp.runtime.processes import container_of
from ebpf_otlp.runtime.tracefs import ensure_tracefs

# Kernel-internal fields, read at the running kernel's BTF offsets (define -> struct.member).
FIELDS = {
    "OFF_BYTES_ACKED": "tcp_sock.bytes_acked", "OFF_BYTES_RECEIVED": "tcp_sock.bytes_received",
    "OFF_SEGS_IN": "tcp_sock.segs_in", "OFF_SEGS_OUT": "tcp_sock.segs_out",
    "OFF_TOTAL_RETRANS": "tcp_sock.total_retrans", "OFF_SRTT_US": "tcp_sock.srtt_us",
    "OFF_SK_ERR": "sock.sk_err", "OFF_SK_FLAGS": "sock.__sk_common.skc_flags",
    "OFF_SKC_STATE": "sock.__sk_common.skc_state", "OFF_SKC_FAMILY": "sock.__sk_common.skc_family",
    "OFF_SKC_NUM": "sock.__sk_common.skc_num", "OFF_SKC_DPORT": "sock.__sk_common.skc_dport",
    "OFF_SKC_DADDR": "sock.__sk_common.skc_daddr",
    "OFF_SKC_RCV_SADDR": "sock.__sk_common.skc_rcv_saddr",
    "OFF_SKC_V6_DADDR": "sock.__sk_common.skc_v6_daddr",
    "OFF_SKC_V6_RCV_SADDR": "sock.__sk_common.skc_v6_rcv_saddr",
}
TRACEPOINTS = ("sock/inet_sock_set_state", "sock/sock_send_length", "sock/sock_recv_length",
               "tcp/tcp_retransmit_skb", "tcp/tcp_receive_reset", "tcp/tcp_destroy_sock")
KPROBES = (("kp_tcp_set_state", "tcp_set_state", False), ("kp_tcp_sendmsg", "tcp_sendmsg", False),
           ("kp_tcp_cleanup_rbuf", "tcp_cleanup_rbuf", False),
           ("kretp_inet_csk_accept", "inet_csk_accept", True),
           ("kp_tcp_retransmit_skb", "tcp_retransmit_skb", False),
           ("kp_tcp_send_active_reset", "tcp_send_active_reset", False),
           ("kp_tcp_v4_destroy_sock", "tcp_v4_destroy_sock", False),
           ("kp_tcp_reset", "tcp_reset", False))

# `enum tcp_stat` of bpf/tcp_life.bpf.c, in its order.
STATS = StatsEnum(("closed", "conns full", "ringbuf full", "no start", "udp full", "filtered",
                   "payload dropped", "tls no socket", "walk lost", "h2 late", "walk full"),
                  processed="closed",
                  losses={"conns full": "connection not traced (connection map full)",
                          "ringbuf full": "closed connection dropped (ring buffer full)",
                          "udp full": "udp flow dropped (udp map full)",
                          "payload dropped": "request or statement bytes dropped (ring buffer full)",
                          "tls no socket": "TLS read or write dropped (its socket never seen)",
                          "walk lost": "HTTP/2, PostgreSQL or MySQL connection direction no longer parsed "
                                       "(a call too long for the kernel's message walk)",
                          "h2 late": "HTTP/2 connection open before the capture, not parsed "
                                     "(HPACK state unknown)",
                          "walk full": "HTTP/2, PostgreSQL or MySQL connection not parsed "
                                       "(walk_conns map full)"})
REQ_TAIL = 8
ROLES = {1: "client", 2: "server"}
ST_SYN_SENT = 2
SEEN_SYN_ACKED, SEEN_FIN_ACKED, SEEN_FIN_RECEIVED = 1, 2, 4   # bpf/tcp_life.bpf.c


def payload_bytes(acked: int, received: int, seen: int, clean_end: bool) -> tuple[int, int]:
    """The kernel's acked and received byte counts less the SYN and FIN sequence numbers
    among them, which carry no data: what the applications wrote and read."""
    if seen & SEEN_SYN_ACKED:
        acked -= 1
    if seen & SEEN_FIN_ACKED and clean_end:
        acked -= 1
    if seen & SEEN_FIN_RECEIVED and clean_end:
        received -= 1
    return max(acked, 0), max(received, 0)


# struct conn and struct closed of bpf/tcp_life.bpf.c, decoded by one struct call each: ctypes
# structures cost ~10 µs a connection in attribute reads, trace-net's biggest cost per record.
CONN = struct.Struct("<5Q2Ii2B2x4B4H16s16s16s")
CLOSED = struct.Struct(CONN.format + "4x3Q4I")


class _Raw(NamedTuple):
    """One connection as the kernel keeps it; the last seven are read at close (0 while open)."""
    start_ns: int
    established_ns: int
    end_ns: int
    tx_bytes: int
    rx_bytes: int
    tgid: int
    retrans: int
    sk_err: int
    proto: int
    tls_proto: int
    role: int
    rst_sent: int
    rst_received: int
    oldstate: int
    family: int
    lport: int
    rport: int
    seen: int
    laddr: bytes
    raddr: bytes
    comm: bytes
    sk: int = 0
    bytes_acked: int = 0
    bytes_received: int = 0
    segs_in: int = 0
    segs_out: int = 0
    total_retrans: int = 0
    srtt_us: int = 0


# struct payload of bpf/tcp_life.bpf.c up to its head (sent up only as long as the head is):
# sk, conn_start_ns, ts_ns, tgid, tid, len, head_len, dir, tail_len, role, tls, family, lport,
# rport, proto, walk (WALK_* flags), laddr, raddr, comm, tail.
PAYLOAD = struct.Struct(f"<QQQIIIHBBBBHHHBB16s16s16s{REQ_TAIL}s")
PROTO_HTTP2, PROTO_PG, PROTO_MYSQL, PROTO_REDIS = 3, 4, 6, 7   # bpf/tcp_life.bpf.c: PROTO_* (HTTP/1.x: 1)
# The message walk in the kernel (walk: HTTP/2's frames, PostgreSQL's and MySQL's messages):
# bytes kept a call (headers, header blocks, statements); steps a call, 8 a program and 31
# tail calls (the kernel allows 33 in all): 256, where a 1 MiB write of 16 KiB frames takes
# about 130; buffers of an iovec; connections.
WALK_LIMITS = {"WALK_BYTES": 4096, "WALK_STEPS": 8, "WALK_HOPS": 31, "WALK_MAX_IOV": 64, "MAX_WALKS": 16384}


SSL_FUNCTIONS = (("SSL_write", "ssl_write_enter"), ("SSL_read", "ssl_read_enter"),
                 ("SSL_write_ex", "ssl_write_ex_enter"), ("SSL_read_ex", "ssl_read_ex_enter"))
SYSTEM_LIBSSL = ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3", "/usr/lib/libssl.so.3")


def mapped_files(pid: str, *markers: str) -> list[str]:
    """The files a process maps whose path holds one of `markers`, by its root (a
    container's own copies too); [] once it is gone."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return [f"/proc/{pid}/root{line.split(None, 5)[5].strip()}" for line in f
                    if any(m in line for m in markers) and line.count(" ") >= 5]
    except OSError:
        return []


def libssl_files(mapped: list[str] | None = None) -> list[str]:
    """OpenSSL's libssl as the running processes map it (`mapped`: the paths a caller
    already read) and the system's, one path per file."""
    if mapped is None:
        mapped = [p for pid in filter(str.isdigit, os.listdir("/proc")) for p in mapped_files(pid, "/libssl.so")]
    found: dict[tuple[int, int], str] = {}
    for path in [p for p in SYSTEM_LIBSSL if os.path.exists(p)] + mapped:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), path)
    return sorted(found.values())


def tracefs_has(event: str) -> bool:
    return os.path.isdir(os.path.join(ensure_tracefs(), "events", event))


def kprobes_available() -> bool:
    """Kernels built with CONFIG_KPROBES (and kprobe events) have this file in tracefs."""
    return os.path.exists(os.path.join(ensure_tracefs(), "kprobe_events"))


def choose_hooks(wanted: str) -> str:
    """`auto`: tracepoints where the kernel has them (stable), else kprobes."""
    have_tp = all(tracefs_has(e) for e in TRACEPOINTS)
    if wanted == "tracepoints" and not have_tp:
        missing = [e for e in TRACEPOINTS if not tracefs_has(e)]
        raise AgentError(f"this kernel lacks the tracepoints {', '.join(missing)} (Linux 6.3+ has "
                         "them all): use --hooks kprobes")
    if wanted == "kprobes" and not kprobes_available():
        raise AgentError("this kernel cannot attach kprobes (built without CONFIG_KPROBES: no "
                         "kprobe_events in tracefs): use --hooks tracepoints")
    if wanted == "auto":
        if have_tp:
            return "tracepoints"
        if kprobes_available():
            return "kprobes"
        raise AgentError("this kernel has neither the socket tracepoints trace-net uses (Linux "
                         "6.3+) nor kprobes ('ebpf-otlp doctor' says more)")
    return wanted


def field_offsets() -> dict[str, int]:
    from ebpf_otlp.runtime.btf import kernel_offsets

    try:
        return kernel_offsets(FIELDS)
    except OSError as e:
        raise AgentError(f"cannot read the kernel's BTF ({e.strerror}: /sys/kernel/btf/vmlinux): "
                         "trace-net needs it for struct tcp_sock (CONFIG_DEBUG_INFO_BTF)") from None
    except KeyError as e:
        raise AgentError(f"trace-net cannot read the kernel's sockets: {e.args[0]}") from None


def _address(family: int, raw) -> tuple[int, str]:
    """(4 or 6, text): an IPv4 peer of a dual-stack socket (::ffff:a.b.c.d) is IPv4 on the
    wire, and is named so, as ss and tcplife do."""
    return _address_text(family, bytes(raw) if family == socket.AF_INET6 else bytes(raw)[:4])


@functools.lru_cache(maxsize=4096)
def _address_text(family: int, data: bytes) -> tuple[int, str]:
    """Peers repeat: each address formatted once (ipaddress costs ~7 µs a call)."""
    if family != socket.AF_INET6:
        return 4, str(ipaddress.IPv4Address(data))
    v6 = ipaddress.IPv6Address(data)
    return (4, str(v6.ipv4_mapped)) if v6.ipv4_mapped else (6, str(v6))


def _errno_name(code: int) -> str:
    return errno.errorcode.get(abs(code), str(code)) if code else ""


def result_of(oldstate: int, sk_err: int, rst_sent: bool, rst_received: bool) -> str:
    """How a connection ended, from the state it closed from and the socket's error."""
    err = abs(sk_err)
    if oldstate == ST_SYN_SENT:   # the connect never completed
        return {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timed_out"}.get(
            err, "refused" if rst_received else "failed")
    if rst_received:
        return "reset_received"
    if rst_sent:                  # an abortive close sets ECONNRESET on our own side too
        return "reset_sent"
    if err == errno.ETIMEDOUT:
        return "timed_out"
    return "reset_received" if err == errno.ECONNRESET else "normal"


@dataclasses.dataclass
class _Peer:
    """What a connection's requests share: who made the first call seen, the addresses, and
    whether the filters want it (decided once: an unwanted connection is not parsed)."""
    wanted: bool
    pid: int = 0
    name: str = ""
    family: int = 4
    local: tuple[str, int] = ("", 0)
    peer: tuple[str, int] = ("", 0)
    container: object = HOST
    scheme: str = "http"


class TcpCollector(Collector):
    """Every TCP connection of the wanted processes (and ports), as it closes; connections
    still open at the end are reported too. UDP bytes and datagrams per process and peer
    with `udp`; an RTT histogram from every ACK with `rtt` (tcp:tcp_probe)."""

    name = "trace-net"

    def __init__(self, pids: list[int] | None = None, comm: str | None = None,
                 ports: list[int] | None = None, hooks: str = "auto", rtt: bool = False,
                 udp: bool = True, max_conns: int = 65536, interval_s: float = 1.0,
                 follow_forks: bool = False, include_self: bool = False,
                 protocols: list[str] | None = None, head_bytes: int = 512, tls: bool = True,
                 routes: list[str] | None = None, raw_queries: bool = False):
        super().__init__()
        self.targets = Targets(list(pids or []), comm, follow_forks, include_self)
        self.pids, self.comm, self.ports = list(pids or []), comm, list(ports or [])
        self.wanted_hooks, self.rtt, self.udp = hooks, rtt, udp
        self.max_conns, self.interval_s, self.follow_forks = max_conns, interval_s, follow_forks
        self.hooks = ""
        self.rtt_log2_us: dict[int, int] = {}   # log2(srtt µs) bucket → ACKs, cumulative (--rtt)
        self._bpf = None
        self._closed: list[bytes] = []
        self._containers: dict = {}
        self._clock_offset = time.time_ns() - time.monotonic_ns()   # bpf_ktime → wall clock
        self.protocols = list(protocols or [])   # settings.PROTOCOLS: request spans ([]: none)
        self.requests = bool(self.protocols)
        self.head_bytes, self.tls = head_bytes, self.requests and tls
        self.tls_libraries: list[str] = []
        self._routes = Routes(list(routes or []))
        self._payloads: list[bytes] = []
        # (sk, start, tls) → the connection's parser (HTTP, or a database's) and what its
        # requests share
        self._http: dict[tuple[int, int, int], tuple[Http1Connection | Http2Connection | StatementParser,
                                                     _Peer]] = {}
        self.h2_streams_lost = 0   # HTTP/2 streams a direction out of step left unreported
        self.db_lost = 0           # database statements the same left unreported
        self.raw_queries = raw_queries

    # -- start -------------------------------------------------------------------------
    def start(self) -> None:
        self.hooks = choose_hooks(self.wanted_hooks)
        self._bpf = loader.load("tcp_life", self.defines())
        self._fill_filters()
        if self.hooks == "kprobes":
            for fn, target, ret in KPROBES:
                if ret:
                    self._bpf.attach_kretprobe(event=target, fn_name=fn)
                else:
                    self._bpf.attach_kprobe(event=target, fn_name=fn)
        self._bpf["closed_events"].open_ring_buffer(self._on_closed)
        if self.requests:
            self._bpf["payloads"].open_ring_buffer(self._on_payload)
            self._load_walkers()
        if self.tls:
            self._attach_tls()

    def defines(self) -> dict[str, object]:
        return {**field_offsets(), f"HOOKS_{self.hooks.upper()}": True, "MAX_CONNS": self.max_conns,
                "MAX_UDP": 16384, "UDP": self.udp, "RTT": self.rtt,
                "RETRANS_ERR": self.hooks == "tracepoints" and _has_field("tcp/tcp_retransmit_skb", "err"),
                **self.targets.defines(), "FILTER_PORTS": bool(self.ports),
                "REQUESTS": self.requests, "TLS": self.tls, "REQ_HEAD": self.head_bytes, "REQ_TAIL": REQ_TAIL,
                "HTTP1": "http" in self.protocols, "H2": self._h2, "PG": "postgres" in self.protocols,
                "MYSQL": "mysql" in self.protocols, "DB": self._db, "DB_KEEP": DB_KEEP,
                "REDIS": "redis" in self.protocols, "REDIS_HEAD": REDIS_HEAD,
                "WALK": self._h2 or self._db, **WALK_LIMITS,
                "PAYLOAD_BUF": 2 * max(self.head_bytes, WALK_LIMITS["WALK_BYTES"], REDIS_HEAD),
                "PAYLOAD_PAGES": 2048}   # 8 MiB

    @property
    def _h2(self) -> bool:
        return "http" in self.protocols or "grpc" in self.protocols

    @property
    def _db(self) -> bool:
        return "postgres" in self.protocols or "mysql" in self.protocols

    def _load_walkers(self) -> None:
        """The message walk is a program of its own, tail-called from the socket
        tracepoints and from the kprobes and SSL uprobes: one of each type."""
        if not (self._h2 or self._db):
            return
        bcc = loader.import_bcc()
        for kind, prog_type in (("tp", bcc.BPF.TRACEPOINT), ("kp", bcc.BPF.KPROBE)):
            fn = self._bpf.load_func(f"walk_{kind}".encode(), prog_type)
            self._bpf[f"walker_{kind}"][ct.c_int(0)] = ct.c_int(fn.fd)

    def _fill_filters(self) -> None:
        one = ct.c_uint8(1)
        self.targets.install(self._bpf)
        for port in self.ports:
            self._bpf["port_filter"][ct.c_uint16(port)] = one

    # -- events ------------------------------------------------------------------------
    def _on_closed(self, _ctx, data, _size) -> None:
        """Only copied here: building records waits until the poll returns."""
        self._closed.append(ct.string_at(data, CLOSED.size))

    def _attach_tls(self) -> None:
        """SSL_read/SSL_write and their _ex forms in every libssl the processes map now (and
        the system's, which later ones map): a uprobe is on the file, for every process."""
        for path in libssl_files():
            try:
                for sym, entry in SSL_FUNCTIONS:
                    self._bpf.attach_uprobe(name=path.encode(), sym=sym.encode(), fn_name=entry.encode())
                    self._bpf.attach_uretprobe(name=path.encode(), sym=sym.encode(), fn_name=b"ssl_return")
            except Exception:   # BCC raises Exception: a library without these symbols
                continue
            self.tls_libraries.append(path)

    def _on_payload(self, _ctx, data, size) -> None:
        self._payloads.append(ct.string_at(data, size))

    def poll(self, timeout_ms: int) -> bool:
        """Records come without wakeups (bpf/tcp_life.bpf.c): wait, then read what is there."""
        self._bpf.ring_buffer_poll(timeout_ms)
        unread = self._bpf["unread"]
        unread[ct.c_int(0)] = ct.c_uint64(0)
        if self.requests:
            unread[ct.c_int(1)] = ct.c_uint64(0)
        self._bpf.ring_buffer_consume()
        return True

    def ring_fds(self) -> list[int]:
        """Woken once per WAKE_RECORDS records only; read at every drain besides."""
        return [self._bpf["closed_events"].map_fd] + \
            ([self._bpf["payloads"].map_fd] if self.requests else [])

    def _connection(self, c: _Raw, result: str, closed: bool) -> Connection:
        """`closed`: what the kernel's tcp_sock said at close counts, over what was seen on
        the way (the owner's sends and receives)."""
        wall = self._clock_offset
        local, peer = _address(c.family, c.laddr), _address(c.family, c.raddr)
        if closed:
            sent, received = payload_bytes(c.bytes_acked, c.bytes_received, c.seen, result == "normal")
        else:
            sent, received = c.tx_bytes, c.rx_bytes
        return Connection(
            pid=c.tgid, process_name=c.comm.split(b"\0", 1)[0].decode(errors="replace"),
            role=ROLES.get(c.role, ""), family=max(local[0], peer[0]),   # both mapped, or neither
            local_address=local[1], local_port=c.lport, peer_address=peer[1], peer_port=c.rport,
            start_ns=c.start_ns + wall if c.start_ns else 0, end_ns=c.end_ns + wall if c.end_ns else 0,
            handshake_ns=(c.established_ns - c.start_ns
                          if c.role == 1 and c.established_ns and c.start_ns else None),
            bytes_sent=sent, bytes_received=received, segs_in=c.segs_in, segs_out=c.segs_out,
            retransmits=c.total_retrans if closed else c.retrans,
            srtt_us=c.srtt_us >> 3 if closed else None, result=result,
            error=_errno_name(c.sk_err) if closed else "", container=self._container(c.tgid))

    def _container(self, pid: int):
        """Looked up once per process, while it most likely still lives."""
        if pid not in self._containers:
            self._containers[pid] = container_of(pid) if pid else HOST
        return self._containers[pid]

    def _requests(self) -> list[HttpRequest]:
        """The sends and receives read since the last drain, through each connection's parser."""
        raw, self._payloads = self._payloads, []
        out: list[HttpRequest] = []
        unpack, size, http = PAYLOAD.unpack_from, PAYLOAD.size, self._http
        for data in raw:
            (sk, conn_start, ts, tgid, tid, length, head_len, dir_, tail_len, role, tls, family, lport,
             rport, proto, walk, laddr, raddr, comm, tail) = unpack(data)
            key = (sk, conn_start, tls)
            entry = http.get(key)
            if entry is None:
                parser = PgConnection(late=not role) if proto == PROTO_PG else \
                    MySqlConnection(late=not role) if proto == PROTO_MYSQL else \
                    RedisConnection() if proto == PROTO_REDIS else \
                    Http2Connection() if proto == PROTO_HTTP2 else Http1Connection()
                entry = http[key] = (parser, self._peer(tgid, comm, family, lport, rport, laddr, raddr, tls))
            if entry[1].wanted:
                entry[0].feed(Call(ts, dir_, length, data[size:size + head_len], tail[:tail_len], tid), walk)
                if entry[0].done:
                    out += self._exchanges(key)
        return out

    def _peer(self, tgid: int, comm: bytes, family: int, lport: int, rport: int, laddr: bytes,
              raddr: bytes, tls: int) -> _Peer:
        name = comm.rstrip(b"\0").decode(errors="replace")
        if (self.ports and lport not in self.ports and rport not in self.ports) or \
                not self.targets.comm_matches(name):
            return _Peer(False)
        local, peer = _address(family, laddr), _address(family, raddr)
        return _Peer(True, tgid, name, max(local[0], peer[0]), (local[1], lport), (peer[1], rport),
                     self._container(tgid), "https" if tls else "http")

    def _exchanges(self, key: tuple[int, int, int], close: str = "") -> list[HttpRequest]:
        stream, p = self._http[key]
        if close:
            stream.close(close)
            del self._http[key]
            if isinstance(stream, Http2Connection):
                self.h2_streams_lost += stream.lost
        if isinstance(stream, StatementParser):
            return self._statements(stream, p)
        done = stream.take()
        if not done:
            return []
        kind = "server" if stream.requests_dir == 1 else "client"
        wall = self._clock_offset
        out = []
        for x in done:
            grpc = isinstance(x, Stream) and x.is_grpc
            if ("grpc" if grpc else "http") not in self.protocols:
                continue
            h = x.request.headers
            parent = traceparent_ids(h.get("traceparent", ""))
            end = x.response.end_ns if x.response else x.request.end_ns
            out.append(HttpRequest(
                pid=p.pid, process_name=p.name, kind=kind, method=x.method, target=x.target,
                version=x.version, status=x.status, start_ns=x.request.start_ns + wall,
                end_ns=end + wall, local_address=p.local[0], local_port=p.local[1],
                peer_address=p.peer[0], peer_port=p.peer[1], family=p.family,
                host=h.get("host") or h.get(":authority", ""), user_agent=h.get("user-agent", ""),
                traceparent=h.get("traceparent", ""), request_body_bytes=x.request.body_bytes,
                response_body_bytes=x.response.body_bytes if x.response else 0,
                ended_by=x.ended_by, container=p.container, scheme=p.scheme,
                route=self._routes.match(x.target), rpc_system="grpc" if grpc else "",
                grpc_status=x.grpc_status if grpc else None, tid=x.request.tid,
                trace_id=f"{parent[0] if parent else random.getrandbits(128) or 1:032x}",
                span_id=f"{random.getrandbits(64) or 1:016x}"))
        return out

    def _statements(self, pg: StatementParser, p: _Peer) -> list[DbOperation]:
        self.db_lost += pg.lost + pg.unparsed
        pg.lost = pg.unparsed = 0
        kind = "server" if pg.requests_dir == 1 else "client"
        wall = self._clock_offset
        out = []
        for q in pg.take():
            operation, table, sanitized = pg.describe(q)
            out.append(DbOperation(
                pid=p.pid, process_name=p.name, kind=kind, system=pg.system,
                namespace=getattr(q, "database", pg.database),
                operation=operation, collection=table, query=q.text if self.raw_queries else sanitized,
                status_code=q.status, start_ns=q.start_ns + wall, end_ns=q.end_ns + wall if q.end_ns else 0,
                local_address=p.local[0], local_port=p.local[1], peer_address=p.peer[0],
                peer_port=p.peer[1], family=p.family, user=pg.user, error=q.error, rows=q.rows,
                prepared=q.prepared, truncated=q.truncated, ended_by=q.ended_by, container=p.container,
                tid=q.tid))
        return out

    def _records(self) -> list:
        with gc_paused():   # records hold no cycles: collections would only scan them (40 % of the parse)
            return self._build_records()

    def _build_records(self) -> list:
        closed, self._closed = self._closed, []
        out: list = self._requests() if self.requests else []
        http = self._http
        for e in map(_Raw._make, map(CLOSED.unpack, closed)):
            if http:
                for tls in (0, 1):
                    if (e.sk, e.start_ns, tls) in http:
                        out += self._exchanges((e.sk, e.start_ns, tls), close="close")
            out.append(self._connection(e, result_of(e.oldstate, e.sk_err, e.rst_sent, e.rst_received),
                                        closed=True))
        return out

    def _udp(self) -> list[UdpFlow]:
        if not self.udp:
            return []
        flows = []
        for key, value in drain(self._bpf["udp"]):
            family, peer = _address(key.family, key.raddr)
            flows.append(UdpFlow(
                pid=key.tgid, process_name=key.comm.decode(errors="replace"),
                direction="receive" if key.dir else "transmit", family=family,
                peer_address=peer if key.rport else "",
                peer_port=int.from_bytes(key.rport.to_bytes(2, "little"), "big"),
                bytes=value.bytes, datagrams=value.datagrams))
        return flows

    def _read_rtt(self) -> None:
        if self.rtt:
            self.rtt_log2_us = {k.value: v.value for k, v in self._bpf["rtt_hist"].items() if v.value}

    # -- drain and stop ----------------------------------------------------------------
    def drain(self) -> list:
        self.poll(0)   # consume too: records come without wakeups, and stop() drains here last
        records = self._records() + self._udp()
        # Connections are kept to the end (spans, JSON lines) and hold no cycles: out of
        # the collector's sight, or its full passes over hundreds of thousands of them
        # stall the loop that reads the ring buffer.
        gc.freeze()
        self._read_stats()
        self.stats.drains += 1
        return records

    def _read_stats(self) -> None:
        STATS.read(self._bpf["stats"], self.stats)
        self._parse_losses()
        self._read_rtt()

    def _parse_losses(self) -> None:
        """What the parsers in user space could not report (the kernel's are in STATS)."""
        if self.h2_streams_lost:
            self.stats.set_lost("HTTP/2 stream not reported (its connection's parse went out of step)",
                                self.h2_streams_lost)
        if self.db_lost:
            self.stats.set_lost("database statement not reported (the kernel's walk of its answer "
                                "lost its place, or a message made no sense)", self.db_lost)

    def progress(self) -> str:
        return f"{self.stats.processed} connections"

    def stop(self) -> list:
        """Detach, report what closed, then every connection still open, marked open."""
        if self._bpf is None:
            return []
        records = self.drain()
        still_open = [_Raw(*CONN.unpack_from(bytes(c))) for c in self._bpf["conns"].values()
                      if c.tgid or c.start_ns]
        pids, own = self.targets.kernel_sets(self._bpf)
        self._bpf.cleanup()
        self._bpf = None
        opened = (self._connection(c, self._unfinished(c), closed=False) for c in still_open)
        unanswered = [r for key in list(self._http) for r in self._exchanges(key, close="capture end")]
        self._parse_losses()   # with what the last parses lost
        return records + [c for c in opened if self._wanted(c, pids, own)] + unanswered

    @staticmethod
    def _unfinished(c: _Raw) -> str:
        """Open; or closed, its socket not yet destroyed (its byte counts are then what the
        owner sent and received)."""
        if not c.end_ns:
            return "open"
        return result_of(c.oldstate, c.sk_err, c.rst_sent, c.rst_received)

    def _wanted(self, conn: Connection, pids: set[int], own: set[int]) -> bool:
        """The kernel filters closed connections; open ones are filtered here, the same way
        (`pids`: the kernel's filter, with the processes launch mode followed; `own`:
        ebpf-otlp's processes)."""
        if (self.pids and conn.pid not in pids) or conn.pid in own:
            return False
        if not self.targets.comm_matches(conn.process_name):
            return False
        return not self.ports or conn.local_port in self.ports or conn.peer_port in self.ports


def _has_field(event: str, field: str) -> bool:
    try:
        with open(os.path.join(ensure_tracefs(), "events", event, "format")) as f:
            return any(f" {field};" in line for line in f if "field:" in line)
    except OSError:
        return False
