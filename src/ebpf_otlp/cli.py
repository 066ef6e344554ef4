"""The command line: parse and validate the flags (bad input: one line, exit 2), then hand
the settings to a session, which runs the capture."""

from __future__ import annotations

import json
import os
import sys
import time

import click
from rich.console import Console

from ebpf_otlp import __version__
from ebpf_otlp.errors import AgentError
from ebpf_otlp.export.console import text_console
from ebpf_otlp.signals.heap.settings import HeapSettings
from ebpf_otlp.signals.net.settings import HOOKS, NetSettings
from ebpf_otlp.signals.profile.settings import UNWIND, CpuSettings
from ebpf_otlp.signals.syscalls.settings import SyscallSettings
from ebpf_otlp.runtime.processes import COMM_MAX
from ebpf_otlp.units import format_count, format_duration, parse_count, parse_duration
from ebpf_otlp import values
from ebpf_otlp.values import format_size

PROG = "ebpf-otlp"
STARTED_NS = time.time_ns()   # launch-to-attach and first-sample times are measured from here
LAUNCH = {"allow_interspersed_args": False}   # `-- CMD ARGS`: what follows is the command's


def default(value, as_typed=None) -> dict:
    """An option's default, from its signal's settings (their one copy); `as_typed` writes
    it as a user would type it (5k, 1us), for the help and the option's type to read."""
    return {"default": as_typed(value) if as_typed else value, "show_default": True}


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Count(click.ParamType):
    name = "count"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_count(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def result_console(stderr: bool = False) -> Console:
    """Results on stdout (stderr in launch mode, as `strace -c` does: the command owns
    stdout); when piped, wide enough that tables are not squeezed to 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    return text_console(stderr=stderr, width=None if stream.isatty() else 200)


def notice_console() -> Console:
    return text_console(stderr=True, soft_wrap=True)


def run_command(signal, command) -> int:
    """A single-signal command's run; its exit status (a launched command's, else 0)."""
    from ebpf_otlp.engine.run import run_signal
    console = result_console(stderr=bool(command.launch))   # launch mode: CMD owns stdout
    return run_signal(signal, command, console, notice_console(), STARTED_NS).exit_status


def otlp_options(fn):
    """Where OTLP data goes; the OTEL_EXPORTER_OTLP_* variables apply when a flag is absent."""
    options = [
        click.option("--otlp-endpoint", metavar="URL",
                     help="Send to this OpenTelemetry Collector (default: "
                          "$OTEL_EXPORTER_OTLP_ENDPOINT)."),
        click.option("--otlp-protocol", type=click.Choice(["grpc", "http/protobuf"]),
                     help="Default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc."),
        click.option("--otlp-header", "otlp_headers", multiple=True, metavar="KEY=VALUE",
                     help="Extra header (repeatable), added to $OTEL_EXPORTER_OTLP_HEADERS."),
        click.option("--otlp-insecure", is_flag=True, default=None,
                     help="gRPC without TLS even for an https endpoint."),
        click.option("--otlp-ca-file", metavar="PEM", help="CA certificate(s) to verify the collector."),
        click.option("--otlp-client-cert", metavar="PEM",
                     help="Our certificate, for a collector that asks for one (mTLS); with --otlp-client-key."),
        click.option("--otlp-client-key", metavar="PEM", help="The private key of --otlp-client-cert."),
        click.option("--otlp-compression", type=click.Choice(["gzip", "none"]), help="Default gzip."),
        click.option("--otlp-timeout", type=Duration(), help="Per-export time limit (default 10s)."),
        click.option("--spool-dir", default=None, metavar="DIR",
                     help="Where payloads the collector did not take wait (default /var/lib/ebpf-otlp/spool)."),
        click.option("--spool-max-mb", type=click.IntRange(min=1), default=None,
                     help="Spool size cap; past it the oldest payloads are dropped (and reported) "
                          "(default 256)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_OTLP_FLAGS = {"endpoint": "otlp_endpoint", "protocol": "otlp_protocol", "insecure": "otlp_insecure",
               "ca_file": "otlp_ca_file", "client_certificate": "otlp_client_cert",
               "client_key": "otlp_client_key", "compression": "otlp_compression", "timeout": "otlp_timeout",
               "spool_dir": "spool_dir", "spool_max_mb": "spool_max_mb"}


def otlp_table(kw: dict) -> dict:
    """The [otlp] table (docs/config.md) that the otlp_options flags given say, popped from
    kw: the one way from flags to OTLP settings (config.otlp_settings), for every command;
    the agent lays it over its configuration file's."""
    from ebpf_otlp.export.otlp_settings import parse_headers

    table = {key: kw.pop(flag) for key, flag in _OTLP_FLAGS.items()}
    headers: dict[str, str] = {}
    for h in kw.pop("otlp_headers"):   # a malformed one: one line and exit 2
        headers.update(parse_headers(h))
    table["headers"] = headers or None
    return {k: v for k, v in table.items() if v is not None}


