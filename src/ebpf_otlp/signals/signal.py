"""What the rest of ebpf-otlp knows of a signal: one descriptor each, listed in registry.py.

The output stage, the OTLP output, the snapshot plan, the agent and the configuration ask
a result's descriptor (`registry.of(result)`) what to do with it, instead of testing its
type: a new signal is a new folder and one line in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ebpf_otlp.errors import AgentError

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_output import OtlpOutput
    from ebpf_otlp.records import CollectorStats
    from ebpf_otlp.signals.processor import Processor


def later(where: str) -> Callable:
    """`module:attr.attr`, imported at its first call: a descriptor names its collector,
    processor and encoders without importing them (BCC, the OTel SDK) until they are used."""
    module, _, attrs = where.partition(":")

    def call(*args, **kw):
        import importlib
        target = importlib.import_module(module)
        for a in attrs.split("."):
            target = getattr(target, a)
        return target(*args, **kw)
    return call


def metrics_to_otlp(build: str) -> Callable:
    """`to_otlp` for a signal aggregated in the kernel: `build(result, resource, temporality)`
    makes its MetricsData."""
    make = later(build)
    return lambda out, result: out.export_metrics(make(result, out.resource, out.metric_temporality))


def encoded(encode: str) -> Callable[[Any], bytes]:
    """A file encoder from a function returning text."""
    make = later(encode)
    return lambda result: make(result).encode()


def toml(key: str, check: Callable[[Any], Any], convert: Callable[[Any], Any] | None = None) -> dict:
    """A settings field's metadata: the TOML key that sets it, the checker of its value
    (values.py) and, where the field holds another form (ns from seconds, numbers from
    names), the conversion. The config schema and `from_table` both read it."""
    return {"toml": (key, check, convert)}


def schema_of(settings: type) -> dict[str, Callable[[Any], Any]]:
    """The TOML keys of a settings class and their checkers (TOML_EXTRA: keys that are not
    one field's)."""
    out = {f.metadata["toml"][0]: f.metadata["toml"][1] for f in fields(settings) if "toml" in f.metadata}
    return {**out, **getattr(settings, "TOML_EXTRA", {})}


def from_table(cls, table: dict, path: str, section: str):
    """Settings of `cls` from a checked TOML table. A key the table lacks leaves the field
    at its default: the settings hold the one copy."""
    given = {}
    for f in fields(cls):
        if "toml" in f.metadata:
            key, _, convert = f.metadata["toml"]
            if key in table:
                try:
                    given[f.name] = convert(table[key]) if convert else table[key]
                except ValueError as e:
                    raise AgentError(f"{path}: [{section}] {key}: {e}") from None
    return cls(**given)


class Stream:
    """What goes out while the capture runs, as it happens (trace-net: a line and a span
    per connection as it closes), rather than once per interval or at the end."""

    def update(self, result, end_ns: int) -> None:
        """The result so far: send what is new since the last update."""

    def reset(self) -> None:
        """The result starts over (the agent began a new window)."""

    def close(self) -> None:
        """Nothing more comes: flush."""


@dataclass(frozen=True)
class Signal:
    name: str                                  # as a snapshot part and in the manifest: "off-cpu"
    title: str                                 # in loss lines and span attributes: "off-CPU profile"
    result: type                               # the record its processor finishes
    stats: Callable[[Any], "CollectorStats"]   # a result's collection counts and losses
    formats: Mapping[str, Callable[[Any], bytes]]   # file format -> encoder
    to_otlp: Callable[["OtlpOutput", Any], None]    # a result as the OTLP signal it calls for
    span_attributes: Callable[[Any], dict]     # what the capture's span says of a result
    table: str = ""                            # its TOML table ([profile], [trace_net])
    settings_type: type | None = None           # its settings: defaults, TOML keys (`toml`)
    settings: Callable[[dict, str], Any] | None = None   # that table → its settings
    processor: Callable[[Any], "Processor"] | None = None   # settings → a processor
    bundle: tuple[tuple[str, str], ...] = ()   # snapshot and agent files: (name, format)
    windowed: bool = False                     # the agent exports it per window, not per interval
    stream: Callable[[Any, Any], Stream] | None = None   # (terminal console or None, OtlpOutput or None)
    command: str = ""                          # the command that runs it alone (its span's name)
    describe: Callable[[Any, Any, str], str] | None = None   # (settings, processor, target): the start notice
    after: Callable[[Any, Any], None] | None = None          # (processor, notices): what the run leaves to say
    takes: Callable[[Any], bool] = field(default=lambda result: True)   # among results of its type
    wanted: Callable[[dict], bool] = field(default=lambda table: True)   # its table asks for it
