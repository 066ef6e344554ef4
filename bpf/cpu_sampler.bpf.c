// CPU sampler: runs on a perf_event (cpu-clock or cpu-cycles) on every CPU.
// Counts (process, thread, user stack, kernel stack) in the kernel, in one of two
// buffers; user space flips `control[0]` and drains the idle buffer, so the maps
// never fill and no sample is lost while it reads.
//
// With OFF_CPU, the same keys count nanoseconds off CPU instead: sched_switch stores the
// stacks and time of the thread going off CPU, and adds the time away when it comes back.
// Its stacks outlive a drain (a thread can sleep through several), so off-CPU stacks
// all go in set 0 (stacks_0, user_stacks_0, kernel_stacks_0), which user space reads but
// never clears. Walking two stacks at every
// switch costs; above its budget user space sets control[1] (of 65536) to the share of
// switches to walk, at random, and each one kept is weighed up by 65536 / share.
//
// A process that execs keeps its pid but gets new mappings: each sample carries the
// process's exec generation, and each (pid, generation) is announced, so user space
// symbolizes samples from before an exec against the mappings from before it.
//
// With UNWIND_TABLES, user stacks are walked by unwind.inc (tables from .eh_frame, frame
// pointers where there are none) and kept by content in user_stacks_N, keyed by their hash;
// without it, the kernel walks frame pointers (get_stackid). Kernel stacks are kept by
// content too, in kernel_stacks_N (kernel_stacks.inc): no stack-id collisions.
//
// With PYTHON_FRAMES (UNWIND_TABLES), python.inc walks the Python frames of the processes user
// space put in py_procs, in a program of its own tail-called once the native walk is done.
//
// With HOLD_NEW_CODE (launch mode, UNWIND_TABLES), hold.inc stops a launched process at its
// exec and at each executable mapping until its tables are in.
//
// Defines: MAX_KEYS, MAX_STACKS, targets.inc's (which processes), USER_STACKS, KERNEL_STACKS, INCLUDE_IDLE;
//          OFF_CPU, MIN_BLOCK_NS, MAX_THREADS; UNWIND_TABLES (with unwind.inc's defines);
//          HOLD_NEW_CODE; PYTHON_FRAMES (with python.inc's defines); SAMPLE_TIMES (each
//          sample's time in its key: user space links it to the request its thread served).
#include <uapi/linux/ptrace.h>
#if defined(PYTHON_FRAMES) && !(defined(UNWIND_TABLES) && defined(USER_STACKS))
#undef PYTHON_FRAMES              // the Python walk follows the table unwinder's
#endif
// #import kernel_types.inc

struct sample_key {
    u32 tgid;
    u32 tid;
    s32 user_stack_id;       // without UNWIND_TABLES: the user stack's id in stacks_N
    u32 gen;                 // execs of the process seen since the capture began
    u64 user_stack_hash;     // UNWIND_TABLES: the user stack's key in user_stacks_N
    u64 kernel_stack_hash;   // the kernel stack's key in kernel_stacks_N (kernel_stacks.inc)
    u64 py_stack_hash;       // PYTHON_FRAMES: the Python stack's key in py_stacks_N (python.inc)
    u64 slot;                // SAMPLE_TIMES: when, in 2^20 ns (1.05 ms) of bpf_ktime (0 without)
    char comm[TASK_COMM_LEN];
};

// Counters in `stats`, read by the collector (same order as Stat in cpu.py).
enum sampler_stat {
    STAT_SAMPLES,
    STAT_USER_STACK_COLLISION,    // -EEXIST: hash bucket taken by another stack
    STAT_USER_STACK_ERROR,        // -ENOMEM / other: stack map full or unwinding failed
    STAT_KERNEL_STACK_ERROR,      // no room in kernel_stacks_N, or the walk failed
    STAT_COUNTS_FULL,             // the count map had no room for a new key
    STAT_NEW_TASK_DROPPED,        // ring buffer full: a new process was not announced
    STAT_START_FULL,              // off-CPU: no room to remember a thread going off CPU
    STAT_SWITCHES,                // off-CPU: traced threads that left the CPU
    STAT_PY_WALKED,               // PYTHON_FRAMES: Python stacks walked whole
    STAT_PY_CUT,                  //   ... cut short (deeper than PY_FRAMES, or a read failed)
    STAT_PY_NO_THREAD,            //   a Python process's thread with no thread state found
    STAT_PY_STACK_LOST,           //   no room in py_stacks_N
    STAT_PY_ANNOUNCE_DROPPED,     //   a new stack not sent at once (ring full): named at the drain
    STAT_UNWIND_TABLES,           // UNWIND_TABLES: user stacks walked through a table
    STAT_UNWIND_FRAME_POINTERS,   //   ... with frame pointers only
    STAT_UNWIND_END,              //   how walks ended: enum unwind_end, 5 counters
    STAT_MAX = STAT_UNWIND_END + 5,
};

