"""The deployment examples in examples/deploy/ are checked, not only shown: the TOML files
load (commented-out keys too), every ebpf-otlp command line in the crontab, the systemd
units and the Kubernetes manifests is accepted by the CLI with the example's config, the
units pass `systemd-analyze verify`, the manifests give the agent what it reads from the
node, and the collector config puts k8sattributes in every pipeline. No BPF is loaded."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from ebpf_otlp import config as cfg
from ebpf_otlp.cli import cli
from ebpf_otlp.export.otlp_settings import resolve
from ebpf_otlp.runtime.privileges import CAPABILITIES
from ebpf_otlp.signals.net.settings import NetSettings
from ebpf_otlp.signals.profile.settings import CpuSettings
from ebpf_otlp.signals.syscalls.settings import SyscallSettings

try:
    import tomllib
except ImportError:   # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "examples" / "deploy"
ETC = "/etc/ebpf-otlp"
INSTALLED = "/usr/local/bin/ebpf-otlp"
UNITS = ("ebpf-otlp-agent.service", "ebpf-otlp-snapshot.service", "ebpf-otlp-snapshot.timer")
# What the agent uses (docs/config.md), as the privilege check advises it.
CAPS = {c.removeprefix("CAP_") for c in CAPABILITIES}
# Host paths a pod of the agent needs, and whether it may write there.
HOST_PATHS = {"/sys/fs/cgroup": False, "/sys/kernel/btf": False, "/sys/kernel/tracing": True,
              "/lib/modules": False, "/usr/src": False, "/var/cache/ebpf-otlp": True,
              "/var/lib/ebpf-otlp": True}
SHELL_OPERATORS = re.compile(r"^(\d*[<>].*|\||\|\||&&|;|&)$")


# -- command lines --------------------------------------------------------------------------
def ebpf_otlp_args(argv: list[str]) -> list[str]:
    """The arguments after the ebpf-otlp program in a command line, up to any redirection."""
    starts = [i for i, word in enumerate(argv) if os.path.basename(word) == "ebpf-otlp"]
    assert starts, f"no ebpf-otlp command in {argv}"
    args = []
    for word in argv[starts[0] + 1:]:
        if SHELL_OPERATORS.match(word):
            break
        args.append(word)
    return args


def parse_command(args: list[str]) -> tuple[str, dict]:
    """Parse as the CLI would, without running anything: (subcommand, its parameters)."""
    parent = click.Context(cli, info_name="ebpf-otlp")
    name, rest = args[0], args[1:]
    command = cli.get_command(parent, name)
    assert command is not None, f"unknown subcommand {name!r}"
    with command.make_context(name, list(rest), parent=parent) as ctx:
        return name, dict(ctx.params)


def map_config(args: list[str], configs: dict[str, Path]) -> list[str]:
    """/etc/ebpf-otlp/NAME in a command line -> the example file standing for it."""
    out = []
    for word in args:
        if word.startswith(ETC + "/"):
            name = word[len(ETC) + 1:]
            assert name in configs, f"{word}: no example config for it ({sorted(configs)})"
            word = str(configs[name])
        out.append(word)
    return out


def check_command(argv: list[str], configs: dict[str, Path], tmp_path: Path) -> tuple[str, cfg.Config]:
    """An example's command line: accepted by the CLI, its config loads, and for snapshot
    `--print-config` (nothing captured, nothing written) shows the file's captures."""
    args = map_config(ebpf_otlp_args(argv), configs)
    name, params = parse_command(args)
    assert name in ("snapshot", "agent"), args
    assert params["config_path"], f"{args}: examples name their config file"
    config = cfg.load(params["config_path"])
    assert config.captures, f"{params['config_path']} names no capture"
    check_capture_settings(config)
    if name == "snapshot":
        out = tmp_path / "snapshots"
        r = subprocess.run([sys.executable, "-m", "ebpf_otlp", *args, "--output-root", str(out),
                            "--print-config"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        printed = cfg.check(tomllib.loads(r.stdout))
        assert printed.section("snapshot")["output_root"] == str(out)
        assert printed.captures == config.captures
        assert not out.exists(), "--print-config must not create the output root"
    return name, config


def check_capture_settings(config: cfg.Config) -> None:
    """What the sessions build from the tables (syscall names are checked here)."""
    t = config.tables
    if "profile" in t:
        CpuSettings.from_table(t["profile"], off_cpu=bool(t["profile"].get("off_cpu")))
    if "syscalls" in t:
        SyscallSettings.from_table(t["syscalls"], config.path)
    if "trace_net" in t:
        NetSettings.from_table(t["trace_net"])


def test_command_line_helpers_parse_what_they_should():
    assert ebpf_otlp_args(["/usr/local/bin/ebpf-otlp", "snapshot", "--config", "x", ">/dev/null"]) \
        == ["snapshot", "--config", "x"]
    assert ebpf_otlp_args(["ebpf-otlp", "agent", "2>&1", "|", "logger"]) == ["agent"]
    with pytest.raises(click.UsageError):
        parse_command(["snapshot", "--keep", "0"])
    with pytest.raises(click.UsageError):
        parse_command(["agent", "--bogus"])


# -- TOML ------------------------------------------------------------------------------------
COMMENTED_KEY = re.compile(r"^# ?((\[[a-z_-]+\])|([a-z_]+ = \S.*))$")


def uncommented(text: str) -> str:
    """The file with its commented-out tables and keys switched on."""
    return "\n".join(COMMENTED_KEY.sub(r"\1", line) for line in text.splitlines()) + "\n"


@pytest.mark.parametrize("name", ["snapshot.toml", "agent.toml"])
def test_toml_examples_load(name, tmp_path):
    path = DEPLOY / name
    config = cfg.load(str(path))
    assert config.captures == ["profile", "syscalls", "trace_net"]
    check_capture_settings(config)
    # The keys shown commented out are valid too, once switched on.
    text = uncommented(path.read_text())
    assert text != path.read_text()
    on = tmp_path / name
    on.write_text(text)
    check_capture_settings(cfg.load(str(on)))


def test_snapshot_toml_uses_every_table_and_the_main_keys():
    text = (DEPLOY / "snapshot.toml").read_text()
    tables = cfg.check(tomllib.loads(text)).tables
    assert set(tables) == {"snapshot", "profile", "syscalls", "trace_net"}
    assert set(tables["snapshot"]) == set(cfg.SCHEMA["snapshot"])
    assert tables["profile"]["off_cpu"] is True and tables["trace_net"]["ports"]
    assert "otlp" in cfg.check(tomllib.loads(uncommented(text))).tables   # commented out


def test_agent_toml_sends_to_a_local_collector():
    config = cfg.load(str(DEPLOY / "agent.toml"))
    a = config.section("agent")
    assert a["window"] == 60.0 and a["interval"] == 10.0
    otlp = config.tables["otlp"]
    settings = resolve(otlp["endpoint"], otlp.get("protocol"), (), otlp.get("insecure"),
                       otlp.get("ca_file"), otlp.get("compression"), otlp.get("timeout"), env={})
    assert settings.grpc_target("profiles") == "localhost:4317" and not settings.tls


# -- crontab ---------------------------------------------------------------------------------
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_field(field: str, low: int, high: int) -> set[int]:
    """The values a crontab schedule field matches (numbers, *, ranges, steps, lists)."""
    values: set[int] = set()
    for part in field.split(","):
        m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        assert m, f"bad crontab field {field!r}"
        start, end = (low, high) if m.group(1) == "*" else \
            (int(m.group(2)), int(m.group(3) or m.group(2)))
        step = int(m.group(4) or 1)
        assert low <= start <= end <= high and step >= 1, f"crontab field {field!r} out of range"
        values.update(range(start, end + 1, step))
    return values


def crontab_entries(text: str) -> list[tuple[list[str], str]]:
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"crontab line without five schedule fields and a command: {line!r}"
        entries.append((fields[:5], fields[5]))
    return entries


def test_cron_field_parser():
    assert cron_field("*/15", 0, 59) == {0, 15, 30, 45}
    assert cron_field("1-5,7", 0, 23) == {1, 2, 3, 4, 5, 7}
    with pytest.raises(AssertionError):
        cron_field("60", 0, 59)


def test_crontab_runs_snapshot_every_15_minutes(tmp_path):
    text = (DEPLOY / "crontab").read_text()
    entries = crontab_entries(text)
    assert len(entries) == 1
    schedule, command = entries[0]
    matched = [cron_field(f, lo, hi) for f, (lo, hi) in zip(schedule, CRON_RANGES)]
    assert matched[0] == {0, 15, 30, 45} and schedule[1:] == ["*"] * 4
    assert "%" not in command   # cron would cut the command there
    argv = shlex.split(command)
    assert argv[0] == INSTALLED
    name, _ = check_command(argv, {"snapshot.toml": DEPLOY / "snapshot.toml"}, tmp_path)
    assert name == "snapshot"
    assert "75" in text   # the comment on EX_TEMPFAIL


# -- systemd ---------------------------------------------------------------------------------
def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line!r} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(values: list[str]) -> set[str]:
    return {w for v in values for w in v.split()}


def exec_argv(value: str) -> list[str]:
    return shlex.split(value.lstrip("-@:+!"))


@pytest.mark.parametrize("unit", ["ebpf-otlp-agent.service", "ebpf-otlp-snapshot.service"])
def test_units_run_the_cli_with_their_example_config(unit, tmp_path):
    service = unit_settings(DEPLOY / unit)["Service"]
    (start,) = service["ExecStart"]
    argv = exec_argv(start)
    assert argv[0] == INSTALLED
    configs = {"agent.toml": DEPLOY / "agent.toml", "snapshot.toml": DEPLOY / "snapshot.toml"}
    name, _ = check_command(argv, configs, tmp_path)
    assert unit == f"ebpf-otlp-{name}.service"


@pytest.mark.parametrize("unit", ["ebpf-otlp-agent.service", "ebpf-otlp-snapshot.service"])
def test_units_are_hardened_but_keep_what_the_agent_needs(unit):
    s = unit_settings(DEPLOY / unit)["Service"]
    needed = {f"CAP_{c}" for c in CAPS}
    assert words(s["CapabilityBoundingSet"]) == needed == words(s["AmbientCapabilities"])
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    writable = {w.lstrip("-") for w in words(s["ReadWritePaths"])}
    assert {"/var/lib/ebpf-otlp", "/var/cache/ebpf-otlp", "/sys/kernel/tracing"} <= writable
    assert s["StateDirectory"] == ["ebpf-otlp"] and s["CacheDirectory"] == ["ebpf-otlp"]
    assert s["PrivateTmp"] == ["no"]               # /tmp/perf-PID.map
    assert s["ProtectHome"] == ["read-only"]       # binaries in home directories
    assert s["LimitMEMLOCK"] == ["infinity"]
    # Each of these would take away something the agent reads: /proc/kallsyms,
    # CAP_SYSLOG, /lib/modules (headers), other processes.
    for key in ("ProtectKernelTunables", "ProtectKernelLogs", "ProtectKernelModules",
                "PrivateUsers", "ProtectProc", "DynamicUser"):
        assert s.get(key, ["no"])[-1] in ("no", "false", "default"), f"{unit}: {key}"


def test_agent_unit_restarts_and_reloads():
    s = unit_settings(DEPLOY / "ebpf-otlp-agent.service")["Service"]
    assert s["Restart"] == ["on-failure"]
    assert "-HUP" in s["ExecReload"][0]


def test_snapshot_timer_and_oneshot_service():
    service = unit_settings(DEPLOY / "ebpf-otlp-snapshot.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert "75" in words(service["SuccessExitStatus"])
    timer = unit_settings(DEPLOY / "ebpf-otlp-snapshot.timer")["Timer"]
    assert timer["OnCalendar"] == ["*:0/15"] and timer["Persistent"] == ["true"]
    assert timer["RandomizedDelaySec"] and timer["Unit"] == ["ebpf-otlp-snapshot.service"]
    assert unit_settings(DEPLOY / "ebpf-otlp-snapshot.timer")["Install"]["WantedBy"] == ["timers.target"]


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): "
                    "the units are not verified")
    return analyze


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    """verify checks every directive and that ExecStart's program exists: the copies run a
    stub in its place (the examples keep /usr/local/bin/ebpf-otlp)."""
    analyze = _analyze()
    stub = tmp_path / "ebpf-otlp"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for unit in UNITS:
        text = (DEPLOY / unit).read_text()
        (tmp_path / unit).write_text(text.replace(INSTALLED, str(stub)))
    options = ["--man=no"]
    usage = subprocess.run([analyze, "--help"], capture_output=True, text=True).stdout
    if "--recursive-errors" in usage:
        options.append("--recursive-errors=no")   # only our units, not what they pull in
    r = subprocess.run([analyze, "verify", *options, *(str(tmp_path / u) for u in UNITS)],
                       capture_output=True, text=True, timeout=120)
    output = r.stdout + r.stderr
    about_ours = [line for line in output.splitlines() if any(u in line for u in UNITS)
                  or str(tmp_path) in line]
    assert r.returncode == 0 and not about_ours, output


