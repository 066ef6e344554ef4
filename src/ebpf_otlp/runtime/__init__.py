"""The BCC platform every collector stands on: privileges, headers, BTF, tracefs, loading,
maps, perf events, uprobes and processes. It imports nothing above it."""
