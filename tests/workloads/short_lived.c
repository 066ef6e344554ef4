// Burns CPU in a known function for a short while, then exits: the profiler must
// still name its functions after the process (and even its binary) is gone.
#include <stdlib.h>

#include "burn.h"

__attribute__((noinline)) void short_lived_burner(double seconds) {
    BURN_FOR(seconds);
}

int main(int argc, char **argv) {
    short_lived_burner(argc > 1 ? atof(argv[1]) : 1.0);
    return 0;
}
