"""pprof export: gzip-compressed perftools.profiles.Profile, readable by `pprof`."""

from __future__ import annotations

import gzip

from ebpf_otlp.export.pprof_schema import Profile as PprofProfile
from ebpf_otlp.records import Frame, Mapping, Profile


class _Tables:
    """pprof's interning: a string table and id-numbered mappings/functions/locations (ids from 1)."""

    def __init__(self, out):
        self.out = out
        self.strings: dict[str, int] = {"": 0}
        out.string_table.append("")
        self.mappings: dict[Mapping, int] = {}
        self.functions: dict[tuple[str, str], int] = {}
        self.locations: dict[tuple, int] = {}

    def string(self, s: str) -> int:
        idx = self.strings.get(s)
        if idx is None:
            idx = self.strings[s] = len(self.out.string_table)
            self.out.string_table.append(s)
        return idx

    def mapping(self, m: Mapping | None) -> int:
        if m is None:
            return 0
        mid = self.mappings.get(m)
        if mid is None:
            mid = self.mappings[m] = len(self.mappings) + 1
            self.out.mapping.add(id=mid, memory_start=m.start, memory_limit=m.end,
                                 file_offset=m.file_offset, filename=self.string(m.path),
                                 build_id=self.string(m.build_id), has_functions=True)
        return mid

    def function(self, name: str, filename: str) -> int:
        key = (name, filename)
        fid = self.functions.get(key)
        if fid is None:
            fid = self.functions[key] = len(self.functions) + 1
            self.out.function.add(id=fid, name=self.string(name), system_name=self.string(name),
                                  filename=self.string(filename))
        return fid

    def location(self, frame: Frame) -> int:
        # The same address in two processes is two locations when the code differs.
        key = (frame.mapping, frame.address, frame.function)
        lid = self.locations.get(key)
        if lid is None:
            lid = self.locations[key] = len(self.locations) + 1
            loc = self.out.location.add(id=lid, mapping_id=self.mapping(frame.mapping),
                                        address=frame.address)
            loc.line.add(function_id=self.function(frame.function, frame.module))
        return lid


def build(profile: Profile):
    """The Profile message: samples/count and cpu/nanoseconds, labels pid, tid, thread name."""
    out = PprofProfile()
    t = _Tables(out)
    out.sample_type.add(type=t.string("samples"), unit=t.string("count"))
    out.sample_type.add(type=t.string("cpu"), unit=t.string("nanoseconds"))
    out.period_type.type = t.string("cpu")
    out.period_type.unit = t.string("nanoseconds")
    out.period = profile.period_ns
    out.time_nanos = profile.start_ns
    out.duration_nanos = profile.duration_ns
    out.default_sample_type = 1
    out.comment.append(t.string(f"ebpf-otlp {profile.event} at {profile.frequency_hz} Hz"))
    for s in profile.samples:
        sample = out.sample.add()
        sample.location_id.extend(t.location(f) for f in s.frames)
        sample.value.extend([s.count, s.count * profile.period_ns])
        sample.label.add(key=t.string("pid"), num=s.pid)
        sample.label.add(key=t.string("tid"), num=s.tid)
        sample.label.add(key=t.string("thread name"), str=t.string(s.thread_name))
        if s.process_name:
            sample.label.add(key=t.string("process name"), str=t.string(s.process_name))
    return out


def encode(profile: Profile) -> bytes:
    return gzip.compress(build(profile).SerializeToString())
