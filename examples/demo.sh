#!/usr/bin/env bash
# `make demo`: profile the bundled workload for 5 s; write pprof, a flame graph and folded stacks.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo-output}
mkdir -p "$out"
cc -O0 -fno-omit-frame-pointer -o "$out/demo-workload" examples/demo_workload.c
"$out/demo-workload" 15 &
work=$!
trap 'kill $work 2>/dev/null || true' EXIT
.venv/bin/ebpf-otlp profile --pid "$work" --hz 99 --duration 5s \
  -o "$out/cpu.pb.gz" -o "$out/flame.svg" -o "$out/cpu.folded"
echo
echo "Open $out/flame.svg in a browser; read the profile with: pprof -top $out/cpu.pb.gz"
