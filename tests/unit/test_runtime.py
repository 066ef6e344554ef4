"""Runtime pieces that need no BPF: headers discovery, capabilities, cflags, perf facts,
containers from cgroups."""

import os

import pytest

from ebpf_otlp.errors import AgentError
from ebpf_otlp.records import ContainerInfo
from ebpf_otlp.runtime import headers, loader, tracefs
from ebpf_otlp.runtime.perf import online_cpus
from ebpf_otlp.runtime.processes import CgroupIds, parse_cgroup
from ebpf_otlp.runtime.privileges import (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAPABILITIES,
                                            missing_privileges)


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


def test_privilege_advice_can_work_on_a_python_script():
    """File capabilities (setcap) never reach a script's interpreter: advise what does."""
    advice = missing_privileges(0)
    assert "setcap" not in advice and "ambient" in advice
    for cap in CAPABILITIES:
        assert cap in advice


def test_tracefs_mounted_but_closed_is_found(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("sysfs /sys sysfs rw 0 0\n"
                      "tracefs /sys/kernel/tracing tracefs rw,mode=700 0 0\n")
    assert tracefs.mounted_at(str(mounts)) == "/sys/kernel/tracing"
    mounts.write_text("sysfs /sys sysfs rw 0 0\ntmpfs /sys/kernel/tracing tmpfs rw 0 0\n")
    assert tracefs.mounted_at(str(mounts)) is None
    assert tracefs.mounted_at(str(tmp_path / "absent")) is None


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


CONTAINER = "3f4e2a" + "0123456789abcdef" * 3 + "0123456789"   # 64 hex digits
POD = "8d2c1a4e-5b6f-4c3d-9e8f-0a1b2c3d4e5f"


@pytest.mark.parametrize("text,container,pod", [
    # containerd under the kubelet's systemd driver, cgroup v2
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}"
     f".slice/cri-containerd-{CONTAINER}.scope\n", CONTAINER, POD),
    # the kubelet's cgroupfs driver, cgroup v1
    (f"12:pids:/kubepods/besteffort/pod{POD}/{CONTAINER}\n11:cpu:/kubepods/besteffort/pod{POD}/{CONTAINER}\n",
     CONTAINER, POD),
    (f"0::/system.slice/docker-{CONTAINER}.scope\n", CONTAINER, ""),
    (f"1:name=systemd:/docker/{CONTAINER}\n0::/\n", CONTAINER, ""),
    (f"0::/machine.slice/libpod-{CONTAINER}.scope/container\n", CONTAINER, ""),
    # cri-o's monitor is not the container; a 32-digit id is not a container id
    (f"0::/kubepods.slice/crio-conmon-{CONTAINER}.scope\n", "", ""),
    ("4:memory:/process_api/49264076ffea4500fc71b11ec2cd0b88\n0::/\n", "", ""),
    ("0::/user.slice/user-0.slice/session-1.scope\n", "", ""),
])
def test_container_and_pod_from_cgroup(text, container, pod):
    info = parse_cgroup(text)
    assert (info.container_id, info.pod_uid) == (container, pod)
    expected = {k: v for k, v in (("container.id", container), ("k8s.pod.uid", pod)) if v}
    assert info.attributes() == expected


def test_cgroup_ids_resolve_to_containers(tmp_path):
    leaf = tmp_path / f"kubepods-pod{POD.replace('-', '_')}.slice" / f"crio-{CONTAINER}.scope"
    leaf.mkdir(parents=True)
    ids = CgroupIds(mount=str(tmp_path))
    assert ids.lookup(os.stat(leaf).st_ino) == ContainerInfo(CONTAINER, POD)
    assert ids.lookup(os.stat(leaf.parent).st_ino) == ContainerInfo("", POD)
    assert ids.lookup(os.stat(tmp_path).st_ino) == ContainerInfo()
    assert ids.lookup(1) is None


def test_an_output_that_is_not_a_regular_file_is_written_into_not_replaced(tmp_path):
    """`-o /dev/null` once replaced the device with a regular file (the atomic rename)."""
    import stat
    import threading

    from ebpf_otlp.export import files

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    files.write_bytes(str(fifo), b"profile bytes")
    reader.join(10)
    assert got == [b"profile bytes"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    regular = tmp_path / "out.pb"
    files.write_bytes(str(regular), b"x")
    files.write_bytes(str(regular), b"y")
    assert regular.read_bytes() == b"y" and not list(tmp_path.glob(".ebpf-otlp-*"))
    files.write_bytes("/dev/null", b"z")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_ring_waiter_names_the_woken_fds_once_each():
    """Edge-triggered: what woke is named once; what was not read does not keep it awake."""
    import os
    from ebpf_otlp.runtime.maps import RingWaiter
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()
    waiter = RingWaiter({"pipes": [r1, r2]})
    try:
        assert waiter.wait(0) == set()
        os.write(w2, b"x")
        assert waiter.wait(1) == {r2}
        assert waiter.wait(0.05) == set()   # still unread, not woken again
        os.write(w1, b"x")
        os.write(w2, b"y")
        assert waiter.wait(1) == {r1, r2}
    finally:
        waiter.close()
        for fd in (r1, w1, r2, w2):
            os.close(fd)
