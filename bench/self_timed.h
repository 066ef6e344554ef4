// What the bench workloads share: they time themselves and print "WALL_S CPU_S", so the
// benchmark compares the same work with and without a tool (bench/common.py run_work).
#include <stdio.h>
#include <time.h>

static double secs(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

#define SELF_TIMED(work)                                                                 \
    do {                                                                                 \
        double w0_ = secs(CLOCK_MONOTONIC), c0_ = secs(CLOCK_PROCESS_CPUTIME_ID);          \
        work;                                                                            \
        printf("%.6f %.6f\n", secs(CLOCK_MONOTONIC) - w0_,                               \
               secs(CLOCK_PROCESS_CPUTIME_ID) - c0_);                                    \
    } while (0)
