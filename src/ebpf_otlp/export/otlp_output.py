"""Everything a command sends to an OpenTelemetry Collector, and the spool behind it.

Profiles go out through our own transport (the SDK has no profiles exporter); spans and
metrics go through opentelemetry-sdk and its OTLP exporters, wrapped so that a batch the
collector did not take is encoded with the SDK's own encoder and spooled, not dropped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from ebpf_otlp.export.span_ids import IDS
from ebpf_otlp.export import otlp_profiles
from ebpf_otlp.export.otlp_settings import OtlpSettings
from ebpf_otlp.export.otlp_transport import SendError, Transport, grpc_credentials
from ebpf_otlp.export.sinks import Batch, Sink
from ebpf_otlp.export.spool import Spool
from ebpf_otlp.records import CollectorStats, Profile

# The SDK exporters log every retry; we count failures and report them in one line instead.
for _name in ("opentelemetry.exporter", "opentelemetry.sdk"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


class OtlpOutput(Sink):
    """The OTLP sink: profiles, metrics and spans to one collector, spooled when it is down."""

    def __init__(self, settings: OtlpSettings, spool: Spool, resource: Resource):
        self.settings = settings
        self.spool = spool
        self.resource = resource
        self.transport = Transport(settings)
        # (outcome, signal) -> payloads, and bytes where ebpf-otlp encodes them itself: what
        # the SDK's exporters send on their own (spans, metrics) is counted in payloads only.
        self.payloads: Counter = Counter()
        self.payload_bytes: Counter = Counter()
        self.last_error = ""
        self._down_until = 0.0   # after a failure, spool straight away for a while
        self._tracer_provider: TracerProvider | None = None
        self._meter_provider: MeterProvider | None = None
        self._metric_exporter: _SpoolingMetricExporter | None = None

    @classmethod
    def open(cls, settings: OtlpSettings, spool: Spool) -> "OtlpOutput":
        """An output for this run; what earlier runs spooled goes out first."""
        from ebpf_otlp.export.resource import build_resource

        output = cls(settings, spool, build_resource())
        output.resend_spooled()
        return output

    def count(self, outcome: str, signal: str, payload: bytes | None = None) -> None:
        """One payload sent, spooled or resent (self-telemetry and the summary read these)."""
        self.payloads[(outcome, signal)] += 1
        if payload is not None:
            self.payload_bytes[(outcome, signal)] += len(payload)

    def _total(self, outcome: str) -> int:
        return sum(n for (o, _), n in self.payloads.items() if o == outcome)

    sent = property(lambda self: self._total("sent"))
    spooled = property(lambda self: self._total("spooled"))
    resent = property(lambda self: self._total("resent"))

    # -- raw payloads -----------------------------------------------------------
    DOWN_FOR_S = 30.0

    @property
    def collector_down(self) -> bool:
        """True shortly after a failed send: the next payloads skip the retries and spool."""
        return time.monotonic() < self._down_until

    def deliver(self, signal: str, payload: bytes) -> bool:
        if self.collector_down:
            self.keep(signal, payload)
            return False
        try:
            self.transport.send(signal, payload)
        except SendError as e:
            self.failed(str(e))
            self.keep(signal, payload)
            return False
        self.count("sent", signal, payload)
        return True

    def failed(self, why: str) -> None:
        self.last_error = why
        self._down_until = time.monotonic() + self.DOWN_FOR_S

    def keep(self, signal: str, payload: bytes) -> None:
        self.spool.put(signal, payload)
        self.count("spooled", signal, payload)

    def resend_spooled(self) -> None:
        """Oldest first; stop at the first failure (the collector is still away)."""
        for item in self.spool.pending():
            payload = item.read()
            try:
                self.transport.send(item.signal, payload, attempts=1)
            except SendError as e:
                self.last_error = str(e)
                return
            self.spool.remove(item)
            self.count("resent", item.signal, payload)

    def send_profile(self, profile: Profile) -> bool:
        return self.deliver("profiles", otlp_profiles.encode(profile, self.resource))

    # Kernel-aggregated metrics: cumulative since the start, or DELTA where each report
    # covers one window (the agent resets its processors every interval).
    metric_temporality = AggregationTemporality.CUMULATIVE

    def export(self, batch: Batch) -> bool:
        """The Sink face: each result as the OTLP signal its descriptor calls for (spans of
        connections go out as they close, through the net signal's stream), then (at a
        capture's end) the capture's own span."""
        for signal, result in batch.items:
            signal.to_otlp(self, result)
        if batch.final:
            self.session_span(batch.command, batch.start_ns, batch.end_ns, batch.span_attributes)
        return not self.collector_down

    def flush(self) -> None:
        if self._tracer_provider:
            self._tracer_provider.force_flush()

    def shutdown(self) -> None:
        self.close()

    # -- SDK signals ------------------------------------------------------------
    def tracer_provider(self) -> TracerProvider:
        if self._tracer_provider is None:
            self._tracer_provider = TracerProvider(resource=self.resource, id_generator=IDS)
            # Batches: a capture can close thousands of spans (one per connection).
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(_SpoolingSpanExporter(sdk_span_exporter(self.settings), self)))
        return self._tracer_provider

    def metric_exporter(self) -> "_SpoolingMetricExporter":
        if self._metric_exporter is None:
            self._metric_exporter = _SpoolingMetricExporter(sdk_metric_exporter(self.settings), self)
        return self._metric_exporter

    def meter_provider(self, interval_s: float = 60.0) -> MeterProvider:
        """For instruments the SDK aggregates itself (the agent's self-telemetry)."""
        if self._meter_provider is None:
            reader = PeriodicExportingMetricReader(self.metric_exporter(),
                                                   export_interval_millis=interval_s * 1000)
            self._meter_provider = MeterProvider(resource=self.resource, metric_readers=[reader])
        return self._meter_provider

    def export_metrics(self, metrics: MetricsData) -> None:
        """For metrics aggregated in the kernel: already-built MetricsData, same exporter."""
        self.metric_exporter().export(metrics)

    def session_span(self, command: str, start_ns: int, end_ns: int, attributes: dict) -> None:
        """One span for the capture itself, so a trace backend shows when the agent ran."""
        tracer = self.tracer_provider().get_tracer("ebpf-otlp")
        attrs = {k: v for k, v in attributes.items() if v not in (None, [], "")}
        span = tracer.start_span(f"ebpf-otlp {command}", start_time=start_ns, attributes=attrs)
        span.end(end_time=end_ns)

    def close(self) -> None:
        """Flush and stop the SDK providers (their last export happens here)."""
        if self._tracer_provider:
            self._tracer_provider.shutdown()
        if self._meter_provider:
            self._meter_provider.shutdown()   # shuts its exporter down too
        elif self._metric_exporter:
            self._metric_exporter.shutdown()
        self.transport.close()

    def summary(self) -> str:
        parts = [f"sent {self.sent} OTLP payload(s) to {self.settings.endpoints} ({self.settings.protocol})"]
        if self.resent:
            parts.append(f"resent {self.resent} from the spool")
        if self.spooled:
            parts.append(f"spooled {self.spooled} to {self.spool.dir} (collector: {self.last_error}); "
                         "they go out on the next run or with 'ebpf-otlp flush-spool'")
        if self.spool.dropped:
            parts.append(f"the spool's size cap dropped {self.spool.dropped} old payload(s)")
        return "; ".join(parts)


class _SpoolingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, output: OtlpOutput):
        self.inner = inner
        self.output = output

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = self.output
        if not out.collector_down and self.inner.export(spans) is SpanExportResult.SUCCESS:
            out.count("sent", "traces")
        else:
            if not out.collector_down:
                out.failed("the SDK span exporter failed")
            out.keep("traces", encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS   # handed over: sent or spooled

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _SpoolingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, output: OtlpOutput):
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.output = output

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs) -> MetricExportResult:
        out = self.output
        if not out.collector_down and self.inner.export(
                metrics_data, timeout_millis=timeout_millis) is MetricExportResult.SUCCESS:
            out.count("sent", "metrics")
        else:
            if not out.collector_down:
                out.failed("the SDK metric exporter failed")
            out.keep("metrics", encode_metrics(metrics_data).SerializeToString())
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown()


