"""The raw BTF reader: hand-built blobs (both byte orders) and the running kernel's BTF.

Offsets from BTF replace those of mismatched headers, so a wrong one would make BPF
programs read the wrong kernel field silently: the kernel checks compare with
independent tools (gcc's offsetof over bpftool's vmlinux.h, bpftool's raw dump, pahole)
where installed.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime import btf as btfmod
from ebpf_otlp.runtime.btf import Btf, BtfError, BtfLookupError

VMLINUX = "/sys/kernel/btf/vmlinux"

K = dict(INT=1, PTR=2, ARRAY=3, STRUCT=4, UNION=5, ENUM=6, FWD=7, TYPEDEF=8, VOLATILE=9,
         CONST=10, RESTRICT=11, FUNC=12, FUNC_PROTO=13, VAR=14, DATASEC=15, FLOAT=16,
         DECL_TAG=17, TYPE_TAG=18, ENUM64=19)


class Builder:
    """Writes raw BTF the way the kernel lays it out, in either byte order."""

    def __init__(self, endian: str):
        self.e = endian
        self.strings = bytearray(b"\0")
        self.types: list[bytes | None] = []

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def p(self, fmt: str, *vals) -> bytes:
        return struct.pack(self.e + fmt, *vals)

    def reserve(self) -> int:
        self.types.append(None)
        return len(self.types)

    def add(self, kind, name="", vlen=0, size_or_type=0, kflag=0, extra=b"", tid=None) -> int:
        info = (kflag << 31) | (K[kind] << 24) | vlen
        rec = self.p("III", self.s(name), info, size_or_type) + extra
        if tid is None:
            self.types.append(rec)
            return len(self.types)
        self.types[tid - 1] = rec
        return tid

    def int_(self, name, size, bits=None, bit_off=0, signed=False):
        enc = ((1 if signed else 0) << 24) | (bit_off << 16) | (size * 8 if bits is None else bits)
        return self.add("INT", name, 0, size, extra=self.p("I", enc))

    def aggregate(self, name, size, members, kflag=0, union=False, tid=None):
        body = b""
        for mname, mtype, bit_off, bf in members:
            off = (bf << 24 | bit_off) if kflag else bit_off
            body += self.p("III", self.s(mname), mtype, off)
        return self.add("UNION" if union else "STRUCT", name, len(members), size, kflag, body, tid)

    def blob(self) -> bytes:
        types = b"".join(self.types)
        hdr = self.p("HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return hdr + types + bytes(self.strings)


def build(endian: str) -> tuple[bytes, dict]:
    """A small type graph touching every kind, with the struct after all of them.

    Every kind precedes the structs so that a wrong trailing-data size for any of them
    shifts the ids of everything after it and the lookups below fail.
    """
    b = Builder(endian)
    ids = {}
    u8 = b.int_("unsigned char", 1)
    u16 = b.int_("short unsigned int", 2)
    u32 = b.int_("unsigned int", 4)
    s32 = b.int_("int", 4, signed=True)
    u64 = b.int_("long long unsigned int", 8)
    b.int_("long unsigned int", 8)
    # Kinds only there to be walked over (each with a non-zero vlen where it has one).
    b.add("ENUM", "color", 3, 4, extra=b.p("Ii", b.s("RED"), 0) + b.p("Ii", b.s("GREEN"), 1)
          + b.p("Ii", b.s("BLUE"), -1))
    b.add("ENUM64", "big", 2, 8, extra=b.p("III", b.s("A"), 1, 2) + b.p("III", b.s("B"), 3, 4))
    proto = b.add("FUNC_PROTO", "", 2, s32, extra=b.p("II", b.s("x"), u32) + b.p("II", 0, u64))
    b.add("FUNC", "f", 1, proto)
    var = b.add("VAR", "v", 0, u32, extra=b.p("I", 1))
    b.add("DATASEC", ".data", 1, 4, extra=b.p("III", var, 0, 4))
    b.add("DECL_TAG", "tag", 0, var, extra=b.p("i", -1))
    tagged = b.add("TYPE_TAG", "user", 0, u32)
    b.add("FLOAT", "double", 0, 8)
    b.add("FWD", "opaque")
    restrict = b.add("RESTRICT", "", 0, tagged)
    # typedef chain: my_u64 -> const -> volatile -> __u64 -> u64 (INT, 8 bytes)
    t_u64 = b.add("TYPEDEF", "__u64", 0, u64)
    vol = b.add("VOLATILE", "", 0, t_u64)
    cst = b.add("CONST", "", 0, vol)
    my_u64 = b.add("TYPEDEF", "my_u64", 0, cst)
    arr = b.add("ARRAY", "", 0, 0, extra=b.p("III", u8, u32, 6))
    # Old-style bitfield: no kind_flag, the int type carries 5 bits at bit 3.
    bits5 = b.int_("unsigned int", 4, bits=5, bit_off=3)

    outer = b.reserve()
    ptr = b.add("PTR", "", 0, outer)
    inner = b.aggregate("inner", 8, [("x", u32, 0, 0), ("y", s32, 32, 0)])
    # struct { u16 c; u16 d; } anonymous, inside an anonymous union with u32 b
    anon_s = b.aggregate("", 4, [("c", u16, 0, 0), ("d", u16, 16, 0)])
    anon_u = b.aggregate("", 4, [("b", u32, 0, 0), ("", anon_s, 0, 0)], union=True)
    deep = b.aggregate("", 8, [("", anon_u, 0, 0), ("z", restrict, 32, 0)])
    # struct outer {
    #   int a;              0
    #   union { u32 b; struct { u16 c, d; }; };   4
    #   struct inner in;    8   (x @ 8, y @ 12)
    #   unsigned flags:3;   bit 128, kind_flag bitfield
    #   unsigned more:7;    bit 131
    #   my_u64 e;           24
    #   unsigned char name[6];  32
    #   struct outer *next; 40
    #   struct { union {...}; unsigned z; };  48 (anon: b/c/d shadow-free because named differently)
    # } 56 bytes
    b.aggregate("outer", 56, [
        ("a", s32, 0, 0), ("", anon_u, 32, 0), ("in", inner, 64, 0),
        ("flags", u32, 128, 3), ("more", u32, 131, 7), ("e", my_u64, 192, 0),
        ("name", arr, 256, 0), ("next", ptr, 320, 0), ("nest", deep, 384, 0),
    ], kflag=1, tid=outer)
    b.aggregate("old", 8, [("h", u16, 0, 0), ("bf", bits5, 16, 0), ("w", u32, 32, 0)])
    # Same name twice: identical where they agree, different where they do not.
    b.aggregate("dup", 8, [("p", u32, 0, 0), ("q", u32, 32, 0)])
    b.aggregate("dup", 8, [("p", u32, 0, 0), ("q", u32, 32, 0)])
    b.aggregate("twin", 8, [("p", u32, 0, 0), ("q", u32, 32, 0)])
    b.aggregate("twin", 8, [("p", u32, 32, 0), ("r", u32, 0, 0)])
    b.aggregate("u", 8, [("i", u32, 0, 0), ("l", u64, 0, 0)], union=True)
    ids.update(outer=outer, ptr=ptr, my_u64=my_u64, u64=u64, count=len(b.types))
    return b.blob(), ids


@pytest.fixture(params=["<", ">"], ids=["little", "big"])
def blob(request):
    return build(request.param)


def test_walks_every_kind_and_finds_members(blob):
    data, ids = blob
    t = Btf(data)
    assert len(t) == ids["count"] + 1
    assert t.find_struct("outer") == ids["outer"]
    assert t.find_struct("struct outer") == ids["outer"]
    assert t.member_offset("outer", "a") == 0
    assert t.member_offset("outer", "b") == 4          # through the anonymous union
    assert t.member_offset("outer", "c") == 4          # union -> anonymous struct
    assert t.member_offset("outer", "d") == 6
    assert t.member_offset("outer", "in") == 8
    assert t.member_offset("outer", "in.y") == 12      # nested by name
    assert t.member_offset("outer", "e") == 24
    assert t.member_offset("outer", "name") == 32
    assert t.member_offset("outer", "next") == 40
    assert t.member_offset("outer", "nest.d") == 50    # named, then two anonymous levels
    assert t.member_offset("outer", "nest.z") == 52
    assert t.member_offset("u", "l") == 0


def test_sizes_follow_typedef_and_qualifier_chains(blob):
    data, ids = blob
    t = Btf(data)
    assert t.member_size("outer", "e") == 8
    assert t.member("outer", "e").type_name == "my_u64"
    assert t.resolve(ids["my_u64"]) == ids["u64"]
    assert t.member_size("outer", "a") == 4
    assert t.member_size("outer", "c") == 2
    assert t.member_size("outer", "in") == 8
    assert t.member_size("outer", "name") == 6
    assert t.member("outer", "name").type_name == "unsigned char[6]"
    assert t.member_size("outer", "next") == 8
    assert t.member("outer", "next").type_name == "struct outer *"
    assert t.member_size("outer", "nest.z") == 4       # restrict -> type_tag -> int
    assert t.member_size("u", "l") == 8


def test_bitfields_are_refused_with_their_position(blob):
    t = Btf(blob[0])
    m = t.member("outer", "more")
    assert (m.bit_offset, m.bitfield_size, m.is_bitfield) == (131, 7, True)
    with pytest.raises(BtfError, match=r"outer\.flags is a bitfield"):
        t.member_offset("outer", "flags")
    old = t.member("old", "bf")                         # no kind_flag: the int says so
    assert (old.bit_offset, old.bitfield_size) == (19, 5)
    with pytest.raises(BtfError, match="bitfield"):
        t.member_offset("old", "bf")
    assert t.member_offset("old", "w") == 4


def test_missing_names_say_which(blob):
    t = Btf(blob[0])
    with pytest.raises(BtfLookupError) as e:
        t.member_offset("outer", "bytes_acked")
    assert "struct outer" in str(e.value) and "'bytes_acked'" in str(e.value)
    assert isinstance(e.value, KeyError) and isinstance(e.value, AgentError)
    with pytest.raises(KeyError, match=r"outer\.in has no member 'zz'"):
        t.member_offset("outer", "in.zz")
    with pytest.raises(KeyError, match=r"outer\.a is int, not a struct"):
        t.member_offset("outer", "a.b")
    with pytest.raises(KeyError, match="struct tcp_sock is not in"):
        t.find_struct("tcp_sock")
    with pytest.raises(BtfError, match="bad member path"):
        t.member("outer", "in..x")


def test_duplicate_struct_names(blob):
    t = Btf(blob[0])
    assert len(t.find_structs("dup")) == 2
    assert t.member_offset("dup", "q") == 4
    assert t.member_offset("twin", "q") == 4            # only one definition has q
    with pytest.raises(BtfError, match="disagree"):
        t.member_offset("twin", "p")


def test_offsets_for_defines(blob):
    t = Btf(blob[0])
    assert t.offsets({"OUT_E": "outer.e", "OUT_Y": "struct outer.in.y"}) == {
        "OUT_E": 24, "OUT_Y": 12}
    with pytest.raises(BtfError, match="struct.member"):
        t.offsets({"X": "outer"})


def test_rejects_what_is_not_btf():
    data, _ = build("<")
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\x7fELF" + data[4:])
    with pytest.raises(BtfError, match="too short"):
        Btf(data[:10])
    with pytest.raises(BtfError, match="past the end"):
        Btf(data[:-5])
    # An unknown kind (31) in the first type stops the walk with a clear message.
    bad = bytearray(data)
    info = struct.unpack_from("<I", bad, 24 + 4)[0]
    struct.pack_into("<I", bad, 24 + 4, (info & ~(0x1F << 24)) | (31 << 24))
    with pytest.raises(BtfError, match="kind 31"):
        Btf(bytes(bad))
    # A type section cut inside a record is caught, not misread.
    hdr = list(struct.unpack_from("<HBBIIIII", data, 0))
    hdr[5] -= 4                                     # type_len one word short
    with pytest.raises(BtfError, match="ends inside"):
        Btf(struct.pack("<HBBIIIII", *hdr) + data[24:])


def test_from_file_caches_until_the_file_changes(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(build("<")[0])
    first = Btf.from_file(str(path))
    assert Btf.from_file(str(path)) is first
    assert Btf.from_file(str(path), cache=False) is not first
    path.write_bytes(build(">")[0])
    os.utime(path, ns=(1, 1))
    second = Btf.from_file(str(path))
    assert second is not first and second.member_offset("outer", "e") == 24
    with pytest.raises(BtfError, match="no BTF at"):
        Btf.from_file(str(tmp_path / "missing"))


def test_kernel_offsets_are_remembered_by_the_blobs_digest(tmp_path, monkeypatch):
    """The second start reads its offsets from the cache, not by indexing the blob again;
    another blob at the same path has its own entry, and a damaged entry is recomputed."""
    monkeypatch.setenv("EBPF_OTLP_BTF_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "vmlinux"
    path.write_bytes(build("<")[0])
    spec, sizes = {"OUT_E": "outer.e", "OUT_Y": "struct outer.in.y"}, {"SIZEOF_OUTER": "outer"}
    t = Btf(build("<")[0])
    want = {"OUT_E": 24, "OUT_Y": 12, "SIZEOF_OUTER": t.type_size(t.find_struct("outer"))}
    assert btfmod.kernel_offsets(spec, sizes, path=str(path)) == want
    (entry,) = (tmp_path / "cache").iterdir()

    parsed = []
    real = btfmod.Btf
    monkeypatch.setattr(btfmod, "Btf", lambda *a, **k: parsed.append(1) or real(*a, **k))
    assert btfmod.kernel_offsets(spec, sizes, path=str(path)) == want and not parsed
    assert btfmod.kernel_offsets({"OUT_E": "outer.e"}, path=str(path)) == {"OUT_E": 24}
    assert not parsed
    entry.write_bytes(b"{not json")
    assert btfmod.kernel_offsets(spec, sizes, path=str(path)) == want and parsed == [1]
    path.write_bytes(build(">")[0])
    assert btfmod.kernel_offsets(spec, path=str(path)) == {"OUT_E": 24, "OUT_Y": 12}
    assert parsed == [1, 1] and len(list((tmp_path / "cache").iterdir())) == 2
    with pytest.raises(BtfError):
        btfmod.kernel_offsets({"X": "outer.nope"}, path=str(path))


# ---- the running kernel

needs_vmlinux = pytest.mark.skipif(not os.path.exists(VMLINUX),
                                   reason=f"{VMLINUX} is absent (kernel without BTF)")

REPORT = ["tcp_sock.bytes_acked", "tcp_sock.bytes_received", "tcp_sock.segs_in",
          "tcp_sock.segs_out", "tcp_sock.total_retrans", "tcp_sock.srtt_us",
          "tcp_sock.rcv_nxt", "tcp_sock.snd_una", "sock.sk_err", "sock.sk_protocol",
          "sock.__sk_common.skc_family"]

# Structs checked member by member against the other tools.
CHECKED = ["tcp_sock", "inet_connection_sock", "inet_sock", "sock", "sock_common",
           "sk_buff", "task_struct"]


@pytest.fixture(scope="module")
def kernel():
    return Btf.from_file(VMLINUX)


@needs_vmlinux
def test_kernel_offsets_load_fast_and_are_consistent(kernel):
    start = time.perf_counter()
    t = Btf.from_file(VMLINUX, cache=False)
    found = t.offsets({p: p for p in REPORT})
    elapsed = time.perf_counter() - start
    for p in REPORT:
        m = t.member(*p.split(".", 1))
        print(f"{p}: offset {found[p]} size {m.size} ({m.type_name})")
    print(f"load + {len(REPORT)} lookups: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0                     # ~0.05 s where measured; slack for slow CI
    sizes = {p: t.member_size(*p.split(".", 1)) for p in REPORT}
    assert sizes["tcp_sock.bytes_acked"] == sizes["tcp_sock.bytes_received"] == 8
    assert sizes["tcp_sock.srtt_us"] == sizes["tcp_sock.total_retrans"] == 4
    assert sizes["sock.sk_err"] == 4 and sizes["sock.__sk_common.skc_family"] == 2
    # tcp_sock begins with inet_connection_sock, inet_sock, sock: the same field two ways.
    assert (t.member_offset("tcp_sock", "inet_conn.icsk_inet.sk.sk_err")
            == found["sock.sk_err"])
    assert t.member_offset("sock", "__sk_common.skc_family") == t.member_offset(
        "sock_common", "skc_family")


def _flat_members(t: Btf, tid: int, base: int = 0):
    """Every named member reachable without naming an anonymous one (what C allows)."""
    for name, mtype, off, bits in t.members(tid):
        if name:
            yield name, base + off, bits, mtype
        else:
            inner = t.resolve(mtype)
            if t.kind(inner) in (btfmod.STRUCT, btfmod.UNION):
                yield from _flat_members(t, inner, base + off)


def _unique(t: Btf, name: str) -> int:
    ids = t.find_structs(name)
    if len(ids) != 1:
        pytest.skip(f"struct {name} is defined {len(ids)} times in this kernel's BTF")
    return ids[0]


@needs_vmlinux
@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool is not installed")
@pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")), reason="no C compiler")
def test_kernel_offsets_match_gcc_offsetof_on_bpftool_header(kernel, tmp_path):
    header = tmp_path / "vmlinux.h"
    with open(header, "w") as f:
        subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX, "format", "c"],
                       stdout=f, check=True, timeout=120)
    lines, count = ['#include "vmlinux.h"'], 0
    for sname in CHECKED:
        tid = _unique(kernel, sname)
        for name, _, bits, _ in _flat_members(kernel, tid):
            m = kernel.member(sname, name)
            if m.is_bitfield:
                continue
            lines.append(f"_Static_assert(__builtin_offsetof(struct {sname}, {name}) == "
                         f"{m.offset}, \"{sname}.{name} offset\");")
            if m.size:          # flexible arrays have no sizeof
                lines.append(f"_Static_assert(sizeof(((struct {sname} *)0)->{name}) == "
                             f"{m.size}, \"{sname}.{name} size\");")
            count += 1
    for p in REPORT:
        s, path = p.split(".", 1)
        lines.append(f"_Static_assert(__builtin_offsetof(struct {s}, {path}) == "
                     f"{kernel.member_offset(s, path)}, \"{p}\");")
    src = tmp_path / "check.c"
    src.write_text("\n".join(lines) + "\n")
    cc = shutil.which("gcc") or shutil.which("cc")
    r = subprocess.run([cc, "-fsyntax-only", "-w", str(src)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert count > 300


@needs_vmlinux
@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool is not installed")
def test_kernel_members_match_bpftool_raw_dump(kernel):
    out = subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    last_id = int(re.findall(r"^\[(\d+)\]", out, re.M)[-1])
    assert len(kernel) == last_id + 1            # the walk saw every type
    for sname in CHECKED:
        tid = _unique(kernel, sname)
        block = re.search(rf"^\[{tid}\] STRUCT '{sname}' size=(\d+) vlen=\d+\n((?:\t.*\n)*)",
                          out, re.M)
        assert block, sname
        want = [(n, int(ty), int(off), int(bf or 0)) for n, ty, off, bf in re.findall(
            r"\t'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?", block[2])]
        got = [(n if n else "(anon)", ty, off, bits)
               for n, ty, off, bits in kernel.members(tid)]
        assert got == want, sname
        assert kernel.type_size(tid) == int(block[1])


@needs_vmlinux
@pytest.mark.skipif(not shutil.which("pahole"), reason="pahole is not installed")
def test_kernel_offsets_match_pahole(kernel):
    checked = 0
    for sname in ("tcp_sock", "sock", "sock_common"):
        _unique(kernel, sname)
        r = subprocess.run(["pahole", "-C", sname, VMLINUX], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0 or not r.stdout.strip():
            pytest.skip(f"pahole cannot read {VMLINUX}: {r.stderr.strip()[:200]}")
        # Top-level (one tab) non-bitfield members: "\t<type> <name>[...]; /* off size */"
        for name, off, size in re.findall(
                r"^\t[^\t/].*?\b(\w+)(?:\[\d*\])*(?: __attribute__\(\(.*?\)\))?;\s*"
                r"/\*\s+(\d+)\s+(\d+)\s+\*/", r.stdout, re.M):
            m = kernel.member(sname, name)
            assert (m.offset, m.size) == (int(off), int(size)), f"{sname}.{name}"
            checked += 1
    assert checked > 50
