// A tight allocator loop: N × (malloc(64); free), the cost a heap tracer adds to each
// pair. Waits for a byte on stdin first (unless given "go"), so a tracer can attach to
// the waiting process; prints its own wall and CPU seconds for the loop alone.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "self_timed.h"

__attribute__((noinline)) static void pairs(long n) {
    for (long i = 0; i < n; i++) {
        volatile char *p = malloc(64);   // volatile: the compiler may not drop the pair
        p[0] = 1;
        free((void *)p);
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    char c;
    if (!(argc > 2 && strcmp(argv[2], "go") == 0) && read(0, &c, 1) != 1)
        return 1;
    SELF_TIMED(pairs(n));
    return 0;
}
