"""Find kernel headers for BCC, or prepare the distribution's generic ones.

BCC compiles against /lib/modules/$(uname -r)/build. Where the running kernel has
no matching headers (custom or cloud kernels), Debian's generic headers work for
programs that read only tracepoint arguments, perf registers and uprobe
arguments, once the `-common` and arch trees are merged into one folder and named
by BCC_KERNEL_SOURCE. Kernel-internal struct offsets from such headers are wrong:
programs that need them must read offsets from BTF instead.
"""

import glob
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

from ebpf_otlp.errors import AgentError

CACHE_DIR = os.environ.get("EBPF_OTLP_CACHE", "/var/cache/ebpf-otlp")

# Debian names its per-arch header trees after the dpkg architecture.
_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Headers:
    path: str
    matches_kernel: bool   # False: generic headers of another version
    how: str               # a human sentence: where they came from


def _version_key(path: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))


def find_generic_pair(src_root: str = "/usr/src", machine: str | None = None):
    """The newest Debian-style (common, arch) header pair under /usr/src, or None."""
    arch = _DEB_ARCH.get(machine or platform.machine(), machine or platform.machine())
    arch_trees = sorted(glob.glob(os.path.join(src_root, f"linux-headers-*-{arch}")),
                        key=_version_key, reverse=True)
    for tree in arch_trees:
        common = tree[: -len(arch)] + "common"
        if os.path.isdir(common):
            return common, tree
    return None


def merge_trees(common: str, arch_tree: str, dest: str) -> None:
    """Symlink-copy both trees into dest (arch files win), atomically via a temp dir."""
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for tree in (common, arch_tree):
        subprocess.run(["cp", "-as", "--remove-destination", tree + "/.", tmp + "/"],
                       check=True, capture_output=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def find_headers(release: str | None = None) -> Headers:
    """Headers BCC can compile with: the kernel's own, else prepared generic ones."""
    release = release or platform.release()
    explicit = os.environ.get("BCC_KERNEL_SOURCE")
    if explicit and os.path.isdir(os.path.join(explicit, "include")):
        return Headers(explicit, release in explicit, "named by BCC_KERNEL_SOURCE")
    own = f"/lib/modules/{release}/build"
    if os.path.isdir(os.path.join(own, "include")):
        return Headers(own, True, f"the running kernel's ({own})")
    pair = find_generic_pair()
    if not pair:
        raise AgentError(
            f"no kernel headers for {release}: install linux-headers-{release}, or the "
            "distribution's generic ones (Debian: apt-get install linux-headers-amd64)")
    common, arch_tree = pair
    dest = os.path.join(CACHE_DIR, "kernel-headers", os.path.basename(arch_tree))
    if not os.path.isdir(os.path.join(dest, "include")):
        try:
            merge_trees(common, arch_tree, dest)
        except (OSError, subprocess.CalledProcessError) as e:
            raise AgentError(f"cannot prepare kernel headers in {dest}: {e}") from None
    return Headers(dest, False,
                   f"generic {os.path.basename(arch_tree)} merged into {dest} "
                   f"(the running kernel {release} has none)")


def use_headers(release: str | None = None) -> Headers:
    """Find headers and point BCC at them."""
    headers = find_headers(release)
    os.environ["BCC_KERNEL_SOURCE"] = headers.path
    return headers
