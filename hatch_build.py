"""Build hook: compile the vendored pprof profile.proto into ebpf_otlp/export/profile_pb2.py.

The module is generated, not committed, so it always comes from the pinned grpcio-tools
(see [build-system] in pyproject.toml). Runs for editable installs too.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from packaging.requirements import Requirement
from packaging.version import Version

PROTO = Path("proto/pprof/profile.proto")
# Compiled under this name so the file registered in protobuf's default descriptor pool
# is ours alone (a bare "profile.proto" is a name other packages may use).
PROTO_NAME = "ebpf_otlp/export/profile.proto"
OUT = Path("src/ebpf_otlp/export/profile_pb2.py")


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return          # the sdist ships the .proto and this hook, not the output
        root = Path(self.root)
        _generate(root / PROTO, root / OUT)
        self._check_gencode(root / OUT)
        # .gitignore'd, so hatchling would leave it out of the wheel without this.
        build_data["artifacts"].append(f"/{OUT.as_posix()}")

    def clean(self, versions: list[str]) -> None:
        (Path(self.root) / OUT).unlink(missing_ok=True)

    def _check_gencode(self, path: Path) -> None:
        """protobuf refuses at import gencode newer than the runtime, so the generated
        code must not be newer than the oldest protobuf the package allows."""
        found = re.search(r"^# Protobuf Python Version: (\S+)$", path.read_text(), re.M)
        gencode = Version(found.group(1)) if found else None
        floors = [Version(s.version)
                  for dep in self.metadata.core.dependencies
                  if (req := Requirement(dep)).name == "protobuf"
                  for s in req.specifier if s.operator == ">="]
        if gencode is None or not floors or gencode > max(floors):
            path.unlink()   # an installed copy would only fail later, at import
            raise RuntimeError(
                f"{path}: protobuf gencode {gencode} is newer than the protobuf>= floor "
                f"{max(floors, default=None)} in pyproject.toml; pin grpcio-tools lower "
                "in [build-system] requires or raise the floor")


def _generate(proto: Path, out: Path) -> None:
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise RuntimeError("building ebpf-otlp needs grpcio-tools (a [build-system] "
                           "requirement; with --no-build-isolation install it first)") from e
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp, PROTO_NAME)
        staged.parent.mkdir(parents=True)
        shutil.copyfile(proto, staged)
        if protoc.main(["protoc", f"-I{tmp}", f"--python_out={tmp}", PROTO_NAME]) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        shutil.copyfile(staged.with_name("profile_pb2.py"), out)
