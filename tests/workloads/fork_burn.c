// Launch-mode workload: burns in parent_burn for ~1 s, forks a child that burns in
// child_burn for ~1 s, waits for it, prints both processes' CPU seconds as they measured
// them, and exits 3: the profiler must follow the fork and return the exit status.
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "burn.h"

static double cpu_seconds(int who) {
    struct rusage r;
    getrusage(who, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

__attribute__((noinline)) void parent_burn(double seconds) { BURN_FOR(seconds); }

__attribute__((noinline)) void child_burn(double seconds) { BURN_FOR(seconds); }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    parent_burn(seconds);
    pid_t child = fork();
    if (child == 0) {
        child_burn(seconds);
        return 0;
    }
    waitpid(child, NULL, 0);
    printf("parent_cpu=%.6f child_cpu=%.6f\n", cpu_seconds(RUSAGE_SELF), cpu_seconds(RUSAGE_CHILDREN));
    return 3;
}
