"""The OpenTelemetry resource every signal carries: who and where the data comes from."""

from __future__ import annotations

import os
import platform
import socket

from opentelemetry.sdk.resources import Resource

from ebpf_otlp import __version__

# host.arch values from the semantic conventions.
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm32", "ppc64le": "ppc64", "s390x": "s390x"}


def _os_description() -> str:
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        name = fields.get("PRETTY_NAME", "Linux").strip('"')
    except OSError:
        name = "Linux"
    return f"{name} (kernel {platform.release()})"


def build_resource() -> Resource:
    """service.name (OTEL_SERVICE_NAME, default ebpf-otlp), host and OS facts, then
    OTEL_RESOURCE_ATTRIBUTES, which the SDK merges in and which win over ours."""
    attrs = {
        "service.name": "ebpf-otlp",
        "service.version": __version__,
        "host.name": socket.gethostname(),
        "host.arch": _ARCH.get(platform.machine(), platform.machine()),
        "os.type": "linux",
        "os.description": _os_description(),
    }
    detected = Resource.create()   # reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    if not (os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", "")):
        detected = Resource({k: v for k, v in detected.attributes.items() if k != "service.name"})
    return Resource(attrs).merge(detected)
