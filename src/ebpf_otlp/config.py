"""The TOML configuration of `snapshot` and `agent`: one table per capture, plus
[snapshot], [agent] and [otlp]. Every key is checked against the schema below; an unknown
key or a bad value is one line naming the file, the key and the problem."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ebpf_otlp import values as v
from ebpf_otlp.errors import AgentError

try:
    import tomllib
except ImportError:   # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


# The tables that are not a capture's; each capture's keys come from its signal's settings
# (signals/signal.py: `toml`), named in the registry.
SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "snapshot": {"output_root": v.string, "duration": v.check_duration, "keep": v.positive_int,
                 "max_age": v.check_duration, "max_total": v.parse_size, "tar": v.boolean},
    "agent": {"output_dir": v.string, "window": v.check_duration, "interval": v.check_duration,
              "keep": v.positive_int, "max_age": v.check_duration, "max_total": v.parse_size},
    "otlp": {"endpoint": v.string, "protocol": v.choice("grpc", "http/protobuf"),
             "headers": v.headers, "insecure": v.boolean, "ca_file": v.string,
             "client_certificate": v.string, "client_key": v.string,
             "compression": v.choice("gzip", "none"), "timeout": v.check_duration,
             "spool_dir": v.string, "spool_max_mb": v.positive_int},
}


def schema() -> dict[str, dict[str, Callable[[Any], Any]]]:
    """Every table and its keys: the ones above, then each capture's (read when first
    needed: the registry imports every signal)."""
    from ebpf_otlp.signals import registry
    tables = dict(SCHEMA)
    otlp = tables.pop("otlp")
    return {**tables, **registry.schemas(), "otlp": otlp}


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
    known = schema()
    for section, table in raw.items():
        name = section.replace("-", "_")
        if name not in known:
            raise AgentError(f"{path}: unknown table [{section}] (known: "
                             f"{', '.join('[' + s + ']' for s in known)})")
        if not isinstance(table, dict):
            raise AgentError(f"{path}: {section} must be a table, [{section}]")
        tables[name] = {}
        for key, value in table.items():
            convert = known[name].get(key)
            if convert is None:
                raise AgentError(f"{path}: [{section}] unknown key {key!r} (known: "
                                 f"{', '.join(known[name])})")
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
                       t.get("ca_file"), t.get("compression"), t.get("timeout"),
                       client_cert=t.get("client_certificate"), client_key=t.get("client_key"))
    return settings, Spool(t.get("spool_dir") or DEFAULT_DIR, t.get("spool_max_mb", 256) << 20)
