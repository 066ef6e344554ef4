"""Google's pprof Profile message (perftools.profiles), the one import point for it.

The classes come from proto/pprof/profile.proto, compiled into profile_pb2 when the
package is built or installed (hatch_build.py), so they are never hand-maintained.
"""

try:
    from ebpf_otlp.export.profile_pb2 import Profile
except ModuleNotFoundError as e:
    if e.name != "ebpf_otlp.export.profile_pb2":
        raise
    raise ImportError(
        "ebpf_otlp.export.profile_pb2 is missing: it is generated from proto/pprof/profile.proto "
        "at install time; reinstall ebpf-otlp (from a checkout: pip install -e .)") from e

__all__ = ["Profile"]
