"""A Python program standing still at known lines, for reading its frames from outside:
the main thread in a sorted() key function under leaf, middle, outer; a second thread in
worker. Prints "ready" once both are there; runs until its stdin closes."""

import sys
import threading
import time

stop = threading.Event()


def key(item):
    if item == 2:
        print("ready", flush=True)
        sys.stdin.read()                     # LINE key
    return item


def leaf():
    return sorted([1, 2], key=key)           # LINE leaf


def middle():
    return leaf()                            # LINE middle


def outer():
    return middle()                          # LINE outer


def worker():
    while not stop.is_set():
        time.sleep(0.01)                     # LINE worker


threading.Thread(target=worker, name="worker", daemon=True).start()
time.sleep(0.05)
outer()                                      # LINE module
stop.set()