def otlp_from_flags(kw: dict):
    """(settings or None, spool) from the otlp_options flags, which are popped from kw."""
    from ebpf_otlp import config as cfg
    return cfg.otlp_settings(otlp_table(kw))


def command_argument(fn):
    """`-- CMD ARGS`: launch mode, as `perf record -- CMD` and `strace -c CMD` do."""
    return click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS]...]")(fn)


def check_target(pids, command, **others) -> None:
    """--pid, a command to launch and any other target (--all, --comm) exclude each other."""
    given = [name for name, on in (("--pid", bool(pids)), ("a command", bool(command)),
                                   *((f"--{k}", bool(v)) for k, v in others.items())) if on]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} exclude each other: name one target")


def valid_comm(ctx, param, comm: str | None) -> str | None:
    if comm is not None and not comm:
        raise click.BadParameter("an empty name matches no process", ctx, param)
    if comm and len(comm.encode()) > COMM_MAX:
        raise click.BadParameter(
            f"{comm!r} is longer than the {COMM_MAX} bytes the kernel keeps of a command name, "
            f"so it would never match: use {comm.encode()[:COMM_MAX].decode(errors='ignore')!r}",
            ctx, param)
    return comm


def pid_list(ctx, param, values) -> list[int]:
    """`-p 1,2` as well as `-p 1 -p 2` (perf's and BCC's habits); each a running process.
    A kernel thread is said to be one: it has kernel stacks only, and no heap."""
    from ebpf_otlp.runtime.processes import kernel_thread

    pids = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit() or int(part) <= 0:
                raise click.BadParameter(f"{part.strip()!r} is not a pid", ctx, param)
            pid = int(part)
            if not os.path.exists(f"/proc/{pid}"):
                raise click.BadParameter(f"no process with pid {pid}", ctx, param)
            name = kernel_thread(pid)
            if name and ctx.command.name == "memleak":
                raise click.BadParameter(f"pid {pid} is a kernel thread ({name}): it has no heap",
                                         ctx, param)
            if name:
                click.echo(f"{PROG}: pid {pid} is a kernel thread ({name}): only kernel code "
                           "runs there", err=True)
            pids.append(pid)
    return pids


def target_options(verb: str, comm: bool = True):
    """The processes a command looks at, named the same way everywhere."""
    options = [
        click.option("-p", "--pid", "pids", multiple=True, metavar="PID[,PID...]", callback=pid_list,
                     help=f"{verb} only these processes (repeatable). Default: every process."),
        click.option("-c", "--comm", metavar="NAME", callback=valid_comm,
                     help=f"{verb} only processes with this command name (at most {COMM_MAX} "
                          "bytes, as the kernel keeps it).") if comm else None,
        click.option("--include-self", is_flag=True,
                     help="Also look at ebpf-otlp itself and the processes it starts "
                          "(left out by default)."),
    ]
    def wrap(fn):
        for option in reversed([o for o in options if o]):
            fn = option(fn)
        return fn
    return wrap


