"""Where and how OTLP data goes: command-line flags over the standard OTEL_EXPORTER_OTLP_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlparse

from ebpf_otlp.errors import AgentError

PROTOCOLS = ("grpc", "http/protobuf")
SIGNALS = ("traces", "metrics", "logs", "profiles")
HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs",
              "profiles": "/v1development/profiles"}
DEFAULT_PORT = {"grpc": 4317, "http/protobuf": 4318}
# The variables every signal may set for itself (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, ...),
# as the specification lists them; the generic form is OTEL_EXPORTER_OTLP_<NAME>.
VARIABLES = ("ENDPOINT", "HEADERS", "PROTOCOL", "TIMEOUT", "COMPRESSION", "CERTIFICATE",
             "CLIENT_CERTIFICATE", "CLIENT_KEY", "INSECURE")


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how one signal's data goes (`for_signal`): the generic settings, and each
    signal's own where an OTEL_EXPORTER_OTLP_<SIGNAL>_* variable says something for it."""
    endpoint: str                     # base URL, scheme http or https
    protocol: str = "grpc"
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = False            # gRPC: plaintext even for an https endpoint's host
    ca_file: str | None = None
    compression: str = "gzip"         # gzip | none
    timeout_s: float = 10.0
    client_cert: str | None = None    # mTLS: our certificate (PEM) and its key
    client_key: str | None = None
    full_url: bool = False            # HTTP: the endpoint is a signal's own, used as is
    per_signal: dict[str, "OtlpSettings"] = field(default_factory=dict)

    def for_signal(self, signal: str) -> "OtlpSettings":
        return self.per_signal.get(signal, self)

    @property
    def tls(self) -> bool:
        return urlparse(self.endpoint).scheme == "https" and not self.insecure

    def grpc_target(self, signal: str) -> str:
        u = urlparse(self.for_signal(signal).endpoint)
        return f"{u.hostname}:{u.port or DEFAULT_PORT['grpc']}"

    def http_url(self, signal: str) -> str:
        """A per-signal endpoint is used as is; the base one gets the signal's path appended."""
        s = self.for_signal(signal)
        if s.full_url:
            return s.endpoint
        u = urlparse(s.endpoint)
        netloc = u.netloc if u.port else f"{u.netloc}:{DEFAULT_PORT['http/protobuf']}"
        return f"{u.scheme}://{netloc}{u.path.rstrip('/')}{HTTP_PATHS[signal]}"

    @property
    def endpoints(self) -> str:
        """Where the data goes, for the summary: the one endpoint, or each signal's."""
        own = {sig: s.endpoint for sig, s in self.per_signal.items() if s.endpoint != self.endpoint}
        return self.endpoint + "".join(f", {sig} to {url}" for sig, url in own.items())


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


def _pem_file(path: str, what: str, marker: bytes, kind: str) -> str:
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise AgentError(f"cannot read {what} {path}: {e.strerror}") from None
    if marker not in pem:
        raise AgentError(f"{what} {path} holds no PEM {kind}")
    return path


def resolve(endpoint: str | None = None, protocol: str | None = None,
            headers: dict[str, str] | None = None, insecure: bool | None = None,
            ca_file: str | None = None, compression: str | None = None,
            timeout_s: float | None = None, env: dict[str, str] | None = None,
            client_cert: str | None = None, client_key: str | None = None) -> OtlpSettings | None:
    """Settings from flags (or the [otlp] table), else the environment; None when no
    endpoint is named anywhere. Precedence, per setting: a flag, then the signal's own
    variable (OTEL_EXPORTER_OTLP_TRACES_HEADERS), then the generic one, then the default;
    headers merge the same way, key by key."""
    env = os.environ if env is None else env

    def build(prefix: str, what: str, base: OtlpSettings | None) -> OtlpSettings | None:
        def var(name):
            return env.get(f"{prefix}{name}") or None

        url = endpoint or var("ENDPOINT") or (base.endpoint if base else None)
        if not url:
            return None
        own_url = not endpoint and bool(var("ENDPOINT")) and base is not None
        url = _check_endpoint(url, f"{prefix}ENDPOINT" if own_url else "OTLP endpoint")
        proto = protocol or var("PROTOCOL") or (base.protocol if base else "grpc")
        if proto not in PROTOCOLS:
            raise AgentError(f"unknown OTLP protocol {proto!r}: use grpc or http/protobuf")
        merged = {**(base.headers if base else {}), **parse_headers(var("HEADERS") or ""), **(headers or {})}
        tls_off = insecure if insecure is not None else (
            var("INSECURE").lower() == "true" if var("INSECURE") else (base.insecure if base else False))
        ca = ca_file or var("CERTIFICATE") or (base.ca_file if base else None)
        cert = client_cert or var("CLIENT_CERTIFICATE") or (base.client_cert if base else None)
        key = client_key or var("CLIENT_KEY") or (base.client_key if base else None)
        if ca:
            _pem_file(ca, "CA file", b"-----BEGIN CERTIFICATE-----", "certificate")
        if bool(cert) != bool(key):
            raise AgentError(f"{what}: a client certificate needs its key and the key its certificate "
                             "(--otlp-client-cert and --otlp-client-key)")
        if cert:
            _pem_file(cert, "client certificate", b"-----BEGIN CERTIFICATE-----", "certificate")
            _pem_file(key, "client key", b"PRIVATE KEY-----", "private key")
        comp = (compression or var("COMPRESSION") or (base.compression if base else "gzip")).lower()
        if comp not in ("gzip", "none"):
            raise AgentError(f"unknown OTLP compression {comp!r}: use gzip or none")
        timeout = timeout_s
        if timeout is None:
            raw = var("TIMEOUT")   # milliseconds, per the specification
            try:
                timeout = float(raw) / 1000 if raw else (base.timeout_s if base else 10.0)
            except ValueError:
                raise AgentError(f"bad {prefix}TIMEOUT {raw!r}: milliseconds expected") from None
        return OtlpSettings(url, proto, merged, tls_off, ca, comp, timeout, cert, key,
                            full_url=own_url)

    generic = build("OTEL_EXPORTER_OTLP_", "OTLP", None)
    per_signal = {}
    for signal in SIGNALS:
        prefix = f"OTEL_EXPORTER_OTLP_{signal.upper()}_"
        if not any(env.get(prefix + name) for name in VARIABLES):
            continue
        if generic is None:   # only a signal's own endpoint is named: it is the base as well
            generic = build(prefix, signal, None)
            if generic is None:
                continue
            generic = replace(generic, full_url=False)
        per_signal[signal] = build(prefix, signal, generic)
    if generic is None:
        return None
    return replace(generic, per_signal=per_signal)
