// A known syscall mix for the syscalls tests: after a byte arrives on stdin it makes
// N getppid, M openat that fail with ENOENT and K nanosleep of 1 ms, then prints the
// median nanosleep duration it measured itself.  Usage: syscall_mix N M K
#define _GNU_SOURCE
#include <fcntl.h>
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

int main(int argc, char **argv) {
    long n = atol(argv[1]), m = atol(argv[2]), k = atol(argv[3]);
    char go;
    if (read(0, &go, 1) != 1)
        return 1;
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    for (long i = 0; i < m; i++)
        syscall(SYS_openat, AT_FDCWD, "/nonexistent/ebpf-otlp-test", O_RDONLY);
    long long *took = malloc(sizeof(long long) * k);
    struct timespec ms = {0, 1000000};
    for (long i = 0; i < k; i++) {
        long long t0 = now_ns();
        syscall(SYS_nanosleep, &ms, NULL);
        took[i] = now_ns() - t0;
    }
    qsort(took, k, sizeof(long long), cmp);
    printf("nanosleep_median_ns %lld\n", took[k / 2]);
    fflush(stdout);
    return 0;
}
