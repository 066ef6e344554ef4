// TCP connection lifecycles (and UDP bytes per process and peer) for `trace-net`.
//
// One entry per socket in `conns` (keyed by the socket's address: the source port is 0
// at SYN_SENT, so no 4-tuple key would do), opened when a connection starts (SYN_SENT in
// the connecting process; SYN_RECV for an accepted one, in softirq), given its owner in
// process context (connect, the first send/recv or close of the accepting process), ended
// when it reaches TCP_CLOSE, and sent to user space through a ring buffer when the socket
// is destroyed, with the kernel's own totals read from struct tcp_sock at offsets taken
// from the running kernel's BTF (Debian's headers are for another kernel). Waiting for the
// destruction lets a reset that follows the close (SO_LINGER 0: the state goes to CLOSE,
// then the RST goes out) be seen. Connections still open, or closed but not yet destroyed,
// are read from `conns` at the end.
//
// Two hook sets share everything below them: tracepoints (sock:inet_sock_set_state,
// sock:sock_{send,recv}_length, tcp:*), and for kernels that have them, kprobes
// (tcp_set_state, tcp_v{4,6}_connect, inet_csk_accept, tcp_sendmsg, tcp_cleanup_rbuf,
// tcp_retransmit_skb, tcp_send_active_reset, tcp_reset).
//
// Defines: HOOKS_TRACEPOINTS or HOOKS_KPROBES; MAX_CONNS, MAX_UDP; targets.inc's (which
//          processes); FILTER_PORTS; RTT (histogram from tcp_probe);
//          UDP; RETRANS_ERR (tcp_retransmit_skb has `err`); OFF_* field offsets (see
//          signals/net/collector.py); REQUESTS (with REQ_HEAD, REQ_TAIL, PAYLOAD_PAGES,
//          PAYLOAD_BUF; HTTP1; H2; REDIS with REDIS_HEAD; PG, MYSQL, and DB (either) with
//          DB_KEEP; WALK (for H2 and DB) with WALK_BYTES, WALK_STEPS, WALK_HOPS,
//          WALK_MAX_IOV, MAX_WALKS; TLS).
#include <uapi/linux/ptrace.h>
// #import kernel_types.inc

#define ROLE_CLIENT 1
#define ROLE_SERVER 2

// TCP states (include/net/tcp_states.h), stable ABI of the tracepoint.
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_FIN_WAIT1 4
#define ST_FIN_WAIT2 5
#define ST_CLOSE 7
#define ST_CLOSE_WAIT 8
#define ST_LAST_ACK 9
#define ST_LISTEN 10
#define ST_CLOSING 11

#define SOCK_DONE 1          // enum sock_flags (include/net/sock.h): tcp_fin() sets it

// The kernel's byte counts include sequence space that carries no data: a SYN we sent
// (acked), our FIN (acked) and the peer's FIN (received). The path through the states
// says which of them happened, so user space can count payload only.
#define SEEN_SYN_ACKED 1
#define SEEN_FIN_ACKED 2
#define SEEN_FIN_RECEIVED 4

#define AF_INET_ 2
#define AF_INET6_ 10
#define PROTO_TCP 6
#define PROTO_UDP 17

struct conn {
    u64 start_ns;            // 0: started before the capture
    u64 established_ns;
    u64 end_ns;              // TCP_CLOSE reached (0: not yet)
    u64 tx_bytes;            // what the owner sent and received (send/recv): open connections
    u64 rx_bytes;
    u32 tgid;                // owner; 0 until seen in process context
    u32 retrans;             // tcp_retransmit_skb that went out (err == 0)
    s32 sk_err;              // at TCP_CLOSE: the application may consume it before destruction
    u8 proto;                // REQUESTS: PROTO_* below, what its first bytes looked like
    u8 tls_proto;            // TLS: the same of the plaintext its SSL calls carried
    u8 dropped;              // REQUESTS: bit `dir`: a call of that direction was not sent up
    u8 pad;
    u8 role;
    u8 rst_sent;
    u8 rst_received;
    u8 oldstate;             // at close: the state it closed from
    u16 family;
    u16 lport;
    u16 rport;
    u16 seen;                // SEEN_* flags
    u8 laddr[16];
    u8 raddr[16];
    char comm[TASK_COMM_LEN];
};

struct closed {              // to user space when a closed connection's socket is destroyed
    struct conn c;
    u64 sk;
    u64 bytes_acked;         // struct tcp_sock, read at close
    u64 bytes_received;
    u32 segs_in;
    u32 segs_out;
    u32 total_retrans;
    u32 srtt_us;             // smoothed RTT << 3, as the kernel keeps it
};

struct udp_key {
    u32 tgid;
    u16 family;
    u16 rport;
    u8 raddr[16];
    u32 dir;                 // 0 sent, 1 received
    char comm[TASK_COMM_LEN];
};

struct udp_val {
    u64 bytes;
    u64 datagrams;
};

enum tcp_stat {
    STAT_CLOSED,             // connections reported
    STAT_CONNS_FULL,         // no room in `conns`: connection not traced
    STAT_RINGBUF_FULL,       // a closed connection could not be sent up
    STAT_NO_START,           // closed without its start being seen (began before the capture)
    STAT_UDP_FULL,           // no room in `udp`
    STAT_FILTERED,           // closed, not wanted by the filters
    STAT_PAYLOAD_DROPPED,    // REQUESTS: ring buffer full, a send or receive not sent up
    STAT_TLS_NO_SOCKET,      // TLS: an SSL call whose socket was never seen
    STAT_WALK_LOST,          // HTTP/2, PostgreSQL: a connection direction whose walk lost its place
    STAT_H2_LATE,            // HTTP/2: a connection seen mid-stream (HPACK state unknown)
    STAT_WALK_FULL,          // HTTP/2, PostgreSQL: no room in `walk_conns`, connection not parsed
    STAT_MAX,
};

BPF_HASH(conns, u64, struct conn, MAX_CONNS);
// 16 MiB of closed connections (about 100,000: 2.5 s at 20,000 connections/s, both ends,
// room for the reader's drains and collections). Waking the reader costs an interrupt per
// record (it was most of the per-connection cost): records are submitted without a wakeup,
// user space reads them every poll interval, and a filling ring wakes it once per
// WAKE_RECORDS records (not at every record past the mark: until the reader runs and
// resets the count, that was an interrupt per connection again).
BPF_RINGBUF_OUTPUT(closed_events, 4096);
BPF_ARRAY(unread, u64, 2);   // records since user space last read (it resets these):
                             // 0 closed connections, 1 payloads
