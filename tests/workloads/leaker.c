// Heap workload with known answers: leak() keeps LEAKS blocks of LEAK_SIZE bytes (never
// freed), churn() allocates and frees CHURN blocks of 64 bytes; prints what it did.
// Waits for a byte on stdin first (unless given "go"), so a tracer can attach.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *kept[100000];

__attribute__((noinline)) void leak(int n, size_t size) {
    for (int i = 0; i < n; i++) {
        kept[i] = malloc(size);
        memset(kept[i], 1, 16);
    }
}

__attribute__((noinline)) void churn(long n) {
    for (long i = 0; i < n; i++) {
        volatile char *p = malloc(64);
        p[0] = 1;
        free((void *)p);
    }
}

int main(int argc, char **argv) {
    int leaks = argc > 1 ? atoi(argv[1]) : 2000;
    size_t size = argc > 2 ? atol(argv[2]) : 4096;
    long churns = argc > 3 ? atol(argv[3]) : 200000;
    double hold = argc > 4 ? atof(argv[4]) : 2.0;
    char c;
    if (!(argc > 5 && strcmp(argv[5], "go") == 0) && read(0, &c, 1) != 1)
        return 1;
    leak(leaks, size);
    churn(churns);
    printf("leaked_bytes %zu\nleaked_objects %d\nchurn_bytes %ld\nchurn_objects %ld\n",
           leaks * size, leaks, churns * 64, churns);
    fflush(stdout);
    usleep((useconds_t)(hold * 1e6));   // the leaks age past --min-age while the tracer watches
    return 0;
}
