#!/usr/bin/env python3
"""Hold a floor program (bench/hook_floor.c) attached until SIGINT, so the syscall bench
can price the hooks themselves: what timing every call costs before any bookkeeping.

Usage: hook_floor.py [--enter] [--clock]
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from ebpf_otlp.runtime import loader  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--enter", action="store_true", help="hook sys_enter too")
    ap.add_argument("--clock", action="store_true", help="read the clock in each hook")
    args = ap.parse_args()
    loader.prepare()
    bcc = loader.import_bcc()
    flags = loader.cflags_for({"ENTER": args.enter, "CLOCK": args.clock})
    bpf = bcc.BPF(src_file=str(HERE / "hook_floor.c").encode(), cflags=flags)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    signal.sigwait(stop)
    bpf.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
