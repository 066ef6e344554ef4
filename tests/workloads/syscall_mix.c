// A known syscall mix for the syscalls tests: after a byte arrives on stdin it makes
// N getppid, M openat that fail with ENOENT and K nanosleep of 1 ms, then prints the
// median and total nanosleep durations it measured itself. With FLOOD=1 a second thread
// calls getppid as fast as it can while the sleeps run (to push the syscall rate over
// the latency budget) and prints how many calls it made.  Usage: syscall_mix N M K [FLOOD]
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);   /* vDSO: no syscall */
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static atomic_int sleeping_done;

static void *flood(void *calls) {
    long n = 0;
    while (!atomic_load_explicit(&sleeping_done, memory_order_relaxed)) {
        syscall(SYS_getppid);
        n++;
    }
    *(long *)calls = n;
    return NULL;
}

int main(int argc, char **argv) {
    long n = atol(argv[1]), m = atol(argv[2]), k = atol(argv[3]);
    int flooding = argc > 4 && atoi(argv[4]);
    char go;
    if (read(0, &go, 1) != 1)
        return 1;
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    for (long i = 0; i < m; i++)
        syscall(SYS_openat, AT_FDCWD, "/nonexistent/ebpf-otlp-test", O_RDONLY);
    pthread_t flooder;
    long flood_calls = 0;
    if (flooding && pthread_create(&flooder, NULL, flood, &flood_calls) != 0)
        return 1;
    long long *took = malloc(sizeof(long long) * k), total = 0;
    struct timespec ms = {0, 1000000};
    for (long i = 0; i < k; i++) {
        long long t0 = now_ns();
        syscall(SYS_nanosleep, &ms, NULL);
        took[i] = now_ns() - t0;
        total += took[i];
    }
    if (flooding) {
        atomic_store(&sleeping_done, 1);
        pthread_join(flooder, NULL);
        printf("flood_getppid_calls %ld\n", flood_calls);
    }
    qsort(took, k, sizeof(long long), cmp);
    printf("nanosleep_median_ns %lld\nnanosleep_total_ns %lld\n", took[k / 2], total);
    fflush(stdout);
    return 0;
}
