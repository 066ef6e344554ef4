#!/usr/bin/env python3
"""TCP traffic with its own ground truth, for checking `ebpf-otlp trace-net` against.

Run with the system python3 (inside a NetLab namespace or on loopback). Standard library
only, so it needs nothing installed. Each mode prints ONE JSON document on stdout when it
ends; the server also prints `listening HOST PORT` on stderr once it accepts connections.

Protocol of one connection (byte counts are exactly what each side reads and writes):
  1. client connects and sends S bytes: an 8-byte header (!II: S, R) then filler.
  2. server reads exactly S bytes, writes R bytes, then
       normally:   shutdown(SHUT_WR) (FIN) and reads until EOF, then closes;
       --abort:    waits until its R bytes are acknowledged, then closes with
                   SO_LINGER {on, 0}, which sends a RST (client sees ECONNRESET);
       --close-first: closes at once: the kernel sends the rest of the R bytes and a FIN
                   from an orphaned socket, which it destroys when that FIN is acked,
                   before the client's FIN can come.
  3. client reads exactly R bytes, then reads until EOF (or the reset), holds --hold-ms,
     then closes normally (FIN) or, with --abort, with SO_LINGER {on, 0} (RST: the
     server, waiting for EOF, sees ECONNRESET).
Both sides are blocked in recv() when the peer's FIN or RST arrives, so each reset is
observed, and the client's bytes are all acknowledged before any close.

Connection failures (refused, timed out, reset) are data, not crashes: they are recorded
as errno names and the run still exits 0. Exit 1 means the workload itself went wrong
(e.g. the server timed out waiting for its connections).

tcp_info's bytes_acked/bytes_received count the FIN as one more byte once it is acked or
received; "sent"/"received" are the application's bytes only.

Times are nanoseconds: *_mono from CLOCK_MONOTONIC (the clock of bpf_ktime_get_ns) and
*_wall from CLOCK_REALTIME.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("!II")    # client's total bytes S, server's reply bytes R
TIOCOUTQ = 0x5411                # = SIOCOUTQ: for TCP, bytes written but not yet acked
TCP_INFO_LEN = 512               # more than any kernel fills; it returns its own size

# struct tcp_info from linux/tcp.h (checked against /usr/include/linux/tcp.h, kernel 6.x):
# name -> (byte offset, struct format). 8 single bytes come first, then __u32 from 8;
# the __u64 fields start at 104. Fields beyond what the kernel returns are left out.
TCP_INFO_FIELDS = {
    "state": (0, "B"),
    "ca_state": (1, "B"),
    "retransmits": (2, "B"),
    "rto": (8, "I"),                 # µs
    "snd_mss": (16, "I"),
    "rcv_mss": (20, "I"),
    "unacked": (24, "I"),
    "lost": (32, "I"),
    "retrans": (36, "I"),            # segments being retransmitted now
    "rtt": (68, "I"),                # smoothed RTT, µs
    "rttvar": (72, "I"),             # µs
    "snd_cwnd": (80, "I"),
    "total_retrans": (100, "I"),     # retransmitted segments over the connection's life
    "bytes_acked": (120, "Q"),
    "bytes_received": (128, "Q"),
    "segs_out": (136, "I"),
    "segs_in": (140, "I"),
    "min_rtt": (148, "I"),           # µs
    "data_segs_in": (152, "I"),
    "data_segs_out": (156, "I"),
    "bytes_sent": (200, "Q"),        # includes retransmitted bytes
    "bytes_retrans": (208, "Q"),
}


def tcp_info(sock: socket.socket) -> dict:
    """Decode TCP_INFO by offsets: the kernel's struct, not Python's, is the truth."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    out = {}
    for name, (off, fmt) in TCP_INFO_FIELDS.items():
        if off + struct.calcsize(fmt) <= len(raw):
            out[name] = struct.unpack_from("=" + fmt, raw, off)[0]
    return out


def now() -> tuple[int, int]:
    return time.monotonic_ns(), time.time_ns()


def errname(e: OSError) -> str:
    if isinstance(e, socket.timeout) and not e.errno:
        return "TIMEOUT"     # Python's own socket timeout, not the kernel's ETIMEDOUT
    return errno.errorcode.get(e.errno, str(e.errno))


def addr_pair(sa) -> list:
    return [sa[0], sa[1]]


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def recv_exact(sock: socket.socket, n: int) -> int:
    """Read up to n bytes; returns how many came before EOF."""
    got = 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def recv_to_eof(sock: socket.socket) -> int:
    got = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += len(chunk)


