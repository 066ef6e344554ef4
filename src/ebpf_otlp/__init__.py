"""ebpf-otlp: an eBPF profiling agent that speaks pprof and OpenTelemetry."""

__version__ = "0.1.0"
