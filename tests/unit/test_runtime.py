"""Runtime pieces that need no BPF: headers discovery, capabilities, cflags, perf facts."""

import os

import pytest

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime import headers, loader
from ebpf_otlp.runtime.perf import online_cpus
from ebpf_otlp.runtime.privileges import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, missing_privileges


def make_tree(root, name, files):
    for rel, text in files.items():
        p = root / name / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_generic_headers_are_found_and_merged(tmp_path):
    src = tmp_path / "src"
    for v in ("6.1.0-55", "6.1.0-56"):
        make_tree(src, f"linux-headers-{v}-common", {"include/linux/sched.h": "common", "Makefile": "c"})
        make_tree(src, f"linux-headers-{v}-amd64", {"include/generated/autoconf.h": "arch", "Makefile": "a"})
    common, arch = headers.find_generic_pair(str(src), "x86_64")
    assert arch.endswith("6.1.0-56-amd64") and common.endswith("6.1.0-56-common")
    dest = tmp_path / "merged"
    headers.merge_trees(common, arch, str(dest))
    assert (dest / "include/linux/sched.h").read_text() == "common"
    assert (dest / "include/generated/autoconf.h").read_text() == "arch"
    assert (dest / "Makefile").read_text() == "a"          # the arch tree wins
    assert headers.find_generic_pair(str(tmp_path / "nothing"), "x86_64") is None


def test_no_headers_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(headers, "find_generic_pair", lambda: None)
    with pytest.raises(AgentError, match="no kernel headers for 0.0-test: install linux-headers"):
        headers.find_headers("0.0-test")


def test_capabilities():
    assert missing_privileges(1 << CAP_SYS_ADMIN) is None
    assert missing_privileges((1 << CAP_BPF) | (1 << CAP_PERFMON)) is None
    assert "CAP_BPF+CAP_PERFMON" in missing_privileges(1 << CAP_BPF)
    assert "sudo" in missing_privileges(0)


def test_cflags():
    assert loader.cflags_for({"A": 1, "B": True, "C": False, "D": None, "E": "x"}) == [
        "-DA=1", "-DB", "-DE=x"]


def test_missing_bcc_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(AgentError, match="apt-get install python3-bpfcc"):
        loader.import_bcc()


def test_programs_are_found():
    assert (loader.bpf_dir() / "cpu_sampler.bpf.c").is_file()


def test_online_cpus(tmp_path):
    p = tmp_path / "online"
    p.write_text("0-3,6,8-9\n")
    assert online_cpus(str(p)) == [0, 1, 2, 3, 6, 8, 9]
    assert len(online_cpus()) == os.cpu_count()
