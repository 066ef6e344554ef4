"""A small OTLP receiver for tests: a real gRPC server on opentelemetry-proto's generated
service stubs (profiles, traces, metrics) and a real HTTP/protobuf server, both recording
what they receive."""

from __future__ import annotations

import gzip
import socket
import ssl
import subprocess
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as ppb
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2_grpc as pgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

REQUESTS = {"profiles": ppb.ExportProfilesServiceRequest, "traces": tpb.ExportTraceServiceRequest,
            "metrics": mpb.ExportMetricsServiceRequest}
HTTP_PATHS = {"/v1development/profiles": "profiles", "/v1/traces": "traces", "/v1/metrics": "metrics"}


def self_signed_cert(directory) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1 and localhost, made with the openssl CLI:
    (cert.pem, key.pem). The cert is its own CA."""
    cert, key = f"{directory}/cert.pem", f"{directory}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def make_ca(directory) -> dict[str, str]:
    """A CA made for the test, a server certificate for 127.0.0.1 and localhost and a client
    certificate, both signed by it (openssl CLI): paths by name (ca, server_cert, server_key,
    client_cert, client_key)."""
    d = str(directory)
    paths = {name: f"{d}/{name}.pem" for name in ("ca", "ca_key", "server_cert", "server_key",
                                                   "client_cert", "client_key")}

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ebpf-otlp test CA",
        "-keyout", paths["ca_key"], "-out", paths["ca"])
    for who, subject, ext in (("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                              ("client", "/CN=ebpf-otlp agent", "extendedKeyUsage=clientAuth")):
        csr, extfile = f"{d}/{who}.csr", f"{d}/{who}.ext"
        with open(extfile, "w") as f:
            f.write(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", paths[f"{who}_key"],
            "-out", csr)
        run("x509", "-req", "-in", csr, "-CA", paths["ca"], "-CAkey", paths["ca_key"], "-CAcreateserial",
            "-days", "1", "-extfile", extfile, "-out", paths[f"{who}_cert"])
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Received:
    def __init__(self):
        self.lock = threading.Lock()
        self.items: dict[str, list] = {k: [] for k in REQUESTS}
        self.metadata: list[dict] = []
        self.metadata_of: dict[str, list[dict]] = {k: [] for k in REQUESTS}   # by signal

    def add(self, signal: str, request, metadata: dict) -> None:
        with self.lock:
            self.items[signal].append(request)
            self.metadata.append(metadata)
            self.metadata_of[signal].append(metadata)

    def __getitem__(self, signal: str) -> list:
        with self.lock:
            return list(self.items[signal])


class GrpcCollector:
    """tls: (cert.pem, key.pem) to serve over TLS; client_ca: require a client certificate
    signed by that CA (mTLS)."""

    def __init__(self, port: int | None = None, tls: tuple[str, str] | None = None,
                 client_ca: str | None = None):
        self.port = port or free_port()
        self.tls = tls
        self.received = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        rec = self.received

        class Profiles(pgrpc.ProfilesServiceServicer):
            def Export(self, request, context):
                rec.add("profiles", request, dict(context.invocation_metadata()))
                return ppb.ExportProfilesServiceResponse()

        class Traces(tgrpc.TraceServiceServicer):
            def Export(self, request, context):
                rec.add("traces", request, dict(context.invocation_metadata()))
                return tpb.ExportTraceServiceResponse()

        class Metrics(mgrpc.MetricsServiceServicer):
            def Export(self, request, context):
                rec.add("metrics", request, dict(context.invocation_metadata()))
                return mpb.ExportMetricsServiceResponse()

        pgrpc.add_ProfilesServiceServicer_to_server(Profiles(), self.server)
        tgrpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        mgrpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        if tls:
            with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
                roots = open(client_ca, "rb").read() if client_ca else None
                creds = grpc.ssl_server_credentials([(k.read(), c.read())], root_certificates=roots,
                                                    require_client_auth=bool(client_ca))
            self.server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        else:
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)


class HttpCollector:
    """tls: (cert.pem, key.pem) to serve over TLS; client_ca: require a client certificate
    signed by that CA (mTLS). path_signals: which request path is which signal (a
    per-signal endpoint's own path)."""

    def __init__(self, tls: tuple[str, str] | None = None, client_ca: str | None = None,
                 path_signals: dict[str, str] | None = None):
        paths = {**HTTP_PATHS, **(path_signals or {})}
        self.tls = tls
        self.received = Received()
        rec = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                signal = paths.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if signal is None or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                rec.add(signal, REQUESTS[signal].FromString(body),
                        {k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            if client_ca:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(client_ca)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
