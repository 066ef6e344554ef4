#!/usr/bin/env python3
"""A gRPC server and client with known calls, for trace-net's gRPC spans: grpcio with
generic handlers (no generated code), messages as raw bytes, plaintext HTTP/2 (h2c).

  /demo.Greeter/SayHello    OK, the request's bytes back
  /demo.Greeter/Fail        NOT_FOUND (5), "no such greeting"
  /demo.Greeter/Crash       INTERNAL (13), the handler raises
  /demo.Greeter/Slow        OK after 200 ms
  /demo.Greeter/Big         OK, 1 MiB back

  grpc_app.py server           serves on a loopback port (printed as `listening PORT` on
                               stderr) until stdin closes; one JSON line per call answered
  grpc_app.py client PORT CALLS  CALLS: a list like SayHello=5,Fail=2; one channel, calls in
                               order; one JSON line per call: method, code
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "demo.Greeter"
LOG = threading.Lock()


def _log(**fields) -> None:
    with LOG:
        print(json.dumps(fields), flush=True)


def _say_hello(request: bytes, context) -> bytes:
    _log(method="SayHello", code=0)
    return request


def _fail(request: bytes, context) -> bytes:
    _log(method="Fail", code=grpc.StatusCode.NOT_FOUND.value[0])
    context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")


def _crash(request: bytes, context) -> bytes:
    _log(method="Crash", code=grpc.StatusCode.UNKNOWN.value[0])
    raise RuntimeError("the handler failed")


def _slow(request: bytes, context) -> bytes:
    time.sleep(0.2)
    _log(method="Slow", code=0)
    return b"slow"


def _big(request: bytes, context) -> bytes:
    _log(method="Big", code=0)
    return b"x" * (1 << 20)


HANDLERS = {"SayHello": _say_hello, "Fail": _fail, "Crash": _crash, "Slow": _slow, "Big": _big}


def serve() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", 4 << 20)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in HANDLERS.items()})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", file=sys.stderr, flush=True)
    sys.stdin.read()
    server.stop(0)


def client(port: int, calls: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.max_receive_message_length", 4 << 20)]) as channel:
        for item in calls.split(","):
            name, _, count = item.partition("=")
            call = channel.unary_unary(f"/{SERVICE}/{name}")
            for _ in range(int(count or 1)):
                try:
                    call(b"hello", timeout=10)
                    code = 0
                except grpc.RpcError as e:
                    code = e.code().value[0]
                _log(method=name, code=code)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(int(sys.argv[2]), sys.argv[3])
