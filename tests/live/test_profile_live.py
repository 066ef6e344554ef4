"""Live CPU profiling against workloads with known answers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import (FAKE_CONTAINER_ID, FAKE_POD_UID, ROOT, WORKLOADS, agent, agent_around, agent_popen,
                      compile_c, in_container, need_tool, wait_for_line)
from ebpf_otlp.export import folded
from support.pprof import load_pprof, pprof_stacks, self_share

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def hot_profile(tmp_path_factory):
    """Profile the 3:1 workload once; several tests read the outputs."""
    d = tmp_path_factory.mktemp("hot")
    binary = compile_c("hot.c", d / "hot")
    work = subprocess.Popen([str(binary), "30"])
    try:
        run = agent_popen("profile", "--pid", str(work.pid), "--hz", "199", "--duration", "5s",
                          "-o", str(d / "cpu.pb.gz"), "-o", str(d / "cpu.folded"),
                          "-o", str(d / "cpu.svg"), "-o", str(d / "cpu.json"))
        seen = wait_for_line(run.stderr, "sampling pid")
        cpu_at_attach = cpu_seconds(work.pid)
        out, err = run.communicate(timeout=120)
        cpu = cpu_seconds(work.pid) - cpu_at_attach   # what hot ran while sampled
    finally:
        work.kill()
        work.wait()
    r = subprocess.CompletedProcess(run.args, run.returncode, out, "".join(seen) + err)
    assert r.returncode == 0, r.stderr
    return d, r, cpu


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def test_finds_the_3_to_1_split_with_callers(hot_profile):
    d, r, cpu = hot_profile
    stacks = pprof_stacks(load_pprof(d / "cpu.pb.gz"))
    total = sum(stacks.values())
    # One sample per 1/199 s of hot's own CPU time (less of it on a busy machine).
    assert abs(total - 199 * cpu) < 0.1 * 199 * cpu + 5, f"{total} samples for {cpu:.2f} CPU s"
    a, b = self_share(stacks, "hot_a"), self_share(stacks, "hot_b")
    assert abs(a - 0.75) < 0.05 and abs(b - 0.25) < 0.05, (a, b)
    # Callers: hot_a and hot_b are called by run, which main calls.
    for leaf in ("hot_a", "hot_b"):
        callers = [st for st in stacks if st and st[-1] == leaf]
        assert any(st[-3:-1] == ("main", "run") for st in callers), callers[:3]
        # main's caller is in Debian's stripped libc: named from libc6-dbg's debug file.
        assert any(st[-4:-1] == ("__libc_start_call_main", "main", "run") for st in callers), callers[:3]
    assert "hot_a" in r.stdout  # the top-functions table


def test_pprof_metadata(hot_profile):
    d, *_ = hot_profile
    prof = load_pprof(d / "cpu.pb.gz")
    s = prof.string_table
    assert s[0] == ""
    assert [(s[t.type], s[t.unit]) for t in prof.sample_type] == [("samples", "count"),
                                                                   ("cpu", "nanoseconds")]
    assert (s[prof.period_type.type], s[prof.period_type.unit]) == ("cpu", "nanoseconds")
    assert prof.period == 1_000_000_000 // 199
    assert prof.duration_nanos > 4e9 and prof.time_nanos > 0
    for group in (prof.mapping, prof.location, prof.function):
        assert sorted(x.id for x in group) == list(range(1, len(group) + 1))
    hot = [m for m in prof.mapping if s[m.filename].endswith("/hot")]
    assert hot and re.fullmatch(r"[0-9a-f]{40}", s[hot[0].build_id])
    labels = {s[l.key] for smp in prof.sample for l in smp.label}
    assert {"pid", "tid", "thread name"} <= labels
    for smp in prof.sample:
        assert smp.value[1] == smp.value[0] * prof.period


def test_folded_and_json_agree_with_pprof(hot_profile):
    d, *_ = hot_profile
    stacks = pprof_stacks(load_pprof(d / "cpu.pb.gz"))
    fold = folded.parse((d / "cpu.folded").read_text())
    assert sum(fold.values()) == sum(stacks.values())
    assert all(st[0] == "hot" for st in fold)          # the process name leads each stack
    doc = json.loads((d / "cpu.json").read_text())
    assert doc["totals"]["samples"] == sum(stacks.values())
    assert doc["stats"]["processed"] >= sum(stacks.values())
    # No sample dropped; a stack id can collide in the hash now and then, rarely.
    assert not any("sample" in cause for cause in doc["stats"]["lost"]), doc["stats"]["lost"]
    assert doc["stats"]["lost_total"] < 0.01 * doc["stats"]["processed"]


def test_pprof_tool_reads_it(hot_profile):
    pprof = need_tool("pprof", str(ROOT / ".tools" / "pprof"))
    d, *_ = hot_profile
    out = subprocess.run([pprof, "-top", "-nodecount=5", str(d / "cpu.pb.gz")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[-1]: float(line.split()[1].rstrip("%"))
            for line in out.stdout.splitlines() if re.match(r"\s*[\d.]+\w*\s+[\d.]+%", line)}
    assert abs(rows["hot_a"] - 75) < 5 and abs(rows["hot_b"] - 25) < 5, out.stdout
    assert "Type: cpu" in out.stdout   # the default sample type, as pprof opens Go's CPU profiles
    raw = subprocess.run([pprof, "-raw", str(d / "cpu.pb.gz")], capture_output=True, text=True,
                         timeout=60)
    assert "samples/count cpu/nanoseconds[dflt]" in raw.stdout, raw.stdout[:400]


def test_flame_graph_renders_in_chromium(hot_profile, tmp_path):
    chromium = need_tool("chromium", "/usr/bin/chromium")
    d, *_ = hot_profile
    # A page that embeds the SVG, lets its script lay out the frames, then writes what
    # the browser actually drew (label text and on-screen width of each frame) into the DOM.
    page = tmp_path / "check.html"
    page.write_text("""<html><body><object id="fg" type="image/svg+xml" data="%s"></object>
