// Known CPU split for the profiler tests: main -> run -> hot_a (3 parts) / hot_b (1 part).
// Build with -O0 -fno-omit-frame-pointer so every frame keeps its frame pointer.
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

__attribute__((noinline)) void hot_a(void) {
    for (long i = 0; i < 300000; i++)
        sink += i;
}

__attribute__((noinline)) void hot_b(void) {
    for (long i = 0; i < 100000; i++)
        sink += i;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) void run(double seconds) {
    double end = now() + seconds;
    while (now() < end) {
        hot_a();
        hot_b();
    }
}

int main(int argc, char **argv) {
    run(argc > 1 ? atof(argv[1]) : 5.0);
    return 0;
}
