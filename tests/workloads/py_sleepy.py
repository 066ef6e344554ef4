"""Known time off CPU in a known Python function, for the off-CPU profile: nap() sleeps in
time.sleep for argv[1] seconds in all, 20 ms at a time, from main()."""

import sys
import time


def nap(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)                     # LINE nap


def main():
    nap(float(sys.argv[1]))                  # LINE main


main()                                       # LINE module
