// Syscall counts, errors, bytes and latency per (process, syscall), aggregated in the kernel.
// Raw tracepoints sys_enter/sys_exit: no perf-buffer copy of the arguments, the cheapest
// per-event hook. Two map sets (control[0] picks one) so user space drains the idle set
// every interval. Latency goes into an OTLP exponential histogram at scale 4 (16 buckets
// per power of two, each ~4.4 % wide): a count per (key, bucket) in a map of its own, so a
// key's counters are one entry however its latency spreads. The exit hook counts every
// call; a call is timed only if the entry hook saw it, and user space attaches the entry
// hook for only a share of the time when the syscall rate exceeds its latency budget
// (signals/duty_cycle.py), so counts stay exact while timing cost stays bounded.
//
// With NAME_AFTER (tracing every process), a process is counted under its command name and
// cgroup (tgid 0 in the key) until it has made NAME_AFTER syscalls, and by its pid from then
// on: the short-lived (a build's compilers, a cron job's shells) fold in the kernel, where
// each would otherwise leave its own rows; `newcomers` counts the processes each name holds.
//
// Defines: ARCH_X86_64 or ARCH_ARM64; LATENCY; TASK_STORAGE (entry times in task storage,
//          else an LRU hash by thread id); targets.inc's (which processes); FILTER_SYSCALLS;
//          NAME_AFTER, MAX_SEEN; MAX_KEYS, MAX_ERRNOS, MAX_THREADS.
#include <uapi/linux/ptrace.h>
// #import kernel_types.inc

// One entry per (process, syscall): the exit path does a single hash lookup for its
// counters, and one more for the latency bucket of a timed call.
struct call_key {
    u32 tgid;                // 0: not yet named (NAME_AFTER): by name and cgroup below
    u32 nr;
    u64 cgroup_id;           // folded keys only
    u64 comm_lo;             // folded keys only: the command name, TASK_COMM_LEN bytes
    u64 comm_hi;
};

struct call_value {          // per CPU: no atomics needed, min/max exact
    u64 count;
    u64 errors;
    u64 timed;               // calls the entry hook saw: their latency is in total/min/max
    u64 total_ns;
    u64 min_ns;
    u64 max_ns;
    u64 bytes;               // read/write family: bytes moved (positive returns)
    u64 cgroup_id;           // cgroup v2 id at first sight: the container, even once it exits
    char comm[TASK_COMM_LEN];
};

struct hist_key {
    struct call_key call;
    s32 bucket;              // histogram bucket (see exp_index)
    u32 pad;
};

struct errno_key {
    struct call_key call;
    u32 err;
    u32 pad;
};

struct name_key {            // a command name in a cgroup, as folded keys carry them
    u64 cgroup_id;
    u64 comm_lo;
    u64 comm_hi;
};

enum syscalls_stat {
    STAT_EVENTS,
    STAT_CALLS_FULL,
    STAT_ERRNOS_FULL,
    STAT_START_FULL,
    STAT_HIST_FULL,
    STAT_NEWCOMERS_FULL,
    STAT_MAX,
};

