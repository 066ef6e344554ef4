// The floor under any syscall tracer built on raw tracepoints (bench/hook_floor.py):
// programs that do nothing, or only read the clock, on sys_exit and optionally sys_enter.
// Defines: ENTER (also hook sys_enter), CLOCK (read bpf_ktime_get_ns in each hook).
#include <uapi/linux/ptrace.h>

BPF_PERCPU_ARRAY(sink, u64, 1);   // keeps the clock reads from being optimised away

static __always_inline int work(void) {
#ifdef CLOCK
    int zero = 0;
    u64 *s = sink.lookup(&zero);
    if (s)
        *s += bpf_ktime_get_ns();
#endif
    return 0;
}

#ifdef ENTER
RAW_TRACEPOINT_PROBE(sys_enter) { return work(); }
#endif
RAW_TRACEPOINT_PROBE(sys_exit) { return work(); }
