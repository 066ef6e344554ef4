// Burns CPU in a known function, then execs another program in the same pid: samples
// from before the exec must be named from the mappings from before it.
// It starts once a byte arrives on stdin.  Usage: exec_chain SECONDS PROGRAM [ARGS...]
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "burn.h"

__attribute__((noinline)) void before_exec_burner(double seconds) {
    BURN_FOR(seconds);
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