// Not preallocated: per-CPU entries cost memory only once used.
BPF_F_TABLE("percpu_hash", struct call_key, struct call_value, calls_0, MAX_KEYS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("percpu_hash", struct call_key, struct call_value, calls_1, MAX_KEYS, BPF_F_NO_PREALLOC);
BPF_HASH(errnos_0, struct errno_key, u64, MAX_ERRNOS);
BPF_HASH(errnos_1, struct errno_key, u64, MAX_ERRNOS);
#ifdef LATENCY
BPF_HASH(hist_0, struct hist_key, u64, MAX_KEYS);
BPF_HASH(hist_1, struct hist_key, u64, MAX_KEYS);
#endif
#ifdef NAME_AFTER
BPF_TABLE("lru_hash", u32, u64, seen, MAX_SEEN);   // tgid -> syscalls counted under its name
BPF_HASH(newcomers_0, struct name_key, u64, 16384);
BPF_HASH(newcomers_1, struct name_key, u64, 16384);
#endif
BPF_ARRAY(control, u32, 1);
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
BPF_ARRAY(io_syscalls, u8, 1024);        // nr -> 1 for read/write-family syscalls
#ifdef LATENCY
#ifdef TASK_STORAGE
BPF_TASK_STORAGE(start, u64);            // entry time in the task itself: no hash to search
#else
BPF_TABLE("lru_hash", u32, u64, start, MAX_THREADS);   // LRU: threads that exit mid-syscall age out
#endif
BPF_ARRAY(sub_bucket, u8, 256);          // top 8 mantissa bits -> 16 * log2(1 + m/256)
#endif
#ifdef FILTER_SYSCALLS
BPF_ARRAY(syscall_filter, u8, 1024);
#endif

#if defined(ARCH_X86_64)
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#else
#define NR_EXECVE 221
#define NR_EXECVEAT 281
#endif

// #import bump.inc

// #import targets.inc

static __always_inline int wanted(u32 tgid, u32 nr) {
    if (!traced(tgid))
        return 0;
#ifdef FILTER_SYSCALLS
    u8 *on = syscall_filter.lookup(&nr);
    if (!on || !*on)
        return 0;
#endif
#ifdef FILTER_COMM_LO
    char comm[TASK_COMM_LEN];
    process_comm(comm);
    if (!comm_wanted(comm))
        return 0;
#endif
    return 1;
}

#ifdef LATENCY
// OTLP exponential-histogram index at scale 4 of v-1 (buckets are upper-inclusive).
static __always_inline s32 exp_index(u64 v) {
    if (v <= 1)
        return -1;   // user space counts these as the lowest bucket
    v -= 1;
    u32 e = 0;
    u64 x = v;
    if (x >> 32) { e += 32; x >>= 32; }
    if (x >> 16) { e += 16; x >>= 16; }
    if (x >> 8)  { e += 8;  x >>= 8; }
    if (x >> 4)  { e += 4;  x >>= 4; }
    if (x >> 2)  { e += 2;  x >>= 2; }
    if (x >> 1)  { e += 1; }
    u32 m = e >= 8 ? (v >> (e - 8)) & 0xff : (v << (8 - e)) & 0xff;
    u8 *sub = sub_bucket.lookup(&m);
    return e * 16 + (sub ? *sub : 0);
}

static __always_inline void start_set(u64 ts) {
#ifdef TASK_STORAGE
    u64 *slot = start.task_storage_get(bpf_get_current_task_btf(), 0,
                                       BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (slot)
        *slot = ts;
    else
        bump(STAT_START_FULL);
#else
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (start.update(&tid, &ts))
        bump(STAT_START_FULL);
#endif
}

// The entry time of the current syscall, consumed; 0 when it was not timed.
static __always_inline u64 start_take(void) {
#ifdef TASK_STORAGE
    u64 *slot = start.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!slot)
        return 0;
    u64 ts = *slot;
    *slot = 0;
    return ts;
#else
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *slot = start.lookup(&tid);
    if (!slot)
        return 0;
    u64 ts = *slot;
    start.delete(&tid);
    return ts;
#endif
}

RAW_TRACEPOINT_PROBE(sys_enter) {
    u64 id = task_ids();
    u32 nr = ctx->args[1];
    if (wanted(id >> 32, nr))
        start_set(bpf_ktime_get_ns());
#if defined(FILTER_PIDS) && defined(FOLLOW_FORKS)
    else if ((nr == NR_EXECVE || nr == NR_EXECVEAT) && waits_for_exec(id >> 32))
        start_set(bpf_ktime_get_ns());   // launch mode: the command's exec, timed as strace does
#endif
    return 0;
}
#endif

// The syscall number at exit, from the saved user registers (a stable user-visible layout).
static __always_inline u32 exit_nr(struct pt_regs *regs) {
    unsigned long nr = 0;
#if defined(ARCH_X86_64)
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
#elif defined(ARCH_ARM64)
    int no = 0;
    bpf_probe_read_kernel(&no, sizeof(no), &regs->syscallno);
    nr = no;
#else
#error "ebpf-otlp syscalls: unsupported architecture"
#endif
    return (u32)nr;
}

#ifdef NAME_AFTER
// The key's who: the process's tgid once it has made NAME_AFTER syscalls, else its name and
// cgroup (tgid 0), the first sight of each process (and each successful exec, which renames
// it) counted in `newcomers` under the name it then has.
static __always_inline void key_who(struct call_key *key, u32 tgid, u32 nr, s64 ret, u32 buf) {
    u64 *n = seen.lookup(&tgid);
    if (n && *n >= NAME_AFTER)
        return;
    u64 first = 1;
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        seen.update(&tgid, &first);
    char comm[TASK_COMM_LEN];
    process_comm(comm);
    key->tgid = 0;
    key->cgroup_id = bpf_get_current_cgroup_id();
    __builtin_memcpy(&key->comm_lo, comm, sizeof(comm));
    if (!n || ((nr == NR_EXECVE || nr == NR_EXECVEAT) && ret == 0)) {
        struct name_key name = {.cgroup_id = key->cgroup_id, .comm_lo = key->comm_lo,
                                .comm_hi = key->comm_hi};
        u64 none = 0;
        u64 *count = buf ? newcomers_1.lookup_or_try_init(&name, &none)
                         : newcomers_0.lookup_or_try_init(&name, &none);
        if (count)
            __sync_fetch_and_add(count, 1);
        else
            bump(STAT_NEWCOMERS_FULL);
    }
}
#endif

RAW_TRACEPOINT_PROBE(sys_exit) {
    u64 id = task_ids();
    u32 tgid = id >> 32, nr = exit_nr((struct pt_regs *)ctx->args[0]);
    s64 ret = (s64)ctx->args[1];
    u64 delta = 0, timed = 0;
#ifdef LATENCY
    u64 ts = start_take();
    if (ts) {             // the entry hook saw it (and applied the filters)
        delta = bpf_ktime_get_ns() - ts;
        timed = 1;
    } else if (!wanted(tgid, nr)) {
        return 0;
    }
#else
    if (!wanted(tgid, nr))
        return 0;
#endif
    bump(STAT_EVENTS);
    int zero = 0;
    u32 *active = control.lookup(&zero);
    u32 buf = active ? *active : 0;

    struct call_key key = {.tgid = tgid, .nr = nr};
#ifdef NAME_AFTER
    key_who(&key, tgid, nr, ret, buf);
#endif
    struct call_value init = {};
    struct call_value *v = buf ? calls_1.lookup_or_try_init(&key, &init)
                               : calls_0.lookup_or_try_init(&key, &init);
    if (!v) {
        bump(STAT_CALLS_FULL);
        return 0;
    }
    if (v->count == 0) {
        process_comm(v->comm);
        v->cgroup_id = bpf_get_current_cgroup_id();
    }
    v->count++;
    if (timed) {
        if (v->timed == 0 || delta < v->min_ns)
            v->min_ns = delta;
        if (delta > v->max_ns)
            v->max_ns = delta;
        v->timed++;
        v->total_ns += delta;
#ifdef LATENCY
        struct hist_key hk = {.call = key, .bucket = exp_index(delta)};
        u64 none = 0;
        u64 *in_bucket = buf ? hist_1.lookup_or_try_init(&hk, &none)
                             : hist_0.lookup_or_try_init(&hk, &none);
        if (in_bucket)
            __sync_fetch_and_add(in_bucket, 1);
        else
            bump(STAT_HIST_FULL);
#endif
    }
    if (ret > 0) {
        u8 *io = io_syscalls.lookup(&nr);
        if (io && *io)
            v->bytes += ret;
    }
    if (ret < 0 && ret >= -4095) {
        v->errors++;
        struct errno_key ek = {.call = key, .err = (u32)-ret};
        u64 none = 0;
        u64 *n = buf ? errnos_1.lookup_or_try_init(&ek, &none)
                     : errnos_0.lookup_or_try_init(&ek, &none);
        if (n)
            __sync_fetch_and_add(n, 1);
        else
            bump(STAT_ERRNOS_FULL);
    }
    return 0;
}