unwind_option = click.option(
    "--unwind", type=click.Choice(UNWIND), **default(CpuSettings.unwind),
    help="How user stacks are walked: dwarf unwinds in the kernel from tables compiled out of "
         ".eh_frame (code built without frame pointers keeps its callers), fp follows frame "
         "pointers only, auto is dwarf where this kernel allows it.")


def python_option(on: bool):
    """--python/--no-python, defaulting to the signal's setting."""
    return click.option("--python/--no-python", **default(on),
                        help="Python functions, files and lines (CPython 3.10-3.13, walked in the "
                             "kernel) in place of the interpreter's own frames.")


def profile_outputs(fn):
    """-o and -f of the commands that write profiles (export/profile_files.py's formats)."""
    fn = click.option("-f", "--format", "fmt", type=click.Choice(["pprof", "folded", "svg", "json", "otlp"]),
                      help="Format of the single -o file.")(fn)
    return click.option("-o", "--output", "outputs", multiple=True, type=click.Path(dir_okay=False),
                        help="Output file (repeatable), its format from --format or its name: "
                             ".pb.gz (pprof), .folded (folded stacks), .svg (flame graph), .json, "
                             ".otlp.pb (an OTLP ExportProfilesServiceRequest).")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name=PROG)
def cli():
    """eBPF profiling agent: CPU, network, syscall and memory profiles to pprof and OpenTelemetry."""


@cli.command(context_settings=LAUNCH)
@target_options("Profile")
@click.option("-a", "--all", "all_", is_flag=True, help="Profile every process (the default).")
@click.option("-F", "--hz", type=int, **default(CpuSettings.hz), help="Samples per second per CPU.")
@click.option("-d", "--duration", type=Duration(), default=None,
              help="How long, e.g. 30s or 2m. Default: until Ctrl-C or SIGTERM.")
@click.option("-U", "--user-only", is_flag=True, help="User stacks only.")
@click.option("-K", "--kernel-only", is_flag=True, help="Kernel stacks only.")
@click.option("-e", "--event", type=click.Choice(["cpu-clock", "cpu-cycles", "page-faults"]),
              **default(CpuSettings.event),
              help="Sampling event: software clock, hardware cycles, or page faults (where "
                   "resident memory grows; sampled every --period faults, at no per-call cost).")
@click.option("--period", type=click.IntRange(min=1), **default(CpuSettings.period), metavar="N",
              help="With --event page-faults: one sample every N faults.")
@profile_outputs
@click.option("--output-dir", type=click.Path(file_okay=False), default="ebpf-otlp-output",
              show_default=True, help="Where files go when no -o is given (pprof, folded and SVG).")
@click.option("--top", type=click.IntRange(min=0), default=15, show_default=True,
              help="Rows in the top-functions table (0: none).")
@click.option("--off-cpu", is_flag=True,
              help="Profile time off CPU (blocked or waiting) by the stack each thread left with, "
                   "from sched_switch, instead of sampling on-CPU stacks.")
@click.option("--min-block", type=Duration(), **default(CpuSettings.min_block_ns / 1e9, format_duration),
              help="With --off-cpu: leave out shorter times off CPU.")
@click.option("--switch-budget", type=Count(), **default(int(CpuSettings.switch_budget), format_count),
              metavar="SWITCHES/S",
              help="With --off-cpu: walk every switch's stacks while the traced threads switch less "
                   "often than this; above it, a random sample sized to it, weighed up. 0: every one.")
