#!/usr/bin/env bash
# Idempotent set-up on Debian 12 / Ubuntu, as root: the distribution's BCC and kernel
# headers, a .venv that sees BCC, and ebpf-otlp installed in it.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   also what the tests and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs packages with apt-get)" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null; then
  echo "setup: no apt-get: install python3-bcc (or python3-bpfcc), kernel headers and python3-venv by hand" >&2
  exit 2
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
updated=0
apt_install() {
  local missing=()
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $updated = 0 ]; then apt-get update -qq; updated=1; fi
  echo "setup: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
available() {
  if [ $updated = 0 ] && ! apt-cache show "$1" >/dev/null 2>&1; then apt-get update -qq; updated=1; fi
  apt-cache show "$1" >/dev/null 2>&1
}

# gcc: the demo workload; libc6-dbg: the symbols Debian strips from libc (found by build ID)
apt_install python3-bpfcc python3-venv python3-pip ca-certificates gcc libc6-dev libc6-dbg

# Kernel headers: the running kernel's when the distribution has them, else its generic
# ones (ebpf-otlp merges those into a usable tree at first run; see runtime/headers.py).
release=$(uname -r)
if [ ! -d "/lib/modules/$release/build/include" ]; then
  if available "linux-headers-$release"; then
    apt_install "linux-headers-$release"
  else
    case "$(uname -m)" in
      x86_64) generic=linux-headers-amd64 ;;
      aarch64) generic=linux-headers-arm64 ;;
      *) generic=linux-headers-generic ;;
    esac
    available "$generic" || generic=linux-headers-generic
    echo "setup: no headers for $release in the distribution; using $generic"
    apt_install "$generic"
  fi
fi

if [ $want_test = 1 ]; then
  # gcc builds test workloads; node, chromium and pprof check names, drawing and file
  # format; strace, perf and bpfcc-tools are the peers the benchmarks compare against;
  # nginx under wrk is trace-net's load test; PostgreSQL (its server, psql, pgbench, libpq),
  # MariaDB and Redis (servers, clients, redis-benchmark) the database spans'; bpftool and
  # pahole check the BTF reader.
  apt_install make nodejs strace linux-perf bpfcc-tools chromium systemd nginx wrk \
              golang-go golang-github-google-pprof-dev iproute2 nftables bpftool dwarves \
              postgresql libpq5 mariadb-server mariadb-client redis-server redis-tools
  if [ ! -x .tools/pprof ]; then
    mkdir -p .tools
    echo "setup: building Google's pprof from Debian's Go sources"
    GOPATH=/usr/share/gocode GO111MODULE=off go build -o .tools/pprof github.com/google/pprof
  fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import bcc" 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
extra=""
[ $want_test = 1 ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
# Byte-compiled as a wheel install would be (an editable one is not): with
# PYTHONDONTWRITEBYTECODE set, every start would compile each module again (~40 ms).
.venv/bin/python -m compileall -q src/ebpf_otlp >/dev/null

# Prepare kernel headers and tracefs now, so the first capture starts fast.
.venv/bin/python - <<'PY'
from ebpf_otlp.runtime.headers import use_headers
from ebpf_otlp.runtime.tracefs import ensure_tracefs
print("setup: kernel headers:", use_headers().how)
print("setup: tracefs at", ensure_tracefs())
PY
echo "setup: done; run .venv/bin/ebpf-otlp doctor to see what this kernel supports"