BPF_HASH(counts_0, struct sample_key, u64, MAX_KEYS);
BPF_HASH(counts_1, struct sample_key, u64, MAX_KEYS);
#if defined(USER_STACKS) && !defined(UNWIND_TABLES)   // user stacks by frame pointers
BPF_STACK_TRACE(stacks_0, MAX_STACKS);
BPF_STACK_TRACE(stacks_1, MAX_STACKS);
#endif
BPF_ARRAY(control, u32, 2);   // [0]: the map set in use; [1]: off-CPU share kept, of 65536
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
// An exec forgets a process's announcement (announce.inc), since its mappings change.
BPF_TABLE("lru_hash", u32, u32, exec_gen, 65536);   // pid -> execs seen (absent: 0)
// #import targets.inc
// #import bump.inc
// #import hash.inc
// #import kernel_stacks.inc
// #import announce.inc
#if defined(HOLD_NEW_CODE) && defined(UNWIND_TABLES) && defined(FOLLOW_FORKS)
#define HOLDS 1
// #import hold.inc
#endif
#ifdef UNWIND_TABLES
// #import unwind.inc
#ifdef PYTHON_FRAMES
// #import python.inc
#endif
// Allocated as stacks appear (1 KiB each): preallocated, the two would hold 32 MiB.
BPF_F_TABLE("hash", u64, struct user_stack, user_stacks_0, MAX_STACKS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u64, struct user_stack, user_stacks_1, MAX_STACKS, BPF_F_NO_PREALLOC);

// Walk the user stack from the tables and keep it by content: its hash, or 0 if none.
static __always_inline u64 user_stack(u32 tgid, u32 buf) {
    u64 hash = 0;
    struct user_stack *st = unwind_user(tgid, &hash, 0);
    if (!st)
        return 0;
    int err = buf ? user_stacks_1.update(&hash, st) : user_stacks_0.update(&hash, st);
    if (err) {
        bump(STAT_USER_STACK_ERROR);
        return 0;
    }
    return hash;
}
#endif

// Add `value` to a key's count; a key's first count in a buffer is the only time its
// process can be new, so that is when it is announced.
static __always_inline void add(struct sample_key *key, u32 buf, u64 value) {
    u64 init = 0;
    u64 *count = buf ? counts_1.lookup_or_try_init(key, &init)
                     : counts_0.lookup_or_try_init(key, &init);
    if (!count) {
        bump(STAT_COUNTS_FULL);
        return;
    }
    if (__sync_fetch_and_add(count, value) == 0 && key->tgid)
        announce(key->tgid, key->gen);
}

static __always_inline u32 active_buffer(void) {
    int zero = 0;
    u32 *active = control.lookup(&zero);
    return active ? *active : 0;
}

#ifdef UNWIND_TABLES
// A sample's user stack is walked by unwind_step, STEP_FRAMES frames a program, each
// tail-calling the next: the verifier checks a few frames' walk once, not the 127 frames
// in line (about 0.45 s of start-up); then, for a Python process, py_step (walk_steps[1]).
// The sample's key waits here, per CPU.
#define STEP_FRAMES 8
struct walk {
    struct unwind_state s;
    struct sample_key key;
    u32 buf;
};
BPF_PERCPU_ARRAY(walks, struct walk, 1);
BPF_PROG_ARRAY(walk_steps, 2);
#endif

static __always_inline u32 exec_generation(u32 tgid) {
    u32 *gen = exec_gen.lookup(&tgid);
    return gen ? *gen : 0;
}

static __always_inline s32 stack_error(s32 id, int collision, int other) {
    if (id == -EEXIST)
        bump(collision);
    else if (id < 0 && id != -EFAULT)   // -EFAULT: no user stack (kernel thread)
        bump(other);
    return id;
}

