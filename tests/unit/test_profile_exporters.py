"""Exporters fed with hand-made records: pprof, folded, SVG, JSON, the table."""

import gzip
import json
import xml.etree.ElementTree as ET

from rich.console import Console

from ebpf_otlp.export import flamegraph, folded, json_out, pprof
from ebpf_otlp.signals.profile import table
from ebpf_otlp.export.pprof_schema import Profile as PprofProfile
from ebpf_otlp.records import KERNEL_MODULE, Frame, Mapping, Profile, StackSample, ValueType, cpu_shape
from support.profiles import APP, PERIOD, make_profile


def test_pprof_round_trip():
    prof = PprofProfile.FromString(gzip.decompress(pprof.encode(make_profile())))
    s = prof.string_table
    assert s[0] == "" and len(set(s)) == len(s)                 # interned once each
    assert [(s[t.type], s[t.unit]) for t in prof.sample_type] == [
        ("samples", "count"), ("cpu", "nanoseconds")]
    assert prof.period == 10_101_010 and prof.duration_nanos == 5_000_000_000
    # default_sample_type indexes the string table (profile.proto): CPU time, as pprof expects
    assert s[prof.default_sample_type] == "cpu"
    assert len(prof.location) == 4 and len(prof.function) == 4 and len(prof.mapping) == 2
    assert sorted(l.id for l in prof.location) == [1, 2, 3, 4]
    app = next(m for m in prof.mapping if s[m.filename] == "/usr/bin/app")
    assert s[app.build_id] == "ab" * 20 and app.memory_start == 0x1000 and app.has_functions
    fn = {f.id: s[f.name] for f in prof.function}
    loc = {l.id: fn[l.line[0].function_id] for l in prof.location}
    got = {tuple(loc[i] for i in smp.location_id): list(smp.value) for smp in prof.sample}
    assert got[("work<int>&", "main")] == [30, 30 * 10_101_010]
    assert got[("do_syscall_64", "work<int>&", "main")] == [5, 5 * 10_101_010]
    labels = {s[l.key]: (l.num or s[l.str]) for l in prof.sample[1].label}
    assert labels == {"pid": 10, "tid": 12, "thread name": "worker2", "process name": "app"}


def test_folded():
    text = folded.encode(make_profile())
    assert text.splitlines() == [
        "app;main;other 10",
        "app;main;work<int>& 30",
        "app;main;work<int>&;do_syscall_64_[k] 5",
    ]
    assert folded.parse(text)[("app", "main", "other")] == 10


def test_flamegraph_is_valid_svg_with_proportional_frames():
    svg = flamegraph.render(make_profile())
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    frames = {g.get("data-n"): g for g in root.iter("{http://www.w3.org/2000/svg}g")
              if g.get("class") == "f"}
    assert {"all", "app", "main", "work<int>&", "other", "do_syscall_64_[k]"} <= set(frames)
    width = {n: float(g.find("s:rect", ns).get("width")) for n, g in frames.items()}
    assert abs(width["work<int>&"] / width["other"] - 35 / 10) < 0.1
    assert frames["main"].get("data-w") == "45"
    assert "<script" in svg and "flamegraphSearch" in svg


def test_json_and_table():
    doc = json.loads(json_out.encode(make_profile()))
    assert doc["totals"] == {"samples": 45, "cpu": 45 * PERIOD}
    assert doc["default_sample_type"] == "cpu" and doc["samples"][0]["values"] == [30, 30 * PERIOD]
    assert doc["samples"][0]["frames"][0]["function"] == "work<int>&"
    rows = table.top_functions(make_profile(), 10)
    assert rows[0].function == "work<int>&" and rows[0].self_samples == 30
    assert rows[0].total_samples == 35
    console = Console(record=True, width=120)
    table.render(make_profile(), console)
    text = console.export_text()
    assert "[kernel.kallsyms]" in text and "45 samples, cpu-clock at 99 Hz" in text


def test_off_cpu_profile_says_its_values_are_time():
    """The same stacks weighed in nanoseconds off CPU: one sample type, off_cpu/nanoseconds,
    everywhere; no CPU-time column invented from a sampling period."""
    from dataclasses import replace

    from ebpf_otlp.export import otlp_profiles
    from ebpf_otlp.export.resource import build_resource
    from ebpf_otlp.records import OFF_CPU_TIME, off_cpu_shape

    cpu = make_profile()
    profile = replace(cpu, samples=[replace(s, values=s.values[:1]) for s in cpu.samples],
                      frequency_hz=0, default_type="", shown_type="", **off_cpu_shape())
    prof = PprofProfile.FromString(gzip.decompress(pprof.encode(profile)))
    s = prof.string_table
    assert [(s[t.type], s[t.unit]) for t in prof.sample_type] == [("off_cpu", "nanoseconds")]
    assert s[prof.default_sample_type] == "off_cpu"
    assert [list(x.value) for x in prof.sample] == [[30], [10], [5]]
    req = otlp_profiles.build(profile, build_resource())
    dic = req.dictionary
    [p] = req.resource_profiles[0].scope_profiles[0].profiles
    assert (dic.string_table[p.sample_type.type_strindex],
            dic.string_table[p.sample_type.unit_strindex]) == (OFF_CPU_TIME.type, OFF_CPU_TIME.unit)
    console = Console(record=True, width=200)
    table.render(profile, console)
    text = console.export_text()
    assert "self ms" in text and "0.000 s, off_cpu/nanoseconds (sched_switch)" in text
    svg = flamegraph.render(profile)
    assert 'data-unit="ns"' in svg and "Off-CPU flame graph" in svg
    assert json.loads(json_out.encode(profile))["sample_types"] == [{"type": "off_cpu",
                                                                      "unit": "nanoseconds"}]


