"""OTLP profiles (opentelemetry.proto.profiles.v1development): one Profile per process,
sharing one ProfilesDictionary (string, mapping, location, function, stack, attribute tables)."""

from __future__ import annotations

import os
from collections import defaultdict

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk.resources import Resource

from ebpf_otlp import __version__
from ebpf_otlp.records import Frame, Mapping, Profile

BUILD_ID_ATTR = "process.executable.build_id.gnu"


def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def resource_proto(resource: Resource) -> ResourceProto:
    return ResourceProto(attributes=[KeyValue(key=k, value=any_value(v))
                                     for k, v in resource.attributes.items()])


class _Dictionary:
    """Interning into the shared tables; index 0 of every table is the empty entry, as
    the protocol requires."""

    def __init__(self):
        self.d = pb.ProfilesDictionary()
        self.strings: dict[str, int] = {}
        self.string("")
        self.d.mapping_table.add()
        self.d.location_table.add()
        self.d.function_table.add()
        self.d.stack_table.add()
        self.d.attribute_table.add()
        self.mappings: dict[Mapping, int] = {}
        self.functions: dict[tuple[str, str], int] = {}
        self.locations: dict[tuple, int] = {}
        self.stacks: dict[tuple[int, ...], int] = {}
        self.attributes: dict[tuple[str, object], int] = {}

    def string(self, s: str) -> int:
        idx = self.strings.get(s)
        if idx is None:
            idx = self.strings[s] = len(self.d.string_table)
            self.d.string_table.append(s)
        return idx

    def attribute(self, key: str, value) -> int:
        k = (key, value)
        idx = self.attributes.get(k)
        if idx is None:
            idx = self.attributes[k] = len(self.d.attribute_table)
            self.d.attribute_table.add(key_strindex=self.string(key), value=any_value(value))
        return idx

    def mapping(self, m: Mapping | None) -> int:
        if m is None:
            return 0
        idx = self.mappings.get(m)
        if idx is None:
            idx = self.mappings[m] = len(self.d.mapping_table)
            attrs = [self.attribute(BUILD_ID_ATTR, m.build_id)] if m.build_id else []
            self.d.mapping_table.add(memory_start=m.start, memory_limit=m.end,
                                     file_offset=m.file_offset,
                                     filename_strindex=self.string(m.path),
                                     attribute_indices=attrs)
        return idx

    def function(self, name: str, filename: str) -> int:
        key = (name, filename)
        idx = self.functions.get(key)
        if idx is None:
            idx = self.functions[key] = len(self.d.function_table)
            self.d.function_table.add(name_strindex=self.string(name),
                                      system_name_strindex=self.string(name),
                                      filename_strindex=self.string(filename))
        return idx

    def location(self, f: Frame) -> int:
        key = (f.mapping, f.address, f.function)
        idx = self.locations.get(key)
        if idx is None:
            idx = self.locations[key] = len(self.d.location_table)
            loc = self.d.location_table.add(mapping_index=self.mapping(f.mapping), address=f.address)
            loc.lines.add(function_index=self.function(f.function, f.module))
        return idx

    def stack(self, frames: tuple[Frame, ...]) -> int:
        """Leaf first, as in pprof."""
        locs = tuple(self.location(f) for f in frames)
        idx = self.stacks.get(locs)
        if idx is None:
            idx = self.stacks[locs] = len(self.d.stack_table)
            self.d.stack_table.add(location_indices=locs)
        return idx


def build(profile: Profile, resource: Resource) -> ExportProfilesServiceRequest:
    dic = _Dictionary()
    by_pid = defaultdict(list)
    for s in profile.samples:
        by_pid[s.pid].append(s)
    scope = pb.ScopeProfiles(scope=InstrumentationScope(name="ebpf-otlp", version=__version__))
    for pid, samples in sorted(by_pid.items()):
        name = next((s.process_name for s in samples if s.process_name), "")
        p = scope.profiles.add(time_unix_nano=profile.start_ns, duration_nano=profile.duration_ns,
                               period=profile.period_ns, profile_id=os.urandom(16))
        p.sample_type.type_strindex = dic.string("samples")
        p.sample_type.unit_strindex = dic.string("count")
        p.period_type.type_strindex = dic.string("cpu")
        p.period_type.unit_strindex = dic.string("nanoseconds")
        p.attribute_indices.append(dic.attribute("process.pid", pid))
        if name:
            p.attribute_indices.append(dic.attribute("process.executable.name", name))
        for s in samples:
            p.samples.add(stack_index=dic.stack(s.frames), values=[s.count],
                          attribute_indices=[dic.attribute("thread.id", s.tid),
                                             dic.attribute("thread.name", s.thread_name)])
    request = ExportProfilesServiceRequest(dictionary=dic.d)
    rp = request.resource_profiles.add(resource=resource_proto(resource))
    rp.scope_profiles.append(scope)
    return request


def encode(profile: Profile, resource: Resource) -> bytes:
    return build(profile, resource).SerializeToString()


def decode_stacks(request: ExportProfilesServiceRequest) -> dict[tuple[int, tuple[str, ...]], int]:
    """(pid, root-first function names) -> samples: what a receiver sees (tests, tooling)."""
    d = request.dictionary
    s = d.string_table

    def attrs(indices):
        return {s[d.attribute_table[i].key_strindex]: d.attribute_table[i].value for i in indices}

    out: dict[tuple[int, tuple[str, ...]], int] = defaultdict(int)
    for rp in request.resource_profiles:
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                pid = attrs(p.attribute_indices)["process.pid"].int_value
                for smp in p.samples:
                    locs = d.stack_table[smp.stack_index].location_indices
                    names = tuple(s[d.function_table[d.location_table[i].lines[0].function_index]
                                    .name_strindex] for i in reversed(locs))
                    out[(pid, names)] += sum(smp.values)
    return dict(out)
