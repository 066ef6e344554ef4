"""Send one serialized OTLP request over gRPC or HTTP/protobuf, with retries and backoff.

Works on bytes, so the same path sends fresh profiles and spooled payloads of any signal.
"""

from __future__ import annotations

import gzip
import ssl
import time
import urllib.error
import urllib.request

from ebpf_otlp.export.otlp_settings import OtlpSettings

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "profiles": "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
}
RETRYABLE_HTTP = {408, 429, 502, 503, 504}


class SendError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class Transport:
    def __init__(self, settings: OtlpSettings):
        self.settings = settings
        self._channels: dict[str, object] = {}

    def send(self, signal: str, payload: bytes, attempts: int = 4, backoff_s: float = 0.5) -> None:
        """Deliver or raise SendError; retries retryable failures within the timeout."""
        s = self.settings.for_signal(signal)
        deadline = time.monotonic() + s.timeout_s
        delay = backoff_s
        for attempt in range(attempts):
            try:
                if s.protocol == "grpc":
                    return self._send_grpc(signal, s, payload, deadline)
                return self._send_http(signal, s, payload, deadline)
            except SendError as e:
                last = e
                if not e.retryable or attempt == attempts - 1 or time.monotonic() + delay >= deadline:
                    break
                time.sleep(delay)
                delay *= 2
        raise last

    def _channel(self, signal: str, s: OtlpSettings):
        import grpc

        target = self.settings.grpc_target(signal)
        key = (target, s.tls, s.ca_file, s.client_cert)
        if key not in self._channels:
            if s.tls:
                self._channels[key] = grpc.secure_channel(target, grpc_credentials(s))
            else:
                self._channels[key] = grpc.insecure_channel(target)
        return self._channels[key]

    def _send_grpc(self, signal: str, s: OtlpSettings, payload: bytes, deadline: float) -> None:
        import grpc

        call = self._channel(signal, s).unary_unary(
            GRPC_METHODS[signal], request_serializer=lambda b: b, response_deserializer=lambda b: b)
        compression = grpc.Compression.Gzip if s.compression == "gzip" else None
        try:
            call(payload, timeout=max(deadline - time.monotonic(), 0.1),
                 metadata=tuple(s.headers.items()), compression=compression)
        except grpc.RpcError as e:
            code = e.code()
            retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                                 grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE)
            raise SendError(f"gRPC {code.name}: {e.details()}", retryable) from None

    def _send_http(self, signal: str, s: OtlpSettings, payload: bytes, deadline: float) -> None:
        url = self.settings.http_url(signal)
        headers = {"Content-Type": "application/x-protobuf", **s.headers}
        body = payload
        if s.compression == "gzip":
            body = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        context = None
        if url.startswith("https:"):
            context = ssl.create_default_context(cafile=s.ca_file)
            if s.client_cert:
                context.load_cert_chain(s.client_cert, s.client_key)
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=max(deadline - time.monotonic(), 0.1),
                                        context=context) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise SendError(f"HTTP {e.code} from {url}", e.code in RETRYABLE_HTTP) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SendError(f"cannot reach {url}: {reason}", True) from None

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


def grpc_credentials(s: OtlpSettings):
    """TLS for a gRPC channel: the CA to verify the collector by (else the system's), and
    our certificate and key where the collector asks for one (mTLS)."""
    import grpc

    def read(path):
        with open(path, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(
        root_certificates=read(s.ca_file) if s.ca_file else None,
        private_key=read(s.client_key) if s.client_cert else None,
        certificate_chain=read(s.client_cert) if s.client_cert else None)
