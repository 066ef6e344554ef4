"""The TOML configuration of `snapshot` and `agent`: one table per capture, plus
[snapshot], [agent] and [otlp]. Every key is checked against the schema below; an unknown
key or a bad value is one line naming the file, the key and the problem."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ebpf_otlp.signals.targets import COMM_MAX
from ebpf_otlp.errors import AgentError
from ebpf_otlp.units import parse_count, parse_duration

try:
    import tomllib
except ImportError:   # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def check_duration(v) -> float:
    if isinstance(v, bool):
        raise ValueError("a duration such as 30s, 2m or 7d")
    if isinstance(v, (int, float)):
        if v <= 0:
            raise ValueError("must be more than zero")
        return float(v)
    if isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?d", v.strip()):
        return float(v.strip()[:-1]) * 86400
    return parse_duration(str(v))


_SIZE = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
         "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(v) -> int:
    """Bytes from 2GiB, 500MB, 1024 ...; ValueError for users."""
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(v))
    if not m or m.group(2).lower() not in _SIZE or float(m.group(1)) <= 0:
        raise ValueError(f"bad size {v!r}: use e.g. 500MB, 2GiB")
    return int(float(m.group(1)) * _SIZE[m.group(2).lower()])


def _positive_int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("a whole number of at least 1")
    return v


def _count(v) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    return parse_count(str(v))


def _bool(v) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _string(v) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _ints(low: int, high: int) -> Callable[[Any], list[int]]:
    def check(v) -> list[int]:
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                              and low <= x <= high for x in v):
            raise ValueError(f"a list of whole numbers from {low} to {high}")
        return list(v)
    return check


def _strings(v) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("a list of strings")
    return list(v)


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v) -> str:
        if v not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return v
    return check


def _comm(v) -> str:
    v = _string(v)
    if len(v.encode()) > COMM_MAX:
        raise ValueError(f"at most {COMM_MAX} bytes (the kernel's command-name length)")
    return v


def _headers(v) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ValueError("a table of strings, e.g. {x-tenant = \"team-a\"}")
    return dict(v)


_PIDS = _ints(1, 2**22)
SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "snapshot": {"output_root": _string, "duration": check_duration, "keep": _positive_int,
                 "max_age": check_duration, "max_total": parse_size, "tar": _bool},
    "agent": {"output_dir": _string, "window": check_duration, "interval": check_duration,
              "keep": _positive_int, "max_age": check_duration, "max_total": parse_size},
    "profile": {"hz": _positive_int, "pids": _PIDS, "off_cpu": _bool, "min_block": check_duration,
                "switch_budget": _count, "user_stacks": _bool, "kernel_stacks": _bool,
                "unwind": _choice("auto", "fp", "dwarf"), "comm": _comm, "include_self": _bool},
    "syscalls": {"pids": _PIDS, "comm": _comm, "syscalls": _strings, "latency": _bool,
                 "latency_budget": _count, "interval": check_duration, "include_self": _bool},
    "trace_net": {"pids": _PIDS, "comm": _comm, "ports": _ints(1, 65535),
                  "hooks": _choice("auto", "tracepoints", "kprobes"), "rtt": _bool, "udp": _bool,
                  "max_connections": _positive_int, "include_self": _bool},
    "memleak": {"pids": _PIDS, "sample_bytes": parse_size, "every_call": _bool, "no_free": _bool,
                "min_age": check_duration, "lib": _string, "symbol_prefix": _string,
                "unwind": _choice("auto", "fp", "dwarf"), "mmap": _bool},
    "otlp": {"endpoint": _string, "protocol": _choice("grpc", "http/protobuf"),
             "headers": _headers, "insecure": _bool, "ca_file": _string,
             "compression": _choice("gzip", "none"), "timeout": check_duration, "spool_dir": _string,
             "spool_max_mb": _positive_int},
}
# The capture tables, as the signals' registry names them (read when first needed: the
# registry imports every signal).
def _capture_tables() -> tuple[str, ...]:
    from ebpf_otlp.signals import registry
    return registry.TABLES


DEFAULTS = {
    "snapshot": {"output_root": "/var/lib/ebpf-otlp/snapshots", "duration": 30.0, "keep": 48,
                 "max_age": 7 * 86400.0, "max_total": 2 * 2**30, "tar": False},
    "agent": {"output_dir": "/var/lib/ebpf-otlp/agent", "window": 60.0, "interval": 10.0,
              "keep": 60, "max_age": 86400.0, "max_total": 2**30},
}


@dataclass
class Config:
    """Validated tables: section -> key -> value, defaults filled for [snapshot]/[agent]."""
    path: str = ""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: list[tuple[str, dict[str, Any]]] = field(default_factory=list)   # from the CLI

    def section(self, name: str) -> dict[str, Any]:
        return {**DEFAULTS.get(name, {}), **self.tables.get(name, {})}

    @property
    def captures(self) -> list[str]:
        return [c for c in _capture_tables() if c in self.tables]

    def override(self, section: str, **values) -> None:
        """Command-line options over the file; None means not given."""
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            self.tables.setdefault(section, {}).update(given)
            self.overrides.append((section, given))

    def default_captures(self) -> None:
        """No capture named: profile, syscalls and trace-net of every process."""
        if not self.captures:
            self.tables.update(profile={}, syscalls={}, trace_net={})

    def check_captures(self) -> None:
        """Build every capture's settings once, so what only they check (syscall names,
        memleak's pids) fails here, before anything is written or printed."""
        from ebpf_otlp.signals import registry
        for name in self.captures:
            for signal in registry.in_table(name):
                signal.settings(self.tables[name], self.path)

    def reloaded(self) -> "Config":
        """The file read again (SIGHUP), with the same command-line options over it."""
        fresh = load(self.path) if self.path else Config()
        fresh.default_captures()
        for section, values in self.overrides:
            fresh.override(section, **values)
        return fresh

    def to_toml(self, sections: tuple[str, ...]) -> str:
        """The effective configuration, as TOML (what --print-config shows)."""
        out = []
        for name in sections:
            table = self.section(name)
            if name not in self.tables and name not in DEFAULTS:
                continue
            out.append(f"[{name}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
            out.append("")
        return "\n".join(out)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def load(path: str | None) -> Config:
    """Read and check a config file; no path: an empty configuration."""
    if not path:
        return Config()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise AgentError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise AgentError(f"{path}: not valid TOML: {e}") from None
    return check(raw, path)


def check(raw: dict, path: str = "<config>") -> Config:
    tables: dict[str, dict[str, Any]] = {}
    for section, table in raw.items():
        name = section.replace("-", "_")
        if name not in SCHEMA:
            raise AgentError(f"{path}: unknown table [{section}] (known: "
                             f"{', '.join('[' + s + ']' for s in SCHEMA)})")
        if not isinstance(table, dict):
            raise AgentError(f"{path}: {section} must be a table, [{section}]")
        tables[name] = {}
        for key, value in table.items():
            convert = SCHEMA[name].get(key)
            if convert is None:
                raise AgentError(f"{path}: [{section}] unknown key {key!r} (known: "
                                 f"{', '.join(SCHEMA[name])})")
            try:
                tables[name][key] = convert(value)
            except ValueError as e:
                raise AgentError(f"{path}: [{section}] {key} = {value!r}: {e}") from None
    return Config(path=os.path.abspath(path) if path != "<config>" else path, tables=tables)


# -- from tables to the settings each processor takes ------------------------------------
def otlp_settings(t: dict):
    """(settings or None, spool) from [otlp], the OTEL_EXPORTER_OTLP_* variables beneath it."""
    from ebpf_otlp.export.otlp_settings import resolve
    from ebpf_otlp.export.spool import DEFAULT_DIR, Spool

    settings = resolve(t.get("endpoint"), t.get("protocol"), t.get("headers"), t.get("insecure"),
                       t.get("ca_file"), t.get("compression"), t.get("timeout"))
    return settings, Spool(t.get("spool_dir") or DEFAULT_DIR, t.get("spool_max_mb", 256) << 20)
