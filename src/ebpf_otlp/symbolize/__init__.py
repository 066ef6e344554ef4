"""Turn addresses into function names: process maps, ELF symbols, kallsyms, perf maps."""
