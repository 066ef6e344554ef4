"""A hand-made CPU profile with known stacks, for the exporters' unit tests."""

from ebpf_otlp.records import KERNEL_MODULE, Frame, Mapping, Profile, StackSample, cpu_shape

APP = Mapping("/usr/bin/app", 0x1000, 0x5000, 0, "ab" * 20)
KMAP = Mapping(KERNEL_MODULE)


PERIOD = 10_101_010   # 1e9 / 99


def make_profile():
    main = Frame("main", "/usr/bin/app", 0x1100, APP)
    a = Frame("work<int>&", "/usr/bin/app", 0x1200, APP)
    b = Frame("other", "/usr/bin/app", 0x1300, APP)
    k = Frame("do_syscall_64", KERNEL_MODULE, 0xffffffff81000000, KMAP, kernel=True)
    samples = [
        StackSample(10, 11, "worker", "app", (a, main), (30, 30 * PERIOD)),
        StackSample(10, 12, "worker2", "app", (b, main), (10, 10 * PERIOD)),
        StackSample(10, 11, "worker", "app", (k, a, main), (5, 5 * PERIOD)),
    ]
    return Profile(samples, start_ns=1_700_000_000_000_000_000, duration_ns=5_000_000_000,
                   **cpu_shape(99))
