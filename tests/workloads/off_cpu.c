// Known off-CPU time for the off-CPU profile tests: after a byte arrives on stdin, one
// thread naps (nanosleep of 2 ms, over and over) in napper() for SECONDS while the main
// thread burns CPU in spinner() as long; it prints the time napper measured asleep.
// Usage: off_cpu SECONDS
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "burn.h"

static double seconds;
static long long asleep_ns;

__attribute__((noinline)) void napper(void) {
    struct timespec nap = {0, 2000000};
    double end = monotonic_seconds() + seconds;
    while (monotonic_seconds() < end) {
        double t0 = monotonic_seconds();
        nanosleep(&nap, NULL);
        asleep_ns += (long long)((monotonic_seconds() - t0) * 1e9);
    }
}

static void *napper_thread(void *unused) {
    napper();
    return unused;
}

__attribute__((noinline)) void spinner(void) {
    BURN_FOR(seconds);
}

int main(int argc, char **argv) {
    char go;
    if (argc < 2 || read(0, &go, 1) != 1)
        return 2;
    seconds = atof(argv[1]);
    pthread_t t;
    if (pthread_create(&t, NULL, napper_thread, NULL) != 0)
        return 1;
    spinner();
    pthread_join(t, NULL);
    printf("napper_asleep_ns %lld\n", asleep_ns);
    return 0;
}