#define WAKE_RECORDS 4096
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
#ifdef UDP
BPF_HASH(udp, struct udp_key, struct udp_val, MAX_UDP);
#endif
#ifdef RTT
BPF_ARRAY(rtt_hist, u64, 64);            // log2 buckets of srtt in µs, every ACK
#endif
#ifdef WALK
// The walk over a connection's messages (HTTP/2's frames, PostgreSQL's messages), per
// direction, carried from call to call (walk).
struct walk_dir {
    u32 copy;                // bytes still to send up: of the current message, or the preface
    u32 skip;                // then bytes of it still to pass over
    u32 have;                // bytes of the next message header read so far (into hdr)
    u32 lost;                // the walk lost its place (see walk): lengths only from here
    u32 client;              // PostgreSQL, MySQL: this direction carries the client's messages
    u32 peek;                // MySQL: the byte being copied decides whether more of the packet is
    u8 hdr[32];              // 9 or 5 used: the rest keeps the verifier's bounds simple
};
struct walk_conn {
    struct walk_dir d[2];      // 0 sent, 1 received
};
BPF_HASH(walk_conns, u64, struct walk_conn, MAX_WALKS);
#endif
#define KEEP_EXITED_PIDS   // sockets close after their owner's exit tracepoint
// #import targets.inc
#ifdef FILTER_PORTS
BPF_HASH(port_filter, u16, u8, 1024);
#endif

// #import bump.inc

static __always_inline u64 read_u64(const void *sk, int off) {
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)sk + off);
    return v;
}

static __always_inline u32 read_u32(const void *sk, int off) {
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)sk + off);
    return v;
}

// The owner: the process in whose context the socket is used. Only called from hooks
// that run in process context (connect, send/recv, close), never from softirq.
static __always_inline void own(struct conn *c) {
    if (c->tgid)
        return;
    c->tgid = task_ids() >> 32;
    process_comm(c->comm);
}

static __always_inline int ports_wanted(struct conn *c) {
#ifdef FILTER_PORTS
    u16 l = c->lport, r = c->rport;
    if (!port_filter.lookup(&l) && !port_filter.lookup(&r))
        return 0;
#endif
    return 1;
}

static __always_inline int wanted(struct conn *c) {
    if (!traced(c->tgid))
        return 0;
#ifdef FILTER_COMM_LO
    if (!comm_wanted(c->comm))
        return 0;
#endif
    return ports_wanted(c);
}

static __always_inline void set_addrs(struct conn *c, u16 family, u16 lport, u16 rport,
                                      const u8 *l4, const u8 *r4, const u8 *l6, const u8 *r6) {
    c->family = family;
    c->lport = lport;
    c->rport = rport;
    if (family == AF_INET6_) {
        __builtin_memcpy(c->laddr, l6, 16);
        __builtin_memcpy(c->raddr, r6, 16);
    } else {
        __builtin_memcpy(c->laddr, l4, 4);
        __builtin_memcpy(c->raddr, r4, 4);
    }
}

// A socket's state, family, ports and addresses, read at BTF offsets (never through the
// mismatched headers).
struct sock_fields {
    u8 state;
    u16 family, lport, rport;    // lport host order, rport too (swapped from the wire's)
    u8 l4[4], r4[4], l6[16], r6[16];
};

static __always_inline void read_sock(const char *sk, struct sock_fields *f) {
    bpf_probe_read_kernel(&f->state, 1, sk + OFF_SKC_STATE);
    bpf_probe_read_kernel(&f->family, 2, sk + OFF_SKC_FAMILY);
    bpf_probe_read_kernel(&f->lport, 2, sk + OFF_SKC_NUM);
    bpf_probe_read_kernel(&f->rport, 2, sk + OFF_SKC_DPORT);
    f->rport = (f->rport >> 8) | (f->rport << 8);
    bpf_probe_read_kernel(&f->l4, 4, sk + OFF_SKC_RCV_SADDR);
    bpf_probe_read_kernel(&f->r4, 4, sk + OFF_SKC_DADDR);
    bpf_probe_read_kernel(&f->l6, 16, sk + OFF_SKC_V6_RCV_SADDR);
    bpf_probe_read_kernel(&f->r6, 16, sk + OFF_SKC_V6_DADDR);
}

// BPF_RB_FORCE_WAKEUP once per WAKE_RECORDS records of ring `which`, else no wakeup.
static __always_inline u64 wakeup(int which) {
    u64 *n = unread.lookup(&which);
    u64 queued = n ? __sync_fetch_and_add(n, 1) + 1 : WAKE_RECORDS;
    return queued % WAKE_RECORDS == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(u64 sk, struct conn *c) {
    if (!wanted(c)) {
        bump(STAT_FILTERED);
        return;
    }
    struct closed *e = closed_events.ringbuf_reserve(sizeof(struct closed));
    if (!e) {
        bump(STAT_RINGBUF_FULL);
        return;
    }
    const void *p = (const void *)sk;
    __builtin_memcpy(&e->c, c, sizeof(struct conn));
    e->sk = sk;
    e->bytes_acked = read_u64(p, OFF_BYTES_ACKED);
    e->bytes_received = read_u64(p, OFF_BYTES_RECEIVED);
    e->segs_in = read_u32(p, OFF_SEGS_IN);
    e->segs_out = read_u32(p, OFF_SEGS_OUT);
    e->total_retrans = read_u32(p, OFF_TOTAL_RETRANS);
    e->srtt_us = read_u32(p, OFF_SRTT_US);
    closed_events.ringbuf_submit(e, wakeup(0));
    bump(STAT_CLOSED);
}

// Every state change of a TCP socket: where connections begin, get their owner and end.
static __always_inline void state_change(u64 sk, int oldstate, int newstate, u16 family,
                                         u16 lport, u16 rport, const u8 *l4, const u8 *r4,
                                         const u8 *l6, const u8 *r6) {
    u64 now = bpf_ktime_get_ns();
    struct conn *c = conns.lookup(&sk);
    if (newstate == ST_SYN_SENT || (newstate == ST_SYN_RECV && !c)) {
        struct conn fresh = {};
        fresh.start_ns = now;
        fresh.role = newstate == ST_SYN_SENT ? ROLE_CLIENT : ROLE_SERVER;
        if (newstate == ST_SYN_SENT)
            own(&fresh);     // connect() runs in the connecting process
        set_addrs(&fresh, family, lport, rport, l4, r4, l6, r6);
        if (conns.update(&sk, &fresh))
            bump(STAT_CONNS_FULL);
        return;
    }
    if (!c) {
        if (newstate == ST_CLOSE || oldstate == ST_LISTEN || newstate == ST_LISTEN)
            return;          // nothing to say: a listener, or already reported
        // Under way before the capture: trace it from here, its start unknown.
        struct conn late = {};
        late.role = 0;
        set_addrs(&late, family, lport, rport, l4, r4, l6, r6);
        if (conns.update(&sk, &late))
            bump(STAT_CONNS_FULL);
        c = conns.lookup(&sk);
        if (!c)
            return;
        bump(STAT_NO_START);
    }
    set_addrs(c, family, lport, rport, l4, r4, l6, r6);   // the source port is known now
    if (newstate == ST_ESTABLISHED && !c->established_ns) {
        c->established_ns = now;
        if (oldstate == ST_SYN_SENT)
            c->seen |= SEEN_SYN_ACKED;
    }
    // (Unless it ended in a reset or an error: see user space.) FIN_WAIT2 is not always
    // announced: a close from it is proof enough that our FIN was acked.
    if (newstate == ST_FIN_WAIT2 || (newstate == ST_CLOSE && (oldstate == ST_LAST_ACK ||
                                                              oldstate == ST_CLOSING ||
                                                              oldstate == ST_FIN_WAIT2)))
        c->seen |= SEEN_FIN_ACKED;
    // From FIN_WAIT2, CLOSE comes with the peer's FIN (then TIME_WAIT) or, for a socket
    // closed while data was still going out, as soon as our FIN is acked: the kernel
    // destroys it and a timewait socket takes the peer's FIN. tcp_fin() marks the first.
    if (newstate == ST_CLOSE_WAIT || newstate == ST_CLOSING ||
        (newstate == ST_CLOSE && oldstate == ST_FIN_WAIT2 &&
         (read_u64((const void *)sk, OFF_SK_FLAGS) & (1 << SOCK_DONE))))
        c->seen |= SEEN_FIN_RECEIVED;
    if (newstate == ST_FIN_WAIT1 || newstate == ST_LAST_ACK)
        own(c);              // close() or shutdown(): the owner's own call
    if (newstate == ST_CLOSE && !c->end_ns) {
        c->oldstate = oldstate;
        c->end_ns = now;     // reported when the socket is destroyed (see the top)
        c->sk_err = (s32)read_u32((const void *)sk, OFF_SK_ERR);
    }
}

static __always_inline void destroyed(u64 sk) {
    struct conn *c = conns.lookup(&sk);
    if (!c)
        return;
    if (!c->end_ns)
        c->end_ns = bpf_ktime_get_ns();
    emit(sk, c);
    conns.delete(&sk);
#ifdef WALK
    walk_conns.delete(&sk);
#endif
}

#ifdef REQUESTS
// Requests (HTTP/1.x, HTTP/2, PostgreSQL): the bytes of a connection's sends and receives, from inside
// the socket call (sock:sock_{send,recv}_length, or the kprobes), where the system call's
// own registers say where they are in user memory (received bytes are there already). Only
// connections whose first bytes are an HTTP/1.x request or response, or HTTP/2's preface
// or first SETTINGS frame. HTTP/1.x: each call's length, its first REQ_HEAD bytes (start
// line and headers) and its last REQ_TAIL (the end of a chunked body). HTTP/2: each
// call's frame headers and the payloads of the frames that carry header blocks (HEADERS,
// PUSH_PROMISE, CONTINUATION) and RST_STREAM, in order: the walk over the frames goes on
// across calls (struct walk_dir), so the other payloads (DATA above all) are passed over
// unread. PostgreSQL: the same walk over its messages (5-byte headers), from the client's
// startup packet (after an SSLRequest the server refused; one it accepted is TLS, read
// through the libssl hooks): every header, and the first DB_KEEP bytes of the messages
// that say what ran and how it ended (PG_CLIENT_SKIPPED, PG_SERVER_KEPT). MySQL and
// MariaDB: the same from the server's greeting (4-byte headers; MYSQL_SERVER_KEEP).
// User space parses. A connection whose start was not seen is looked at until a call
// begins like HTTP/1.x, or is a whole PostgreSQL or MySQL query; one that looks like
// HTTP/2 mid-stream is only counted (its
// HPACK state is unknown). A sendfile or splice sends its length only. Not seen:
// io_uring, kTLS.
#define PROTO_UNKNOWN 0
#define PROTO_HTTP1 1
#define PROTO_OTHER 2
#define PROTO_HTTP2 3
#define PROTO_PG 4
#define PROTO_PG_ASKED 5     // an SSLRequest (or GSSENCRequest) sent: its one-byte answer next
#define PROTO_MYSQL 6
#define PROTO_REDIS 7
// struct payload's `walk`: the walk lost its place here, or a call before this one of this
// direction was not sent up (the ring was full); the other direction's walk began again.
#define WALK_LOST 1
#define WALK_RESUMED 2

// x86-64 system calls that move socket data through a user buffer (or an iovec).
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define MAX_IOV 4            // buffers of an iovec copied from

struct payload {             // to user space: one send or receive of an HTTP connection
    u64 sk;
    u64 conn_start_ns;       // with sk, the connection (a socket's address is reused)
    u64 ts_ns;
    u32 tgid;                // the process making the call
    u32 tid;                 // and its thread (CPU samples are linked to requests by it)
    u32 len;                 // bytes the call moved
    u16 head_len;            // of them, in head
    u8 dir;                  // 0 sent, 1 received
    u8 tail_len;
    u8 role;                 // the connection's, and its addresses
    u8 tls;                  // 1: plaintext of an SSL call (TLS); 0: the socket's own bytes
    u16 family;
    u16 lport;
    u16 rport;
    u8 proto;                // PROTO_HTTP1: head and tail; the others: head is the walk's
    u8 walk;                 // WALK_LOST: the walk lost its place here; WALK_RESUMED: see walk
    u8 laddr[16];
    u8 raddr[16];
    char comm[TASK_COMM_LEN]; // the process making the call (it may be gone when read)
    u8 tail[REQ_TAIL];
    u8 head[PAYLOAD_BUF];    // REQ_HEAD or WALK_BYTES used: the rest keeps the verifier's bounds simple
};

BPF_RINGBUF_OUTPUT(payloads, PAYLOAD_PAGES);
// Built here, sent up as long as its head is (most calls carry a few hundred bytes of
// headers, or none: a body's continuation).
BPF_PERCPU_ARRAY(payload_scratch, struct payload, 1);

// Where the call's bytes are: one buffer (*buf, *iov 0) or an iovec array (*iov, its
// *count entries). 0: not a call through user memory (sendfile, splice).
static __always_inline int user_bytes(u64 *buf, u64 *iov, u64 *count) {
    struct pt_regs regs = {};
    struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    if (!r || bpf_probe_read_kernel(&regs, sizeof(regs), r))
        return 0;
    u64 msg[4] = {};         // struct msghdr: name, namelen, iov, iovlen
    switch (regs.orig_ax) {
    case NR_READ: case NR_WRITE: case NR_SENDTO: case NR_RECVFROM:
        *buf = regs.si;
        return 1;
    case NR_READV: case NR_WRITEV:
        *iov = regs.si;
        *count = regs.dx;
        return 1;
    case NR_SENDMSG: case NR_RECVMSG:
        if (bpf_probe_read_user(msg, sizeof(msg), (void *)regs.si))
            return 0;
        *iov = msg[2];
        *count = msg[3];
        return 1;
    }
    return 0;
}

// A request line's method or a status line's "HTTP/1.", in the first 8 bytes.
static __always_inline int looks_http(const u8 *b) {
    u32 w = b[0] | b[1] << 8 | b[2] << 16 | (u32)b[3] << 24;
    switch (w) {
    case 0x20544547:         // "GET "
    case 0x54534f50:         // "POST"
    case 0x20545550:         // "PUT "
    case 0x44414548:         // "HEAD"
    case 0x454c4544:         // "DELE"
    case 0x4954504f:         // "OPTI"
    case 0x43544150:         // "PATC"
    case 0x4e4e4f43:         // "CONN"
    case 0x43415254:         // "TRAC"
        return 1;
    case 0x50545448:         // "HTTP"
        return b[4] == '/' && b[5] == '1' && b[6] == '.';
    }
    return 0;
}

// The call's first bytes into e->head (up to `limit`, a power of two: REQ_HEAD, or for
// Redis REDIS_HEAD; from up to MAX_IOV buffers) and,
// where the end of the call's bytes is known, its last REQ_TAIL into e->tail.
static __always_inline u32 copy_bytes(struct payload *e, u64 buf, u64 iov, u64 count, u32 len,
                                      const u32 limit) {
    e->head_len = 0;
    e->tail_len = 0;
    if (buf) {
        u32 n = len > limit ? limit : len;
        if (!bpf_probe_read_user(e->head, n, (void *)buf))
            e->head_len = n;
        if (len >= REQ_TAIL && !bpf_probe_read_user(e->tail, REQ_TAIL, (void *)(buf + len - REQ_TAIL)))
            e->tail_len = REQ_TAIL;
        return e->head_len;
    }
    u32 off = 0;
    u64 total = 0, last_end = 0;
    u64 v[2] = {};           // struct iovec: base, length
#pragma unroll
    for (int i = 0; i < MAX_IOV; i++) {
        if (i >= count || bpf_probe_read_user(v, sizeof(v), (void *)(iov + 16 * i)))
            break;
        total += v[1];
        last_end = v[1] >= REQ_TAIL ? v[0] + v[1] : 0;
        if (off < limit && v[1]) {
            u32 n = v[1] > limit ? limit : v[1];
            asm volatile("" : "+r"(off));   // (clang would drop the mask below as known)
            off &= limit - 1;                // for the verifier: head + off + n is in bounds
            if (bpf_probe_read_user(e->head + off, n, (void *)v[0]))
                break;
            off += n;
        }
    }
    u32 head = off > len ? len : (off > limit ? limit : off);
    e->head_len = head;
    // All the buffers' bytes moved: the last buffer's end is the call's.
    if (count <= MAX_IOV && total == len && last_end &&
        !bpf_probe_read_user(e->tail, REQ_TAIL, (void *)(last_end - REQ_TAIL)))
        e->tail_len = REQ_TAIL;
    return head;
}

#ifdef H2
#define H2_KEPT ((1 << 1) | (1 << 3) | (1 << 5) | (1 << 9))   // HEADERS, RST_STREAM, PUSH_PROMISE, CONTINUATION
#define H2_PREFACE 24        // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": the client's first bytes

// `sig`, `n` of a call's first bytes: HTTP/2's preface, or (from a server, which may speak
// first) a SETTINGS frame on stream 0. 0: neither; else 1, and the walk begins here.
static __always_inline int h2_start(u64 sk, struct conn *c, u32 dir, const u8 *sig, u32 n) {
    u64 w = 0;
    __builtin_memcpy(&w, sig, 8);
    int preface = n >= 16 && w == 0x5448202a20495250ULL &&           // "PRI * HT"
                  sig[8] == 'T' && sig[9] == 'P' && sig[10] == '/' && sig[11] == '2';
    u32 flen = sig[0] << 16 | sig[1] << 8 | sig[2];
    int settings = n >= 9 && c->role && sig[3] == 4 && sig[4] == 0 && flen % 6 == 0 &&
                   flen <= 96 && !(sig[5] | sig[6] | sig[7] | sig[8]);
    if (!preface && !settings)
        return 0;
    struct walk_conn fresh = {};
    // The client's direction begins with the preface: this one, or the other one when a
    // server's SETTINGS came first.
    u32 client_dir = preface ? dir : (c->role == ROLE_SERVER ? 1 : 0);
    if (preface || client_dir != dir) {   // kept: user space tells it from a frame by it
        if (client_dir)
            fresh.d[1].copy = H2_PREFACE;
        else
            fresh.d[0].copy = H2_PREFACE;
    }
    if (walk_conns.update(&sk, &fresh)) {
        bump(STAT_WALK_FULL);
        return 0;
    }
    return 1;
}

// A frame header's first 9 bytes, seen mid-stream: a known type, a length within the
// default frame size, the reserved bit clear.
static __always_inline int looks_h2_frame(const u8 *sig, u32 n) {
    u32 flen = sig[0] << 16 | sig[1] << 8 | sig[2];
    return n >= 9 && flen <= 16384 && sig[3] <= 9 && !(sig[5] & 0x80);
}

#endif

#ifdef PG
#define PG_PROTOCOL_3 196608  // the startup packet's version: 3.0
#define PG_SSL_REQUEST 80877103
#define PG_GSSENC_REQUEST 80877104
// The messages not kept: the client's CopyData ('d') and passwords ('p'); the server's
// all but CommandComplete, ErrorResponse, ReadyForQuery, EmptyQueryResponse (its rows above all).
#define PG_CLIENT_SKIPPED(t) ((t) == 'd' || (t) == 'p')
#define PG_SERVER_KEPT(t) ((t) == 'C' || (t) == 'E' || (t) == 'Z' || (t) == 'I')
// A Bind's portal and statement names, not its parameters' values (a batch of them in one
// write fits the walk's bytes).
#define PG_BIND_KEEP 64
// Message types are letters (and '1' to '3'); PostgreSQL refuses messages of 1 GiB or more.
#define PG_TYPE(t) (((t) >= 'A' && (t) <= 'Z') || ((t) >= 'a' && (t) <= 'z') || ((t) >= '1' && (t) <= '3'))
#define PG_MAX_MESSAGE (1U << 30)

static __always_inline u32 be32(const u8 *b) {
    return (u32)b[0] << 24 | (u32)b[1] << 16 | (u32)b[2] << 8 | b[3];
}

// `sig`, `n` of a call's first bytes: a startup packet (protocol 3.0: the walk begins
// here, the client's direction this one) or an SSLRequest / GSSENCRequest (*proto
// PROTO_PG_ASKED: the answer decides). On a connection open before the capture (`late`),
// a call that is one whole simple Query, or begins with a Parse: the client's next
// request, when the server has answered all before it. 0: neither (or no room to walk it).
static __always_inline int pg_start(u64 sk, u32 dir, const u8 *sig, u32 n, u32 len, int late,
                                    u8 *proto) {
    if (n < 8)
        return 0;
    u32 size = be32(sig), code = be32(sig + 4);
    int startup = code == PG_PROTOCOL_3 && size >= 8 && size <= 10000;
    if (size == 8 && (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST)) {
        *proto = PROTO_PG_ASKED;
        return 0;
    }
    u32 body = be32(sig + 1);        // a typed message's length
    int request = late && ((sig[0] == 'Q' && body >= 5 && body + 1 == len) ||
                           (sig[0] == 'P' && body >= 8 && body + 1 < len && body < (1 << 20)));
    if (!startup && !request)
        return 0;
    struct walk_conn fresh = {};
    struct walk_dir *d = dir ? &fresh.d[1] : &fresh.d[0];
    d->client = 1;
    if (startup) {
        d->copy = size < DB_KEEP ? size : DB_KEEP;   // the startup packet has no type byte
        d->skip = size - d->copy;
    }
    if (walk_conns.update(&sk, &fresh)) {
        bump(STAT_WALK_FULL);
        return 0;
    }
    *proto = PROTO_PG;
    return 1;
}
#endif

#ifdef MYSQL
// The client's packets kept: commands (sequence 0) and the handshake response (1, its
// password scrambled with a nonce never copied); never a later authentication packet.
// The server's: the first byte of each, and when it is an OK, ERR, EOF or LOCAL INFILE
// header (0x00, 0xff, 0xfe, 0xfb), or the greeting's protocol version (10, sequence 0:
// then its version string), up to MYSQL_SERVER_KEEP bytes: never a row's values.
#define MYSQL_SERVER_KEEP 24
#define MYSQL_HEADED(b, seq) ((b) == 0x00 || (b) == 0xff || (b) == 0xfe || (b) == 0xfb || \
                              ((b) == 10 && (seq) == 0))

