// Loopback TCP load for bench/net_overhead.py: a server and its clients in one process.
//
//   conn_storm storm PORT SECONDS CLIENTS SERVERS [RATE]
//     CLIENTS threads make short connections to 127.0.0.1:PORT for SECONDS, as fast as
//     they can (or RATE connections/s in all, paced): connect, send 16 bytes, read the
//     16-byte reply, read the server's close, close. SERVERS threads accept, read 16
//     bytes, write 16, close (the server closes first, so its side holds TIME_WAIT and
//     the clients' ephemeral ports are free again at once).
//     Prints "CONNECTIONS FAILED WALL_S CPU_S" (CPU: every thread of the process).
//   conn_storm bulk PORT BYTES
//     One connection: a thread writes BYTES in 128 KiB writes, another reads them.
//     Prints "BYTES WALL_S CPU_S".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 16
#define CHUNK (128 * 1024)

static double secs(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in addr;
static int listener;
static double deadline, per_thread_interval;
static atomic_long made, failed;
static atomic_int stopping;

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 4096)) {
        perror("conn_storm: listen");
        exit(1);
    }
    return fd;
}

static int read_full(int fd, char *buf, int n) {
    int got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    return 0;
}

static void *server(void *unused) {
    char buf[MSG];
    while (!stopping) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) {
            if (stopping)
                break;
            continue;
        }
        if (read_full(fd, buf, MSG) == 0)
            (void)!write(fd, buf, MSG);
        close(fd);
    }
    return unused;
}

static int one_connection(void) {
    char buf[MSG] = "0123456789abcdef";
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = -1;
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 && write(fd, buf, MSG) == MSG &&
        read_full(fd, buf, MSG) == 0 && read(fd, buf, 1) == 0)
        ok = 0;
    close(fd);
    return ok;
}

static void *client(void *unused) {
    double next = secs(CLOCK_MONOTONIC);
    while (secs(CLOCK_MONOTONIC) < deadline) {
        if (per_thread_interval > 0) {
            next += per_thread_interval;
            double now = secs(CLOCK_MONOTONIC);
            if (next > now) {
                struct timespec t = {(time_t)(next - now), (long)((next - now - (time_t)(next - now)) * 1e9)};
                nanosleep(&t, NULL);
            }
        }
        if (one_connection() == 0)
            made++;
        else
            failed++;
    }
    return unused;
}

static int storm(int port, double seconds, int clients, int servers, double rate) {
    listener = listen_on(port);
    pthread_t st[servers], ct[clients];
    for (int i = 0; i < servers; i++)
        pthread_create(&st[i], NULL, server, NULL);
    per_thread_interval = rate > 0 ? clients / rate : 0;
    double w0 = secs(CLOCK_MONOTONIC), c0 = secs(CLOCK_PROCESS_CPUTIME_ID);
    deadline = w0 + seconds;
    for (int i = 0; i < clients; i++)
        pthread_create(&ct[i], NULL, client, NULL);
    for (int i = 0; i < clients; i++)
        pthread_join(ct[i], NULL);
    double wall = secs(CLOCK_MONOTONIC) - w0, cpu = secs(CLOCK_PROCESS_CPUTIME_ID) - c0;
    stopping = 1;
    shutdown(listener, SHUT_RDWR);   // wakes the accepting threads
    for (int i = 0; i < servers; i++)
        pthread_join(st[i], NULL);
    printf("%ld %ld %.6f %.6f\n", (long)made, (long)failed, wall, cpu);
    return 0;
}

static long long bulk_bytes;
static int bulk_fd;

static void *bulk_reader(void *unused) {
    static char buf[CHUNK];
    int fd = accept(listener, NULL, NULL);
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
    return unused;
}

static int bulk(int port, long long bytes) {
    static char buf[CHUNK];
    memset(buf, 'x', sizeof(buf));
    listener = listen_on(port);
    pthread_t t;
    pthread_create(&t, NULL, bulk_reader, NULL);
    bulk_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(bulk_fd, (struct sockaddr *)&addr, sizeof(addr))) {
        perror("conn_storm: connect");
        return 1;
    }
    double w0 = secs(CLOCK_MONOTONIC), c0 = secs(CLOCK_PROCESS_CPUTIME_ID);
    for (bulk_bytes = 0; bulk_bytes < bytes;) {
        ssize_t w = write(bulk_fd, buf, sizeof(buf));
        if (w <= 0) {
            perror("conn_storm: write");
            return 1;
        }
        bulk_bytes += w;
    }
    close(bulk_fd);
    pthread_join(t, NULL);           // every byte read
    double wall = secs(CLOCK_MONOTONIC) - w0, cpu = secs(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("%lld %.6f %.6f\n", bulk_bytes, wall, cpu);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[1], "storm"))
        return storm(atoi(argv[2]), atof(argv[3]), atoi(argv[4]), atoi(argv[5]),
                     argc > 6 ? atof(argv[6]) : 0);
    if (argc == 4 && !strcmp(argv[1], "bulk"))
        return bulk(atoi(argv[2]), atoll(argv[3]));
    fprintf(stderr, "usage: conn_storm storm PORT SECONDS CLIENTS SERVERS [RATE]\n"
                    "       conn_storm bulk PORT BYTES\n");
    return 2;
}
