// A context-switch-heavy workload: two threads pass a byte back and forth through pipes,
// N round trips; run on one CPU, each round trip is two context switches. Prints its own
// wall and CPU seconds.  Usage: pingpong N
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "self_timed.h"

static int ping[2], pong[2];
static long rounds;

static void *ponger(void *unused) {
    char b;
    for (long i = 0; i < rounds; i++)
        if (read(ping[0], &b, 1) != 1 || write(pong[1], &b, 1) != 1)
            break;
    return unused;
}

static void pinger(void) {
    char b = 'x';
    for (long i = 0; i < rounds; i++)
        if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1)
            break;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 100000;
    pthread_t t;
    if (pipe(ping) || pipe(pong) || pthread_create(&t, NULL, ponger, NULL))
        return 1;
    SELF_TIMED(pinger());
    pthread_join(t, NULL);
    return 0;
}
