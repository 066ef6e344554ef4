"""Folded stacks, the flamegraph.pl input format: `process;root;...;leaf count`."""

from __future__ import annotations

from collections import Counter

from ebpf_otlp.records import Profile, StackSample


def frame_names(sample: StackSample) -> list[str]:
    """Root first, the process name on top; kernel frames marked `_[k]` as BCC does, Python
    frames with their file and line as py-spy shows them."""
    names = [sample.process_name or sample.thread_name or str(sample.pid)]
    for f in reversed(sample.frames):
        names.append(f"{f.function}_[k]" if f.kernel else f.label)
    return names


def fold(profile: Profile) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for s in profile.samples:
        stacks[tuple(n.replace(";", ":") for n in frame_names(s))] += profile.value(s)
    return stacks


def encode(profile: Profile) -> str:
    lines = [f"{';'.join(stack)} {count}" for stack, count in sorted(fold(profile).items())]
    return "\n".join(lines) + ("\n" if lines else "")


def parse(text: str) -> Counter[tuple[str, ...]]:
    """Read folded text back (tests, and flame graphs of others' folded files)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks
