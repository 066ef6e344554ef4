// Heap profiler: allocator uprobes, sampled by bytes in the kernel.
//
// Every allocation call traps (the uprobe's cost); the program keeps that cheap: a
// per-thread countdown of bytes, drawn from an exponential distribution whose mean is the
// sampling rate (as tcmalloc, Go and jemalloc sample), decides in a few instructions
// whether this allocation is sampled. Only a sampled allocation walks its stack and waits
// for its address at the return probe; only a sampled address is remembered in `live`,
// where free() finds it. Per (process, stack): sampled allocations and frees, objects and
// bytes. User space weighs samples up (1 / (1 - exp(-size/rate))) to unbiased totals.
// The sampled bytes in use, all stacks together, are one counter (STAT_INUSE_BYTES), which
// user space reads often and cheaply to see a new high-water mark come between drains.
//
// The walk starts inside the allocator, whose caller is not yet on the frame chain at its
// first instruction: the return address at the stack pointer names the caller.
//
// With UNWIND_TABLES the stack is unwound from .eh_frame tables instead (unwind.inc):
// from malloc's first instruction its table says where the return address is, so the
// caller comes out of the walk itself; stacks are kept by content in user_stacks.
//
// With MMAP, anonymous mmap/munmap calls (syscall tracepoints) count as allocations and
// frees too, sampled by the same countdown; their stacks start in the mmap wrapper. The
// allocator's own mmaps (a large malloc's) are told apart in user space, where malloc is
// on their stack; a sampled allocator call in progress is skipped here (one pending a thread).
//
// Processes are named as ebpf-otlp names them (targets.inc: in its pid namespace); the
// per-thread countdown and pending call are keyed by the kernel's thread id, unique anyway.
//
// An allocator calls itself: glibc's realloc(NULL, n) jumps to malloc, reallocarray to
// realloc. Such a call is one allocation, judged once, at the outer entry: a thread keeps
// the entry stack pointer of its call whose return is awaited (sampled, or one of those),
// and an entry at or below it is the allocator's own, skipped. The return is told by its
// stack pointer too (8 above the entry's). Not covered: an unsampled realloc(p, n) that
// falls back to malloc (glibc: an mmapped block mremap could not move, or an arena out of
// memory) is judged a second time there, at the same size.
//
// With PYTHON_FRAMES (UNWIND_TABLES), python.inc walks the Python frames of a sampled
// allocation in the processes user space put in py_procs, kept in py_stacks_0 (never cleared,
// as user_stacks is not).
//
// With HOLD_NEW_CODE (launch mode, UNWIND_TABLES), hold.inc stops a launched process at its
// exec and at each executable mapping until its tables are in.
//
// Defines: RATE (mean bytes between samples; 0: every call), MAX_LIVE, MAX_STACKS,
//          MAX_KEYS, targets.inc's (which processes); UNWIND_TABLES (and unwind.inc's); MMAP;
//          HOLD_NEW_CODE; PYTHON_FRAMES (with python.inc's).
#include <uapi/linux/ptrace.h>
#if defined(PYTHON_FRAMES) && !defined(UNWIND_TABLES)
#undef PYTHON_FRAMES              // the Python walk follows the table unwinder's
#endif
// #import kernel_types.inc

struct stack_key {
    u32 tgid;
    s32 stack_id;            // user stack from inside the allocator (its caller's caller on)
    u64 caller;              // return address into the allocating function
    u64 user_stack_hash;     // UNWIND_TABLES: the stack's key in user_stacks
    u32 via_mmap;            // an anonymous mmap, not an allocator call
    u32 pad;
    u64 py_stack_hash;       // PYTHON_FRAMES: the Python stack's key in py_stacks_0
};

struct stack_counts {        // sampled, not yet weighed up
    u64 allocs;
    u64 alloc_bytes;
    u64 frees;
    u64 free_bytes;
};

struct live_key {
    u32 tgid;
    u32 pad;
    u64 addr;
};

struct live_alloc {
    u64 size;
    u64 ts_ns;
    struct stack_key where;
};

struct pending {             // a sampled call waiting for its address
    u64 size;
    u64 memptr;              // posix_memalign: where the address will be written
    u64 sp;                  // the stack pointer at its entry (0: an mmap's)
    struct stack_key where;
};