// `sig`, `n` of a call's first bytes: the server's greeting (protocol 10; MySQL and MariaDB
// speak first), the client's direction the other one; or on a connection open before the
// capture (`late`), a call that is one whole COM_QUERY. 0: neither (or no room to walk it).
static __always_inline int mysql_start(u64 sk, u32 dir, const u8 *sig, u32 n, u32 len, int late,
                                       u8 *proto) {
    if (n < 8)
        return 0;
    u32 size = sig[0] | sig[1] << 8 | sig[2] << 16;
    int greeting = sig[3] == 0 && sig[4] == 10 && size >= 30 && size <= 1024 && size + 4 <= len &&
                   sig[5] >= '1' && sig[5] <= '9';
    int query = late && sig[3] == 0 && sig[4] == 3 && size + 4 == len;
    if (!greeting && !query)
        return 0;
    struct walk_conn fresh = {};
    if (greeting == (dir == 0))      // the greeting travels from the server to the client
        fresh.d[1].client = 1;
    else
        fresh.d[0].client = 1;
    if (walk_conns.update(&sk, &fresh)) {
        bump(STAT_WALK_FULL);
        return 0;
    }
    *proto = PROTO_MYSQL;
    return 1;
}
#endif

#ifdef REDIS
// A RESP command, the client's first bytes (or, on a connection open before the capture,
// a call's): an array ("*N\r\n", N < 100) whose first element is a bulk string ("$").
// Sent up as HTTP/1.x is, head and length, but REDIS_HEAD bytes of the head.
static __always_inline int looks_redis(const u8 *sig, u32 n) {
    u64 w = 0;               // (one word, not bytes by index: clang would OR an offset into
    __builtin_memcpy(&w, sig, 8);   // the stack pointer, which the verifier refuses)
    u8 digit = (u8)(w >> 16) - '0';
    if (n < 8 || (u8)w != '*' || (u8)(w >> 8) < '1' || (u8)(w >> 8) > '9')
        return 0;
    return ((w >> 16) & 0xffffff) == 0x240a0d ||                    // "*N\r\n$"
           (digit <= 9 && ((w >> 24) & 0xffffff) == 0x240a0d);      // "*NN\r\n$"
}
#endif