def abort_close(sock: socket.socket) -> None:
    """close() with SO_LINGER {on, 0}: the kernel sends a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_acked(sock: socket.socket, timeout: float = 10.0) -> None:
    """Wait until everything written is acknowledged, so a RST cannot discard it."""
    import fcntl

    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(sock.fileno(), TIOCOUTQ, buf)
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(0.001)


def filler(n: int) -> bytes:
    return (b"ebpf-otlp " * (n // 10 + 1))[:n]


def process_facts() -> dict:
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    return {"pid": os.getpid(), "comm": comm, "netns_inode": os.stat("/proc/self/ns/net").st_ino}


# ---------------------------------------------------------------- server

def serve_one(conn: socket.socket, peer, rec: dict, args) -> None:
    """One accepted connection, in its own thread so slow clients don't serialise others."""
    conn.settimeout(args.io_timeout)
    rec["peer"] = addr_pair(peer)
    rec["local"] = addr_pair(conn.getsockname())
    phase = "read"
    try:
        head = b""
        while len(head) < HEADER.size:
            chunk = conn.recv(HEADER.size - len(head))
            if not chunk:
                break
            head += chunk
        rec["received"] = len(head)
        if len(head) < HEADER.size:
            raise ConnectionError(errno.EPROTO, "short header")
        total, reply = HEADER.unpack(head)
        rec["received"] += recv_exact(conn, total - HEADER.size)
        phase = "write"
        conn.sendall(filler(reply))
        rec["sent"] = reply
        if args.abort:
            phase = "abort"
            wait_acked(conn)
            rec["tcp_info"] = tcp_info(conn)
            rec["end_mono"], rec["end_wall"] = now()
            abort_close(conn)
            rec["closed_by"] = "rst"
            return
        if args.close_first:   # an orphaned socket: the kernel sends the rest, then a FIN
            rec["closed_by"] = "close"
            rec["tcp_info"] = tcp_info(conn)
            conn.close()
            rec["end_mono"], rec["end_wall"] = now()
            return
        phase = "shutdown"
        conn.shutdown(socket.SHUT_WR)
        phase = "wait-eof"
        rec["received"] += recv_to_eof(conn)
        rec["closed_by"] = "fin"
    except OSError as e:
        rec["error"], rec["errno"], rec["phase"] = errname(e), e.errno, phase
    rec["tcp_info"] = tcp_info(conn)
    conn.close()
    rec["end_mono"], rec["end_wall"] = now()


def run_server(args) -> int:
    fam = family_of(args.host)
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(max(128, args.count))
    port = ls.getsockname()[1]
    print(f"listening {args.host} {port}", file=sys.stderr, flush=True)

    conns: list[dict] = []
    threads: list[threading.Thread] = []
    deadline = time.monotonic() + args.timeout
    failure = None
    while len(conns) < args.count:
        left = deadline - time.monotonic()
        if left <= 0:
            failure = f"timed out after {len(conns)} of {args.count} connections"
            break
        ls.settimeout(left)
        try:
            conn, peer = ls.accept()
        except socket.timeout:
            continue
        mono, wall = now()
        rec = {"index": len(conns), "accepted_mono": mono, "accepted_wall": wall,
               "sent": 0, "received": 0, "error": None, "errno": None, "phase": None}
        conns.append(rec)
        t = threading.Thread(target=serve_one, args=(conn, peer, rec, args), daemon=True)
        t.start()
        threads.append(t)
    ls.close()
    for t in threads:
        t.join(max(0.1, deadline + args.io_timeout - time.monotonic()))
        if t.is_alive():
            failure = failure or "a connection handler did not finish"
    for rec in conns:
        if "end_mono" in rec:
            rec["duration_ns"] = rec["end_mono"] - rec["accepted_mono"]
    doc = {"role": "server", **process_facts(), "listen": [args.host, port],
           "family": 6 if fam == socket.AF_INET6 else 4, "abort": args.abort,
           "connections": conns,
           "totals": {"connections": len(conns),
                      "sent": sum(c["sent"] for c in conns),
                      "received": sum(c["received"] for c in conns),
                      "errors": sum(1 for c in conns if c["error"])},
           "failure": failure}
    print(json.dumps(doc), flush=True)
    return 1 if failure else 0


# ---------------------------------------------------------------- client

