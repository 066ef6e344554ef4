// A tight syscall loop: N getppid calls; prints its own wall and CPU seconds.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double secs(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    double w0 = secs(CLOCK_MONOTONIC), c0 = secs(CLOCK_PROCESS_CPUTIME_ID);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    printf("%.6f %.6f\n", secs(CLOCK_MONOTONIC) - w0, secs(CLOCK_PROCESS_CPUTIME_ID) - c0);
    return 0;
}
