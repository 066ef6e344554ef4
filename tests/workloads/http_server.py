#!/usr/bin/env python3
"""An HTTP/1.1 server with known answers, for trace-net's request spans: Python's
ThreadingHTTPServer (keep-alive), standard library only.

  GET  /ok        200, 2 bytes          GET  /missing  404
  GET  /boom      500                   GET  /slow     200 after 300 ms
  GET  /chunked   200, chunked: 5 chunks, 40,000 bytes in all
  GET  /burn      200 after 400 ms of the serving thread's CPU
  GET  /big       200, 1 MiB            POST /echo     200, the request's body back
  HEAD /ok        200, no body

Each request answered is one JSON line on stdout: method, path, status, and the handler's
own time in ns (from the request line read to the response written). `listening PORT`
goes to stderr once it accepts; it serves until stdin closes. `--tls CERT KEY`: HTTPS,
through Python's ssl module (OpenSSL's SSL_read_ex/SSL_write_ex)."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time

CHUNKS = [b"a" * 5000, b"b" * 10000, b"c" * 20000, b"d" * 4000, b"e" * 1000]
LOG = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _log(self, status: int, started: int) -> None:
        with LOG:
            print(json.dumps({"method": self.command, "path": self.path, "status": status,
                              "handler_ns": time.monotonic_ns() - started}), flush=True)

    def _answer(self, status: int, body: bytes, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self):
        started = time.monotonic_ns()
        self._answer(200, b"ok", head=True)
        self._log(200, started)

    def do_GET(self):
        started = time.monotonic_ns()
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self._log(200, started)
            return
        if self.path == "/slow":
            time.sleep(0.3)
        if self.path == "/burn":   # 400 ms of this thread's CPU
            end = time.thread_time() + 0.4
            while time.thread_time() < end:
                pass
        status = {"/missing": 404, "/boom": 500}.get(self.path, 200)
        self._answer(status, b"x" * (1 << 20) if self.path == "/big" else b"ok")
        self._log(status, started)

    def do_POST(self):
        started = time.monotonic_ns()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(200, body)
        self._log(200, started)


def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if sys.argv[1:2] == ["--tls"]:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening {server.server_address[1]}", file=sys.stderr, flush=True)
    sys.stdin.read()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