<pre id="out">pending</pre><script>
document.getElementById('fg').addEventListener('load', function () {
  var doc = this.contentDocument, rows = [];
  doc.querySelectorAll('.f').forEach(function (g) {
    var r = g.querySelector('rect').getBoundingClientRect();
    rows.push(g.dataset.n + '\\t' + r.width.toFixed(1) + '\\t' + g.querySelector('text').textContent);
  });
  document.getElementById('out').textContent = 'DRAWN\\n' + rows.join('\\n');
});
</script></body></html>""" % (d / "cpu.svg").as_uri())
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", "--no-first-run", "--allow-file-access-from-files",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "DRAWN" in out.stdout, out.stderr[-2000:]
    drawn = {}   # name -> (widest drawn width in px, its label)
    for line in out.stdout.split("DRAWN", 1)[1].split("</pre>", 1)[0].splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and float(parts[1]) > drawn.get(parts[0], (-1, ""))[0]:
            drawn[parts[0]] = (float(parts[1]), parts[2])
    assert drawn["hot_a"][1] == "hot_a" and drawn["hot_b"][1] == "hot_b"   # labels drawn
    ratio = drawn["hot_a"][0] / drawn["hot_b"][0]
    assert 2.3 < ratio < 3.9, ratio


def test_container_and_pod_of_the_process_are_reported(tmp_path):
    """A process in a Kubernetes container's cgroup: container.id and k8s.pod.uid on its
    OTLP profile and pprof samples, so a Collector's k8sattributes can name the pod."""
    from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
        ExportProfilesServiceRequest)

    binary = compile_c("hot.c", tmp_path / "hot")
    work = subprocess.Popen([str(binary), "20"])
    try:
        with in_container(work.pid):
            r = agent("profile", "--pid", str(work.pid), "--duration", "2s",
                      "-o", str(tmp_path / "cpu.pb.gz"), "-o", str(tmp_path / "cpu.otlp.pb"))
    finally:
        work.kill()
        work.wait()
    assert r.returncode == 0, r.stderr
    req = ExportProfilesServiceRequest.FromString((tmp_path / "cpu.otlp.pb").read_bytes())
    dic = req.dictionary
    profiles = req.resource_profiles[0].scope_profiles[0].profiles
    assert len(profiles) == 2   # one per sample type (samples, cpu), each with the process's attributes
    for prof in profiles:
        attrs = {dic.string_table[dic.attribute_table[i].key_strindex]: dic.attribute_table[i].value
                 for i in prof.attribute_indices}
        assert attrs["container.id"].string_value == FAKE_CONTAINER_ID
        assert attrs["k8s.pod.uid"].string_value == FAKE_POD_UID
    prof_pb = load_pprof(tmp_path / "cpu.pb.gz")
    strings = prof_pb.string_table
    labels = {(strings[l.key], strings[l.str]) for smp in prof_pb.sample for l in smp.label if l.str}
    assert ("container.id", FAKE_CONTAINER_ID) in labels and ("k8s.pod.uid", FAKE_POD_UID) in labels


