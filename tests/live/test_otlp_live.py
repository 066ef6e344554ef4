"""Live: what `profile` sends to a real gRPC and a real HTTP collector, and the spool."""

from __future__ import annotations

import gzip
import os
import subprocess
from collections import Counter

import pytest

from support.collector import GrpcCollector, HttpCollector, free_port, self_signed_cert, make_ca
from conftest import agent, compile_c
from ebpf_otlp.export.otlp_profiles import decode_stacks
from ebpf_otlp.export.pprof_schema import Profile as PprofProfile

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def hot_binary(tmp_path_factory):
    return compile_c("hot.c", tmp_path_factory.mktemp("otlp") / "hot")


def profile_to(tmp_path, hot_binary, *otlp_args, seconds="3s"):
    """Profile the 3:1 workload, writing pprof and sending OTLP; returns (result, pid)."""
    work = subprocess.Popen([str(hot_binary), "30"])
    try:
        r = agent("profile", "--pid", str(work.pid), "--duration", seconds,
                  "-o", str(tmp_path / "cpu.pb.gz"), "--spool-dir", str(tmp_path / "spool"),
                  *otlp_args)
    finally:
        work.kill()
        work.wait()
    return r, work.pid


def pprof_stacks(path) -> Counter:
    prof = PprofProfile.FromString(gzip.decompress(path.read_bytes()))
    s = prof.string_table
    fn = {f.id: s[f.name] for f in prof.function}
    loc = {l.id: fn[l.line[0].function_id] for l in prof.location}
    pid_key = list(s).index("pid")
    out: Counter = Counter()
    for smp in prof.sample:
        pid = next(l.num for l in smp.label if l.key == pid_key)
        out[(pid, tuple(reversed([loc[i] for i in smp.location_id])))] += smp.value[0]
    return out


def attrs(dic, indices):
    s = dic.string_table
    return {s[dic.attribute_table[i].key_strindex]: dic.attribute_table[i].value for i in indices}


def check_profile_request(req, pid, pprof_path):
    dic = req.dictionary
    s = dic.string_table
    # Index 0 of each table is the empty entry the protocol reserves.
    assert s[0] == "" and dic.mapping_table[0].filename_strindex == 0
    assert len(dic.stack_table[0].location_indices) == 0
    res = {kv.key: kv.value.string_value for kv in req.resource_profiles[0].resource.attributes}
    assert res["service.name"] == "ebpf-otlp" and res["host.name"] and res["os.type"] == "linux"
    assert res["host.arch"] and res["os.description"]
    profiles = req.resource_profiles[0].scope_profiles[0].profiles
    prof = next(p for p in profiles if attrs(dic, p.attribute_indices)["process.pid"].int_value == pid)
    a = attrs(dic, prof.attribute_indices)
    assert a["process.executable.name"].string_value == "hot"
    assert (s[prof.sample_type.type_strindex], s[prof.sample_type.unit_strindex]) == ("samples", "count")
    assert (s[prof.period_type.type_strindex], s[prof.period_type.unit_strindex]) == ("cpu", "nanoseconds")
    assert prof.period == 1_000_000_000 // 99 and prof.time_unix_nano > 0 and prof.duration_nano > 2e9
    sample_attrs = attrs(dic, prof.samples[0].attribute_indices)
    assert sample_attrs["thread.id"].int_value > 0 and sample_attrs["thread.name"].string_value == "hot"
    hot_maps = [m for m in dic.mapping_table if s[m.filename_strindex].endswith("/hot")]
    assert attrs(dic, hot_maps[0].attribute_indices)["process.executable.build_id.gnu"].string_value
    # The same stacks and counts as the pprof file of the same run.
    assert decode_stacks(req) == dict(pprof_stacks(pprof_path))