struct thread_state {
    s64 left;                // bytes until the next sample
    u64 open_sp;             // the entry stack pointer of the call whose return is awaited
};

#define OWN_CALL_BYTES 65536 // an allocator's own call is this close below its caller's entry


enum heap_stat {
    STAT_SAMPLED,            // allocations sampled
    STAT_FREED,              // sampled allocations seen freed
    STAT_LIVE_FULL,          // no room in `live`: the allocation's free cannot be matched
    STAT_KEYS_FULL,          // no room in `by_stack`
    STAT_STACK_LOST,         // stack-id collision or error
    STAT_NEW_TASK_DROPPED,   // ring buffer full: a process was not announced
    STAT_PY_WALKED,          // PYTHON_FRAMES: python.inc's counters (pyframes/kernel.py: STATS)
    STAT_PY_CUT,
    STAT_PY_NO_THREAD,
    STAT_PY_STACK_LOST,
    STAT_PY_ANNOUNCE_DROPPED,
    STAT_UNWIND_TABLES,      // UNWIND_TABLES: stacks walked through a table
    STAT_UNWIND_FRAME_POINTERS,
    STAT_UNWIND_END,         // how walks ended: enum unwind_end, 5 counters
    STAT_INUSE_BYTES = STAT_UNWIND_END + 5,   // sampled bytes in use: this CPU's allocations
                                              // less its frees (the sum over CPUs is the total)
    STAT_MAX,
};

BPF_HASH(by_stack, struct stack_key, struct stack_counts, MAX_KEYS);
BPF_HASH(live, struct live_key, struct live_alloc, MAX_LIVE);
BPF_TABLE("lru_hash", u32, struct pending, pending, 65536);
BPF_TABLE("lru_hash", u32, struct thread_state, threads, 65536);
BPF_ARRAY(draws, u32, 1024);                           // exponential quantiles, mean RATE
#ifndef UNWIND_TABLES
BPF_STACK_TRACE(stacks, MAX_STACKS);
#endif
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);

// #import targets.inc
// #import bump.inc
// #import hash.inc
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
// Allocated as stacks appear: a preallocated map of 1 KiB stacks would cost 64 MiB.
BPF_F_TABLE("hash", u64, struct user_stack, user_stacks, MAX_STACKS, BPF_F_NO_PREALLOC);
#endif

static __always_inline void count_inuse(s64 bytes) {
    int which = STAT_INUSE_BYTES;
    u64 *v = stats.lookup(&which);
    if (v)
        *v += bytes;
}

static __always_inline s64 draw(void) {
    u32 i = bpf_get_prandom_u32() & 1023;
    u32 *d = draws.lookup(&i);
    return d ? *d : RATE;
}

// Is this allocation in the sample? A per-thread countdown of bytes, drawn anew each time
// it runs out: an allocation of s bytes is sampled with probability 1 - exp(-s/RATE).
static __always_inline int sampled(struct thread_state *t, u64 size) {
#if RATE == 0
    return 1;
#else
    t->left -= (s64)size;
    if (t->left > 0)
        return 0;
    t->left = draw();
    return 1;
#endif
}

static __always_inline struct thread_state *thread_state(u32 tid) {
    struct thread_state *t = threads.lookup(&tid);
    if (t)
        return t;
    struct thread_state fresh = {.left = draw()};
    threads.update(&tid, &fresh);
    return threads.lookup(&tid);
}