@unwind_option
@python_option(CpuSettings.python)
@otlp_options
@command_argument
def profile(pids, comm, include_self, all_, hz, duration, user_only, kernel_only, event, period, outputs, fmt, output_dir,
            top, off_cpu, min_block, switch_budget, unwind, python, command, **otlp_flags):
    """Sample CPU stacks with a perf event and write pprof, folded stacks or a flame graph.
    With --off-cpu, the same outputs weigh stacks by time spent off CPU instead.

    With `-- CMD ARGS`, run CMD once the sampler is attached, profile it and every process
    it forks, stop when it exits and exit with its status.

    With an OTLP endpoint the profile (and a span and self-telemetry metrics) also go to
    an OpenTelemetry Collector; what it does not take is spooled and resent later."""
    from ebpf_otlp.export import profile_files
    from ebpf_otlp.runtime.perf import max_sample_rate
    from ebpf_otlp.engine.run import Command
    from ebpf_otlp.signals.profile import OFF_CPU, PROFILE, table

    check_target(pids, command, all=all_, comm=comm)
    if off_cpu:
        given = click.get_current_context().get_parameter_source
        for name, flag in (("hz", "--hz"), ("event", "--event"), ("period", "--period")):
            if given(name) != click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"{flag} samples on-CPU stacks; --off-cpu traces every "
                                       "switch instead (see --switch-budget)")
    if user_only and kernel_only:
        raise click.UsageError("--user-only and --kernel-only exclude each other")
    given = click.get_current_context().get_parameter_source
    if event == "page-faults" and given("hz") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("page faults are sampled every --period faults, not at --hz")
    if event != "page-faults" and given("period") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--period goes with --event page-faults")
    limit = max_sample_rate()
    if not 1 <= hz <= limit:
        raise click.BadParameter(f"{hz} Hz is outside 1..{limit} "
                                 "(limit: /proc/sys/kernel/perf_event_max_sample_rate)",
                                 param_hint="'--hz'")
    if hz > limit // 25:   # perf's default -F 4000 is the default limit's 1/25
        click.echo(f"{PROG}: warning: --hz {hz} is above {limit // 25} Hz (a 25th of "
                   "perf_event_max_sample_rate): every sample interrupts a CPU to walk its "
                   "stacks, so the run perturbs what it measures, and past "
                   "perf_cpu_time_max_percent the kernel throttles sampling", err=True)
    if fmt and len(outputs) > 1:
        raise click.UsageError("--format applies to a single -o; name several files by extension")
    otlp, spool = otlp_from_flags(otlp_flags)
    if outputs:
        targets = [(path, profile_files.format_for(path, fmt)) for path in outputs]
    elif otlp:
        targets = []   # the collector is the destination; -o adds files
    else:
        _make_dir(output_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        formats = [fmt] if fmt else ["pprof", "folded", "svg"]
        name = "offcpu" if off_cpu else "faults" if event == "page-faults" else "profile"
        targets = [(os.path.join(output_dir, f"{name}-{stamp}{profile_files.DEFAULT_SUFFIX[f]}"), f)
                   for f in formats]
    cpu = CpuSettings(hz=hz, pids=pids, user_stacks=not kernel_only, kernel_stacks=not user_only,
                      event=event, off_cpu=off_cpu, min_block_ns=int(min_block * 1e9),
                      switch_budget=switch_budget, period=period, unwind=unwind, comm=comm,
                      include_self=include_self, python=python)
    render = (lambda p, c: table.render(p, c, top)) if top else None
    return run_command(OFF_CPU if off_cpu else PROFILE, Command(
        cpu, duration, list(command), targets, render, otlp=otlp, spool=spool))


@cli.command(context_settings=LAUNCH)
@target_options("Trace")
@click.option("-s", "--syscall", "syscalls", multiple=True, metavar="NAME",
              help="Trace only this syscall (repeatable), e.g. openat.")
@click.option("-d", "--duration", type=Duration(), default=None,
              help="How long, e.g. 60s. Default: until Ctrl-C or SIGTERM.")
@click.option("-i", "--interval", type=Duration(), **default(SyscallSettings.interval_s, format_duration),
              help="How often to drain the kernel maps (and export OTLP metrics).")
@click.option("--latency/--no-latency", **default(SyscallSettings.latency),
              help="Time each call (histograms, percentiles); --no-latency counts only, cheaper.")
@click.option("--latency-budget", type=Count(), **default(int(SyscallSettings.latency_budget), format_count),
              metavar="CALLS/S",
              help="Time every call while the traced syscall rate stays under this; above it, time "
                   "a sample sized to it (counts stay exact). 0: time every call, whatever it costs.")
@click.option("--by", type=click.Choice(["syscall", "process"]), default="syscall", show_default=True,
              help="Rows of the table: one per syscall, or per process and syscall.")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="Rows in the table (0: none).")