def test_timer_fires_every_15_minutes():
    analyze = _analyze()
    (calendar,) = unit_settings(DEPLOY / "ebpf-otlp-snapshot.timer")["Timer"]["OnCalendar"]
    r = subprocess.run([analyze, "calendar", "--iterations=5", calendar], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"Normalized form: \*-\*-\* \*:00/15:00", r.stdout), r.stdout


# -- Kubernetes ------------------------------------------------------------------------------
def manifests(name: str) -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
        if doc:
            by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def quantity(text) -> float:
    """A Kubernetes memory or CPU quantity as a number (bytes, cores)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?", str(text))
    assert m, f"bad quantity {text!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    return float(m.group(1)) * scale[m.group(2)]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) references in env values and commands."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def check_pod(pod: dict, config_maps: list[dict], tmp_path: Path) -> tuple[str, cfg.Config, dict]:
    """What any pod running ebpf-otlp needs; returns (subcommand, its config, container)."""
    assert pod["hostPID"] is True
    assert pod.get("automountServiceAccountToken") is False
    assert {"operator": "Exists"} in pod.get("tolerations", [])   # every node, any taint
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert not sc.get("privileged"), "capabilities instead of privileged"
    assert CAPS <= set(sc["capabilities"]["add"])
    assert sc["capabilities"].get("drop") == ["ALL"]
    # The API server refuses allowPrivilegeEscalation: false together with CAP_SYS_ADMIN.
    assert sc.get("allowPrivilegeEscalation") is not False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all(m["name"] in volumes for m in mounts.values())
    for path, writable in HOST_PATHS.items():
        assert path in mounts, f"{path} is not mounted"
        volume = volumes[mounts[path]["name"]]
        assert volume.get("hostPath", {}).get("path") == path, f"{path}: not the host's"
        assert bool(mounts[path].get("readOnly")) is not writable, f"{path}: readOnly"
    # The config: a ConfigMap key mounted where the command line looks for it.
    argv = container["command"] + container.get("args", [])
    args = ebpf_otlp_args(argv)
    (config_path,) = [a for a in args if a.startswith(ETC + "/")]
    mount = mounts[ETC]
    assert mount.get("readOnly") is True
    source = volumes[mount["name"]]["configMap"]
    (config_map,) = [c for c in config_maps if c["metadata"]["name"] == source["name"]]
    (item,) = [i for i in source["items"] if f"{ETC}/{i['path']}" == config_path]
    text = config_map["data"][item["key"]]
    local = tmp_path / item["path"]
    local.write_text(text)
    name, config = check_command(argv, {item["path"]: local}, tmp_path)
    # Everything it writes is on a writable host directory, kept across pods.
    state = [p for p, w in HOST_PATHS.items() if w]
    writes = [config.section("snapshot")["output_root"] if name == "snapshot" else
              config.section("agent")["output_dir"],
              config.tables.get("otlp", {}).get("spool_dir", "/var/lib/ebpf-otlp/spool")]
    for path in writes:
        assert any(path == p or path.startswith(p + "/") for p in state), f"{path} is not kept"
    resources = container["resources"]
    for kind in ("memory", "cpu"):
        assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])
    assert quantity(resources["limits"]["memory"]) >= 256 * 2**20
    return name, config, container


def test_daemonset_runs_the_agent_with_what_it_needs(tmp_path, monkeypatch):
    objects = manifests("daemonset.yaml")
    assert set(objects) == {"ConfigMap", "DaemonSet"}
    for kind in objects.values():
        for obj in kind:
            assert obj["metadata"]["namespace"] == "observability"
    (ds,) = objects["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    name, config, container = check_pod(pod, objects["ConfigMap"], tmp_path)
    assert name == "agent"

    # env: the node-local collector and the node's name, from the downward API; a
    # $(VAR) reference only expands to a variable defined before it.
    env, fields = {}, {"HOST_IP": "10.1.2.3", "K8S_NODE_NAME": "node-a"}
    for var in container["env"]:
        if "valueFrom" in var:
            env[var["name"]] = fields[var["name"]]
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert path == {"HOST_IP": "status.hostIP", "K8S_NODE_NAME": "spec.nodeName"}[var["name"]]
        else:
            env[var["name"]] = expand(var["value"], env)
    assert "$(" not in "".join(env.values()), env
    # No endpoint in the file: the variable is the one that counts.
    otlp = config.tables.get("otlp", {})
    assert "endpoint" not in otlp
    settings = resolve(None, otlp.get("protocol"), (), otlp.get("insecure"), otlp.get("ca_file"),
                       otlp.get("compression"), otlp.get("timeout"), env=env)
    assert settings.endpoint == "http://10.1.2.3:4317"
    assert settings.grpc_target("profiles") == "10.1.2.3:4317"
    from ebpf_otlp.export.resource import build_resource
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", env["OTEL_RESOURCE_ATTRIBUTES"])
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    attributes = build_resource().attributes
    assert attributes["k8s.node.name"] == "node-a" and attributes["host.name"] == "node-a"
    assert attributes["service.name"] == "ebpf-otlp"


def test_snapshot_cronjob_writes_bundles_on_its_node(tmp_path):
    objects = manifests("snapshot-cronjob.yaml")
    assert set(objects) == {"ConfigMap", "CronJob"}
    (cron,) = objects["CronJob"]
    assert cron["metadata"]["namespace"] == "observability"
    spec = cron["spec"]
    schedule = spec["schedule"].split()
    assert len(schedule) == 5
    assert cron_field(schedule[0], 0, 59) == {0, 15, 30, 45} and schedule[1:] == ["*"] * 4
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # One CronJob covers one node: it is pinned to it.
    assert pod.get("nodeName") or "kubernetes.io/hostname" in pod.get("nodeSelector", {})
    name, config, _ = check_pod(pod, objects["ConfigMap"], tmp_path)
    assert name == "snapshot"
    assert config.section("snapshot")["output_root"].startswith("/var/lib/ebpf-otlp/")


# -- OpenTelemetry Collector -----------------------------------------------------------------
def test_collector_enriches_every_pipeline_with_k8sattributes():
    text = (DEPLOY / "otel-collector.yaml").read_text()
    c = yaml.safe_load(text)
    assert {"grpc", "http"} <= set(c["receivers"]["otlp"]["protocols"])
    k8s = c["processors"]["k8sattributes"]
    sources = [s for rule in k8s["pod_association"] for s in rule["sources"]]
    assert {"from": "resource_attribute", "name": "k8s.pod.uid"} in sources
    assert {"from": "resource_attribute", "name": "container.id"} in sources
    # From the connection, every process would get the agent's own pod.
    assert all(s["from"] != "connection" for s in sources)
    assert {"k8s.pod.name", "k8s.namespace.name", "k8s.deployment.name",
            "k8s.node.name"} <= set(k8s["extract"]["metadata"])
    assert "debug" in c["exporters"]

    pipelines = c["service"]["pipelines"]
    assert {"traces", "metrics", "profiles"} <= set(pipelines)
    for signal, p in pipelines.items():
        assert "otlp" in p["receivers"] and "k8sattributes" in p["processors"], signal
        for kind in ("receivers", "processors", "exporters"):
            for component in p[kind]:
                assert component in c[kind], f"{signal}: {component} is not defined"
    for signal in ("traces", "metrics"):
        processors = pipelines[signal]["processors"]
        # Span and data-point attributes moved to the resource, where k8sattributes looks.
        (group,) = [p for p in processors if p.split("/")[0] == "groupbyattrs"]
        assert {"k8s.pod.uid", "container.id"} <= set(c["processors"][group]["keys"])
        assert processors.index(group) < processors.index("k8sattributes")
        assert processors[-1] == "batch"
    assert "batch" not in pipelines["profiles"]["processors"]   # it takes no profiles
    assert "service.profilesSupport" in text                   # the feature gate, explained
