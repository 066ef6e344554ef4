// Shared by the test workloads that burn CPU in a function whose name the tests look for:
// BURN_FOR(seconds) spins in the calling function's own frame, so samples land there.
#include <time.h>

static volatile unsigned long sink;

static double monotonic_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);   /* vDSO: no syscall */
    return t.tv_sec + t.tv_nsec / 1e9;
}

#define BURN_FOR(seconds)                                          \
    do {                                                           \
        double end_ = monotonic_seconds() + (seconds);             \
        while (monotonic_seconds() < end_)                         \
            for (long i_ = 0; i_ < 100000; i_++)                   \
                sink += i_;                                        \
    } while (0)
