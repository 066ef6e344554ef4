// The demo workload: a toy request loop with a recognisable profile.
// main -> handle_request -> parse_request / compute_checksum / compress_block.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned char buf[4096];
volatile uint64_t sink;

__attribute__((noinline)) static void parse_request(void) {
    for (int r = 0; r < 40; r++)
        for (size_t i = 0; i < sizeof buf; i++)
            sink += buf[i] == ' ';
}

__attribute__((noinline)) static uint64_t compute_checksum(void) {
    uint64_t h = 1469598103934665603ULL;
    for (int r = 0; r < 100; r++)
        for (size_t i = 0; i < sizeof buf; i++)
            h = (h ^ buf[i]) * 1099511628211ULL;
    return h;
}

__attribute__((noinline)) static void compress_block(void) {
    for (int r = 0; r < 60; r++)
        for (size_t i = 1; i < sizeof buf; i++)
            sink += buf[i] == buf[i - 1];
}

__attribute__((noinline)) static void handle_request(void) {
    parse_request();
    sink += compute_checksum();
    compress_block();
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 % 64 + ' ');
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        handle_request();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return 0;
}
