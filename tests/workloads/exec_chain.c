// Burns CPU in a known function, then execs another program in the same pid: samples
// from before the exec must be named from the mappings from before it.
// It starts once a byte arrives on stdin.  Usage: exec_chain SECONDS PROGRAM [ARGS...]
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long sink;

__attribute__((noinline)) void before_exec_burner(double seconds) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double end = t.tv_sec + t.tv_nsec / 1e9 + seconds;
    for (;;) {
        for (long i = 0; i < 100000; i++)
            sink += i;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec + t.tv_nsec / 1e9 > end)
            break;
    }
}

int main(int argc, char **argv) {
    char go;
    if (argc < 3 || read(0, &go, 1) != 1)
        return 2;
    before_exec_burner(atof(argv[1]));
    execv(argv[2], argv + 2);
    perror("execv");
    return 1;
}
