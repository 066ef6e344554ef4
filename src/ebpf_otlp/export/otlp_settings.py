"""Where and how OTLP data goes: command-line flags over the standard OTEL_EXPORTER_OTLP_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from ebpf_otlp.errors import AgentError

PROTOCOLS = ("grpc", "http/protobuf")
SIGNALS = ("traces", "metrics", "profiles")
HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics",
              "profiles": "/v1development/profiles"}
DEFAULT_PORT = {"grpc": 4317, "http/protobuf": 4318}


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str                     # base URL, scheme http or https
    protocol: str = "grpc"
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = False            # gRPC: plaintext even for an https endpoint's host
    ca_file: str | None = None
    compression: str = "gzip"         # gzip | none
    timeout_s: float = 10.0
    signal_endpoints: dict[str, str] = field(default_factory=dict)   # per-signal overrides

    @property
    def tls(self) -> bool:
        return urlparse(self.endpoint).scheme == "https" and not self.insecure

    def grpc_target(self, signal: str) -> str:
        u = urlparse(self.signal_endpoints.get(signal, self.endpoint))
        return f"{u.hostname}:{u.port or DEFAULT_PORT['grpc']}"

    def http_url(self, signal: str) -> str:
        """A per-signal endpoint is used as is; the base one gets the signal's path appended."""
        if signal in self.signal_endpoints:
            return self.signal_endpoints[signal]
        u = urlparse(self.endpoint)
        netloc = u.netloc if u.port else f"{u.netloc}:{DEFAULT_PORT['http/protobuf']}"
        return f"{u.scheme}://{netloc}{u.path.rstrip('/')}{HTTP_PATHS[signal]}"


def _check_endpoint(url: str, what: str) -> str:
    u = urlparse(url)
    try:
        port = u.port
    except ValueError:
        port = -1
    if u.scheme not in ("http", "https") or not u.hostname or port == -1:
        raise AgentError(f"malformed {what} {url!r}: use http://HOST:PORT or https://HOST:PORT")
    return url


def parse_headers(text: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS form: key1=value1,key2=value2 (values URL-encoded)."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AgentError(f"malformed OTLP header {item!r}: use key=value")
        out[key.strip().lower()] = unquote(value.strip())
    return out


def resolve(endpoint: str | None = None, protocol: str | None = None,
            headers: dict[str, str] | None = None, insecure: bool | None = None,
            ca_file: str | None = None, compression: str | None = None,
            timeout_s: float | None = None, env: dict[str, str] | None = None) -> OtlpSettings | None:
    """Settings from flags, else the environment; None when no endpoint is named anywhere."""
    env = os.environ if env is None else env
    signal_endpoints = {s: _check_endpoint(env[f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT"],
                                           f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT")
                        for s in SIGNALS if env.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT")}
    endpoint = endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint and not signal_endpoints:
        return None
    endpoint = _check_endpoint(endpoint or next(iter(signal_endpoints.values())), "OTLP endpoint")
    protocol = protocol or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol not in PROTOCOLS:
        raise AgentError(f"unknown OTLP protocol {protocol!r}: use grpc or http/protobuf")
    merged_headers = {**parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS", "")), **(headers or {})}
    if insecure is None:
        insecure = env.get("OTEL_EXPORTER_OTLP_INSECURE", "").lower() == "true"
    ca_file = ca_file or env.get("OTEL_EXPORTER_OTLP_CERTIFICATE") or None
    if ca_file:
        try:
            with open(ca_file, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise AgentError(f"cannot read CA file {ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise AgentError(f"CA file {ca_file} holds no PEM certificate")
    compression = (compression or env.get("OTEL_EXPORTER_OTLP_COMPRESSION") or "gzip").lower()
    if compression not in ("gzip", "none"):
        raise AgentError(f"unknown OTLP compression {compression!r}: use gzip or none")
    if timeout_s is None:
        raw = env.get("OTEL_EXPORTER_OTLP_TIMEOUT")   # milliseconds, per the specification
        try:
            timeout_s = float(raw) / 1000 if raw else 10.0
        except ValueError:
            raise AgentError(f"bad OTEL_EXPORTER_OTLP_TIMEOUT {raw!r}: milliseconds expected") from None
    return OtlpSettings(endpoint, protocol, merged_headers, insecure, ca_file, compression,
                        timeout_s, signal_endpoints)
