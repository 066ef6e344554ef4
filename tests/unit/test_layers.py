"""The import layers: each package imports only from its own layer or below, and no module
imports itself back through others. (Imports under TYPE_CHECKING are annotations and are
left out; imports inside functions count.)"""

from __future__ import annotations

import ast
from pathlib import Path

import ebpf_otlp

ROOT = Path(ebpf_otlp.__file__).parent
# Lowest first. The base: modules every layer may use.
LAYERS = [
    {"__init__", "errors", "records", "units", "histogram", "gcpause", "buildid_cache"},
    {"runtime"},            # the BCC platform
    {"values"},             # checkers of configuration values
    {"symbolize"},
    {"unwind", "pyframes"},   # stacks walked in the kernel: native by tables, Python by frames
    {"export"},             # formats and sinks; asks a result's descriptor, never the registry
    {"signals"},            # one folder per signal, and the registry
    {"engine"},             # the capture loop, launch mode, the output stage
    {"config"},
    {"doctor"},
    {"sessions"},           # snapshot, agent
    {"cli", "__main__"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        if path.name.endswith("_pb2.py"):
            continue   # generated at install
        name = ".".join(("ebpf_otlp",) + path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    annotations = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ebpf_otlp"):
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ebpf_otlp")]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_no_import_runs_up_the_layers():
    known = modules()
    upward = [f"{m} imports {t}" for m, path in known.items() for t in imports(path, known)
              if layer(t) > layer(m)]
    assert not upward, upward


def test_no_module_imports_itself_back():
    known = modules()
    graph = {m: imports(path, known) - {m} for m, path in known.items()}
    done: set[str] = set()

    def visit(m: str, trail: list[str]) -> None:
        if m in trail:
            raise AssertionError(" -> ".join(trail[trail.index(m):] + [m]))
        if m in done:
            return
        for t in graph[m]:
            visit(t, trail + [m])
        done.add(m)

    for m in graph:
        visit(m, [])
