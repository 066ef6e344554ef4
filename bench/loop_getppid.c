// A tight syscall loop: N getppid calls; prints its own wall and CPU seconds.
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "self_timed.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    SELF_TIMED(for (long i = 0; i < n; i++) syscall(SYS_getppid));
    return 0;
}
