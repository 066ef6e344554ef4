"""trace-net live under load: nginx (Debian's) on loopback under wrk, a new connection per
request, with the default line per connection going to a terminal that cannot keep up.
Ground truth is wrk's own count of the requests it completed; printing must never cost a
connection, and --duration must hold. (Connections only: an unthrottled wrk makes more
HTTP sends and receives than the request parser takes, whose drops are counted.)"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from conftest import need_tool, wait_for_line

pytestmark = pytest.mark.live

NGINX_CONF = """daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello\\n"; }} }}
}}
"""
SLOW_TERMINAL_BYTES_S = 200_000   # a terminal far slower than the connections' lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp_path, port: int) -> subprocess.Popen:
    nginx = need_tool("nginx", "/usr/sbin/nginx")
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, port=port))
    server = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.05)
    server.kill()
    pytest.fail(f"nginx did not listen on {port}: {(tmp_path / 'error.log').read_text()}")


class SlowTerminal:
    """A pseudo-terminal whose reader takes what is written at a slow terminal's pace."""

    def __init__(self, columns: int = 200):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        self.text = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        chunk = 4096
        while True:
            try:
                data = os.read(self.master, chunk)
            except OSError:   # the last writer closed the terminal
                return
            if not data:
                return
            self.text += data
            time.sleep(len(data) / SLOW_TERMINAL_BYTES_S)

    def close_ours(self) -> None:
        os.close(self.slave)

    def output(self, timeout: float = 120) -> str:
        self._reader.join(timeout)
        return self.text.decode(errors="replace").replace("\r", "")


def test_lines_on_a_slow_terminal_lose_no_connection_and_keep_the_duration(tmp_path):
    wrk = need_tool("wrk")
    port = free_port()
    server = start_nginx(tmp_path, port)
    jsonl = tmp_path / "net.jsonl"
    terminal = SlowTerminal()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    run = subprocess.Popen([sys.executable, "-m", "ebpf_otlp", "trace-net", "--port", str(port),
                            "--duration", "15s", "--no-udp", "--protocols", "none", "-o", str(jsonl)],
                           stdin=subprocess.DEVNULL, stdout=terminal.slave,
                           stderr=subprocess.PIPE, text=True, env=env)
    terminal.close_ours()
    try:
        wait_for_line(run.stderr, "tracing TCP connections", timeout=120)
        load = subprocess.run([wrk, "-t1", "-c4", "-d12s", "-H", "Connection: close",
                               f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                              timeout=60)
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
        server.terminate()
        server.wait(10)
    assert run.returncode == 0, stderr
    shown = terminal.output()
    requests = int(re.search(r"(\d+) requests in", load.stdout).group(1))
    assert requests > 20_000, load.stdout   # enough to outrun the terminal many times over
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    clients = [r for r in records if r["type"] == "tcp" and r["role"] == "client"
               and r["peer_port"] == port and r["process_name"] == "wrk"]
    # Every request wrk completed was its own connection, each closed: none lost.
    assert len([c for c in clients if c["result"] == "normal"]) >= requests
    assert "losses: none" in shown, shown[-3000:]
    # The capture ended at its duration, not when the terminal caught up.
    over = float(re.search(r"TCP connections by process and peer \(\d+ over ([\d.]+) s", shown).group(1))
    assert 15.0 <= over <= 15.5, over
    # The terminal got lines, and was told what it was not shown.
    assert "wrk" in shown and re.search(r"\d+ connections not shown", shown), shown[-3000:]