def test_samples_before_an_exec_keep_the_old_program_names(tmp_path):
    """One pid, two programs: exec_chain burns in before_exec_burner, then execs hot. Each
    sample is symbolized against the mappings of its own exec generation."""
    chain = compile_c("exec_chain.c", tmp_path / "exec_chain")
    hot = compile_c("hot.c", tmp_path / "hot")
    work = subprocess.Popen([str(chain), "1.5", str(hot), "1.5"], stdin=subprocess.PIPE, text=True)
    agent_around(work, "sampling pid", "profile", "--pid", str(work.pid), "-o", str(tmp_path / "x.pb.gz"))
    stacks = pprof_stacks(load_pprof(tmp_path / "x.pb.gz"))
    before = sum(c for st, c in stacks.items() if st[-2:] == ("main", "before_exec_burner"))
    after = sum(c for st, c in stacks.items() if st and st[-1] in ("hot_a", "hot_b"))
    assert before > 0.6 * 1.5 * 99 and after > 0.6 * 1.5 * 99, (before, after)
    unknown = sum(c for st, c in stacks.items() if any("[unknown]" in f or "+0x" in f for f in st[-2:]))
    assert unknown < 0.05 * (before + after), stacks.most_common(5)


def test_process_that_exits_mid_capture_is_named(tmp_path):
    binary = compile_c("short_lived.c", tmp_path / "short_lived")
    prof_path = tmp_path / "all.pb.gz"
    run = agent_popen("profile", "--all", "--duration", "6s", "-o", str(prof_path))
    try:
        wait_for_line(run.stderr, "sampling all processes")
        work = subprocess.run([str(binary), "1.5"], timeout=30)
        assert work.returncode == 0
        binary.unlink()   # even its file is gone before the capture ends
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, err
    stacks = pprof_stacks(load_pprof(prof_path))
    burner = sum(c for st, c in stacks.items() if "short_lived_burner" in st)
    assert burner > 0.5 * 1.5 * 99, f"short_lived_burner seen in {burner} samples"
    assert any(st[-2:] == ("main", "short_lived_burner") for st in stacks)


def test_vdso_function_is_named(tmp_path):
    """A loop on clock_gettime spends its time in the vDSO, which no file holds: named from
    the image in the process's memory, in a [vdso] mapping with the image's build ID."""
    binary = compile_c("vdso_spin.c", tmp_path / "vdso_spin")
    work = subprocess.Popen([str(binary), "30"])
    try:
        r = agent("profile", "--pid", str(work.pid), "--duration", "3s", "-o", str(tmp_path / "v.pb.gz"))
    finally:
        work.kill()
        work.wait()
    assert r.returncode == 0, r.stderr
    prof = load_pprof(tmp_path / "v.pb.gz")
    stacks = pprof_stacks(prof)
    assert self_share(stacks, "__vdso_clock_gettime") > 0.8, stacks.most_common(5)
    s = prof.string_table
    vdso = [m for m in prof.mapping if s[m.filename] == "[vdso]"]
    assert len(vdso) == 1 and re.fullmatch(r"[0-9a-f]{40}", s[vdso[0].build_id])


