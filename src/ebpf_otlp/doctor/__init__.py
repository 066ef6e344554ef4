"""`ebpf-otlp doctor`: each kernel capability tried for real (checks), and its table (report)."""
