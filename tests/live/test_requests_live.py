"""trace-net's HTTP/1.x request spans live, against real servers and clients: Python's
ThreadingHTTPServer (tests/workloads/http_server.py, its own log of every request answered)
and Debian's nginx (its access log), driven by curl (one keep-alive connection for several
URLs), Python's http.client and two requests pipelined in one send, plain and over TLS
(OpenSSL). Ground truth: the servers' logs; every request is seen once by the server and
once by its client."""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import WORKLOADS, need_tool, wait_for_line
from support.collector import GrpcCollector, self_signed_cert
from support.trace_net import tracing

pytestmark = pytest.mark.live

SYSTEM_PYTHON = "/usr/bin/python3"
TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
HTTP_CLIENT = """import http.client, ssl, sys
if sys.argv[2:] == ["tls"]:
    c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ssl._create_unverified_context())
else:
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for method, path, body in (("GET", "/ok", None), ("POST", "/echo", b"p" * 3000), ("HEAD", "/ok", None),
                           ("GET", "/chunked", None), ("GET", "/missing", None)):
    c.request(method, path, body=body)
    r = c.getresponse()
    r.read()
c.close()
"""


def counted(records, kind: str) -> collections.Counter:
    return collections.Counter((r["method"], r["target"], r["status"]) for r in records if r["kind"] == kind)


def pipelined(port: int, paths: list[str]) -> None:
    """Requests in one send on one connection; each response read by its Content-Length."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths))
        data = b""
        for _ in paths:
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, _, data = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(data) < length:
                data += s.recv(65536)
            data = data[length:]


def curl(port: int, paths: list[str], *extra: str, scheme: str = "http", version: str = "--http1.1") -> None:
    args = [need_tool("curl", "/usr/bin/curl"), "-s", version, *extra]
    for p in paths:
        args += [f"{scheme}://127.0.0.1:{port}{p}", "-o", "/dev/null"]
    subprocess.run(args, check=True, timeout=60)


@contextlib.contextmanager
def python_server(*args: str):
    server = subprocess.Popen([SYSTEM_PYTHON, str(WORKLOADS / "http_server.py"), *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(wait_for_line(server.stderr, "listening")[-1].split()[1])
        log: list[dict] = []
        yield port, log
    finally:
        out, _ = server.communicate("", timeout=30)
        log += [json.loads(line) for line in out.splitlines()]


def test_requests_to_a_python_server_from_curl_http_client_and_pipelining(tmp_path):
    """Every request the server logged is one SERVER span and one CLIENT span with its
    method, path and status; framing ended each (none inferred); /slow's span is within
    10 % of the handler's own time; /big's body is 1 MiB; nothing lost."""
    with python_server() as (port, log):
        with tracing(tmp_path, port) as got:
            curl(port, ["/ok", "/missing", "/boom", "/slow", "/chunked", "/big"])
            subprocess.run([SYSTEM_PYTHON, "-c", HTTP_CLIENT, str(port)], check=True, timeout=60)
            pipelined(port, ["/ok", "/missing"])
    logged = collections.Counter((r["method"], r["path"], r["status"]) for r in log)
    assert sum(logged.values()) == 13
    assert counted(got["http"], "server") == logged, got["http"]
    assert counted(got["http"], "client") == logged
    assert {r["ended_by"] for r in got["http"]} == {"framing"}
    slow = next(r for r in got["http"] if r["kind"] == "server" and r["target"] == "/slow")
    handler = next(r["handler_ns"] for r in log if r["path"] == "/slow")
    assert abs(slow["duration_ns"] - handler) < 0.10 * handler, (slow["duration_ns"], handler)
    big = [r for r in got["http"] if r["target"] == "/big"]
    assert {r["response_body_bytes"] for r in big} == {1 << 20}
    echo = [r for r in got["http"] if r["target"] == "/echo"]
    assert {(r["request_body_bytes"], r["response_body_bytes"]) for r in echo} == {(3000, 3000)}
    servers = {r["pid"] for r in got["http"] if r["kind"] == "server"}
    assert len(servers) == 1 and {r["process_name"] for r in got["http"] if r["kind"] == "server"} == {"python3"}
    assert "Requests by process and route" in got["stdout"]
    assert "losses: none" in got["stdout"] + got["stderr"]


def test_requests_over_tls_from_curl_and_http_client(tmp_path):
    """HTTPS through OpenSSL: curl (SSL_read/SSL_write) and Python's ssl (the _ex forms) on
    both sides. Every request the server logged is one SERVER and one CLIENT span, scheme
    https; the ciphertext under them is never parsed; nothing lost."""
    cert, key = self_signed_cert(tmp_path)
    with python_server("--tls", cert, key) as (port, log):
        with tracing(tmp_path, port) as got:
            curl(port, ["/ok", "/missing", "/chunked", "/big"], "-k", scheme="https")
            subprocess.run([SYSTEM_PYTHON, "-c", HTTP_CLIENT, str(port), "tls"], check=True, timeout=60)
    logged = collections.Counter((r["method"], r["path"], r["status"]) for r in log)
    assert sum(logged.values()) == 9
    assert counted(got["http"], "server") == logged, got["http"]
    assert counted(got["http"], "client") == logged
    assert {r["scheme"] for r in got["http"]} == {"https"} and {r["ended_by"] for r in got["http"]} == {"framing"}
    assert {r["response_body_bytes"] for r in got["http"] if r["target"] == "/big"} == {1 << 20}
    assert "over TLS in" in got["notice"] and "losses: none" in got["stdout"] + got["stderr"]


def test_a_traceparent_header_puts_the_server_span_in_that_trace(tmp_path):
    """And --route names server spans by the first pattern their path matched."""
    with python_server() as (port, log), GrpcCollector() as col:
        with tracing(tmp_path, port, "--otlp-endpoint", col.endpoint, "--interval", "1s",
                     "--route", "/b{x}", "--route", "/{name}") as got:
            curl(port, ["/ok"], "-H", f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01")
            curl(port, ["/boom"])
        spans = [s for t in col.received["traces"] for rs in t.resource_spans for ss in rs.scope_spans
                 for s in ss.spans if s.name.startswith("GET")]
    attrs = lambda s: {kv.key: kv.value.string_value or kv.value.int_value for kv in s.attributes}  # noqa: E731
    server = {attrs(s)["url.path"]: s for s in spans if s.kind == 2}
    assert set(server) == {"/ok", "/boom"}, [attrs(s) for s in spans]
    ok = server["/ok"]
    assert (ok.trace_id.hex(), ok.parent_span_id.hex()) == (TRACE_ID, PARENT_ID)
    assert (ok.name, attrs(ok)["http.route"]) == ("GET /{name}", "/{name}")   # the first match
    assert {s.name for s in spans if s.kind == 3} == {"GET"}   # a client span: the method
    assert server["/boom"].trace_id.hex() != TRACE_ID and not server["/boom"].parent_span_id
    a = attrs(server["/boom"])
    assert (a["http.request.method"], a["http.response.status_code"], a["url.scheme"]) == ("GET", 500, "http")
    assert a["server.port"] == port and a["network.protocol.version"] == "1.1"
    assert server["/boom"].status.code == 2 and a["error.type"] == "500"   # STATUS_CODE_ERROR
    client = [s for s in spans if s.kind == 3]
    assert sorted(attrs(s)["url.full"] for s in client) == [f"http://127.0.0.1:{port}/boom",
                                                             f"http://127.0.0.1:{port}/ok"]
    assert [r["traceparent"] for r in got["http"] if r["target"] == "/ok"] == [f"00-{TRACE_ID}-{PARENT_ID}-01"] * 2


HTTPS_PAIR = """import http.client, ssl, sys
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ssl._create_unverified_context())
for path in ("/ok", "/big.bin"):
    c.request("GET", path)
    c.getresponse().read()