def metric_names(requests) -> set[str]:
    return {m.name for r in requests for rm in r.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


def test_grpc_collector_receives_profile_span_and_metrics(tmp_path, hot_binary):
    with GrpcCollector() as col:
        r, pid = profile_to(tmp_path, hot_binary, "--otlp-endpoint", col.endpoint,
                            "--otlp-header", "x-tenant=team-a")
        assert r.returncode == 0, r.stderr
        got = col.received
        assert len(got["profiles"]) == 1
        check_profile_request(got["profiles"][0], pid, tmp_path / "cpu.pb.gz")
        spans = [s for t in got["traces"] for rs in t.resource_spans for ss in rs.scope_spans
                 for s in ss.spans]
        assert [s.name for s in spans] == ["ebpf-otlp profile"]
        assert {"ebpf_otlp.agent.events.processed", "ebpf_otlp.agent.events.dropped", "process.cpu.time",
                "process.memory.usage"} <= metric_names(got["metrics"])
        assert all(m.get("x-tenant") == "team-a" for m in got.metadata)
        assert "sent 3 OTLP payload(s)" in r.stderr
        assert not list((tmp_path / "spool").glob("*.pb"))


def test_http_collector_receives_the_same(tmp_path, hot_binary):
    with HttpCollector() as col:
        r, pid = profile_to(tmp_path, hot_binary, "--otlp-endpoint", col.endpoint,
                            "--otlp-protocol", "http/protobuf", "--otlp-header", "x-tenant=team-b")
        assert r.returncode == 0, r.stderr
        got = col.received
        assert len(got["profiles"]) == 1 and got["traces"] and got["metrics"]
        check_profile_request(got["profiles"][0], pid, tmp_path / "cpu.pb.gz")
        assert all(m.get("x-tenant") == "team-b" for m in got.metadata)
        assert all(m.get("content-encoding") == "gzip" for m in got.metadata)


@pytest.mark.parametrize("Collector,protocol", [(GrpcCollector, "grpc"),
                                                (HttpCollector, "http/protobuf")])
def test_tls_collector_verified_with_the_ca_file(tmp_path, hot_binary, Collector, protocol):
    """An https endpoint is verified against --otlp-ca-file; without it the unknown
    certificate is refused and the payloads are spooled, not lost."""
    tls = self_signed_cert(tmp_path)
    with Collector(tls=tls) as col:
        r, pid = profile_to(tmp_path, hot_binary, "--otlp-endpoint", col.endpoint,
                            "--otlp-protocol", protocol, "--otlp-ca-file", tls[0], seconds="2s")
        assert r.returncode == 0, r.stderr
        assert len(col.received["profiles"]) == 1 and col.received["metrics"]
        check_profile_request(col.received["profiles"][0], pid, tmp_path / "cpu.pb.gz")

        untrusted = tmp_path / "untrusted"
        untrusted.mkdir()
        r, _ = profile_to(untrusted, hot_binary, "--otlp-endpoint", col.endpoint,
                          "--otlp-protocol", protocol, "--otlp-timeout", "3s", seconds="2s")
        assert r.returncode == 0, r.stderr
        assert len(col.received["profiles"]) == 1          # nothing got through unverified
        assert list((untrusted / "spool").glob("*.pb")) and "spool" in r.stderr


@pytest.mark.parametrize("Collector,protocol", [(GrpcCollector, "grpc"),
                                                (HttpCollector, "http/protobuf")])
def test_a_collector_that_requires_a_client_certificate(tmp_path, hot_binary, Collector, protocol):
    """mTLS with a CA made here: with --otlp-client-cert/--otlp-client-key every payload
    arrives; without them the agent says why in one line and spools, and flush-spool with
    the certificate delivers what waited."""
    ca = make_ca(tmp_path)
    with Collector(tls=(ca["server_cert"], ca["server_key"]), client_ca=ca["ca"]) as col:
        cert = ("--otlp-client-cert", ca["client_cert"], "--otlp-client-key", ca["client_key"])
        base = ("--otlp-endpoint", col.endpoint, "--otlp-protocol", protocol, "--otlp-ca-file", ca["ca"])
        r, pid = profile_to(tmp_path, hot_binary, *base, *cert, seconds="2s")
        assert r.returncode == 0, r.stderr
        assert len(col.received["profiles"]) == 1 and col.received["metrics"] and col.received["traces"]
        check_profile_request(col.received["profiles"][0], pid, tmp_path / "cpu.pb.gz")

        refused = tmp_path / "refused"
        refused.mkdir()
        r, _ = profile_to(refused, hot_binary, *base, "--otlp-timeout", "3s", seconds="2s")
        assert r.returncode == 0, r.stderr
        assert len(col.received["profiles"]) == 1              # nothing got through without it
        [why] = [line for line in r.stderr.splitlines() if "spooled" in line]
        assert "collector:" in why and "flush-spool" in why, r.stderr
        spooled = list((refused / "spool").glob("*.pb"))
        assert spooled
        f = agent("flush-spool", *base, *cert, "--spool-dir", str(refused / "spool"))
        assert f.returncode == 0, f.stderr
        assert f"resent {len(spooled)} of {len(spooled)}" in f.stdout
        assert len(col.received["profiles"]) == 2 and not list((refused / "spool").glob("*.pb"))


def test_per_signal_endpoints_and_headers_reach_their_collectors(tmp_path, hot_binary):
    """OTEL_EXPORTER_OTLP_METRICS_* to one collector (HTTP, its own path), TRACES_* to
    another (gRPC), each with its own header; profiles follow the generic variables."""
    with HttpCollector(path_signals={"/custom/metrics": "metrics"}) as metrics, GrpcCollector() as rest:
        env = {**os.environ,
               "OTEL_EXPORTER_OTLP_ENDPOINT": rest.endpoint, "OTEL_EXPORTER_OTLP_HEADERS": "x-who=generic",
               "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{metrics.endpoint}/custom/metrics",
               "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
               "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-who=metrics",
               "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-who=traces"}
        work = subprocess.Popen([str(hot_binary), "30"])
        try:
            r = agent("profile", "--pid", str(work.pid), "--duration", "2s", "-o", str(tmp_path / "cpu.pb.gz"),
                      "--spool-dir", str(tmp_path / "spool"), env=env)
        finally:
            work.kill()
            work.wait()
        assert r.returncode == 0, r.stderr
        assert metrics.received["metrics"] and not metrics.received["traces"] and not metrics.received["profiles"]
        assert not rest.received["metrics"] and rest.received["traces"] and len(rest.received["profiles"]) == 1
        assert {m.get("x-who") for m in metrics.received.metadata} == {"metrics"}
        assert {m.get("x-who") for m in rest.received.metadata_of["traces"]} == {"traces"}
        assert {m.get("x-who") for m in rest.received.metadata_of["profiles"]} == {"generic"}
        assert not list((tmp_path / "spool").glob("*.pb"))


def profile_ids(requests) -> list[bytes]:
    return [p.profile_id for r in requests for rp in r.resource_profiles
            for sp in rp.scope_profiles for p in sp.profiles]


def test_collector_down_then_up_every_payload_arrives_once(tmp_path, hot_binary):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    spool = tmp_path / "spool"
    # 1. Nobody listens: the run succeeds and spools profile, span and metrics.
    r, _ = profile_to(tmp_path, hot_binary, "--otlp-endpoint", endpoint, "--otlp-timeout", "1s")
    assert r.returncode == 0, r.stderr
    assert "spooled 3" in r.stderr and "flush-spool" in r.stderr
    spooled = sorted(p.name.split(".")[1] for p in spool.glob("*.pb"))
    assert spooled == ["metrics", "profiles", "traces"]
    # 2. The collector comes up: flush-spool delivers each payload once and empties the spool.
    with GrpcCollector(port) as col:
        f = agent("flush-spool", "--otlp-endpoint", endpoint, "--spool-dir", str(spool))
        assert f.returncode == 0, f.stderr
        assert "resent 3 of 3" in f.stdout
        assert not list(spool.glob("*.pb"))
        assert len(col.received["profiles"]) == 1 and len(col.received["traces"]) == 1
        assert len(col.received["metrics"]) == 1
        again = agent("flush-spool", "--otlp-endpoint", endpoint, "--spool-dir", str(spool))
        assert again.returncode == 0 and "empty" in again.stdout
        assert len(col.received["profiles"]) == 1
    # 3. Down again, then a later run resends what waits before its own data.
    r, _ = profile_to(tmp_path, hot_binary, "--otlp-endpoint", endpoint, "--otlp-timeout", "1s")
    assert "spooled 3" in r.stderr
    with GrpcCollector(port) as col:
        r, _ = profile_to(tmp_path, hot_binary, "--otlp-endpoint", endpoint)
        assert r.returncode == 0, r.stderr
        assert "resent 3 from the spool" in r.stderr
        ids = profile_ids(col.received["profiles"])
        assert len(col.received["profiles"]) == 2 and len(set(ids)) == len(ids)
        assert len(col.received["traces"]) == 2
        assert not list(spool.glob("*.pb"))


def test_otlp_file_format(tmp_path, hot_binary):
    from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
        ExportProfilesServiceRequest)
    r, pid = profile_to(tmp_path, hot_binary, "-o", str(tmp_path / "cpu.otlp.pb"))
    assert r.returncode == 0, r.stderr
    req = ExportProfilesServiceRequest.FromString((tmp_path / "cpu.otlp.pb").read_bytes())
    check_profile_request(req, pid, tmp_path / "cpu.pb.gz")