def test_node_jit_function_is_named(tmp_path):
    node = need_tool("node")
    work = subprocess.Popen([node, "--perf-basic-prof", str(WORKLOADS / "busy.js"), "10"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)   # let V8 compile the hot loop and write /tmp/perf-PID.map
        r = agent("profile", "--pid", str(work.pid), "--duration", "3s",
                  "-o", str(tmp_path / "node.folded"))
    finally:
        work.kill()
        work.wait()
    assert r.returncode == 0, r.stderr
    fold = folded.parse((tmp_path / "node.folded").read_text())
    js = sum(c for st, c in fold.items() if any("busyJavaScriptLoop" in f for f in st))
    assert js > 0.5 * sum(fold.values()), sorted(fold.items(), key=lambda kv: -kv[1])[:5]


def test_sigterm_writes_what_was_gathered(tmp_path):
    binary = compile_c("hot.c", tmp_path / "hot")
    work = subprocess.Popen([str(binary), "30"])
    out = tmp_path / "cut.pb.gz"
    run = agent_popen("profile", "--pid", str(work.pid), "-o", str(out))   # no duration
    try:
        wait_for_line(run.stderr, "sampling pid")
        time.sleep(2)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
        work.kill()
        work.wait()
    assert run.returncode == 0, err
    assert "SIGTERM" in err
    stacks = pprof_stacks(load_pprof(out))
    assert sum(stacks.values()) > 100 and self_share(stacks, "hot_a") > 0.6


def test_pid_that_exits_before_attach(tmp_path):
    work = subprocess.Popen(["sleep", "0.5"])
    r = agent("profile", "--pid", str(work.pid), "--duration", "2s", "-o", str(tmp_path / "x.pb.gz"))
    work.wait()
    assert r.returncode == 2
    assert "exited before" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_full_maps_lose_samples_only_as_counted(tmp_path, monkeypatch):
    """With room for two keys and four stacks, every sample is either in the counts or in
    the kernel's count of samples dropped: samples == counted + dropped, exactly."""
    from ebpf_otlp.signals.profile import collector as cpu

    monkeypatch.setattr(cpu, "map_sizes", lambda hz, cpus, drain: (2, 4))
    binary = compile_c("hot.c", tmp_path / "hot")
    work = subprocess.Popen([str(binary), "10"])
    sampler = cpu.CpuSampler(hz=499, pids=[work.pid], drain_seconds=0.5)
    records = []
    try:
        sampler.start()
        for _ in range(4):
            time.sleep(0.5)
            records += sampler.drain()
    finally:
        records += sampler.stop()
        work.kill()
        work.wait()
    st = sampler.stats
    counted = sum(count for _, count in records)
    dropped = st.lost["sample dropped (count map full)"]
    assert st.processed > 499 and dropped > 0
    assert counted + dropped == st.processed
    # four stack slots cannot hold hot's user and kernel stacks
    assert any("stack lost" in cause for cause in st.lost)


@pytest.mark.parametrize("budget", ["0", "300"])
def test_off_cpu_time_is_attributed_to_the_stack_that_slept(tmp_path, budget):
    """One thread naps 2 ms at a time for 3 s, another spins: the off-CPU profile puts the
    napper's measured sleep on its nanosleep stack (within 10 %), and almost none on the
    spinner; pprof says what the values are. With a switch budget of 300/s (the napper
    alone switches 500 times a second) only a random share of switches is walked and each
    is weighed up: the estimate still lands within 10 % (about 900 of 1500 naps walked
    leave a relative error near 2 %)."""
    binary = compile_c("off_cpu.c", tmp_path / "off_cpu", "-pthread")
    work = subprocess.Popen([str(binary), "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, table, _ = agent_around(work, "tracing off-CPU time", "profile", "--off-cpu", "--pid", str(work.pid),
                                 "--switch-budget", budget, "-o", str(tmp_path / "off.pb.gz"),
                                 "-o", str(tmp_path / "off.folded"))
    assert ("~ sampled" in table) == (budget != "0")
    asleep = int(re.search(r"napper_asleep_ns (\d+)", out).group(1))
    prof = load_pprof(tmp_path / "off.pb.gz")
    strings = prof.string_table
    assert [(strings[t.type], strings[t.unit]) for t in prof.sample_type] == [("off_cpu", "nanoseconds")]
    stacks = pprof_stacks(prof)
    napping = sum(ns for st, ns in stacks.items() if "napper_thread" in st and "do_nanosleep" in st)
    spinning = sum(ns for st, ns in stacks.items() if "spinner" in st)
    assert abs(napping - asleep) / asleep < 0.10, (napping, asleep)
    assert spinning < 0.10 * asleep, spinning
    folded_total = sum(int(line.rsplit(" ", 1)[1]) for line in (tmp_path / "off.folded").read_text().splitlines())
    assert folded_total == sum(stacks.values())


def test_page_faults_land_where_memory_is_touched(tmp_path):
    """`--event page-faults`: one sample every 100 faults, each standing for 100; the
    function that touches 50,000 fresh pages gets them, within 10 % of what getrusage
    counted, at no per-call cost (a software perf event)."""
    binary = compile_c("faulter.c", tmp_path / "faulter")
    r = agent("profile", "--event", "page-faults", "--period", "100", "-o", str(tmp_path / "pf.pb.gz"),
              "--", str(binary), "50000")
    assert r.returncode == 0, r.stderr
    truth = int(re.search(r"minor_faults (\d+)", r.stdout).group(1))
    prof = load_pprof(tmp_path / "pf.pb.gz")
    s = prof.string_table
    assert [(s[t.type], s[t.unit]) for t in prof.sample_type] == [("samples", "count"),
                                                                   ("page_faults", "count")]
    assert s[prof.default_sample_type] == "page_faults" and prof.period == 100
    faults = Counter()
    fn = {f.id: s[f.name] for f in prof.function}
    loc = {l.id: fn[l.line[0].function_id] for l in prof.location}
    for sample in prof.sample:
        names = [loc[i] for i in sample.location_id]
        faults["touch_pages" if "touch_pages" in names else "other"] += sample.value[1]
    assert abs(faults["touch_pages"] - truth) < 0.10 * truth, (faults, truth)
    assert faults["touch_pages"] > 0.9 * sum(faults.values())


def test_sampling_events_and_rates_are_explained_in_one_place(tmp_path):
    """A hardware event this VM lacks is one line (BCC's own perf_event_open line held
    back); a rate far above what sampling should cost warns, then runs."""
    r = agent("profile", "--event", "cpu-cycles", "--duration", "1s", "-o", str(tmp_path / "c.pb.gz"))
    assert "perf_event_open failed" not in r.stderr
    if r.returncode:   # no hardware counters (these VMs)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "use --event cpu-clock" in lines[0], r.stderr
    r = agent("profile", "--hz", "20000", "--duration", "1s", "--top", "0",
              "-o", str(tmp_path / "fast.folded"))
    assert r.returncode == 0, r.stderr
    assert "warning: --hz 20000 is above" in r.stderr
