// The allocator's other entry points, with known answers; each function keeps n blocks:
// grow() mallocs 100 bytes and reallocs them to 100,000; aligned() posix_memaligns 10,000;
// fresh() reallocs NULL to 30,000 and arrays() reallocarrays NULL to 100 x 400 (glibc's
// realloc(NULL, n) jumps to malloc, reallocarray to realloc: one allocation each, not two).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile *kept;
void *volatile nothing;      // realloc(NULL, n) that the compiler cannot turn into malloc(n)

__attribute__((noinline)) void grow(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(100);
        p = realloc(p, 100000);
        memset(p, 1, 16);
        kept[i] = p;
    }
}

__attribute__((noinline)) void aligned(int n) {
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 10000) == 0)
            kept[n + i] = p;
    }
}

__attribute__((noinline)) void fresh(int n) {
    for (int i = 0; i < n; i++)
        kept[2 * n + i] = realloc(nothing, 30000);
}

__attribute__((noinline)) void arrays(int n) {
    for (int i = 0; i < n; i++)
        kept[3 * n + i] = reallocarray(nothing, 100, 400);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    kept = calloc(4 * n, sizeof(void *));
    grow(n);
    aligned(n);
    fresh(n);
    arrays(n);
    printf("grow_bytes %d\naligned_bytes %d\nfresh_bytes %d\narrays_bytes %d\n",
           n * 100000, n * 10000, n * 30000, n * 40000);
    fflush(stdout);
    usleep(1500000);
    return 0;
}
