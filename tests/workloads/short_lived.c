// Burns CPU in a known function for a short while, then exits: the profiler must
// still name its functions after the process (and even its binary) is gone.
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

__attribute__((noinline)) void short_lived_burner(double seconds) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double end = t.tv_sec + t.tv_nsec / 1e9 + seconds;
    for (;;) {
        for (long i = 0; i < 100000; i++)
            sink += i;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec + t.tv_nsec / 1e9 > end)
            break;
    }
}

int main(int argc, char **argv) {
    short_lived_burner(argc > 1 ? atof(argv[1]) : 1.0);
    return 0;
}
