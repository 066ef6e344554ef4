// realloc and posix_memalign with known answers: grow() reallocs N blocks from 100 bytes to
// 100,000 and keeps them; aligned() keeps N posix_memalign blocks of 10,000 bytes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *kept[20000];

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
            kept[10000 + i] = p;
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    grow(n);
    aligned(n);
    printf("grow_bytes %d\naligned_bytes %d\n", n * 100000, n * 10000);
    fflush(stdout);
    usleep(1500000);
    return 0;
}