// The sample's kernel stack, then its count.
static __always_inline void count_sample(struct bpf_perf_event_data *ctx, struct sample_key *key, u32 buf) {
#ifdef KERNEL_STACKS
    key->kernel_stack_hash = kernel_stack(ctx, buf, STAT_KERNEL_STACK_ERROR);
#endif
    add(key, buf, 1);
}

#if defined(USER_STACKS) && defined(UNWIND_TABLES)
// A walked sample: its user stack kept by content, then counted.
static __always_inline int finish_sample(struct bpf_perf_event_data *ctx, struct walk *w,
                                         struct user_stack *st) {
    u64 hash = 0;
    unwind_finish(&w->s, st, &hash);
    struct sample_key key = w->key;
    u32 buf = w->buf;
    int err = buf ? user_stacks_1.update(&hash, st) : user_stacks_0.update(&hash, st);
    if (err) {
        bump(STAT_USER_STACK_ERROR);
        hash = 0;
    }
    key.user_stack_hash = hash;
#ifdef PYTHON_FRAMES
    if (py_procs.lookup(&key.tgid)) {   // py_step counts the sample once its Python stack is in
        w->key = key;
        walk_steps.call(ctx, 1);
    }
#endif
    count_sample(ctx, &key, buf);
    return 0;
}
#endif

int on_sample(struct bpf_perf_event_data *ctx) {
    u64 id = task_ids();
    u32 tgid = id >> 32, tid = (u32)id;
#ifndef INCLUDE_IDLE
    if (tid == 0)
        return 0;
#endif
    if (!traced(tgid))
        return 0;
#ifdef FILTER_COMM_LO
    char comm[TASK_COMM_LEN];
    process_comm(comm);
    if (!comm_wanted(comm))
        return 0;
#endif
    bump(STAT_SAMPLES);
    u32 buf = active_buffer();

    struct sample_key key = {};
    key.tgid = tgid;
    key.tid = tid;
    key.user_stack_id = -1;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.gen = exec_generation(tgid);
#ifdef SAMPLE_TIMES
    key.slot = bpf_ktime_get_ns() >> 20;   // samples apart: a key each (MAX_KEYS has room)
#endif
#if defined(USER_STACKS) && defined(UNWIND_TABLES)
    int zero = 0;
    struct walk *w = walks.lookup(&zero);
    struct user_stack *st = unwind_scratch.lookup(&zero);
    if (w && st && !unwind_begin(&w->s, st, 0)) {
        w->key = key;
        w->buf = buf;
        walk_steps.call(ctx, 0);
        w->s.end = UNWIND_DEPTH;   // only if the tail call failed
        return finish_sample(ctx, w, st);
    }
#elif defined(USER_STACKS)
    key.user_stack_id = stack_error(
        buf ? stacks_1.get_stackid(ctx, BPF_F_USER_STACK) : stacks_0.get_stackid(ctx, BPF_F_USER_STACK),
        STAT_USER_STACK_COLLISION, STAT_USER_STACK_ERROR);
#endif
    count_sample(ctx, &key, buf);
    return 0;
}

#if defined(USER_STACKS) && defined(UNWIND_TABLES)
// STEP_FRAMES more frames of the sample's walk, then the next step, or the sample's end.
int unwind_step(struct bpf_perf_event_data *ctx) {
    int zero = 0;
    struct walk *w = walks.lookup(&zero);
    struct user_stack *st = unwind_scratch.lookup(&zero);
    if (!w || !st)
        return 0;
    for (int k = 0; k < STEP_FRAMES; k++)
        if (!unwind_frame(&w->s, st, w->key.tgid))
            return finish_sample(ctx, w, st);
    walk_steps.call(ctx, 0);
    w->s.end = UNWIND_DEPTH;   // the kernel's tail-call limit
    return finish_sample(ctx, w, st);
}
#endif

#ifdef PYTHON_FRAMES
// The sample's Python stack, then its count.
int py_step(struct bpf_perf_event_data *ctx) {
    int zero = 0;
    struct walk *w = walks.lookup(&zero);
    if (!w)
        return 0;
    struct sample_key key = w->key;
    key.py_stack_hash = python_stack(key.tgid, w->buf);
    count_sample(ctx, &key, w->buf);
    return 0;
}
#endif

