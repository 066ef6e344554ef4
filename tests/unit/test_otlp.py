"""OTLP pieces without a kernel or a network: settings, spool, the profiles encoder."""

import pytest

from ebpf_otlp.errors import AgentError
from ebpf_otlp.export import otlp_profiles
from ebpf_otlp.export.otlp_settings import parse_headers, resolve
from ebpf_otlp.export.resource import build_resource
from ebpf_otlp.export.spool import Spool
from support.profiles import make_profile


def test_no_endpoint_means_files_only():
    assert resolve(env={}) is None


def test_flags_over_environment():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://env:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x-a=1", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}
    s = resolve("http://flag:4318", "http/protobuf", {"x-a": "2"}, env=env)
    assert s.endpoint == "http://flag:4318" and s.protocol == "http/protobuf"
    assert s.headers == {"api-key": "s=cret", "x-a": "2"} and s.timeout_s == 2.5
    assert s.http_url("profiles") == "http://flag:4318/v1development/profiles"
    assert s.http_url("traces") == "http://flag:4318/v1/traces"
    env_only = resolve(env=env)
    assert env_only.endpoint == "https://env:4317" and env_only.tls
    assert env_only.grpc_target("metrics") == "env:4317"


def test_per_signal_endpoint_is_used_as_is():
    s = resolve(env={"OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT": "http://p:9999/custom",
                     "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert s.http_url("profiles") == "http://p:9999/custom"
    assert resolve("http://c", "http/protobuf", env={}).http_url("metrics") == "http://c:4318/v1/metrics"


@pytest.mark.parametrize("kw,msg", [
    ({"endpoint": "collector:4317"}, "malformed OTLP endpoint"),
    ({"endpoint": "http://"}, "malformed OTLP endpoint"),
    ({"endpoint": "http://c:port"}, "malformed OTLP endpoint"),
    ({"endpoint": "http://c", "protocol": "thrift"}, "unknown OTLP protocol"),
    ({"endpoint": "http://c", "ca_file": "/nonexistent/ca.pem"}, "cannot read CA file"),
    ({"endpoint": "http://c", "compression": "zstd"}, "unknown OTLP compression"),
])
def test_bad_settings(kw, msg):
    with pytest.raises(AgentError, match=msg):
        resolve(env={}, **kw)


def test_ca_file_must_be_pem(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("hello")
    with pytest.raises(AgentError, match="no PEM certificate"):
        resolve("https://c", ca_file=str(bad), env={})


def test_parse_headers():
    assert parse_headers("") == {}
    with pytest.raises(AgentError, match="malformed OTLP header 'novalue'"):
        parse_headers("novalue")
    assert parse_headers("A=1,b = two%20words") == {"a": "1", "b": "two words"}


def test_spool_orders_and_caps(tmp_path):
    spool = Spool(str(tmp_path / "s"), max_bytes=250)
    for i in range(4):
        spool.put("profiles" if i % 2 else "traces", bytes([i]) * 100)
    pending = spool.pending()
    # 400 bytes over a 250-byte cap: the two oldest went, and that is counted.
    assert spool.dropped == 2 and [p.read()[0] for p in pending] == [2, 3]
    assert [p.signal for p in pending] == ["traces", "profiles"]
    spool.remove(pending[0])
    assert len(spool.pending()) == 1 and spool.size() == 100
    assert Spool(str(tmp_path / "never-made")).pending() == []


def test_otlp_profile_request_from_records():
    req = otlp_profiles.build(make_profile(), build_resource())
    dic = req.dictionary
    assert dic.string_table[0] == "" and len(dic.function_table) == 5      # 4 + the empty one
    assert len(dic.stack_table) == 4 and len(dic.stack_table[0].location_indices) == 0
    # One Profile per sample type (samples, cpu), both over the one dictionary.
    samples, cpu = req.resource_profiles[0].scope_profiles[0].profiles
    types = [dic.string_table[p.sample_type.type_strindex] for p in (samples, cpu)]
    assert types == ["samples", "cpu"]
    assert samples.period == 10_101_010 and len(samples.profile_id) == 16
    assert [s.stack_index for s in samples.samples] == [s.stack_index for s in cpu.samples]
    assert otlp_profiles.decode_stacks(req) == {
        (10, ("main", "work<int>&")): 30, (10, ("main", "other")): 10,
        (10, ("main", "work<int>&", "do_syscall_64")): 5}
    assert otlp_profiles.decode_stacks(req, "cpu")[(10, ("main", "other"))] == 10 * 10_101_010
    build_ids = [a for a in dic.attribute_table
                 if dic.string_table[a.key_strindex] == otlp_profiles.BUILD_ID_ATTR]
    assert [a.value.string_value for a in build_ids] == ["ab" * 20]


def test_flags_reach_the_settings_through_the_otlp_table(monkeypatch):
    """Every command's flags become an [otlp] table, as the agent's do: one way, and a
    URL-encoded comma in a header's value is decoded once."""
    from ebpf_otlp import config as cfg
    from ebpf_otlp.cli import otlp_table

    for var in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    flags = dict(otlp_endpoint="http://c:4317", otlp_protocol=None, otlp_headers=("a=b%2Cc", "X=1"),
                 otlp_insecure=None, otlp_ca_file=None, otlp_client_cert=None, otlp_client_key=None, otlp_compression=None, otlp_timeout=None,
                 spool_dir=None, spool_max_mb=None)
    table = otlp_table(flags)
    assert table == {"endpoint": "http://c:4317", "headers": {"a": "b,c", "x": "1"}} and not flags
    settings, spool = cfg.otlp_settings(table)
    assert settings.headers == {"a": "b,c", "x": "1"} and spool.max_bytes == 256 << 20


def test_per_signal_variables_by_the_specifications_precedence(tmp_path):
    """A signal's own variable beats the generic one, a flag beats both; headers merge key
    by key; signals without variables of their own take the generic settings."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://all:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_HEADERS": "tenant=a,x=generic",
           "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9000/custom",
           "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x=metrics",
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317",
           "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1500", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"}
    s = resolve(env=env)
    assert s.http_url("metrics") == "http://m:9000/custom"
    assert s.for_signal("metrics").headers == {"tenant": "a", "x": "metrics"}
    t = s.for_signal("traces")
    assert (t.protocol, t.timeout_s, t.compression, s.grpc_target("traces")) == ("grpc", 1.5, "none", "t:4317")
    assert t.headers == {"tenant": "a", "x": "generic"}
    assert s.http_url("profiles") == "http://all:4318/v1development/profiles"
    assert s.for_signal("profiles").headers == {"tenant": "a", "x": "generic"}
    flagged = resolve("http://flag:4318", headers={"x": "flag"}, env=env)
    assert flagged.http_url("metrics") == "http://flag:4318/v1/metrics"
    assert flagged.for_signal("metrics").headers["x"] == "flag"


def test_client_certificate_and_key_go_together(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    s = resolve("https://c:4317", env={"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(cert),
                                       "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key)})
    assert (s.client_cert, s.client_key) == (str(cert), str(key))
    with pytest.raises(AgentError, match="needs its key"):
        resolve("https://c:4317", client_cert=str(cert), env={})
    with pytest.raises(AgentError, match="holds no PEM private key"):
        resolve("https://c:4317", client_cert=str(cert), client_key=str(cert), env={})


def test_self_telemetry_counts_payloads_and_bytes_by_outcome(tmp_path):
    """A collector that refuses: the payload is spooled, and the agent's own metrics say
    so by outcome and signal, in payloads and bytes, beside events by collector and cause."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ebpf_otlp.export import self_telemetry
    from ebpf_otlp.export.otlp_output import OtlpOutput
    from ebpf_otlp.records import CollectorStats

    from support.collector import free_port

    port = free_port()
    settings = resolve(f"http://127.0.0.1:{port}", "http/protobuf", timeout_s=0.5, env={})
    out = OtlpOutput(settings, Spool(str(tmp_path / "spool"), 1 << 20), build_resource())
    assert out.deliver("profiles", b"x" * 100) is False
    assert (out.spooled, out.sent) == (1, 0)
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    stats = {"syscalls": CollectorStats(processed=7, lost={"syscall dropped (calls map full)": 2})}
    self_telemetry.register(meter, lambda: stats, out)
    points = {m.name: list(m.data.data_points) for rm in reader.get_metrics_data().resource_metrics
              for sm in rm.scope_metrics for m in sm.metrics}
    [exports] = points["ebpf_otlp.agent.exports"]
    assert exports.value == 1 and dict(exports.attributes) == {"ebpf_otlp.outcome": "spooled",
                                                               "ebpf_otlp.signal": "profiles"}
    assert points["ebpf_otlp.agent.export.size"][0].value == 100
    [dropped] = points["ebpf_otlp.agent.events.dropped"]
    assert dropped.value == 2 and dropped.attributes["cause"] == "syscall dropped (calls map full)"
    assert {"process.cpu.time", "process.memory.usage"} <= set(points)
