/* main -> mid -> leaf_a / leaf_b, leaf_a doing 3x leaf_b's work. Built -O2
 * -fomit-frame-pointer by the unwinding tests: only the unwind tables know the callers.
 * Runs for argv[1] seconds (default 10). */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long leaf_a(unsigned long n) {
    unsigned long x = sink;
    for (unsigned long i = 0; i < 3 * n; i++)
        x = x * 2654435761u + (i ^ (x >> 7));
    return x;
}

__attribute__((noinline)) unsigned long leaf_b(unsigned long n) {
    unsigned long x = sink + 1;
    for (unsigned long i = 0; i < n; i++)
        x = x * 40503u + (i ^ (x >> 5));
    return x;
}

/* A frame of its own (saved registers, locals): the CFA moves as it runs. */
__attribute__((noinline)) unsigned long mid(unsigned long n) {
    volatile unsigned long parts[8];
    for (int i = 0; i < 8; i++)
        parts[i] = n + i;
    unsigned long a = leaf_a(n);
    unsigned long b = leaf_b(parts[3] - 3);
    sink = a ^ b;
    return a + b + parts[7];
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    double end = now() + seconds;
    unsigned long total = 0;
    while (now() < end)
        total += mid(200000);
    return total == 42;
}