// A process that execs gets new mappings: a new generation, announced on its next sample.
TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tgid = task_ids() >> 32;
    u32 *gen = exec_gen.lookup(&tgid);
    u32 next = gen ? *gen + 1 : 1;
    exec_gen.update(&tgid, &next);
    announced.delete(&tgid);
#ifdef PYTHON_FRAMES
    py_procs.delete(&tgid);   // another program now: user space looks again when it is announced
#endif
#ifdef HOLDS
    if (hold_wanted(tgid))
        hold(tgid, next);
#endif
    return 0;
}

#ifdef HOLDS
TRACEPOINT_PROBE(syscalls, sys_enter_mmap) {
    hold_enter_mmap((u32)task_ids(), args->prot, args->flags, args->fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mmap) {
    u64 id = task_ids();
    u32 tgid = id >> 32;
    hold_exit_mmap(tgid, (u32)id, args->ret, exec_generation(tgid));
    return 0;
}
#endif

#ifdef OFF_CPU
struct off_cpu_start {       // a thread that went off CPU, as it left
    u64 ts;
    u32 tgid;                // as ebpf-otlp names them (targets.inc)
    u32 tid;
    u32 gen;
    s32 user_stack_id;
    u32 keep;                // the share kept when it left, of 65536
    u64 user_stack_hash;
    u64 kernel_stack_hash;
    u64 py_stack_hash;
};

static __always_inline u32 off_cpu_keep(void) {
    int one = 1;
    u32 *keep = control.lookup(&one);
    return keep && *keep && *keep < 65536 ? *keep : 65536;   // 0: not set, keep all
}
BPF_TABLE("lru_hash", u32, struct off_cpu_start, off_cpu_since, MAX_THREADS);

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u64 id = task_ids();                   // still the thread going off CPU
    u32 tgid = id >> 32, tid = (u32)id;
    u32 key_tid = bpf_get_current_pid_tgid();   // the kernel's, as next_pid below
    int wanted = tid != 0 && traced(tgid);
#ifdef FILTER_COMM_LO
    if (wanted) {
        char comm[TASK_COMM_LEN];
        process_comm(comm);
        wanted = comm_wanted(comm);
    }
#endif
    u32 keep = 65536;
    if (wanted) {
        bump(STAT_SWITCHES);
        keep = off_cpu_keep();
        if (keep < 65536 && (bpf_get_prandom_u32() & 0xffff) >= keep)
            wanted = 0;       // not in the sample: no stacks walked
    }
    if (wanted) {
        struct off_cpu_start s = {.ts = now, .tgid = tgid, .tid = tid, .gen = exec_generation(tgid),
                                  .user_stack_id = -1, .keep = keep};
#if defined(USER_STACKS) && defined(UNWIND_TABLES)
        s.user_stack_hash = user_stack(tgid, 0);   // off-CPU stacks all live in set 0
#elif defined(USER_STACKS)
        s.user_stack_id = stack_error(stacks_0.get_stackid(args, BPF_F_USER_STACK),
                                      STAT_USER_STACK_COLLISION, STAT_USER_STACK_ERROR);
#endif
#ifdef KERNEL_STACKS
        s.kernel_stack_hash = kernel_stack(args, 0, STAT_KERNEL_STACK_ERROR);   // set 0, as above
#endif
#ifdef PYTHON_FRAMES
        s.py_stack_hash = python_stack(tgid, 0);
#endif
        if (off_cpu_since.update(&key_tid, &s))
            bump(STAT_START_FULL);
    }
    u32 next = args->next_pid;
    struct off_cpu_start *s = off_cpu_since.lookup(&next);
    if (!s)
        return 0;
    struct off_cpu_start left = *s;
    off_cpu_since.delete(&next);
    u64 away = now - left.ts;
    if (away < MIN_BLOCK_NS)
        return 0;
    if (left.keep < 65536)
        away = away * 65536 / left.keep;   // this one stands for 65536 / keep of its kind
    bump(STAT_SAMPLES);
    struct sample_key key = {.tgid = left.tgid, .tid = left.tid, .gen = left.gen,
                             .user_stack_id = left.user_stack_id,
                             .user_stack_hash = left.user_stack_hash,
                             .kernel_stack_hash = left.kernel_stack_hash,
                             .py_stack_hash = left.py_stack_hash};
    bpf_probe_read_kernel(&key.comm, sizeof(key.comm), args->next_comm);
    add(&key, active_buffer(), away);
    return 0;
}
#endif
