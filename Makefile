# The two commands for a fresh machine: `make demo` and `make test` (both as root).
PY := .venv/bin/python
DEMO_OUT := demo-output

.PHONY: setup setup-test demo test test-unit bench soak clean

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

# Profile the bundled demo workload for a few seconds: pprof, flame graph, top functions.
demo: setup
	bash examples/demo.sh $(DEMO_OUT)

test: setup-test
	$(PY) -m pytest -ra --durations=25 tests

test-unit:
	$(PY) -m pytest -ra tests/unit

bench: setup-test
	$(PY) bench/profile_overhead.py --out docs/performance.md
	$(PY) bench/start_latency.py --append docs/performance.md
	$(PY) bench/symbolize_encode.py --append docs/performance.md
	$(PY) bench/syscall_overhead.py --out docs/performance-syscalls.md
	$(PY) bench/offcpu_overhead.py --out docs/performance-offcpu.md
	$(PY) bench/net_overhead.py --out docs/performance-net.md
	$(PY) bench/memleak_overhead.py --out docs/performance-memleak.md
	$(PY) bench/db_overhead.py --out docs/performance-db.md

# An hour of the agent on a busy machine: memory, open files and CPU over time.
soak: setup-test
	$(PY) bench/agent_soak.py --minutes 60 --out docs/performance-agent.md

clean:
	rm -rf $(DEMO_OUT) ebpf-otlp-output .pytest_cache
