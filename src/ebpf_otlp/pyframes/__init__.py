"""Python frames in stacks: CPython interpreters found in sampled processes, their frames
walked in the kernel, and named in user space from code objects and their line tables."""