#ifdef WALK
// The walk over one call: the call (its socket, direction, bytes), where the walk is in
// them (the buffer, the iovec), and what it has kept. It runs in a program of its own,
// tail-called with the payload record half built (walker_*): checked once by the
// verifier from one entry, not once for each path through the hook that calls it (the
// loop is checked step by step, WALK_STEPS times). So everything it needs is in this map.
struct walk_state {
    u64 sk, buf, iov, count;
    u32 len, dir;
    u32 proto, pad2;         // PROTO_HTTP2, PROTO_PG, PROTO_MYSQL: 9-, 5- or 4-byte headers
    u64 base, left, done;    // the current buffer: where it is, and its bytes not yet walked
    u32 next, out;           // the next buffer of the iovec; bytes kept so far
    u32 hops, pad;           // the walker's calls of itself
};
BPF_PERCPU_ARRAY(walk_states, struct walk_state, 1);
// The walker, one for each program type that calls it (a tail call stays within its type).
BPF_PROG_ARRAY(walker_tp, 1);   // for the tracepoint programs
BPF_PROG_ARRAY(walker_kp, 1);   // for the kprobes and the SSL uprobes

// One step: reads a frame header or a part of one, passes over or copies (a part of) a
// payload within one buffer, or moves to the next buffer. 0: the walk cannot go on.
static __always_inline int walk_step(struct walk_state *w, struct walk_dir *d, struct payload *e,
                                   u64 iov, u64 count, u32 len) {
    // Read afresh from the maps: values clang kept in registers from the last step would
    // carry their ranges, different down each path, and the verifier could not merge them.
    asm volatile("" ::: "memory");
    if (!w->left) {          // the next buffer of the iovec
        u64 v[2] = {};
        u32 next = w->next;
        if (!iov || next >= count || next >= WALK_MAX_IOV ||
            bpf_probe_read_user(v, sizeof(v), (void *)(iov + 16 * (u64)next)))
            return 0;
        w->next = next + 1;
        w->base = v[0];
        w->left = v[1] < len - w->done ? v[1] : len - w->done;   // a receive fills only `len`
        return 1;
    }
    u64 left = w->left;
    u32 n, out = w->out;
    u32 size = w->proto == PROTO_PG ? 5 : w->proto == PROTO_MYSQL ? 4 : 9;   // a header's bytes
    if (d->copy) {
        n = d->copy < left ? d->copy : left;
        if (out + n >= WALK_BYTES)
            return 0;
        asm volatile("" : "+r"(out), "+r"(n));   // (clang would drop the masks as known)
        out &= WALK_BYTES - 1;
        n &= WALK_BYTES - 1;
        if (bpf_probe_read_user(e->head + out, n, (void *)w->base))
            return 0;
        w->out = out + n;
        d->copy -= n;
#ifdef MYSQL
        if (d->peek) {       // (its first byte, copied alone)
            d->peek = 0;
            u8 first = e->head[out & (WALK_BYTES - 1)];
            if (MYSQL_HEADED(first, d->hdr[3])) {
                d->copy = d->skip < MYSQL_SERVER_KEEP - 1 ? d->skip : MYSQL_SERVER_KEEP - 1;
                d->skip -= d->copy;
            }
        }
#endif
    } else if (d->skip) {
        n = d->skip < left ? d->skip : left;
        d->skip -= n;
    } else {                 // (a part of) a message header
        u32 have = d->have;
        n = have < size ? size - have : 0;
        n = n < left ? n : left;
        if (!n || out + n >= WALK_BYTES)
            return 0;
        asm volatile("" : "+r"(out), "+r"(n), "+r"(have));
        out &= WALK_BYTES - 1;
        n &= 15;
        have &= 15;
        if (bpf_probe_read_user(e->head + out, n, (void *)w->base) ||
            bpf_probe_read_user(d->hdr + have, n, (void *)w->base))
            return 0;
        w->out = out + n;
        have += n;
        d->have = have;
        if (have == size) {
            d->have = 0;
#ifdef PG
            if (w->proto == PROTO_PG) {   // type, then a length that counts itself
                u8 type = d->hdr[0];
                u32 body = be32(d->hdr + 1);
                if (body < 4 || body > PG_MAX_MESSAGE || !PG_TYPE(type))
                    return 0;    // not a message: the walk is out of step
                body -= 4;
                int kept = d->client ? !PG_CLIENT_SKIPPED(type) : PG_SERVER_KEPT(type);
                u32 cap = type == 'B' ? PG_BIND_KEEP : DB_KEEP;
                d->copy = kept ? (body < cap ? body : cap) : 0;
                d->skip = body - d->copy;
            }
#endif
#ifdef MYSQL
            if (w->proto == PROTO_MYSQL) {   // a little-endian length, then a sequence number
                u32 body = d->hdr[0] | d->hdr[1] << 8 | d->hdr[2] << 16;
                u8 seq = d->hdr[3];
                u32 keep = d->client ? (seq <= 1 ? DB_KEEP : 0) : (body ? 1 : 0);
                d->copy = body < keep ? body : keep;
                d->skip = body - d->copy;
                d->peek = !d->client && d->copy;
            }
#endif
#ifdef H2
            if (w->proto == PROTO_HTTP2) {
                u32 flen = d->hdr[0] << 16 | d->hdr[1] << 8 | d->hdr[2];
                u8 type = d->hdr[3];
                if (type <= 9 && (H2_KEPT >> type) & 1)
                    d->copy = flen;
                else
                    d->skip = flen;
            }
#endif
        }
    }
    w->base += n;
    w->left = left - n;
    w->done += n;
    return 1;
}

