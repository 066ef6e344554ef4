"""CPU samples linked to the request their thread served (signals/links.py), and the ids
that make the link: a request span made with the ids its samples carry, pprof labels and
OTLP profile links."""

import dataclasses
from collections import Counter

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ebpf_otlp.export import otlp_profiles, pprof
from ebpf_otlp.export.resource import build_resource
from ebpf_otlp.export.span_ids import IDS
from ebpf_otlp.records import RawStackSample
from ebpf_otlp.signals.links import SLOT_NS, RequestIndex
from ebpf_otlp.signals.net import spans as net_spans
from ebpf_otlp.signals.net.records import HttpRequest
from support.profiles import make_profile

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def request(tid: int, start_ms: int, end_ms: int, span: str, kind: str = "server", **kw) -> HttpRequest:
    return HttpRequest(pid=1, process_name="srv", kind=kind, method="GET", target="/x", version="1.1",
                       status=200, start_ns=T0 + start_ms * MS, end_ns=T0 + end_ms * MS,
                       local_address="127.0.0.1", local_port=80, peer_address="127.0.0.1", peer_port=5000,
                       family=4, tid=tid, trace_id="ab" * 16, span_id=span, **kw)


def sample(tid: int, at_ms: float) -> RawStackSample:
    slot = int((T0 + at_ms * MS) // SLOT_NS) * SLOT_NS   # as the sampler keeps it
    return RawStackSample(1, tid, "srv", (0x1000,), (), time_ns=slot)


def test_a_sample_carries_the_request_its_thread_was_serving():
    index = RequestIndex()
    index.add([request(7, 10, 50, "1" * 16), request(7, 60, 70, "2" * 16), request(8, 0, 100, "3" * 16),
               request(7, 0, 100, "4" * 16, kind="client")])    # a client's request serves nothing
    got = index.label(Counter({sample(7, 20): 1, sample(7, 49.9): 1, sample(7, 55): 1, sample(7, 65): 1,
                               sample(8, 30): 1, sample(9, 30): 1}))
    spans = Counter()
    for raw, n in got.items():
        assert raw.time_ns == 0
        spans[(raw.tid, raw.span[1] if raw.span else "")] += n
    assert spans == {(7, "1" * 16): 2, (7, ""): 1, (7, "2" * 16): 1, (8, "3" * 16): 1, (9, ""): 1}
    index.forget_before(T0 + 60 * MS)   # the agent's next window
    assert index.span_at(7, T0 + 20 * MS) == () and index.span_at(7, T0 + 65 * MS)[1] == "2" * 16


def test_a_request_span_has_the_ids_its_samples_carry():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=IDS)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = f"00-{'cd' * 16}-{'ef' * 8}-01"
    net_spans.emit_requests(provider.get_tracer("t"), [request(7, 0, 1, "12" * 8),
                                                        request(7, 0, 1, "34" * 8, traceparent=parent)])
    own, joined = exporter.get_finished_spans()
    assert (format(own.context.trace_id, "032x"), format(own.context.span_id, "016x")) == ("ab" * 16, "12" * 8)
    assert format(joined.context.trace_id, "032x") == "cd" * 16 and format(joined.context.span_id, "016x") == "34" * 8
    other = provider.get_tracer("t").start_span("unrelated")   # random ids again
    assert other.context.span_id not in (int("12" * 8, 16), int("34" * 8, 16))


def test_pprof_labels_and_otlp_links_carry_the_span():
    profile = make_profile()
    span = ("ab" * 16, "12" * 8)
    profile.samples[0] = dataclasses.replace(profile.samples[0], span=span)
    out = pprof.build(profile)
    s = out.string_table
    labels = [{s[lab.key]: s[lab.str] for lab in smp.label if lab.str} for smp in out.sample]
    assert (labels[0]["trace_id"], labels[0]["span_id"]) == span and "span_id" not in labels[1]
    request = otlp_profiles.build(profile, build_resource())
    d = request.dictionary
    links = [smp.link_index for p in request.resource_profiles[0].scope_profiles[0].profiles for smp in p.samples]
    assert links[0] and not links[1] and not links[2]
    assert (d.link_table[links[0]].trace_id.hex(), d.link_table[links[0]].span_id.hex()) == span
    assert d.link_table[0].trace_id == b""   # index 0: the empty link
