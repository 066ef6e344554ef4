// fentry (BPF trampoline) attach test for `ebpf-otlp doctor`; BCC attaches it on load.
KFUNC_PROBE(vfs_read)
{
    return 0;
}