#endif

// What a connection speaks, from a call's first bytes: 1 when it is a protocol sent up
// (*proto set), else 0 (and *proto set for good once its first bytes were seen).
static __always_inline int recognise(u64 sk, struct conn *c, u32 len, u32 dir, u64 buf, u64 iov,
                                     u8 *proto, u8 tls) {
    u8 sig[16] = {};
    u64 first[2] = {buf, len};
    if (!buf && iov && bpf_probe_read_user(first, sizeof(first), (void *)iov))
        first[0] = 0;
    u32 n = first[1] < len ? first[1] : len;
    n = n >= 16 ? 16 : (n >= 9 ? 9 : (n >= 8 ? 8 : 0));
    int err = n == 16 ? bpf_probe_read_user(sig, 16, (void *)first[0]) :
              n == 9 ? bpf_probe_read_user(sig, 9, (void *)first[0]) :
                       bpf_probe_read_user(sig, 8, (void *)first[0]);
    if (first[0] && n && !err) {
#ifdef HTTP1
        if (looks_http(sig)) {
            *proto = PROTO_HTTP1;
            return 1;
        }
#endif
#ifdef H2
        if (h2_start(sk, c, dir, sig, n)) {
            *proto = PROTO_HTTP2;
            return 1;
        }
#endif
#ifdef PG
        if (pg_start(sk, dir, sig, n, len, !c->role, proto))
            return 1;
        if (*proto == PROTO_PG_ASKED)
            return 0;
#endif
#ifdef MYSQL
        if (mysql_start(sk, dir, sig, n, len, !c->role, proto))
            return 1;
#endif
#ifdef REDIS
        if (looks_redis(sig, n)) {
            *proto = PROTO_REDIS;
            return 1;
        }
#endif
#ifdef H2
        // last: a database packet mid-stream can look like a frame header too
        if (!c->role && looks_h2_frame(sig, n)) {
            bump(STAT_H2_LATE);
            *proto = PROTO_OTHER;
            return 0;
        }
#endif
    }
    if (c->role || tls)      // its first bytes, not a protocol parsed: not looked at again
        *proto = PROTO_OTHER;
    return 0;
}

// One call's bytes up to user space, if the connection speaks a protocol parsed (`proto`:
// what its first bytes said, learnt here).
static __always_inline void send_up(void *ctx, int kprobe, u64 sk, struct conn *c, u32 len, u32 dir,
                                    u64 buf, u64 iov, u64 count, u8 *proto, u8 tls) {
#ifdef PG
    if (*proto == PROTO_PG_ASKED) {   // the server's one-byte answer: 'N' (go on in plain
        u8 answer = 0;                // text: the startup packet comes next) or TLS
        u64 first[2] = {buf, len};
        if (!buf && iov && bpf_probe_read_user(first, sizeof(first), (void *)iov))
            first[0] = 0;
        if (first[0] && bpf_probe_read_user(&answer, 1, (void *)first[0]))
            answer = 0;
        *proto = answer == 'N' && len == 1 ? PROTO_UNKNOWN : PROTO_OTHER;
        return;
    }
#endif
    if (*proto == PROTO_UNKNOWN && !recognise(sk, c, len, dir, buf, iov, proto, tls))
        return;
    int zero = 0;
    struct payload *e = payload_scratch.lookup(&zero);
    if (!e)
        return;
    e->sk = sk;
    e->conn_start_ns = c->start_ns;
    e->ts_ns = bpf_ktime_get_ns();
    u64 ids = task_ids();
    e->tgid = ids >> 32;
    e->tid = (u32)ids;
    e->len = len;
    e->dir = dir;
    e->role = c->role;
    e->tls = tls;
    e->family = c->family;
    e->lport = c->lport;
    e->rport = c->rport;
    __builtin_memcpy(e->laddr, c->laddr, 16);
    __builtin_memcpy(e->raddr, c->raddr, 16);
    process_comm(e->comm);
    e->proto = *proto;
    e->walk = 0;
    e->head_len = e->tail_len = 0;
    u32 head = 0;
#ifdef WALK
    struct walk_state *w = walk_states.lookup(&zero);
    if ((*proto == PROTO_HTTP2 || *proto == PROTO_PG || *proto == PROTO_MYSQL) && w) {
        w->proto = *proto;
        w->sk = sk;
        w->buf = buf;
        w->iov = buf ? 0 : iov;
        w->count = count;
        w->len = len;
        w->dir = dir;
        w->base = buf;
        w->left = buf ? len : 0;
        w->done = 0;
        w->next = 0;
        w->out = 0;
        w->hops = 0;
        if (kprobe)
            walker_kp.call(ctx, 0);
        else
            walker_tp.call(ctx, 0);
        bump(STAT_WALK_LOST);  // (the tail call does not return unless it failed)
        struct walk_conn *h = walk_conns.lookup(&sk);
        if (h) {                 // this call was not walked: the walk's place is gone
            struct walk_dir *d = dir ? &h->d[1] : &h->d[0];
            if (!d->lost)
                d->lost = 2;
        }
        return;
    }
#endif
    if (buf || iov)
#ifdef REDIS
        if (*proto == PROTO_REDIS)   // framed in user space: a pipeline's commands, whole
            head = copy_bytes(e, buf, iov, count, len, REDIS_HEAD);
        else
#endif
            head = copy_bytes(e, buf, iov, count, len, REQ_HEAD);
    e->head_len = head;
    asm volatile("" : "+r"(head));
    head &= PAYLOAD_BUF - 1;     // (it is at most PAYLOAD_BUF / 2: this is for the verifier)
    u8 bit = 1 << dir;
    if (c->dropped & bit)        // the call before this one was dropped: user space is told
        e->walk |= WALK_LOST;
    if (payloads.ringbuf_output(e, __builtin_offsetof(struct payload, head) + head, wakeup(1))) {
        bump(STAT_PAYLOAD_DROPPED);
        c->dropped |= bit;
    } else {
        c->dropped &= ~bit;
    }
}

