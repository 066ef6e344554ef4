"""Self-check of the network test harness (tests/netlab.py and the traffic workloads), no
tracer involved: the ground truth that trace-net is judged against must itself be right.
Each side's JSON must agree with the other's, and each induced failure (refused, timed
out, reset, retransmission) must really happen.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time

import pytest

from conftest import WORKLOADS, need
from support.netlab import NetLab, result, wait_listening

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def lab():
    with NetLab() as lab:
        yield lab


def tcp_run(lab, srv_ns, cli_ns, host, count, send, recv, srv_args=(), cli_args=()):
    """Server in srv_ns, client in cli_ns, COUNT connections; returns (client, server)."""
    srv = lab.python(srv_ns, "tcp_traffic.py", "server", "--host", host, "--count", str(count),
                     "--timeout", "60", *srv_args)
    port = wait_listening(srv)
    cli = lab.python(cli_ns, "tcp_traffic.py", "client", "--host", host, "--port", str(port),
                     "--count", str(count), "--send", str(send), "--recv", str(recv), *cli_args)
    return result(cli), result(srv)


def paired(client, server, count):
    """Match each client connection to the server's by the client's port (unique at once)."""
    assert client["totals"]["connections"] == count
    assert server["totals"]["connections"] == count
    by_port = {c["peer"][1]: c for c in server["connections"]}
    assert len(by_port) == count
    pairs = [(c, by_port[c["local"][1]]) for c in client["connections"]]
    for c, s in pairs:
        assert c["local"][0] == s["peer"][0] and c["peer"][1] == s["local"][1]
        assert c["connect_start_mono"] <= s["accepted_mono"] <= c["end_mono"]
    return pairs


def check_exchange(client, server, count, send, recv):
    """Clean run: bytes exact both ways, by both sides' own counts and by TCP_INFO."""
    assert client["totals"]["errors"] == {} and server["totals"]["errors"] == 0
    assert client["totals"]["sent"] == server["totals"]["received"] == count * send
    assert client["totals"]["received"] == server["totals"]["sent"] == count * recv
    for c, s in paired(client, server, count):
        assert (c["sent"], c["received"], s["sent"], s["received"]) == (send, recv, recv, send)
        assert c["handshake_ns"] > 0 and c["duration_ns"] >= c["handshake_ns"]
        # TCP counts the FIN as one byte of sequence space: +1 when it was acked/received.
        assert c["tcp_info"]["bytes_acked"] - send in (0, 1)
        assert c["tcp_info"]["bytes_received"] - recv in (0, 1)
        assert s["tcp_info"]["bytes_received"] - send in (0, 1)
        assert s["tcp_info"]["bytes_acked"] - recv in (0, 1)
        assert c["tcp_info"]["rtt"] > 0 and c["tcp_info"]["segs_out"] > 0