// `at_entry`: an allocator's entry uprobe (ctx: its registers); else the mmap tracepoint.
// `calls_itself`: the allocator may call a probed allocator for this call (realloc(NULL, n)).
// Returns 1 when the call's return is wanted.
static __always_inline int on_alloc(void *ctx, u64 size, u64 memptr, int at_entry,
                                    int calls_itself) {
    u32 tgid = task_ids() >> 32, tid = bpf_get_current_pid_tgid();
    if (!traced(tgid))
        return 0;
    struct thread_state *t = thread_state(tid);
    if (!t)
        return 0;
    u64 sp = at_entry ? PT_REGS_SP((struct pt_regs *)ctx) : 0;
    if (at_entry && t->open_sp && sp <= t->open_sp && t->open_sp - sp < OWN_CALL_BYTES)
        return 0;            // the allocator's own call: part of the one that made it
    if (!sampled(t, size)) {
        if (!calls_itself)
            return 0;
        t->open_sp = sp;
        return 1;
    }
    struct pending p = {.size = size, .memptr = memptr, .sp = sp};
    p.where.tgid = tgid;
    p.where.via_mmap = !at_entry;
#ifdef UNWIND_TABLES
    p.where.stack_id = -1;
    struct user_stack *st = unwind_user(tgid, &p.where.user_stack_hash, at_entry);
    if (!st)
        p.where.user_stack_hash = 0;
    else if (user_stacks.update(&p.where.user_stack_hash, st)) {
        bump(STAT_STACK_LOST);
        p.where.user_stack_hash = 0;
    }
#ifdef PYTHON_FRAMES
    p.where.py_stack_hash = python_stack(tgid, 0);
#endif
#else
    if (at_entry)
        bpf_probe_read_user(&p.where.caller, sizeof(p.where.caller), (void *)sp);
    p.where.stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    if (p.where.stack_id < 0 && p.where.stack_id != -EFAULT)
        bump(STAT_STACK_LOST);
#endif
    pending.update(&tid, &p);
    if (at_entry)
        t->open_sp = sp;
    announce(tgid, 0);
    return 1;
}

// `sp`: the call's stack pointer at its entry (the return's less 8; 0: an mmap's).
static __always_inline void on_return(u64 sp, u64 addr) {
    u32 tid = bpf_get_current_pid_tgid();
    if (sp) {
        struct thread_state *t = threads.lookup(&tid);
        if (t && t->open_sp == sp)
            t->open_sp = 0;
    }
    struct pending *p = pending.lookup(&tid);
    if (!p || p->sp != sp)
        return;              // not sampled (the common case), or the allocator's own call
    struct pending got = *p;
    pending.delete(&tid);
    if (got.memptr) {        // posix_memalign returns 0 and writes the address
        if (addr != 0)
            return;
        bpf_probe_read_user(&addr, sizeof(addr), (void *)got.memptr);
    }
    if (!addr)
        return;              // a failed allocation is no allocation
    bump(STAT_SAMPLED);
    struct stack_counts zero = {};
    struct stack_counts *c = by_stack.lookup_or_try_init(&got.where, &zero);
    if (!c) {
        bump(STAT_KEYS_FULL);
        return;
    }
    __sync_fetch_and_add(&c->allocs, 1);
    __sync_fetch_and_add(&c->alloc_bytes, got.size);
    count_inuse(got.size);
    struct live_key k = {.tgid = got.where.tgid, .addr = addr};
    struct live_alloc a = {.size = got.size, .ts_ns = bpf_ktime_get_ns(), .where = got.where};
    if (live.update(&k, &a))
        bump(STAT_LIVE_FULL);
}

static __always_inline void on_free(u64 addr) {
    if (!addr)
        return;
    struct live_key k = {.tgid = task_ids() >> 32, .addr = addr};
    struct live_alloc *a = live.lookup(&k);
    if (!a)
        return;              // not sampled (or from before the capture)
    struct stack_counts *c = by_stack.lookup(&a->where);
    if (c) {
        __sync_fetch_and_add(&c->frees, 1);
        __sync_fetch_and_add(&c->free_bytes, a->size);
        count_inuse(-(s64)a->size);
    }
    live.delete(&k);
    bump(STAT_FREED);
}

// Without uprobe sessions: an entry and a return probe on every call.
int malloc_enter(struct pt_regs *ctx) { on_alloc(ctx, PT_REGS_PARM1(ctx), 0, 1, 0); return 0; }
int calloc_enter(struct pt_regs *ctx) {
    on_alloc(ctx, PT_REGS_PARM1(ctx) * PT_REGS_PARM2(ctx), 0, 1, 0);
    return 0;
}
int realloc_enter(struct pt_regs *ctx) {        // a free of the old block, an allocation
    on_free(PT_REGS_PARM1(ctx));
    on_alloc(ctx, PT_REGS_PARM2(ctx), 0, 1, !PT_REGS_PARM1(ctx));
    return 0;
}
int reallocarray_enter(struct pt_regs *ctx) {
    on_free(PT_REGS_PARM1(ctx));
    on_alloc(ctx, PT_REGS_PARM2(ctx) * PT_REGS_PARM3(ctx), 0, 1, 1);
    return 0;
}
int memalign_enter(struct pt_regs *ctx) { on_alloc(ctx, PT_REGS_PARM2(ctx), 0, 1, 0); return 0; }
int posix_memalign_enter(struct pt_regs *ctx) {
    on_alloc(ctx, PT_REGS_PARM3(ctx), PT_REGS_PARM1(ctx), 1, 0);
    return 0;
}
int alloc_return(struct pt_regs *ctx) {
    on_return(PT_REGS_SP(ctx) - 8, PT_REGS_RC(ctx));
    return 0;
}

