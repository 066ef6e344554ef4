"""The known syscall mix of tests/workloads/syscall_mix.c: what it is asked to make (its
binary is conftest's `mix_binary` fixture)."""

N_GETPPID, M_OPENAT, K_NANOSLEEP = 20000, 300, 200
