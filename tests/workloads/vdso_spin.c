// Spins on clock_gettime(CLOCK_MONOTONIC) for argv[1] seconds: the vDSO answers without a
// system call, so nearly every CPU sample lands in the vDSO's __vdso_clock_gettime.
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) static void read_the_clock(struct timespec *t) {
    for (int i = 0; i < 1000; i++)
        clock_gettime(CLOCK_MONOTONIC, t);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do
        read_the_clock(&now);
    while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    return 0;
}