def _grpc_kwargs(settings: OtlpSettings, signal: str) -> dict:
    import grpc

    s = settings.for_signal(signal)
    kw = {"endpoint": settings.grpc_target(signal), "insecure": not s.tls,
          "headers": dict(s.headers), "timeout": s.timeout_s,
          "compression": grpc.Compression.Gzip if s.compression == "gzip"
          else grpc.Compression.NoCompression}
    if s.tls:
        kw["credentials"] = grpc_credentials(s)
    return kw


def _http_kwargs(settings: OtlpSettings, signal: str) -> dict:
    from opentelemetry.exporter.otlp.proto.http import Compression

    s = settings.for_signal(signal)
    kw = {"endpoint": settings.http_url(signal), "certificate_file": s.ca_file,
          "client_certificate_file": s.client_cert, "client_key_file": s.client_key,
          "headers": dict(s.headers), "timeout": s.timeout_s,
          "compression": Compression.Gzip if s.compression == "gzip"
          else Compression.NoCompression}
    if s.ca_file:
        kw["session"] = _ca_pinned_session(s.ca_file)
    return kw


def _ca_pinned_session(ca_file: str):
    """A requests session that verifies against ca_file on every request. The SDK sets the
    CA on the session, and requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override a
    session's CA: on hosts that set them, --otlp-ca-file would be ignored."""
    import requests

    class Session(requests.Session):
        def request(self, *args, **kwargs):
            kwargs["verify"] = ca_file
            return super().request(*args, **kwargs)

    return Session()


def sdk_span_exporter(settings: OtlpSettings) -> SpanExporter:
    if settings.for_signal("traces").protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(**_grpc_kwargs(settings, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(**_http_kwargs(settings, "traces"))


def sdk_metric_exporter(settings: OtlpSettings) -> MetricExporter:
    if settings.for_signal("metrics").protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter(**_grpc_kwargs(settings, "metrics"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter(**_http_kwargs(settings, "metrics"))


def open_output(settings: OtlpSettings, spool: Spool, stats: Callable[[], dict[str, CollectorStats]],
                interval_s: float = 60.0) -> OtlpOutput:
    """The OTLP output of one run, with the agent's self-telemetry registered; `stats()`
    gives each collector's statistics by collector name."""
    from ebpf_otlp.export import self_telemetry

    output = OtlpOutput.open(settings, spool)
    meter = output.meter_provider(interval_s).get_meter("ebpf-otlp")
    self_telemetry.register(meter, stats, output)
    return output