@click.option("--files", is_flag=True, help="Also show read/write bytes and latency per process.")
@click.option("--top-processes", type=click.IntRange(min=0), **default(SyscallSettings.top_processes),
              metavar="N", help="Keep the N busiest processes row by row in every output; fold the "
                                "rest by command name and container, totals exact (0: keep all).")
@click.option("--name-after", type=click.IntRange(min=0), **default(SyscallSettings.name_after),
              metavar="N", help="Tracing every process: count one by its pid once it has made N "
                                "syscalls, before that under its command name (0: all by pid).")
@click.option("-o", "--output", metavar="FILE.json", type=click.Path(dir_okay=False),
              help="Write the results as JSON.")
@otlp_options
@command_argument
def syscalls(pids, comm, include_self, syscalls, duration, interval, latency, latency_budget, by, top, files,
             top_processes, name_after, output, command, **otlp_flags):
    """Count syscalls, their errors and latency, per syscall and process, in the kernel.

    With `-- CMD ARGS`, run CMD once tracing is attached, trace it and every process it
    forks, stop when it exits and exit with its status."""
    from ebpf_otlp.signals.syscalls import names as syscall_names
    from ebpf_otlp.engine.run import Command
    from ebpf_otlp.signals.syscalls import SYSCALLS, table

    numbers = []
    for name in syscalls:
        nr = syscall_names.number(name)
        if nr is None:
            close = syscall_names.suggestions(name)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise click.BadParameter(f"unknown syscall {name!r}{hint}", param_hint="'--syscall'")
        numbers.append(nr)
    check_target(pids, command, comm=comm)
    if duration and interval > duration:
        interval = duration
    otlp, spool = otlp_from_flags(otlp_flags)
    trace = SyscallSettings(pids=pids, comm=comm, syscalls=numbers, interval_s=interval,
                            latency=latency, latency_budget=latency_budget,
                            top_processes=top_processes, name_after=name_after,
                            include_self=include_self)
    render = lambda r, c: table.render(r, c, by, top, files)   # noqa: E731
    return run_command(SYSCALLS, Command(trace, duration, list(command),
                                         [(output, "json")] if output else [], render,
                                         otlp=otlp, spool=spool))


def valid_routes(ctx, param, routes):
    from ebpf_otlp.signals.net.routes import check_pattern
    try:
        return [check_pattern(r) for r in routes]
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def valid_protocols(ctx, param, value):
    from ebpf_otlp.signals.net.settings import protocols
    try:
        return protocols(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def valid_ports(ctx, param, ports):
    for port in ports:
        if not 1 <= port <= 65535:
            raise click.BadParameter(f"{port} is not a TCP/UDP port (1..65535)", ctx, param)
    return list(ports)


@cli.command("trace-net", context_settings=LAUNCH)
@target_options("Trace connections of")
@click.option("--port", "ports", type=int, multiple=True, callback=valid_ports,
              help="Trace only connections with this local or peer port (repeatable).")
@click.option("-d", "--duration", type=Duration(), default=None,
              help="How long, e.g. 60s. Default: until Ctrl-C or SIGTERM.")
@click.option("-i", "--interval", type=Duration(), **default(NetSettings.interval_s, format_duration),
              help="How often metrics go to the collector.")
@click.option("--hooks", type=click.Choice(HOOKS), **default(NetSettings.hooks), help="Kernel hooks: tracepoints (stable) or kprobes; auto prefers "
                                      "tracepoints and says which it used.")
@click.option("--rtt", is_flag=True, help="RTT histogram from every ACK (tcp:tcp_probe), not only at close.")
@click.option("--udp/--no-udp", **default(NetSettings.udp), help="UDP bytes and datagrams per process and peer.")
@click.option("--max-connections", type=click.IntRange(min=1024), **default(NetSettings.max_conns),
              help="Concurrent connections the kernel side can follow; more are counted as lost.")
@click.option("--protocols", callback=valid_protocols, metavar="LIST",
              default=",".join(NetSettings().protocols), show_default=True,
              help="Request spans for these protocols: http (HTTP/1.x and HTTP/2), grpc, "
                   "postgres, mysql, redis (a span per statement or command; MariaDB too); or none: "
                   "connections only.")
@click.option("--raw-queries", is_flag=True,
              help="Database statements as sent; by default their literals are replaced by ?.")
@click.option("--tls/--no-tls", **default(NetSettings.tls),
              help="Requests over TLS too: uprobes on OpenSSL's SSL_read/SSL_write.")
@click.option("--route", "routes", multiple=True, callback=valid_routes, metavar="PATTERN",
              help="A route, e.g. /users/{id} ({name} or * a segment, ** the rest): a request "
                   "whose path matches is named by it (repeatable; the first match wins).")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="Rows in the summary per process and peer (0: none).")