#ifdef SESSIONS
// Uprobe sessions (Linux 6.13+): one program at the entry and, only if it returned 0, again
// at the return. The return half is told by its instruction pointer, the caller's, where
// the entry's is the function's own (bpf_get_func_ip's, both times): a pending record
// cannot tell, as the allocator's own call at the same stack pointer finds its caller's.
static __always_inline int session(struct pt_regs *ctx, u64 size, u64 memptr, u64 freed,
                                   int calls_itself) {
    if (PT_REGS_IP(ctx) != bpf_get_func_ip(ctx)) {   // the return half: arguments gone
        on_return(PT_REGS_SP(ctx) - 8, PT_REGS_RC(ctx));
        return 0;
    }
    if (freed)
        on_free(freed);
    return on_alloc(ctx, size, memptr, 1, calls_itself) ? 0 : 1;
}

int malloc_session(struct pt_regs *ctx) { return session(ctx, PT_REGS_PARM1(ctx), 0, 0, 0); }
int calloc_session(struct pt_regs *ctx) {
    return session(ctx, PT_REGS_PARM1(ctx) * PT_REGS_PARM2(ctx), 0, 0, 0);
}
int realloc_session(struct pt_regs *ctx) {
    return session(ctx, PT_REGS_PARM2(ctx), 0, PT_REGS_PARM1(ctx), !PT_REGS_PARM1(ctx));
}
int reallocarray_session(struct pt_regs *ctx) {
    return session(ctx, PT_REGS_PARM2(ctx) * PT_REGS_PARM3(ctx), 0, PT_REGS_PARM1(ctx), 1);
}
int memalign_session(struct pt_regs *ctx) { return session(ctx, PT_REGS_PARM2(ctx), 0, 0, 0); }
int posix_memalign_session(struct pt_regs *ctx) {
    return session(ctx, PT_REGS_PARM3(ctx), PT_REGS_PARM1(ctx), 0, 0);
}
#endif
int free_enter(struct pt_regs *ctx) { on_free(PT_REGS_PARM1(ctx)); return 0; }

#if defined(HOLDS) || defined(PYTHON_FRAMES)
TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tgid = task_ids() >> 32;
    announced.delete(&tgid);  // new mappings: announced again
#ifdef PYTHON_FRAMES
    py_procs.delete(&tgid);   // another program now: user space looks again when it is announced
#endif
#ifdef HOLDS
    if (hold_wanted(tgid))
        hold(tgid, 0);
#endif
    return 0;
}
#endif

#if defined(MMAP) || defined(HOLDS)
TRACEPOINT_PROBE(syscalls, sys_enter_mmap) {
#ifdef HOLDS
    hold_enter_mmap((u32)task_ids(), args->prot, args->flags, args->fd);
#endif
#ifdef MMAP
    u32 tid = bpf_get_current_pid_tgid();
    if (!(args->flags & 0x20) || pending.lookup(&tid))   // MAP_ANONYMOUS; not inside a sampled call
        return 0;
    on_alloc(args, args->len, 0, 0, 0);
#endif
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mmap) {
#ifdef HOLDS
    u64 id = task_ids();
    hold_exit_mmap(id >> 32, (u32)id, args->ret, 0);
#endif
#ifdef MMAP
    u32 tid = bpf_get_current_pid_tgid();
    struct pending *p = pending.lookup(&tid);
    if (!p || !p->where.via_mmap)                      // a sampled allocator call's: its own
        return 0;
    s64 ret = args->ret;
    on_return(0, ret < 0 && ret > -4096 ? 0 : ret);    // MAP_FAILED is -errno
#endif
    return 0;
}
#endif

#ifdef MMAP
TRACEPOINT_PROBE(syscalls, sys_enter_munmap) {
    on_free(args->addr);
    return 0;
}
#endif