def client_one(index: int, args) -> dict:
    """One connection: connect, send S, read R, read to EOF, hold, close (or abort)."""
    fam = family_of(args.host)
    rec = {"index": index, "sent": 0, "received": 0, "error": None, "errno": None,
           "phase": None, "local": None, "peer": [args.host, args.port]}
    s = socket.socket(fam, socket.SOCK_STREAM)
    if args.syn_retries:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, args.syn_retries)
    s.settimeout(args.connect_timeout)
    phase = "connect"
    rec["connect_start_mono"], rec["connect_start_wall"] = now()
    try:
        s.connect((args.host, args.port))
        rec["connected_mono"], rec["connected_wall"] = now()
        rec["handshake_ns"] = rec["connected_mono"] - rec["connect_start_mono"]
        rec["local"] = addr_pair(s.getsockname())
        s.settimeout(args.io_timeout)
        phase = "write"
        s.sendall(HEADER.pack(args.send, args.recv) + filler(args.send - HEADER.size))
        rec["sent"] = args.send
        phase = "read"
        rec["received"] = recv_exact(s, args.recv)
        phase = "wait-eof"
        rec["received"] += recv_to_eof(s)
        rec["closed_by_peer"] = "fin"
    except OSError as e:
        rec["error"], rec["errno"], rec["phase"] = errname(e), e.errno, phase
    if args.hold_ms and rec["phase"] != "connect":
        time.sleep(args.hold_ms / 1000)
    if rec["phase"] != "connect":
        rec["tcp_info"] = tcp_info(s)
    rec["end_mono"], rec["end_wall"] = now()
    if args.abort and rec["phase"] != "connect":
        abort_close(s)
        rec["closed_by"] = "rst"
    else:
        s.close()
        rec["closed_by"] = "fin" if rec["phase"] != "connect" else None
    rec["duration_ns"] = rec["end_mono"] - rec["connect_start_mono"]
    return rec


def run_client(args) -> int:
    if args.send < HEADER.size:
        sys.exit(f"--send must be at least {HEADER.size} (it includes the header)")
    if args.wait_stdin:
        sys.stdin.read(1)      # released by the test once the tracer is attached
    results: list[dict | None] = [None] * args.count
    next_index = iter(range(args.count))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            results[i] = client_one(i, args)

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.parallel))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conns = [r for r in results if r is not None]
    errors: dict[str, int] = {}
    for c in conns:
        if c["error"]:
            errors[c["error"]] = errors.get(c["error"], 0) + 1
    doc = {"role": "client", **process_facts(), "target": [args.host, args.port],
           "family": 6 if family_of(args.host) == socket.AF_INET6 else 4,
           "abort": args.abort, "connections": conns,
           "totals": {"connections": len(conns),
                      "sent": sum(c["sent"] for c in conns),
                      "received": sum(c["received"] for c in conns),
                      "errors": errors}}
    print(json.dumps(doc), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    sv = sub.add_parser("server", help="accept COUNT connections, then print JSON")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (v4 or v6)")
    sv.add_argument("--port", type=int, default=0, help="0: any free port (see stderr)")
    sv.add_argument("--count", type=int, default=1, help="connections to accept")
    sv.add_argument("--abort", action="store_true", help="close every connection with RST")
    sv.add_argument("--close-first", action="store_true",
                    help="close() right after the reply, before the client's FIN")
    sv.add_argument("--timeout", type=float, default=60, help="give up accepting after")
    sv.add_argument("--io-timeout", type=float, default=30, help="per-connection I/O limit")
    cl = sub.add_parser("client", help="make COUNT connections, then print JSON")
    cl.add_argument("--host", required=True, help="server address (v4 or v6)")
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--count", type=int, default=1, help="connections to make")
    cl.add_argument("--parallel", type=int, default=1, help="connections at a time")
    cl.add_argument("--send", type=int, default=1000, help="bytes to send (>= 8, header included)")
    cl.add_argument("--recv", type=int, default=1000, help="bytes the server replies")
    cl.add_argument("--hold-ms", type=float, default=0, help="idle time before closing")
    cl.add_argument("--abort", action="store_true", help="close every connection with RST")
    cl.add_argument("--syn-retries", type=int, default=0,
                    help="TCP_SYNCNT (1 makes a dropped SYN time out in ~3 s)")
    cl.add_argument("--connect-timeout", type=float, default=20,
                    help="Python-side limit; keep above the kernel's SYN timeout")
    cl.add_argument("--io-timeout", type=float, default=30)
    cl.add_argument("--wait-stdin", action="store_true",
                    help="wait for one byte on stdin before starting")
    args = p.parse_args()
    return run_server(args) if args.mode == "server" else run_client(args)


if __name__ == "__main__":
    sys.exit(main())