@click.option("-q", "--quiet", is_flag=True, help="No line per connection.")
@click.option("--lines", "all_lines", is_flag=True,
              help="A line per connection even when stdout is not a terminal (default: only on one).")
@click.option("-o", "--output", metavar="FILE.jsonl", type=click.Path(dir_okay=False),
              help="Write one JSON object per connection (and UDP flow).")
@otlp_options
@command_argument
def trace_net(pids, comm, include_self, ports, duration, interval, hooks, rtt, udp, max_connections, protocols,
              raw_queries, tls, routes, top, quiet, all_lines, output, command, **otlp_flags):
    """Trace every TCP connection (IPv4 and IPv6, either role): a line and a span per
    connection with its process, addresses, bytes, retransmits, RTT and how it ended;
    a span per HTTP request or gRPC call on them, and per PostgreSQL or MySQL statement or
    Redis command, as server or client; TCP and UDP metrics every interval."""
    from ebpf_otlp.engine.run import Command
    from ebpf_otlp.signals.net import NET, table

    check_target(pids, command, comm=comm)
    if quiet and all_lines:
        raise click.UsageError("-q/--quiet and --lines contradict each other")
    if duration and interval > duration:
        interval = duration
    otlp, spool = otlp_from_flags(otlp_flags)
    net = NetSettings(pids=pids, comm=comm, ports=ports, hooks=hooks, rtt=rtt, udp=udp,
                      max_conns=max_connections, interval_s=interval, include_self=include_self,
                      protocols=protocols, raw_queries=raw_queries, tls=tls, routes=routes)
    render = (lambda r, c: table.render_summary(r, c, top)) if top else None
    return run_command(NET, Command(net, duration, list(command), [(output, "jsonl")] if output else [],
                                    render, live_terminal=False if quiet else True if all_lines else None,
                                    otlp=otlp, spool=spool))


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="What to capture and where to write (see docs/config.md). Default: profile, "
                   "syscalls and trace-net of every process.")
@click.option("--output-dir", "--output-root", "output_root", metavar="DIR",
              help="Where bundles go (default /var/lib/ebpf-otlp/snapshots).")
@click.option("-d", "--duration", type=Duration(), help="How long the captures run (default 30s).")
@click.option("--keep", type=click.IntRange(min=1), help="Keep the newest N bundles (default 48).")
@click.option("--max-age", metavar="AGE", help="Remove bundles older than this, e.g. 7d (default 7d).")
@click.option("--max-total", metavar="SIZE", help="Keep all bundles under this size, e.g. 2GiB (default 2GiB).")
@click.option("--tar/--no-tar", default=None, help="Write each bundle as one .tar.gz.")
@click.option("--print-config", is_flag=True, help="Print the effective configuration and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Say on stderr when the captures are attached.")
def snapshot(config_path, output_root, duration, keep, max_age, max_total, tar, print_config, verbose):
    """Capture what the config names, at once, for one duration, into one timestamped
    bundle of files (pprof, flame graphs, syscalls and connections JSON, doctor.json,
    manifest.json); for cron or a systemd timer. Exits 75 if another run holds the
    output root, 1 if a capture failed (the manifest says why)."""
    from ebpf_otlp import config as cfg
    from ebpf_otlp.sessions import snapshot as session

    config = cfg.load(config_path)
    config.default_captures()
    for option, value, convert in (("--max-age", max_age, values.check_duration),
                                   ("--max-total", max_total, values.parse_size)):
        if value is not None:
            try:
                convert(value)
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint=f"'{option}'")
    config.override("snapshot", output_root=output_root, duration=duration, keep=keep,
                    max_age=values.check_duration(max_age) if max_age else None,
                    max_total=values.parse_size(max_total) if max_total else None, tar=tar)
    if print_config:
        config.check_captures()
        click.echo(config.to_toml(("snapshot", *config.captures, "otlp")), nl=False)
        return 0
    return session.run(config, notice_console(), result_console(), verbose)


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="What to capture and where to send it (see docs/config.md). Default: profile, "
                   "syscalls and trace-net of every process.")
