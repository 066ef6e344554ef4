/* Sorts again and again with a comparator that burns CPU, so samples land in the
 * comparator under libc's qsort internals. Runs for argv[1] seconds (default 10). */
#include <stdlib.h>
#include <time.h>

#define N 4096
static int values[N];

__attribute__((noinline)) int busy_compare(const void *a, const void *b) {
    volatile unsigned spin = 0;
    for (int i = 0; i < 200; i++)
        spin += i;
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned seed = 1;
    do {
        for (int i = 0; i < N; i++)
            values[i] = (int)(seed = seed * 1103515245u + 12345u);
        qsort(values, N, sizeof values[0], busy_compare);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return values[0] == 42;
}
