/* Anonymous mappings with known answers: map_some() keeps 32 x 1 MiB mapped,
 * map_and_unmap() maps and unmaps 200 x 1 MiB, big_mallocs() mallocs and frees 200 x 1 MiB
 * (glibc mmaps each: counted once, at malloc). Waits for a byte on stdin first. */
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>
static void *keep[64];
__attribute__((noinline)) void map_some(int n, size_t size) {
    for (int i = 0; i < n; i++) {
        keep[i] = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(keep[i], 1, 64);
    }
}
__attribute__((noinline)) void map_and_unmap(int n, size_t size) {
    for (int i = 0; i < n; i++) {
        void *p = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(p, size);
    }
}
__attribute__((noinline)) void big_mallocs(int n) {
    for (int i = 0; i < n; i++) free(malloc(1 << 20));
}
int main(int argc, char **argv) {
    char c;
    if (read(0, &c, 1) != 1) return 1;
    map_some(32, 1 << 20);
    map_and_unmap(200, 1 << 20);
    big_mallocs(200);
    printf("mapped %d\n", 32 << 20); fflush(stdout);
    sleep(3);
    return 0;
}
