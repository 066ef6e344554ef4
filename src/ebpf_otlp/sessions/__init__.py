"""One module per command: wire a collector, the symbolizer and exporters for one run."""