@click.option("--output-dir", metavar="DIR",
              help="With no collector, where windows are written (default /var/lib/ebpf-otlp/agent).")
@click.option("--window", type=Duration(), help="Length of each CPU profile (default 60s).")
@click.option("-i", "--interval", type=Duration(), help="How often metrics are exported (default 10s).")
@click.option("-d", "--duration", type=Duration(), default=None,
              help="Stop after this long (default: run until SIGTERM).")
@otlp_options
def agent(config_path, output_dir, window, interval, duration, **otlp_flags):
    """Run the configured collectors continuously: CPU profiles cut into consecutive
    windows and sent as OTLP profiles, syscall and network metrics every interval, spans as
    connections close; with no collector, windows rotate into files. SIGTERM flushes the
    current window and exits; SIGHUP reloads the configuration."""
    from ebpf_otlp import config as cfg
    from ebpf_otlp.sessions import agent as session

    config = cfg.load(config_path)
    config.default_captures()
    config.override("agent", output_dir=output_dir, window=window, interval=interval)
    flags = otlp_table(otlp_flags)
    if "headers" in flags:   # added to the file's
        flags["headers"] = {**config.tables.get("otlp", {}).get("headers", {}), **flags["headers"]}
    config.override("otlp", **flags)
    return session.run(config, notice_console(), result_console(), duration)