#ifdef WALK
// The call's message headers and kept bytes (H2_KEPT; PG_CLIENT_SKIPPED, PG_SERVER_KEPT)
// into the payload record's head, in stream order, and the record up: up to WALK_STEPS *
// (1 + WALK_HOPS) steps, WALK_MAX_IOV buffers and WALK_BYTES kept bytes. A call that needs
// more loses the walk's place: that direction is then sent as lengths only, for good
// (HTTP/2: its HPACK state is gone), or, PostgreSQL's server, until the client begins a
// call at a message boundary: the server had answered all it was sent (WALK_RESUMED).
static __always_inline int walk(void *ctx, int kprobe) {
    int zero = 0;
    struct payload *e = payload_scratch.lookup(&zero);
    struct walk_state *w = walk_states.lookup(&zero);
    if (!e || !w)
        return 0;
    u64 sk = w->sk;
    u32 len = w->len;
    struct walk_conn *h = walk_conns.lookup(&sk);
    if (!h)
        return 0;
    struct walk_dir *d = w->dir ? &h->d[1] : &h->d[0];
    u64 iov = w->iov, count = w->count;
#ifdef DB
    struct walk_dir *other = w->dir ? &h->d[0] : &h->d[1];
    if (w->proto != PROTO_HTTP2 && !w->hops && d->client && !d->lost && !d->have && !d->copy &&
        !d->skip && other->lost) {
        other->lost = other->have = other->copy = other->skip = 0;
        e->walk |= WALK_RESUMED;
    }
#endif
    if (d->lost == 2) {      // (a call of it was not sent up: user space is told here)
        d->lost = 1;
        e->walk |= WALK_LOST;
    }
    int going = !d->lost;
    // Unrolled (a loop's counter is a value the verifier follows: each turn was checked
    // anew down every path, quadratic), WALK_STEPS at a time, then the program calls itself
    // for the next WALK_STEPS, up to WALK_HOPS times: each step is checked about once, its
    // values all read from maps, and the compiler has little to unroll.
#pragma unroll
    for (int i = 0; i < WALK_STEPS; i++) {
        if (going && w->done < len)
            going = walk_step(w, d, e, iov, count, len);
    }
    if (going && w->done < len && w->hops < WALK_HOPS) {
        w->hops++;
        if (kprobe)
            walker_kp.call(ctx, 0);
        else
            walker_tp.call(ctx, 0);
    }
    if (!d->lost && w->done < len) {
        d->lost = 1;
        e->walk |= WALK_LOST;
        bump(STAT_WALK_LOST);
    }
    u32 head = w->out;
    e->head_len = head;
    asm volatile("" : "+r"(head));
    head &= PAYLOAD_BUF - 1;     // (it is below WALK_BYTES: this is for the verifier)
    if (payloads.ringbuf_output(e, __builtin_offsetof(struct payload, head) + head, wakeup(1))) {
        bump(STAT_PAYLOAD_DROPPED);
        if (!d->lost)        // what it walked never reached user space
            d->lost = 2;
    }
    return 0;
}

int walk_tp(void *ctx) { return walk(ctx, 0); }
int walk_kp(struct pt_regs *ctx) { return walk(ctx, 1); }
#endif

#ifdef TLS
// TLS: uprobes on OpenSSL's SSL_read/SSL_write (and the _ex forms, all CPython uses). At
// the entry the call's buffer is kept per thread; the socket call it makes inside (if it
// makes one: a read may be served from what OpenSSL buffered) names its socket, kept per
// SSL object for the calls that make none; at the return the plaintext goes up as the
// connection's. The socket's own bytes under an SSL call are ciphertext: never sent up.
struct ssl_call {
    u64 ssl;
    u64 buf;
    u64 count_at;            // _ex: where the byte count is written (else: the return value)
    u64 sk;                  // the socket its nested send or receive used (0: none)
    u32 dir;
    u32 pad;
};
BPF_HASH(ssl_calls, u32, struct ssl_call, 16384);      // thread → its SSL call in progress
BPF_TABLE("lru_hash", u64, u64, ssl_sockets, 65536);   // SSL * → its socket

static __always_inline int ssl_enter(struct pt_regs *ctx, u32 dir, int ex) {
    u32 tgid = task_ids() >> 32, tid = bpf_get_current_pid_tgid();
    if (!traced(tgid))
        return 0;
    struct ssl_call call = {.ssl = PT_REGS_PARM1(ctx), .buf = PT_REGS_PARM2(ctx), .dir = dir};
    if (ex)
        call.count_at = PT_REGS_PARM4(ctx);
    ssl_calls.update(&tid, &call);
    return 0;
}

int ssl_write_enter(struct pt_regs *ctx) { return ssl_enter(ctx, 0, 0); }
int ssl_read_enter(struct pt_regs *ctx) { return ssl_enter(ctx, 1, 0); }
int ssl_write_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, 0, 1); }
int ssl_read_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, 1, 1); }

int ssl_return(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    struct ssl_call *p = ssl_calls.lookup(&tid);
    if (!p)
        return 0;
    struct ssl_call call = *p;
    ssl_calls.delete(&tid);
    int ret = (int)PT_REGS_RC(ctx);  // SSL_read's -1 is an int
    u64 n = ret;
    if (call.count_at) {
        n = 0;
        if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)call.count_at))
            return 0;
    }
    if (ret <= 0 || !n)
        return 0;
    u64 sk = call.sk;
    if (sk) {
        ssl_sockets.update(&call.ssl, &sk);
    } else {
        u64 *known = ssl_sockets.lookup(&call.ssl);
        if (!known) {
            bump(STAT_TLS_NO_SOCKET);
            return 0;
        }
        sk = *known;
    }
    struct conn *c = conns.lookup(&sk);
    if (!c || !ports_wanted(c))
        return 0;
    send_up(ctx, 1, sk, c, n, call.dir, call.buf, 0, 0, &c->tls_proto, 1);
    return 0;
}
#endif

static __always_inline void capture(void *ctx, u64 sk, struct conn *c, u32 len, u32 dir) {
#ifdef TLS
    u32 tid = bpf_get_current_pid_tgid();
    struct ssl_call *call = ssl_calls.lookup(&tid);
    if (call) {              // ciphertext: its plaintext goes up at the SSL call's return
        call->sk = sk;
        c->proto = PROTO_OTHER;
        return;
    }
#endif
    if (c->proto == PROTO_OTHER)
        return;
    if (!traced(task_ids() >> 32) || !ports_wanted(c))
        return;              // (nor counted: a loss is only ever of what was asked for)
    u64 buf = 0, iov = 0, count = 0;
    if (!user_bytes(&buf, &iov, &count))
        buf = iov = 0;       // sendfile, splice: its length only
#ifdef HOOKS_TRACEPOINTS
    send_up(ctx, 0, sk, c, len, dir, buf, iov, count, &c->proto, 0);
#else
    send_up(ctx, 1, sk, c, len, dir, buf, iov, count, &c->proto, 0);
#endif
}
#endif

