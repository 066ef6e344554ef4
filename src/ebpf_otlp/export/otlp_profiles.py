"""OTLP profiles (opentelemetry.proto.profiles.v1development): one Profile per process and
sample type, sharing one ProfilesDictionary (string, mapping, location, function, stack, attribute tables)."""

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
from ebpf_otlp.export.interning import Interned
from ebpf_otlp.gcpause import gc_paused
from ebpf_otlp.records import Frame, Mapping, Profile

BUILD_ID_ATTR = "process.executable.build_id.gnu"
FRAME_TYPE_ATTR = "profile.frame.type"


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
        d = self.d = pb.ProfilesDictionary()
        self.string = Interned(0, lambda s, _i: d.string_table.append(s))
        self.string("")
        for table in (d.mapping_table, d.location_table, d.function_table, d.stack_table,
                      d.attribute_table, d.link_table):
            table.add()
        self.link = Interned(1, lambda span, _i: d.link_table.add(
            trace_id=bytes.fromhex(span[0]), span_id=bytes.fromhex(span[1])))
        self._attribute = Interned(1, lambda kv, _i: d.attribute_table.add(
            key_strindex=self.string(kv[0]), value=any_value(kv[1])))
        self._mapping = Interned(1, lambda m, _i: d.mapping_table.add(
            memory_start=m.start, memory_limit=m.end, file_offset=m.file_offset,
            filename_strindex=self.string(m.path),
            attribute_indices=[self.attribute(BUILD_ID_ATTR, m.build_id)] if m.build_id else []))
        self._function = Interned(1, lambda key, _i: d.function_table.add(
            name_strindex=self.string(key[0]), system_name_strindex=self.string(key[0]),
            filename_strindex=self.string(key[1]), start_line=key[2]))
        self._location = Interned(1, self._add_location)
        self._stack = Interned(1, lambda locs, _i: d.stack_table.add(location_indices=locs))

    def attribute(self, key: str, value) -> int:
        return self._attribute((key, value))

    def mapping(self, m: Mapping | None) -> int:
        return 0 if m is None else self._mapping(m)

    def _add_location(self, key, _i: int) -> None:
        mapping, address, function, module, line, start_line, frame_type = key
        loc = self.d.location_table.add(mapping_index=self.mapping(mapping), address=address,
                                        attribute_indices=[self.attribute(FRAME_TYPE_ATTR, frame_type)]
                                        if frame_type else [])
        loc.lines.add(function_index=self._function((function, module, start_line)), line=line)

    def stack(self, frames: tuple[Frame, ...]) -> int:
        """Leaf first, as in pprof."""
        return self._stack(tuple(self._location.of_all(frames, Frame.location_key.fget)))


def build(profile: Profile, resource: Resource) -> ExportProfilesServiceRequest:
    """One Profile per process and sample type (the v1development model carries one sample
    type per Profile), all over one dictionary: a CPU profile's samples/count and
    cpu/nanoseconds share every stack, location and string."""
    dic = _Dictionary()
    by_pid = defaultdict(list)
    for s in profile.samples:
        by_pid[s.pid].append(s)
    scope = pb.ScopeProfiles(scope=InstrumentationScope(name="ebpf-otlp", version=__version__))
    for pid, samples in sorted(by_pid.items()):
        name = next((s.process_name for s in samples if s.process_name), "")
        attributes = [dic.attribute("process.pid", pid)]
        if name:
            attributes.append(dic.attribute("process.executable.name", name))
        attributes += [dic.attribute(k, v) for k, v in samples[0].container.attributes().items()]
        stacks = [(dic.stack(s.frames), [dic.attribute("thread.id", s.tid),
                                         dic.attribute("thread.name", s.thread_name)]) for s in samples]
        for i, vt in enumerate(profile.sample_types):
            p = scope.profiles.add(time_unix_nano=profile.start_ns, duration_nano=profile.duration_ns,
                                   period=profile.period, profile_id=os.urandom(16),
                                   attribute_indices=attributes)
            p.sample_type.type_strindex = dic.string(vt.type)
            p.sample_type.unit_strindex = dic.string(vt.unit)
            p.period_type.type_strindex = dic.string(profile.period_type.type)
            p.period_type.unit_strindex = dic.string(profile.period_type.unit)
            for s, (stack, thread) in zip(samples, stacks):
                p.samples.add(stack_index=stack, values=[s.values[i]], attribute_indices=thread,
                              link_index=dic.link(s.span) if s.span else 0)
    request = ExportProfilesServiceRequest(dictionary=dic.d)
    rp = request.resource_profiles.add(resource=resource_proto(resource))
    rp.scope_profiles.append(scope)
    return request


def encode(profile: Profile, resource: Resource) -> bytes:
    with gc_paused():
        return build(profile, resource).SerializeToString()


def decode_stacks(request: ExportProfilesServiceRequest,
                  sample_type: str = "samples") -> dict[tuple[int, tuple[str, ...]], int]:
    """(pid, root-first function names) -> value of `sample_type`: what a receiver sees
    (tests, tooling)."""
    d = request.dictionary
    s = d.string_table

    def attrs(indices):
        return {s[d.attribute_table[i].key_strindex]: d.attribute_table[i].value for i in indices}

    out: dict[tuple[int, tuple[str, ...]], int] = defaultdict(int)
    for rp in request.resource_profiles:
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                if s[p.sample_type.type_strindex] != sample_type:
                    continue
                pid = attrs(p.attribute_indices)["process.pid"].int_value
                for smp in p.samples:
                    locs = d.stack_table[smp.stack_index].location_indices
                    names = tuple(s[d.function_table[d.location_table[i].lines[0].function_index]
                                    .name_strindex] for i in reversed(locs))
                    out[(pid, names)] += sum(smp.values)
    return dict(out)
