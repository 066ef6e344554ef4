// Probes `ebpf-otlp doctor` attaches one by one to see what this kernel allows.
#include <uapi/linux/ptrace.h>
// #import kernel_types.inc

BPF_RINGBUF_OUTPUT(events, 8);
BPF_HASH(batch_test, u32, u64, 16);

static __always_inline void emit(u32 what) {
    u32 *slot = events.ringbuf_reserve(sizeof(u32));
    if (slot) {
        *slot = what;
        events.ringbuf_submit(slot, 0);
    }
}

int on_perf(struct bpf_perf_event_data *ctx) { emit(1); return 0; }
int on_kprobe(struct pt_regs *ctx) { emit(2); return 0; }
int on_uprobe(struct pt_regs *ctx) { emit(3); return 0; }
int on_tracepoint(void *ctx) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid == DOCTOR_PID)
        emit(4);
    return 0;
}

int on_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx) { return 0; }
