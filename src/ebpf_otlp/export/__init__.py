"""One module per output format or OTLP signal; exporters read records, never BPF."""
