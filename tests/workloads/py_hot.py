"""CPU-bound Python with known answers, run for argv[1] seconds:
- outer -> middle -> leaf_a and leaf_b, leaf_a doing three times leaf_b's work (3:1);
- key_fn called by sorted() (C calling back into Python) under middle;
- a thread in zlib.compress (C, the GIL released), called from compressor."""

import sys
import threading
import time
import zlib


def spin(n):
    x = 0
    for i in range(n):
        x += i * i                           # LINE spin
    return x


def leaf_a():
    return spin(30000)                       # LINE leaf_a


def leaf_b():
    return spin(10000)                       # LINE leaf_b


def key_fn(v):
    spin(4000)                               # LINE key_fn
    return v


def middle():
    leaf_a()                                 # LINE middle_a
    leaf_b()                                 # LINE middle_b
    sorted(range(2), key=key_fn)             # LINE middle_sorted


def outer():
    middle()                                 # LINE outer


def compressor(stop):
    data = bytes(range(256)) * 2048
    while not stop.is_set():
        zlib.compress(data, 9)               # LINE compressor


stop = threading.Event()
thread = threading.Thread(target=compressor, args=(stop,), name="compressor")
thread.start()
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    outer()                                  # LINE module
stop.set()
thread.join()