HEAP_TYPES = (ValueType("alloc_objects", "count"), ValueType("alloc_space", "bytes"),
              ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes"))


def heap_profile() -> Profile:
    """A heap-shaped profile, as memleak will make: four values per stack, inuse_space first
    in readers, period = the sampling rate in bytes."""
    cpu = make_profile()
    samples = [StackSample(s.pid, s.tid, s.thread_name, s.process_name, s.frames,
                           (s.values[0], s.values[0] * 512, s.values[0] // 5, s.values[0] * 512 // 5))
               for s in cpu.samples]
    return Profile(samples, HEAP_TYPES, cpu.start_ns, cpu.duration_ns,
                   period_type=ValueType("space", "bytes"), period=512 * 1024,
                   default_type="inuse_space", event="malloc")


def test_a_four_valued_profile_in_googles_pprof_and_otlp(tmp_path):
    """Google's pprof reads four sample types with inuse_space as the default; the OTLP
    form is four Profiles (one per type) over one dictionary, the same stacks in each."""
    import subprocess

    from conftest import ROOT, need_tool
    from ebpf_otlp.export import otlp_profiles
    from ebpf_otlp.export.resource import build_resource

    profile = heap_profile()
    path = tmp_path / "heap.pb.gz"
    path.write_bytes(pprof.encode(profile))
    tool = need_tool("pprof", str(ROOT / ".tools" / "pprof"))
    raw = subprocess.run([tool, "-raw", str(path)], capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    assert ("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]"
            in raw.stdout), raw.stdout[:500]
    assert "PeriodType: space bytes" in raw.stdout and "Period: 524288" in raw.stdout
    top = subprocess.run([tool, "-top", "-sample_index=alloc_space", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and "Type: alloc_space" in top.stdout, top.stderr

    req = otlp_profiles.build(profile, build_resource())
    profiles = req.resource_profiles[0].scope_profiles[0].profiles
    s = req.dictionary.string_table
    assert [s[p.sample_type.type_strindex] for p in profiles] == [t.type for t in HEAP_TYPES]
    assert len({tuple(x.stack_index for x in p.samples) for p in profiles}) == 1   # shared stacks
    assert all(s[p.period_type.type_strindex] == "space" and p.period == 512 * 1024 for p in profiles)
    assert otlp_profiles.decode_stacks(req, "inuse_space")[(10, ("main", "other"))] == 10 * 512 // 5


def test_pprof_file_line_names_no_one_process_of_several(tmp_path):
    """pprof's header shows mapping 1 as "File:" (the main binary, by convention). A profile
    of several processes (--all) has none: mapping 1 is an unnamed placeholder, as
    perf_data_converter writes for samples without a main binary, so no one process's file
    is shown for all; a profile of one process keeps its own first."""
    import subprocess

    from conftest import ROOT, need_tool

    tool = need_tool("pprof", str(ROOT / ".tools" / "pprof"))
    other = Mapping("/usr/lib/x86_64-linux-gnu/libz.so.1", 0x7000, 0x9000, 0, "cd" * 20)
    several = make_profile()
    several.samples.insert(0, StackSample(20, 20, "z", "zipper", (Frame("inflate", other.path, 0x7100, other),),
                                          (7, 7 * PERIOD)))
    headers = {}
    for name, profile in (("several", several), ("one", make_profile())):
        path = tmp_path / f"{name}.pb.gz"
        path.write_bytes(pprof.encode(profile))
        prof = PprofProfile.FromString(gzip.decompress(path.read_bytes()))
        headers[name] = (prof, prof.string_table)
        top = subprocess.run([tool, "-top", str(path)], capture_output=True, text=True, timeout=60)
        assert top.returncode == 0, top.stderr
        headers[name] += (top.stdout.split("Type:", 1)[0],)
    prof, s, header = headers["several"]
    first = prof.mapping[0]
    assert (first.id, s[first.filename], s[first.build_id], first.memory_start, first.memory_limit) == (
        1, "", "", 0, 1)
    assert all(l.mapping_id != 1 for l in prof.location)
    assert {s[m.filename] for m in prof.mapping[1:]} == {other.path, APP.path, KERNEL_MODULE}
    assert "File:" not in header and "Build ID:" not in header, header
    prof, s, header = headers["one"]
    assert s[prof.mapping[0].filename] == APP.path and "File: app" in header, header


def test_a_stack_cut_short_goes_under_its_sites_whole_stack():
    """One site, one row: main→work cut at __libc_start_call_main (no table yet) joins the
    whole main→work stack of its process, its thread's first; one that begins no whole
    stack, or another process's, stays a row of its own."""
    from ebpf_otlp.records import StackSample, add_values, merge_cut

    def f(name):
        return Frame(name, "/bin/w")

    chain = [f("work"), f("main"), f("__libc_start_call_main")]
    whole = (*chain, f("__libc_start_main_impl"), f("_start"))
    items = [StackSample(1, 1, "t", "w", whole, (10, 100)),
             StackSample(1, 2, "t", "w", whole, (50, 500)),
             StackSample(1, 1, "t", "w", tuple(chain), (3, 30), cut=True),
             StackSample(1, 1, "t", "w", (f("other"), f("main")), (2, 20), cut=True),
             StackSample(9, 9, "t", "x", tuple(chain), (4, 40), cut=True)]
    out, merged = merge_cut(items, add_values, lambda s: s.values[0])
    assert [m.values for m in merged] == [(3, 30)] and len(out) == 4
    assert [s.values for s in out if s.tid == 1 and not s.cut] == [(13, 130)]   # its thread's
    assert [s.values for s in out if s.tid == 2] == [(50, 500)]
    assert {s.values for s in out if s.cut} == {(2, 20), (4, 40)}
    assert sum(s.values[0] for s in out) == sum(s.values[0] for s in items)


def python_profile():
    """main (native) -> handle (app.py:12, defined at 10), twice at two lines, then a C leaf."""
    main = Frame("main", "/usr/bin/python3", 0x1100, APP)
    at12 = Frame("Server.handle", "/srv/app.py", line=12, start_line=10, frame_type="cpython")
    at14 = Frame("Server.handle", "/srv/app.py", line=14, start_line=10, frame_type="cpython")
    leaf = Frame("memcpy", "/usr/lib/libc.so.6", 0x7000)
    samples = [StackSample(10, 11, "w", "python3", (at12, main), (3, 3 * PERIOD)),
               StackSample(10, 11, "w", "python3", (leaf, at14, main), (1, PERIOD))]
    return Profile(samples, start_ns=1, duration_ns=2, **cpu_shape(99))


def test_python_frames_show_their_file_and_line():
    text = folded.encode(python_profile())
    assert text.splitlines() == ["python3;main;Server.handle (app.py:12) 3",
                                 "python3;main;Server.handle (app.py:14);memcpy 1"]
    rows = table.top_functions(python_profile())   # one function, whatever its lines
    assert [(r.function, r.module, r.total_samples) for r in rows][:1] == [("Server.handle", "app.py", 4)]
    doc = json.loads(json_out.encode(python_profile()))
    assert doc["samples"][0]["frames"][0] | {"address": ""} == {
        "function": "Server.handle", "module": "/srv/app.py", "address": "", "kernel": False,
        "line": 12, "frame_type": "cpython"}


def test_python_frames_in_pprof_and_otlp_are_one_function_with_lines():
    from opentelemetry.sdk.resources import Resource
    from ebpf_otlp.export import otlp_profiles
    prof = PprofProfile.FromString(gzip.decompress(pprof.encode(python_profile())))
    s = prof.string_table
    handle = [f for f in prof.function if s[f.name] == "Server.handle"]
    assert len(handle) == 1 and s[handle[0].filename] == "/srv/app.py" and handle[0].start_line == 10
    lines = sorted(ln.line for loc in prof.location for ln in loc.line if ln.function_id == handle[0].id)
    assert lines == [12, 14]
    req = otlp_profiles.build(python_profile(), Resource.create({}))
    d = req.dictionary
    fns = [f for f in d.function_table if d.string_table[f.name_strindex] == "Server.handle"]
    assert len(fns) == 1 and fns[0].start_line == 10
    py_locs = [loc for loc in d.location_table if loc.lines and loc.lines[0].line]
    assert sorted(loc.lines[0].line for loc in py_locs) == [12, 14]
    for loc in py_locs:   # profile.frame.type: cpython, as OpenTelemetry's conventions name it
        kv = [d.attribute_table[i] for i in loc.attribute_indices]
        assert [(d.string_table[a.key_strindex], a.value.string_value) for a in kv] == [
            ("profile.frame.type", "cpython")]
    assert otlp_profiles.decode_stacks(req)[(10, ("main", "Server.handle"))] == 3
