"""Known heap use in known Python functions, for memleak: grow() keeps argv[1] MiB as 64 KiB
bytearrays (malloc'd: bigger than pymalloc's objects, under glibc's mmap threshold), churn()
allocates as much and drops each at once; then it sleeps argv[2] seconds, so what grow()
kept is old enough for the leak report, and exits as a server killed would, without the
interpreter's teardown (which frees what grow() kept)."""

import os
import sys
import time

BLOCK = 64 * 1024
KEPT = []


def grow(mib):
    for _ in range(mib * 1024 * 1024 // BLOCK):
        KEPT.append(bytearray(BLOCK))        # LINE grow


def churn(mib):
    for _ in range(mib * 1024 * 1024 // BLOCK):
        bytearray(BLOCK)                     # LINE churn


def main():
    grow(int(sys.argv[1]))                   # LINE main_grow
    churn(int(sys.argv[1]))
    time.sleep(float(sys.argv[2]))
    sys.stdout.flush()
    os._exit(0)


main()                                       # LINE module
