"""Which file format a profile output gets, and writing it: one path per format."""

from __future__ import annotations

from typing import Callable

from ebpf_otlp.errors import AgentError
from ebpf_otlp.export import flamegraph, folded, json_out, pprof
from ebpf_otlp.records import Profile



def _otlp(profile: Profile) -> bytes:
    """The ExportProfilesServiceRequest a collector would receive (imports the SDK: lazily)."""
    from ebpf_otlp.export import otlp_profiles
    from ebpf_otlp.export.resource import build_resource

    return otlp_profiles.encode(profile, build_resource())


ENCODERS: dict[str, Callable[[Profile], bytes]] = {
    "pprof": pprof.encode,
    "folded": lambda p: folded.encode(p).encode(),
    "svg": lambda p: flamegraph.render(p).encode(),
    "json": lambda p: json_out.encode(p).encode(),
    "otlp": _otlp,
}
# Longest suffixes first: ".otlp.pb" before ".pb".
EXTENSIONS = {".otlp.pb": "otlp", ".pb.gz": "pprof", ".pprof": "pprof", ".pb": "pprof",
              ".folded": "folded", ".txt": "folded", ".svg": "svg", ".json": "json"}
DEFAULT_SUFFIX = {"pprof": ".pb.gz", "folded": ".folded", "svg": ".svg", "json": ".json",
                  "otlp": ".otlp.pb"}


def format_for(path: str, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    for ext, fmt in EXTENSIONS.items():
        if path.endswith(ext):
            return fmt
    raise AgentError(f"cannot tell the format of {path} from its name: "
                     f"add --format ({'|'.join(ENCODERS)}) or use one of {', '.join(EXTENSIONS)}")
