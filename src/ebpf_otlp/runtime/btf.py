"""Struct member offsets from the running kernel's BTF, for BPF programs built on wrong headers.

BCC may compile against generic distribution headers of another kernel version
(see headers.py), whose layouts of kernel-internal structs such as tcp_sock differ
from the running kernel's. The kernel describes its own types in raw BTF at
/sys/kernel/btf/vmlinux; this reads byte offsets from it, which programs then get as
-D defines and use with bpf_probe_read_kernel. Pure Python and no dependencies: one
pass indexes where each type starts, everything else is decoded only when asked for.

Format: the kernel's Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass

from ebpf_otlp.buildid_cache import BuildIdCache, cache_dir
from ebpf_otlp.errors import AgentError

VMLINUX = "/sys/kernel/btf/vmlinux"

MAGIC = 0xEB9F

# Kinds (btf.rst, "Type Encoding").
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

KIND_NAMES = {
    0: "VOID", INT: "INT", PTR: "PTR", ARRAY: "ARRAY", STRUCT: "STRUCT", UNION: "UNION",
    ENUM: "ENUM", FWD: "FWD", TYPEDEF: "TYPEDEF", VOLATILE: "VOLATILE", CONST: "CONST",
    RESTRICT: "RESTRICT", FUNC: "FUNC", FUNC_PROTO: "FUNC_PROTO", VAR: "VAR",
    DATASEC: "DATASEC", FLOAT: "FLOAT", DECL_TAG: "DECL_TAG", TYPE_TAG: "TYPE_TAG",
    ENUM64: "ENUM64",
}

# Bytes after the 12-byte btf_type: a fixed part plus a part per vlen item. The whole
# section can only be walked if every kind's length is right; unknown kinds stop it.
_FIXED = [None] * 32
_PER_ITEM = [0] * 32
for _kind in range(1, 20):
    _FIXED[_kind] = 0
_FIXED[INT] = 4            # encoding / bit offset / bits
_FIXED[ARRAY] = 12         # btf_array {type, index_type, nelems}
_FIXED[VAR] = 4            # linkage
_FIXED[DECL_TAG] = 4       # component_idx
_PER_ITEM[STRUCT] = _PER_ITEM[UNION] = 12   # btf_member {name_off, type, offset}
_PER_ITEM[ENUM] = 8                         # btf_enum {name_off, val}
_PER_ITEM[ENUM64] = 12                      # btf_enum64 {name_off, val_lo32, val_hi32}
_PER_ITEM[FUNC_PROTO] = 8                   # btf_param {name_off, type}
_PER_ITEM[DATASEC] = 12                     # btf_var_secinfo {type, offset, size}
# Per kind: how many bytes one type with vlen 0 takes, and per vlen item.
_STEP = tuple(None if f is None else 12 + f for f in _FIXED)
_PER = tuple(_PER_ITEM)

# Kinds that only qualify or rename another type: followed to reach a size or members.
_MODIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))
_AGGREGATES = (STRUCT, UNION)


class BtfError(AgentError):
    """The BTF cannot be read or does not answer the question as asked."""


class BtfLookupError(BtfError, KeyError):
    """A struct or member the running kernel does not have (its layout changed)."""

    def __str__(self) -> str:      # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Member:
    """Where a (possibly nested) member lies inside the outermost struct."""

    struct: str
    path: str
    bit_offset: int       # from the start of the outermost struct
    bitfield_size: int    # 0 when not a bitfield
    size: int             # bytes of the member's declared type (storage type for a bitfield)
    type_id: int
    type_name: str

    @property
    def offset(self) -> int:
        """Byte offset; meaningful only when is_bitfield is False."""
        return self.bit_offset // 8

    @property
    def is_bitfield(self) -> bool:
        return bool(self.bitfield_size) or self.bit_offset % 8 != 0


_CACHE: dict[str, tuple[tuple, "Btf"]] = {}


class Btf:
    """Raw BTF blob with a type-id index; names and members are decoded on demand."""

    def __init__(self, data: bytes, source: str = "<bytes>"):
        self.source = source
        if len(data) < 24:
            raise BtfError(f"{source}: too short to be BTF ({len(data)} bytes)")
        magic = int.from_bytes(data[:2], "little")
        if magic == MAGIC:
            self._endian = "<"
        elif magic == 0x9FEB:
            self._endian = ">"
        else:
            raise BtfError(f"{source}: not raw BTF (magic {magic:#06x}, expected 0xeb9f)")
        e = self._endian
        (_, version, _flags, hdr_len, type_off, type_len, str_off, str_len) = struct.unpack_from(
            e + "HBBIIIII", data, 0)
        if version != 1:
            raise BtfError(f"{source}: BTF version {version} is not supported (only 1)")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data) or hdr_len < 24:
            raise BtfError(f"{source}: BTF header describes sections past the end of the data")
        view = memoryview(data)
        self._types = view[t0:t0 + type_len]
        self._strings = bytes(view[s0:s0 + str_len])
        self._u32 = struct.Struct(e + "I").unpack_from
        self._btf_type = struct.Struct(e + "III").unpack_from
        self._offsets, self._struct_ids, self._int_ids = self._index()
        self._by_name: dict[str, list[int]] | None = None
        self._ptr_size: int | None = None

    # ---- loading

    @classmethod
    def from_file(cls, path: str = VMLINUX, cache: bool = True) -> "Btf":
        """Parse a raw BTF file, reusing the last parse while the file is unchanged."""
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            hit = _CACHE.get(path)
            if cache and hit and hit[0] == key:
                return hit[1]
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            hint = (" (the running kernel was built without CONFIG_DEBUG_INFO_BTF, so "
                    "kernel struct offsets are unknown)") if path == VMLINUX else ""
            raise BtfError(f"no BTF at {path}{hint}") from None
        except OSError as e:
            raise BtfError(f"cannot read BTF {path}: {e.strerror or e}") from None
        btf = cls(data, source=path)
        if cache:
            _CACHE[path] = (key, btf)
        return btf

    def _index(self):
        """One walk over the type section: byte offset of every type id, plus struct ids."""
        types, unpack = self._types, self._u32
        step, per = _STEP, _PER
        offsets = [0]           # id 0 is void and has no record
        structs, ints = [], []
        pos, end, tid = 0, len(types), 0
        append = offsets.append
        while pos + 12 <= end:
            info = unpack(types, pos + 4)[0]
            kind = (info >> 24) & 0x1F
            tid += 1
            append(pos)
            n = step[kind]
            if n is None:
                raise BtfError(f"{self.source}: type {tid} has kind {kind}, unknown to this "
                               "reader, so the rest of the type section cannot be walked")
            if kind == STRUCT or kind == UNION:
                structs.append(tid)
            elif kind == INT:
                ints.append(tid)
            pos += n + per[kind] * (info & 0xFFFF)
        if pos != end:
            raise BtfError(f"{self.source}: type section ends inside type {tid}")
        return offsets, structs, ints

    # ---- raw access

    def __len__(self) -> int:
        """Number of type ids, void (0) included."""
        return len(self._offsets)

    def _head(self, tid: int):
        """(name_off, kind, kind_flag, vlen, size_or_type, pos) of a type id."""
        if not 0 < tid < len(self._offsets):
            raise BtfError(f"{self.source}: type id {tid} out of range")
        pos = self._offsets[tid]
        name_off, info, size = self._btf_type(self._types, pos)
        return name_off, (info >> 24) & 0x1F, info >> 31, info & 0xFFFF, size, pos

    def string(self, off: int) -> str:
        s = self._strings
        end = s.find(b"\0", off)
        return s[off:end if end >= 0 else len(s)].decode("utf-8", "replace")

    def kind(self, tid: int) -> int:
        return 0 if tid == 0 else self._head(tid)[1]

    def name(self, tid: int) -> str:
        return "" if tid == 0 else self.string(self._head(tid)[0])

    def resolve(self, tid: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type id."""
        for _ in range(64):
            if tid == 0:
                return 0
            _, kind, _, _, ref, _ = self._head(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref
        raise BtfError(f"{self.source}: modifier chain too long (a loop?) at type {tid}")

    def type_size(self, tid: int) -> int:
        """Bytes a value of this type occupies, as sizeof() would say."""
        tid = self.resolve(tid)
        if tid:
            _, kind, _, _, size, pos = self._head(tid)
            if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
                return size
            if kind == PTR:
                return self.pointer_size()
            if kind == ARRAY:
                elem, _, nelems = struct.unpack_from(self._endian + "III", self._types, pos + 12)
                return nelems * self.type_size(elem)
            if kind == VAR:
                return self.type_size(size)
        raise BtfError(f"{self.source}: type {tid} ({KIND_NAMES.get(self.kind(tid))}) has no size")

    def pointer_size(self) -> int:
        """sizeof(long) in this BTF (which has no pointer size of its own); 8 when unknown."""
        if self._ptr_size is None:
            self._ptr_size = 8
            for tid in self._int_ids:
                if self.name(tid) in ("long int", "long unsigned int"):
                    self._ptr_size = self._head(tid)[4]
                    break
        return self._ptr_size

    def type_name(self, tid: int) -> str:
        """A C-like spelling, for messages and checks ("u64", "struct sock *")."""
        if tid == 0:
            return "void"
        name_off, kind, _, _, ref, pos = self._head(tid)
        name = self.string(name_off)
        if kind in (STRUCT, UNION, ENUM, ENUM64, FWD):
            tag = {STRUCT: "struct", UNION: "union", FWD: "struct"}.get(kind, "enum")
            return f"{tag} {name or '(anon)'}"
        if kind == PTR:
            return self.type_name(ref) + " *"
        if kind == ARRAY:
            elem, _, nelems = struct.unpack_from(self._endian + "III", self._types, pos + 12)
            return f"{self.type_name(elem)}[{nelems}]"
        if kind in (CONST, VOLATILE, RESTRICT):
            return f"{KIND_NAMES[kind].lower()} {self.type_name(ref)}"
        if kind == TYPE_TAG:
            return self.type_name(ref)
        if kind == FUNC_PROTO:
            return "function"
        return name or KIND_NAMES.get(kind, str(kind)).lower()

    def members(self, tid: int):
        """(name, type_id, bit_offset, bitfield_size) of each direct member of a struct/union."""
        _, kind, kflag, vlen, _, pos = self._head(tid)
        if kind not in _AGGREGATES:
            raise BtfError(f"{self.source}: type {tid} is not a struct or union")
        out = []
        unpack = self._btf_type
        for i in range(vlen):
            name_off, mtype, off = unpack(self._types, pos + 12 + 12 * i)
            if kflag:
                out.append((self.string(name_off), mtype, off & 0xFFFFFF, off >> 24))
            else:
                bits, extra = self._int_bitfield(mtype)
                out.append((self.string(name_off), mtype, off + extra, bits))
        return out

    def _int_bitfield(self, tid: int) -> tuple[int, int]:
        """Without kind_flag a bitfield is told by its int type's bits: (size, extra offset)."""
        tid = self.resolve(tid)
        if not tid:
            return 0, 0
        _, kind, _, _, size, pos = self._head(tid)
        if kind != INT:
            return 0, 0
        enc = self._u32(self._types, pos + 12)[0]
        nr_bits, int_off = enc & 0xFF, (enc >> 16) & 0xFF
        if nr_bits == size * 8 and int_off == 0:
            return 0, 0
        return nr_bits, int_off

    # ---- lookups

    def find_structs(self, name: str) -> list[int]:
        """All struct/union ids with this name (vmlinux has a few duplicated names)."""
        if self._by_name is None:
            by_name: dict[str, list[int]] = {}
            for tid in self._struct_ids:
                n = self.string(self._head(tid)[0])
                if n:
                    by_name.setdefault(n, []).append(tid)
            self._by_name = by_name
        return self._by_name.get(_bare(name), [])

    def find_struct(self, name: str) -> int:
        """The first struct/union id of that name; BtfLookupError when there is none."""
        ids = self.find_structs(name)
        if not ids:
            raise BtfLookupError(f"struct {_bare(name)} is not in the kernel BTF ({self.source})")
        return ids[0]

    def member(self, struct_: str | int, path: str) -> Member:
        """Locate "a.b.c" in a struct: nested members by name, anonymous ones transparently."""
        if isinstance(struct_, int):
            candidates, sname = [struct_], self.name(struct_) or f"#{struct_}"
        else:
            sname = _bare(struct_)
            candidates = self.find_structs(sname)
            if not candidates:
                raise BtfLookupError(f"struct {sname} is not in the kernel BTF ({self.source})")
        parts = path.split(".")
        if not path or not all(parts):
            raise BtfError(f"bad member path {path!r} for struct {sname}")
        found, errors = [], []
        for tid in candidates:
            try:
                found.append(self._walk(tid, sname, path, parts))
            except BtfLookupError as e:
                errors.append(e)
        if not found:
            raise errors[0]
        first = found[0]
        for other in found[1:]:
            if (other.bit_offset, other.size, other.bitfield_size) != (
                    first.bit_offset, first.size, first.bitfield_size):
                raise BtfError(f"struct {sname} has {len(candidates)} different definitions in "
                               f"{self.source} that disagree about {path}")
        return first

    def _walk(self, tid: int, sname: str, path: str, parts: list[str]) -> Member:
        bit_offset, mtype, bits = 0, tid, 0
        for depth, part in enumerate(parts):
            agg = self.resolve(mtype)
            if self.kind(agg) not in _AGGREGATES:
                done = ".".join(parts[:depth])
                raise BtfLookupError(f"{sname}.{done} is {self.type_name(mtype)}, not a struct or "
                                     f"union, so it has no member {part!r} ({self.source})")
            hit = self._find_in(agg, part, 0)
            if hit is None:
                where = f"struct {sname}" if depth == 0 else f"{sname}.{'.'.join(parts[:depth])}"
                raise BtfLookupError(f"{where} has no member {part!r} in the kernel BTF "
                                     f"({self.source})")
            mtype, rel, bits = hit
            bit_offset += rel
        return Member(sname, path, bit_offset, bits, self.type_size(mtype), mtype,
                      self.type_name(mtype))

    def _find_in(self, agg: int, name: str, depth: int):
        """(type_id, bit_offset, bitfield_size) of a member, looking inside anonymous ones."""
        if depth > 32:
            return None
        for mname, mtype, off, bits in self.members(agg):
            if mname == name:
                return mtype, off, bits
            if not mname:
                inner = self.resolve(mtype)
                if inner and self.kind(inner) in _AGGREGATES:
                    hit = self._find_in(inner, name, depth + 1)
                    if hit is not None:
                        return hit[0], off + hit[1], hit[2]
        return None

    def member_offset(self, struct_: str | int, path: str) -> int:
        """Byte offset of a member; bitfields are refused (no byte offset reads them)."""
        m = self.member(struct_, path)
        if m.is_bitfield:
            raise BtfError(f"{m.struct}.{path} is a bitfield (bit {m.bit_offset}, "
                           f"{m.bitfield_size or '?'} bits): it has no byte offset to read")
        return m.offset

    def member_size(self, struct_: str | int, path: str) -> int:
        """sizeof() of a member's type, through typedefs and qualifiers."""
        return self.member(struct_, path).size

    def offsets(self, spec: dict[str, str]) -> dict[str, int]:
        """{"DEFINE": "struct.member.path"} to {"DEFINE": byte offset}, for -D flags."""
        out = {}
        for define, where in spec.items():
            sname, _, path = _bare(where).partition(".")
            if not path:
                raise BtfError(f"{define}: {where!r} is not of the form struct.member")
            out[define] = self.member_offset(sname, path)
        return out


def _bare(name: str) -> str:
    """Accept "struct sock" as well as "sock"."""
    name = name.strip()
    for tag in ("struct ", "union "):
        if name.startswith(tag):
            return name[len(tag):].strip()
    return name


class OffsetCache(BuildIdCache):
    """Offsets and sizes already read from a BTF blob, by the blob's SHA-1, as JSON."""

    suffix = ".offsets.json"
    version = 1
    max_bytes = 1 << 20


def kernel_offsets(spec: dict[str, str], sizes: dict[str, str] | None = None,
                   path: str = VMLINUX) -> dict[str, int]:
    """Btf.offsets(spec), plus {"DEFINE": sizeof(struct)} for `sizes`, remembered on disk
    under the digest of the BTF blob: indexing the 5 MB blob in Python takes ~80 ms of
    every start, reading and hashing it 8 ms. Raises OSError, KeyError, BtfError."""
    with open(path, "rb") as f:
        data = f.read()
    wanted = {d: _bare(w) for d, w in spec.items()}
    wanted.update({d: "sizeof " + _bare(s) for d, s in (sizes or {}).items()})
    where = cache_dir("EBPF_OTLP_BTF_CACHE", "btf")
    cache, digest = OffsetCache(where, OffsetCache.max_bytes) if where else None, hashlib.sha1(data).hexdigest()
    known = (cache.read(digest, _decode_offsets) if cache else None) or {}
    missing = [w for w in wanted.values() if w not in known]
    if missing:
        btf = Btf(data, source=path)
        for what in missing:
            if what.startswith("sizeof "):
                known[what] = btf.type_size(btf.find_struct(what[len("sizeof "):]))
            else:
                known[what] = btf.offsets({what: what})[what]
        if cache:
            cache.write(digest, json.dumps(known, sort_keys=True).encode())
    return {d: known[w] for d, w in wanted.items()}


def _decode_offsets(blob: bytes) -> dict[str, int] | None:
    try:
        value = json.loads(blob)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        return None
    return value


if __name__ == "__main__":     # python -m ebpf_otlp.runtime.btf tcp_sock.bytes_acked ...
    _btf = Btf.from_file(os.environ.get("EBPF_OTLP_BTF", VMLINUX))
    for _arg in sys.argv[1:]:
        _s, _, _p = _bare(_arg).partition(".")
        _m = _btf.member(_s, _p)
        print(f"{_arg}: offset {_m.offset} size {_m.size} type {_m.type_name}"
              + (f" bitfield bit {_m.bit_offset} width {_m.bitfield_size}" if _m.is_bitfield else ""))