"""
NGINX_CONF = """daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format truth '$request_method $request_uri $status';
  access_log {d}/access.log truth;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port}{tls};
    {certs}
    root {d}/www;
    location = /ok {{ return 200 "ok\\n"; }}
    location = /boom {{ return 500; }}
  }}
}}
"""


CURL_VERSION = {"http": "--http1.1", "https": "--http1.1", "h2": "--http2", "h2c": "--http2-prior-knowledge"}


@pytest.mark.parametrize("scheme", ["http", "https", "h2", "h2c"])
def test_requests_to_nginx_match_its_access_log(tmp_path, scheme):
    """Plain, nginx sends /big.bin (1 MiB) with sendfile: its body is counted by length
    alone; over TLS, through SSL_write. HTTP/2 over TLS (ALPN) and plain (h2c, curl's
    prior knowledge): nginx writes a response's frames with writev, many buffers a call.
    (Its worker runs as root here: pytest's directories are root's alone.)"""
    nginx = need_tool("nginx", "/usr/sbin/nginx")
    tls, certs = {"h2": " ssl http2", "h2c": " http2"}.get(scheme, ""), ""
    if scheme in ("https", "h2"):
        cert, key = self_signed_cert(tmp_path)
        tls, certs = tls or " ssl", f"ssl_certificate {cert}; ssl_certificate_key {key};"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.bin").write_bytes(b"n" * (1 << 20))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(d=tmp_path, port=port, tls=tls, certs=certs))
    server = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        with tracing(tmp_path, port) as got:
            web, version = "https" if scheme in ("https", "h2") else "http", CURL_VERSION[scheme]
            if scheme == "h2c":   # curl 7.88 fails a second request on an h2c connection
                for path in ("/ok", "/missing", "/boom", "/big.bin", "/ok"):
                    curl(port, [path], scheme=web, version=version)
            else:
                curl(port, ["/ok", "/missing", "/boom", "/big.bin", "/ok"], "-k", scheme=web, version=version)
            if scheme == "http":
                pipelined(port, ["/ok", "/big.bin"])
            elif scheme == "https":   # the same through Python's ssl
                subprocess.run([SYSTEM_PYTHON, "-c", HTTPS_PAIR, str(port)], check=True, timeout=60)
            elif scheme == "h2":
                curl(port, ["/ok", "/big.bin"], "-k", scheme=web, version=version)
            else:
                curl(port, ["/ok"], scheme=web, version=version)
                curl(port, ["/big.bin"], scheme=web, version=version)
    finally:
        server.terminate()
        server.wait(timeout=10)
    logged = collections.Counter()
    for line in (tmp_path / "access.log").read_text().splitlines():
        method, uri, status = line.split()
        logged[(method, uri, int(status))] += 1
    assert sum(logged.values()) == 7 and logged[("GET", "/big.bin", 200)] == 2, logged
    assert counted(got["http"], "server") == logged, got["http"]
    assert counted(got["http"], "client") == logged
    assert {r["ended_by"] for r in got["http"]} == {"framing"}
    assert {r["response_body_bytes"] for r in got["http"] if r["target"] == "/big.bin"} == {1 << 20}
    assert {r["process_name"] for r in got["http"] if r["kind"] == "server"} == {"nginx"}
    assert {r["scheme"] for r in got["http"]} == {"https" if scheme in ("https", "h2") else "http"}
    assert {r["version"] for r in got["http"]} == {"2" if scheme.startswith("h2") else "1.1"}
    assert "losses: none" in got["stdout"] + got["stderr"]


GRPC_CALLS = {"SayHello": 5, "Fail": 2, "Crash": 1, "Slow": 1, "Big": 1}
GRPC_CODES = {"SayHello": 0, "Fail": 5, "Crash": 2, "Slow": 0, "Big": 0}   # OK, NOT_FOUND, UNKNOWN


def test_grpc_calls_both_sides_with_their_status(tmp_path):
    """grpcio (h2c) server and client in two processes: every call the client made is one
    SERVER span and one CLIENT span named demo.Greeter/METHOD with its rpc.grpc.status_code,
    at a real OTLP collector and in the JSON lines; Slow's server span within 10 % of its
    200 ms; Big's 1 MiB answer (64 DATA frames in the kernel's walk) whole; nothing lost."""
    app = [sys.executable, str(WORKLOADS / "grpc_app.py")]
    server = subprocess.Popen([*app, "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        port = int(wait_for_line(server.stderr, "listening")[-1].split()[1])
        with GrpcCollector() as col:
            with tracing(tmp_path, port, "--otlp-endpoint", col.endpoint, "--interval", "1s") as got:
                calls = ",".join(f"{name}={n}" for name, n in GRPC_CALLS.items())
                client = subprocess.run([*app, "client", str(port), calls], capture_output=True, text=True,
                                        timeout=60, check=True)
            spans = [s for t in col.received["traces"] for rs in t.resource_spans for ss in rs.scope_spans
                     for s in ss.spans if s.name.startswith("demo.Greeter/")]
    finally:
        server.communicate("", timeout=30)
    made = collections.Counter((c["method"], c["code"]) for c in map(json.loads, client.stdout.splitlines()))
    assert made == {(name, GRPC_CODES[name]): n for name, n in GRPC_CALLS.items()}
    expected = collections.Counter({(f"demo.Greeter/{m}", code): n for (m, code), n in made.items()})
    for kind in ("server", "client"):
        records = [r for r in got["http"] if r["kind"] == kind]
        assert collections.Counter((f"{r['target'][1:]}", r["grpc_status"]) for r in records) == expected, records
        assert {(r["rpc_system"], r["version"], r["method"], r["ended_by"]) for r in records} == \
            {("grpc", "2", "POST", "framing")}
    attrs = lambda s: {kv.key: kv.value.string_value or kv.value.int_value for kv in s.attributes}  # noqa: E731
    for kind, code in (("server", 2), ("client", 3)):   # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
        seen = collections.Counter((s.name, attrs(s)["rpc.grpc.status_code"]) for s in spans if s.kind == code)
        assert seen == expected, (kind, seen)
    server_spans = [s for s in spans if s.kind == 2]
    crash = next(s for s in server_spans if s.name.endswith("/Crash"))
    assert crash.status.code == 2 and attrs(crash)["error.type"] == "2"     # UNKNOWN: the server's own
    fail = next(s for s in server_spans if s.name.endswith("/Fail"))
    assert fail.status.code == 0                                            # NOT_FOUND: the caller's
    a = attrs(fail)
    assert (a["rpc.system"], a["rpc.service"], a["rpc.method"], a["server.port"]) == \
        ("grpc", "demo.Greeter", "Fail", port)
    slow = next(r for r in got["http"] if r["kind"] == "server" and r["target"].endswith("/Slow"))
    assert 200e6 <= slow["duration_ns"] < 220e6, slow["duration_ns"]
    big = [r for r in got["http"] if r["target"].endswith("/Big")]
    assert {r["response_body_bytes"] for r in big} == {(1 << 20) + 5}   # and gRPC's 5-byte prefix
    metrics = {m.name for batch in col.received["metrics"] for rm in batch.resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    assert {"rpc.server.duration", "rpc.client.duration"} <= metrics
    assert "losses: none" in got["stdout"] + got["stderr"]
