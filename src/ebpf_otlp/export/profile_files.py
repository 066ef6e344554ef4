"""Which file format a profile output gets, and writing it: one path per format."""

from __future__ import annotations

from typing import Callable

from ebpf_otlp.errors import AgentError
from ebpf_otlp.records import Profile



# Each encoder imports its module at first use: the pprof schema (protobuf) and the
# renderers cost ~30 ms of every start, before the first sample, otherwise.
def _pprof(profile: Profile) -> bytes:
    from ebpf_otlp.export import pprof
    return pprof.encode(profile)


def _folded(profile: Profile) -> bytes:
    from ebpf_otlp.export import folded
    return folded.encode(profile).encode()


def _svg(profile: Profile) -> bytes:
    from ebpf_otlp.export import flamegraph
    return flamegraph.render(profile).encode()


def _json(profile: Profile) -> bytes:
    from ebpf_otlp.export import json_out
    return json_out.encode(profile).encode()


def _otlp(profile: Profile) -> bytes:
    """The ExportProfilesServiceRequest a collector would receive (imports the SDK)."""
    from ebpf_otlp.export import otlp_profiles
    from ebpf_otlp.export.resource import build_resource

    return otlp_profiles.encode(profile, build_resource())


ENCODERS: dict[str, Callable[[Profile], bytes]] = {
    "pprof": _pprof, "folded": _folded, "svg": _svg, "json": _json, "otlp": _otlp,
}
# Longest suffixes first: ".otlp.pb" before ".pb".
EXTENSIONS = {".otlp.pb": "otlp", ".pb.gz": "pprof", ".pprof": "pprof", ".pb": "pprof",
              ".folded": "folded", ".txt": "folded", ".svgz": "svg", ".svg": "svg", ".json": "json"}
DEFAULT_SUFFIX = {"pprof": ".pb.gz", "folded": ".folded", "svg": ".svg", "json": ".json",
                  "otlp": ".otlp.pb"}


def format_for(path: str, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    for ext, fmt in EXTENSIONS.items():
        if path.endswith(ext) or path.endswith(ext + ".gz"):   # x.folded.gz: gzip-compressed
            return fmt
    raise AgentError(f"cannot tell the format of {path} from its name: "
                     f"add --format ({'|'.join(ENCODERS)}) or use one of {', '.join(EXTENSIONS)}")