class Size(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        from ebpf_otlp.values import parse_size
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@cli.command(context_settings=LAUNCH)
@click.option("-p", "--pid", "pids", multiple=True, metavar="PID[,PID...]", callback=pid_list,
              help="Trace these processes' allocations (repeatable).")
@click.option("-c", "--comm", metavar="NAME", callback=valid_comm,
              help="Trace the processes running with this command name now (as pgrep -x).")
@click.option("-d", "--duration", type=Duration(), default=None,
              help="How long, e.g. 30s. Default: until Ctrl-C or SIGTERM (or the command exits).")
@click.option("--sample-bytes", type=Size(), **default(HeapSettings.rate, format_size), metavar="SIZE",
              help="Mean bytes between sampled allocations (as tcmalloc and Go sample).")
@click.option("--every-call", is_flag=True, help="Record every allocation: exact, and costly.")
@click.option("--no-free", is_flag=True, help="Allocation profile only: no probe on free.")
@click.option("--mmap/--no-mmap", **default(HeapSettings.mmap),
              help="Count anonymous mmap/munmap calls (syscall tracepoints) as allocations and frees "
                   "too; the allocator's own mmaps are counted at malloc, not twice.")
@click.option("--min-age", type=Duration(), **default(HeapSettings.min_age_s, format_duration),
              help="The leak report lists allocations outstanding longer than this.")
@click.option("--lib", metavar="PATH", help="The allocator's library (default: the libc the process maps); "
                                         "a static executable is its own.")
@click.option("--symbol-prefix", default=HeapSettings.symbol_prefix, metavar="PREFIX", help="e.g. je_ for jemalloc's prefixed symbols.")
@click.option("-i", "--interval", type=Duration(), **default(HeapSettings.interval_s, format_duration),
              help="How often the kernel's maps are read (leak growth is per interval).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Rows in the leak report (0: none).")
@profile_outputs
@unwind_option
@python_option(HeapSettings.python)
@otlp_options
@command_argument
def memleak(pids, comm, duration, sample_bytes, every_call, no_free, mmap, min_age, lib, symbol_prefix, interval,
            top, outputs, fmt, unwind, python, command, **otlp_flags):
    """Heap profile and leak report from allocator uprobes (malloc, calloc, realloc,
    posix_memalign, ... and free), sampled by bytes in the kernel: alloc and in-use objects
    and space per stack (Go's heap profile), and what stays allocated longer than --min-age."""
    from ebpf_otlp.export import profile_files
    from ebpf_otlp.signals.heap import report
    from ebpf_otlp.engine.run import Command
    from ebpf_otlp.signals.heap import HEAP

    if not pids and not command and not comm:
        raise click.UsageError("name the process: --pid PID, --comm NAME, or a command after --")
    check_target(pids, command, comm=comm)
    if comm:
        pids = processes_named(comm)
    if sample_bytes <= 0:
        raise click.BadParameter("must be more than zero (--every-call records every allocation)",
                                 param_hint="'--sample-bytes'")
    if fmt and len(outputs) > 1:
        raise click.UsageError("--format applies to a single -o; name several files by extension")
    otlp, spool = otlp_from_flags(otlp_flags)
    targets = [(path, profile_files.format_for(path, fmt)) for path in outputs]
    heap = HeapSettings(pids=pids, rate=0 if every_call else sample_bytes, library=lib,
                        symbol_prefix=symbol_prefix, no_free=no_free, min_age_s=min_age,
                        interval_s=interval, unwind=unwind, mmap=mmap, python=python)
    render = (lambda r, c: report.render(r, c, top)) if top else None
    return run_command(HEAP, Command(heap, duration, list(command), targets, render, otlp=otlp,
                                     spool=spool))


@cli.command("flush-spool")
@otlp_options
def flush_spool(**otlp_flags):
    """Resend the payloads an unreachable collector did not take, oldest first."""
    from ebpf_otlp.export.otlp_output import OtlpOutput

    otlp, spool = otlp_from_flags(otlp_flags)
    waiting = len(spool.pending())
    if otlp is None:
        raise AgentError("no collector named: give --otlp-endpoint or set OTEL_EXPORTER_OTLP_ENDPOINT")
    if not waiting:
        click.echo(f"spool {spool.dir} is empty")
        return
    output = OtlpOutput.open(settings=otlp, spool=spool)
    output.close()
    left = len(spool.pending())
    click.echo(f"resent {output.resent} of {waiting} spooled payload(s) to {otlp.endpoint}; {left} left")
    if left:
        raise AgentError(f"collector unreachable ({output.last_error}): {left} payload(s) stay in {spool.dir}")


def processes_named(comm: str) -> list[int]:
    """The running processes whose command name is `comm` (not ebpf-otlp's own)."""
    from ebpf_otlp.signals.targets import own_processes
    from ebpf_otlp.runtime.processes import process_name

    own = own_processes()
    found = sorted(pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                   if pid not in own and process_name(pid) == comm)
    if not found:
        raise click.BadParameter(f"no process named {comm!r} is running", param_hint="'--comm'")
    return found


def _make_dir(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise AgentError(f"cannot create output directory {directory}: {e.strerror}") from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json):
    """Try each kernel capability for real; say which commands and hooks will work."""
    from ebpf_otlp.doctor.checks import Doctor
    from ebpf_otlp.doctor import report as doctor_report

    result = Doctor().run()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        doctor_report.render(result, text_console())
    sys.exit(result.exit_status)   # 1 when no command can run here (2 is for bad input)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """Run the CLI; every expected failure is one line on stderr and exit status 2."""
    try:
        status = cli.main(prog_name=PROG, standalone_mode=False)
    except _NO_ARGS_IS_HELP as e:   # bare `ebpf-otlp`: the help text is the answer
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(0)
    except click.ClickException as e:   # usage errors too: one prefix for every error
        click.echo(f"{PROG}: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except AgentError as e:
        click.echo(f"{PROG}: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:   # before the capture started (e.g. while compiling)
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
