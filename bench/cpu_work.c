// A fixed amount of CPU-bound work (hashing in a call tree); prints its own wall and CPU
// seconds, so the benchmark compares the same work with and without a profiler.
#include <stdint.h>
#include <stdlib.h>

#include "self_timed.h"

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

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 2000;
    SELF_TIMED(for (long r = 0; r < rounds; r++) block(200000));
    return 0;
}
