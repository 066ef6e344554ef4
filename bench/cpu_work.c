// A fixed amount of CPU-bound work (hashing in a call tree); prints its own wall and CPU
// seconds, so the benchmark compares the same work with and without a profiler.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile uint64_t sink;

__attribute__((noinline)) static uint64_t mix(uint64_t h, uint64_t i) {
    return (h ^ i) * 1099511628211ULL;
}

__attribute__((noinline)) static void block(uint64_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (uint64_t i = 0; i < n; i++)
        h = mix(h, i);
    sink += h;
}

static double secs(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 2000;
    double w0 = secs(CLOCK_MONOTONIC), c0 = secs(CLOCK_PROCESS_CPUTIME_ID);
    for (long r = 0; r < rounds; r++)
        block(200000);
    printf("%.6f %.6f\n", secs(CLOCK_MONOTONIC) - w0, secs(CLOCK_PROCESS_CPUTIME_ID) - c0);
    return 0;
}
