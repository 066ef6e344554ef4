#!/usr/bin/env python3
"""UDP datagrams of known sizes with their own ground truth, for `ebpf-otlp trace-net`.

Run with the system python3 (inside a NetLab namespace or on loopback); standard library
only. Each mode prints ONE JSON document on stdout when it ends; the receiver also prints
`listening HOST PORT` on stderr once bound.

  receiver: binds HOST:PORT and counts datagrams until COUNT arrived (or --timeout);
            with --echo it sends each one back, same size, to whoever sent it.
  sender:   sends COUNT datagrams, sizes cycling through --sizes; with --echo it waits
            for each reply before the next (lock-step, so nothing is lost to a full
            receive buffer), else it sends them back to back.

Totals are per process and per peer, in bytes of UDP payload, which is what the tracer
reports.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def process_facts() -> dict:
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    return {"pid": os.getpid(), "comm": comm, "netns_inode": os.stat("/proc/self/ns/net").st_ino}


def add(peers: dict, peer, field: str, nbytes: int) -> None:
    """Count into peers["addr port"] so the JSON keys are stable strings."""
    key = f"{peer[0]} {peer[1]}"
    p = peers.setdefault(key, {"addr": peer[0], "port": peer[1], "sent_bytes": 0,
                               "sent_datagrams": 0, "received_bytes": 0,
                               "received_datagrams": 0})
    p[f"{field}_bytes"] += nbytes
    p[f"{field}_datagrams"] += 1


def totals(peers: dict) -> dict:
    keys = ("sent_bytes", "sent_datagrams", "received_bytes", "received_datagrams")
    return {k: sum(p[k] for p in peers.values()) for k in keys}


def source_addr(dest) -> str:
    """The address the kernel sends from to dest: an unconnected socket's own name is only
    the wildcard, so ask the routing table with a throwaway connect() (sends nothing)."""
    with socket.socket(family_of(dest[0]), socket.SOCK_DGRAM) as probe:
        probe.connect(dest)
        return probe.getsockname()[0]


def run_receiver(args) -> int:
    s = socket.socket(family_of(args.host), socket.SOCK_DGRAM)
    # A big buffer so a back-to-back burst is not dropped (FORCE works as root).
    for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            break
        except OSError:
            pass
    s.bind((args.host, args.port))
    port = s.getsockname()[1]
    print(f"listening {args.host} {port}", file=sys.stderr, flush=True)
    peers: dict = {}
    got = 0
    start = time.monotonic_ns()
    deadline = time.monotonic() + args.timeout
    failure = None
    while got < args.count:
        left = deadline - time.monotonic()
        if left <= 0:
            failure = f"timed out after {got} of {args.count} datagrams"
            break
        s.settimeout(left)
        try:
            data, peer = s.recvfrom(65536)
        except socket.timeout:
            continue
        got += 1
        add(peers, peer, "received", len(data))
        if args.echo:
            s.sendto(data, peer)
            add(peers, peer, "sent", len(data))
    s.close()
    doc = {"role": "receiver", **process_facts(), "local": [args.host, port],
           "start_mono": start, "end_mono": time.monotonic_ns(),
           "peers": list(peers.values()), "totals": totals(peers), "failure": failure}
    print(json.dumps(doc), flush=True)
    return 1 if failure else 0


def run_sender(args) -> int:
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.wait_stdin:
        sys.stdin.read(1)
    s = socket.socket(family_of(args.host), socket.SOCK_DGRAM)
    dest = (args.host, args.port)
    if args.connect:
        s.connect(dest)     # send() on a connected socket: another kernel path than sendto
    s.settimeout(args.reply_timeout)
    peers: dict = {}
    lost_replies = 0
    start = time.monotonic_ns()
    for i in range(args.count):
        n = sizes[i % len(sizes)]
        payload = bytes([i % 251]) * n
        sent = s.send(payload) if args.connect else s.sendto(payload, dest)
        add(peers, dest, "sent", sent)
        if args.echo:
            try:
                data, peer = s.recvfrom(65536)
                add(peers, peer[:2], "received", len(data))
            except socket.timeout:
                lost_replies += 1
    local = [source_addr(dest), s.getsockname()[1]]
    s.close()
    doc = {"role": "sender", **process_facts(), "local": local, "target": list(dest),
           "start_mono": start, "end_mono": time.monotonic_ns(), "connected": args.connect,
           "peers": list(peers.values()), "totals": totals(peers),
           "lost_replies": lost_replies}
    print(json.dumps(doc), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    rv = sub.add_parser("receiver", help="count COUNT datagrams, then print JSON")
    rv.add_argument("--host", default="127.0.0.1")
    rv.add_argument("--port", type=int, default=0, help="0: any free port (see stderr)")
    rv.add_argument("--count", type=int, default=1)
    rv.add_argument("--echo", action="store_true", help="send each datagram back")
    rv.add_argument("--timeout", type=float, default=60)
    sd = sub.add_parser("sender", help="send COUNT datagrams, then print JSON")
    sd.add_argument("--host", required=True)
    sd.add_argument("--port", type=int, required=True)
    sd.add_argument("--count", type=int, default=1)
    sd.add_argument("--sizes", default="100", help="comma-separated payload sizes, cycled")
    sd.add_argument("--connect", action="store_true", help="connect() and send()")
    sd.add_argument("--echo", action="store_true", help="wait for each echoed reply")
    sd.add_argument("--reply-timeout", type=float, default=5)
    sd.add_argument("--wait-stdin", action="store_true",
                    help="wait for one byte on stdin before starting")
    args = p.parse_args()
    return run_receiver(args) if args.mode == "receiver" else run_sender(args)


if __name__ == "__main__":
    sys.exit(main())
