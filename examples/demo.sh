#!/usr/bin/env bash
# `make demo`: launch the bundled workload under the profiler (as `perf record -- CMD` does),
# profile it from its first instruction to its exit; write pprof, a flame graph and folded stacks.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo-output}
mkdir -p "$out"
cc -O0 -fno-omit-frame-pointer -o "$out/demo-workload" examples/demo_workload.c
.venv/bin/ebpf-otlp profile --hz 99 -o "$out/cpu.pb.gz" -o "$out/flame.svg" -o "$out/cpu.folded" \
  -- "$out/demo-workload" 5
echo
echo "Open $out/flame.svg in a browser; read the profile with: pprof -top $out/cpu.pb.gz"
