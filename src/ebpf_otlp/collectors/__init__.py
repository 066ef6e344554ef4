"""One module per signal: attach a BPF program, turn its maps into typed records."""
