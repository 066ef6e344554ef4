// Page-fault workload: touch_pages() faults in N fresh pages of an anonymous mapping, one
// write per page, while spin() only burns CPU; prints the minor faults the process took
// (getrusage), the ground truth for `profile --event page-faults`.
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "burn.h"

__attribute__((noinline)) void touch_pages(long pages) {
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(1);
    for (long i = 0; i < pages; i++)
        p[i * page] = 1;
}

__attribute__((noinline)) void spin(double seconds) { BURN_FOR(seconds); }

int main(int argc, char **argv) {
    long pages = argc > 1 ? atol(argv[1]) : 50000;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    spin(0.3);
    touch_pages(pages);
    spin(0.3);
    getrusage(RUSAGE_SELF, &after);
    printf("minor_faults %ld\n", after.ru_minflt - before.ru_minflt);
    return 0;
}