def test_tcp_info_offsets_match_the_kernel_header(tmp_path):
    """The workload decodes struct tcp_info by hand; compare with offsetof() from the header."""
    cc = shutil.which("cc") or shutil.which("gcc")
    need(None if cc else "no C compiler")
    spec = importlib.util.spec_from_file_location("tcp_traffic", WORKLOADS / "tcp_traffic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines = "".join(
        f'printf("{n} %zu %zu\\n", offsetof(struct tcp_info, tcpi_{n}), '
        f'sizeof(((struct tcp_info *)0)->tcpi_{n}));\n' for n in mod.TCP_INFO_FIELDS)
    src = tmp_path / "ti.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/tcp.h>\n"
                   f"int main(void) {{\n{lines}return 0; }}\n")
    subprocess.run([cc, "-o", str(tmp_path / "ti"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "ti")], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        name, off, size = line.split()
        want_off, fmt = mod.TCP_INFO_FIELDS[name]
        assert (int(off), int(size)) == (want_off, mod.struct.calcsize(fmt)), name


def test_200_connections_ipv4_between_namespaces(lab):
    client, server = tcp_run(lab, "b", "a", lab.B4, 200, 3000, 5000, cli_args=("--parallel", "4"))
    check_exchange(client, server, 200, 3000, 5000)
    assert client["pid"] != server["pid"] and client["netns_inode"] != server["netns_inode"]
    assert {c["local"][0] for c in client["connections"]} == {lab.A4}


def test_200_connections_ipv6_on_loopback(lab):
    client, server = tcp_run(lab, "a", "a", "::1", 200, 1000, 20000)
    check_exchange(client, server, 200, 1000, 20000)
    assert client["family"] == server["family"] == 6
    assert {c["local"][0] for c in client["connections"]} == {"::1"}


def test_ipv6_between_namespaces(lab):
    client, server = tcp_run(lab, "b", "a", lab.B6, 20, 100, 100)
    check_exchange(client, server, 20, 100, 100)


def test_refused_and_timed_out_connects(lab):
    """A closed port is refused at once; a SYN our own rule drops times out (TCP_SYNCNT=1)."""
    closed, blackholed = 39001, 39002
    rule = lab.drop("b", "syn", port=blackholed)
    start = time.monotonic()
    refused = lab.python("a", "tcp_traffic.py", "client", "--host", lab.B4,
                         "--port", str(closed))
    timed_out = lab.python("a", "tcp_traffic.py", "client", "--host", lab.B4,
                           "--port", str(blackholed), "--syn-retries", "1",
                           "--connect-timeout", "15")
    r, t = result(refused), result(timed_out, timeout=30)
    elapsed = time.monotonic() - start
    (rc,), (tc,) = r["connections"], t["connections"]
    assert (rc["error"], rc["phase"], rc["sent"]) == ("ECONNREFUSED", "connect", 0)
    assert (tc["error"], tc["phase"], tc["sent"]) == ("ETIMEDOUT", "connect", 0), rule
    assert 2.0 < tc["duration_ns"] / 1e9 < 10, "TCP_SYNCNT=1: SYN + one retry, ~3 s"
    assert lab.dropped("b") >= 2            # the SYN and its retry
    print(f"refused+timed out in {elapsed:.1f} s")


def test_dropped_data_segments_are_retransmitted(lab):
    """Every 4th client data segment is dropped: retransmissions, yet every byte arrives."""
    srv = lab.python("b", "tcp_traffic.py", "server", "--host", lab.B4, "--count", "10",
                     "--port", "39003")
    wait_listening(srv)
    lab.drop("b", "tcp-data", port=39003, every=4)
    before = lab.dropped("b")
    cli = lab.python("a", "tcp_traffic.py", "client", "--host", lab.B4, "--port", "39003",
                     "--count", "10", "--send", "200000", "--recv", "1000")
    client, server = result(cli), result(srv)
    check_exchange(client, server, 10, 200000, 1000)
    assert lab.dropped("b") > before
    assert sum(c["tcp_info"]["total_retrans"] for c in client["connections"]) > 0
    # The server's segments were not touched.
    assert sum(s["tcp_info"]["total_retrans"] for s in server["connections"]) == 0


def test_resets_are_seen_by_the_peer(lab):
    """SO_LINGER {1, 0} on either side sends a RST; the peer, blocked in recv, gets ECONNRESET."""
    client, server = tcp_run(lab, "b", "a", lab.B4, 3, 500, 700, srv_args=("--abort",))
    for c, s in paired(client, server, 3):
        assert s["closed_by"] == "rst" and s["error"] is None and s["sent"] == 700
        assert (c["error"], c["phase"], c["received"]) == ("ECONNRESET", "wait-eof", 700)
    client, server = tcp_run(lab, "b", "a", lab.B4, 3, 500, 700,
                             cli_args=("--abort", "--hold-ms", "50"))
    for c, s in paired(client, server, 3):
        assert c["closed_by"] == "rst" and c["error"] is None and c["received"] == 700
        assert (s["error"], s["phase"], s["received"]) == ("ECONNRESET", "wait-eof", 500)
        assert c["duration_ns"] >= 50e6 and s["duration_ns"] >= 45e6   # the hold


@pytest.mark.parametrize("echo", [False, True], ids=["one-way", "echo"])
def test_udp_totals_agree(lab, echo):
    sizes, count = [100, 1400, 7], 150
    flag = ["--echo"] if echo else []
    rcv = lab.python("b", "udp_traffic.py", "receiver", "--host", lab.B4, "--count", str(count),
                     "--timeout", "20", *flag)
    port = wait_listening(rcv)
    snd = lab.python("a", "udp_traffic.py", "sender", "--host", lab.B4, "--port", str(port),
                     "--count", str(count), "--sizes", ",".join(map(str, sizes)),
                     *flag, *(["--connect"] if echo else []))
    s, r = result(snd), result(rcv)
    expect = sum(sizes[i % 3] for i in range(count))
    assert s["totals"]["sent_bytes"] == r["totals"]["received_bytes"] == expect
    assert s["totals"]["sent_datagrams"] == r["totals"]["received_datagrams"] == count
    (peer,) = r["peers"]
    assert (peer["addr"], peer["port"]) == tuple(s["local"])
    if echo:
        assert s["lost_replies"] == 0
        assert s["totals"]["received_bytes"] == r["totals"]["sent_bytes"] == expect
    else:
        assert s["totals"]["received_bytes"] == r["totals"]["sent_bytes"] == 0


def test_lab_cleans_up_even_on_failure():
    with pytest.raises(RuntimeError):
        with NetLab() as inner:
            names = list(inner.names.values())
            sleeper = inner.run("a", ["sleep", "60"])
            raise RuntimeError("boom")
    assert sleeper.poll() is not None
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listing for n in names)