// A connection under way before the capture, first seen moving bytes: traced from here, its
// start unknown (role 0), as one first seen changing state is; its requests are picked up
// where a message begins.
static __always_inline struct conn *adopt(u64 sk) {
    struct sock_fields f = {};
    read_sock((const char *)sk, &f);
    if (f.state != ST_ESTABLISHED)
        return 0;
    struct conn late = {};
    set_addrs(&late, f.family, f.lport, f.rport, f.l4, f.r4, f.l6, f.r6);
    if (!traced(task_ids() >> 32) || !ports_wanted(&late))
        return 0;            // never reported: not kept either
    if (conns.insert(&sk, &late)) {  // (or another CPU just did)
        struct conn *c = conns.lookup(&sk);
        if (!c)
            bump(STAT_CONNS_FULL);
        return c;
    }
    bump(STAT_NO_START);
    return conns.lookup(&sk);
}

static __always_inline void io(void *ctx, u64 sk, u16 family, u16 protocol, int ret, u32 dir) {
    if (ret <= 0)
        return;
    if (protocol == PROTO_TCP) {
        struct conn *c = conns.lookup(&sk);
        if (!c)
            c = adopt(sk);
        if (!c)
            return;
        own(c);
        if (dir)
            c->rx_bytes += ret;
        else
            c->tx_bytes += ret;
#ifdef REQUESTS
        capture(ctx, sk, c, ret, dir);
#endif
        return;
    }
#ifdef UDP
    if (protocol != PROTO_UDP)
        return;
    struct udp_key key = {};
    key.tgid = task_ids() >> 32;
    if (!traced(key.tgid))
        return;
    process_comm(key.comm);
#ifdef FILTER_COMM_LO
    if (!comm_wanted(key.comm))
        return;
#endif
    key.family = family;
    key.dir = dir;
    const void *p = (const void *)sk;
    key.rport = (u16)read_u32(p, OFF_SKC_DPORT);   // network order; 0 when not connected
    if (family == AF_INET6_)
        bpf_probe_read_kernel(&key.raddr, 16, (const char *)p + OFF_SKC_V6_DADDR);
    else
        bpf_probe_read_kernel(&key.raddr, 4, (const char *)p + OFF_SKC_DADDR);
    struct udp_val zero = {};
    struct udp_val *v = udp.lookup_or_try_init(&key, &zero);
    if (!v) {
        bump(STAT_UDP_FULL);
        return;
    }
    __sync_fetch_and_add(&v->bytes, ret);
    __sync_fetch_and_add(&v->datagrams, 1);
#endif
}

static __always_inline void retransmitted(u64 sk) {
    struct conn *c = conns.lookup(&sk);
    if (c)
        __sync_fetch_and_add(&c->retrans, 1);
}

static __always_inline void reset(u64 sk, int sent) {
    struct conn *c = conns.lookup(&sk);
    if (!c)
        return;
    if (sent)
        c->rst_sent = 1;
    else
        c->rst_received = 1;
}

#ifdef RTT
static __always_inline void rtt_sample(u32 srtt_us) {
    int bucket = 0;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        if ((srtt_us >> i) > 1)
            bucket = i + 1;
    }
    u64 *v = rtt_hist.lookup(&bucket);
    if (v)
        __sync_fetch_and_add(v, 1);
}
#endif


#ifdef HOOKS_TRACEPOINTS
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != PROTO_TCP)
        return 0;
    // Copied to the stack: the verifier refuses reads through a moved context pointer.
    u8 l4[4], r4[4], l6[16], r6[16];
    bpf_probe_read_kernel(&l4, sizeof(l4), args->saddr);
    bpf_probe_read_kernel(&r4, sizeof(r4), args->daddr);
    bpf_probe_read_kernel(&l6, sizeof(l6), args->saddr_v6);
    bpf_probe_read_kernel(&r6, sizeof(r6), args->daddr_v6);
    state_change((u64)args->skaddr, args->oldstate, args->newstate, args->family,
                 args->sport, args->dport, l4, r4, l6, r6);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_send_length) {
    io(args, (u64)args->sk, args->family, args->protocol, args->ret, 0);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length) {
    io(args, (u64)args->sk, args->family, args->protocol, args->ret, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
#ifdef RETRANS_ERR
    if (args->err)
        return 0;            // not sent: no retransmission happened
#endif
    retransmitted((u64)args->skaddr);
    return 0;
}

// Raw: the formatted tracepoint's `enum sk_rst_reason` is unknown to older headers; the
// socket has been the first argument in every kernel that has this tracepoint.
RAW_TRACEPOINT_PROBE(tcp_send_reset) {
    u64 sk = ctx->args[0];
    if (sk)
        reset(sk, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset) {
    reset((u64)args->skaddr, 0);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_destroy_sock) {
    destroyed((u64)args->skaddr);
    return 0;
}

#ifdef RTT
TRACEPOINT_PROBE(tcp, tcp_probe) {
    rtt_sample(args->srtt);  // µs (already unscaled by the tracepoint)
    return 0;
}
#endif
#endif  // HOOKS_TRACEPOINTS

#ifdef HOOKS_KPROBES
// Kernel-internal sockets read at BTF offsets: never through the (mismatched) headers.
static __always_inline void sk_state_change(void *sk, int newstate) {
    struct sock_fields f = {};
    read_sock(sk, &f);
    state_change((u64)sk, f.state, newstate, f.family, f.lport, f.rport, f.l4, f.r4, f.l6, f.r6);
}

int kp_tcp_set_state(struct pt_regs *ctx) {
    sk_state_change((void *)PT_REGS_PARM1(ctx), (int)PT_REGS_PARM2(ctx));
    return 0;
}

int kp_tcp_sendmsg(struct pt_regs *ctx) {
    io(ctx, (u64)PT_REGS_PARM1(ctx), 0, PROTO_TCP, (int)PT_REGS_PARM3(ctx), 0);
    return 0;
}

int kp_tcp_cleanup_rbuf(struct pt_regs *ctx) {
    io(ctx, (u64)PT_REGS_PARM1(ctx), 0, PROTO_TCP, (int)PT_REGS_PARM2(ctx), 1);
    return 0;
}

int kretp_inet_csk_accept(struct pt_regs *ctx) {
    u64 sk = PT_REGS_RC(ctx);
    struct conn *c = sk ? conns.lookup(&sk) : 0;
    if (c)
        own(c);              // accept() returns in the accepting process
    return 0;
}

int kp_tcp_retransmit_skb(struct pt_regs *ctx) {
    retransmitted((u64)PT_REGS_PARM1(ctx));
    return 0;
}

int kp_tcp_send_active_reset(struct pt_regs *ctx) {
    reset((u64)PT_REGS_PARM1(ctx), 1);
    return 0;
}

int kp_tcp_v4_destroy_sock(struct pt_regs *ctx) {   // tcp_v6_destroy_sock calls it too
    destroyed((u64)PT_REGS_PARM1(ctx));
    return 0;
}

int kp_tcp_reset(struct pt_regs *ctx) {
    reset((u64)PT_REGS_PARM1(ctx), 0);
    return 0;
}
#endif  // HOOKS_KPROBES
