// Heap workload with a known peak and nothing in use at the end, as an interpreter that
// tears its objects down before it exits: hold() allocates MIB MiB in 4 KiB blocks and
// keeps them HOLD seconds, release() frees them all, then it idles IDLE seconds and exits.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096

static void *blocks[1 << 18];   // not itself allocated: hold() owns all it allocates

__attribute__((noinline)) void hold(long n) {
    for (long i = 0; i < n; i++) {
        blocks[i] = malloc(BLOCK);
        memset(blocks[i], 1, 16);
    }
}

__attribute__((noinline)) void release(long n) {
    for (long i = 0; i < n; i++)
        free(blocks[i]);
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 20;
    double hold_s = argc > 2 ? atof(argv[2]) : 2.0;
    double idle_s = argc > 3 ? atof(argv[3]) : 1.0;
    long n = mib * (1L << 20) / BLOCK;
    if (n > (long)(sizeof(blocks) / sizeof(blocks[0])))
        return 2;
    hold(n);
    usleep((useconds_t)(hold_s * 1e6));   // the tracer reads the high-water mark meanwhile
    release(n);
    usleep((useconds_t)(idle_s * 1e6));
    return 0;
}
