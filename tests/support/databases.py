"""Real database servers from Debian for the live tests, each started by the test on
loopback with its data in a temporary directory, and stopped after: PostgreSQL 15 and
MariaDB 10.11, Redis 7."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1] if glob.glob("/usr/lib/postgresql/*/bin") else ""


def _as(user: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """PostgreSQL will not run as root: its own user runs it."""
    return subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True,
                          text=True, **kw)


@contextlib.contextmanager
def postgres(port: int, tls_cert: tuple[str, str] | None = None):
    """A PostgreSQL cluster on 127.0.0.1:`port` and a Unix socket in its directory, every
    local client trusted; with `tls_cert` (cert, key), TLS on. Yields its directory (the
    socket's too)."""
    if not PG_BIN:
        raise RuntimeError("PostgreSQL is not installed: run make setup-test")
    pg = pwd.getpwnam("postgres")
    root = tempfile.mkdtemp(prefix="ebpf-otlp-pg-")
    os.chown(root, pg.pw_uid, pg.pw_gid)
    data = os.path.join(root, "data")
    _as("postgres", [f"{PG_BIN}/initdb", "-D", data, "--auth=trust", "-U", "postgres", "--no-sync"])
    conf = [f"port = {port}", "listen_addresses = '127.0.0.1'", f"unix_socket_directories = '{root}'",
            "fsync = off", "max_connections = 50"]
    if tls_cert:
        for name, src in zip(("server.crt", "server.key"), tls_cert):
            dst = os.path.join(data, name)
            shutil.copy(src, dst)
            os.chown(dst, pg.pw_uid, pg.pw_gid)
            os.chmod(dst, 0o600)
        conf.append("ssl = on")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write("\n".join(conf) + "\n")
    _as("postgres", [f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "start"])
    try:
        for _ in range(50):
            if subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield root
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mariadb(port: int):
    """A MariaDB server on 127.0.0.1:`port`, grant tables skipped (any user may connect),
    database `shop` made. Yields its directory."""
    if not shutil.which("mariadbd", path="/usr/sbin:/usr/bin"):
        raise RuntimeError("MariaDB is not installed: run make setup-test")
    my = pwd.getpwnam("mysql")
    root = tempfile.mkdtemp(prefix="ebpf-otlp-mariadb-")
    os.chown(root, my.pw_uid, my.pw_gid)
    data = os.path.join(root, "data")
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=mysql",
                    "--skip-test-db", "--auth-root-authentication-method=normal"],
                   check=True, capture_output=True, text=True)
    server = subprocess.Popen(["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}", "--user=mysql",
                               f"--port={port}", "--bind-address=127.0.0.1", f"--socket={root}/sock",
                               f"--pid-file={root}/pid", "--skip-grant-tables", "--innodb-buffer-pool-size=32M",
                               f"--log-error={root}/log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "-e",
                               "CREATE DATABASE IF NOT EXISTS shop"], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"MariaDB did not start: {open(os.path.join(root, 'log')).read()[-2000:]}")
        yield root
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def redis(port: int):
    """A Redis server on 127.0.0.1:`port`, no persistence. Yields its directory."""
    if not shutil.which("redis-server"):
        raise RuntimeError("Redis is not installed: run make setup-test")
    root = tempfile.mkdtemp(prefix="ebpf-otlp-redis-")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", root,
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                              text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("Redis did not start")
        yield root
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
