"""Mutated pcaps and pcapngs for the fuzz run (issue 17): each one a pure function of (seed, index, sources).

The mutant of index ``i`` comes from ``random.Random(f"{seed}:{i}")`` alone, so any one of them can be made again
from its seed and index without the others (``bench/fuzz_captures.py --only I``). A source is a capture listed in
``../shared/pcaps/MANIFEST.csv``, read in place and cut to its last whole record before :data:`CUT_BYTES`, so each
mutant is small and runs fast. A pcapng mutant starts from a real pcapng or from a pcap rewritten as pcapng (either
byte order), then damaged. Every kind below names one thing that goes wrong in captures people hand over.

>>> src = Source("x.pcap", "pcap", _pcap_bytes(1, [(1, 0, b"ab" * 20)] * 3))
>>> a, b = mutant(7, 3, [src]), mutant(7, 3, [src])
>>> a.data == b.data and a.recipe == b.recipe
True
"""

from __future__ import annotations

import csv
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CUT_BYTES = 256 << 10
"""Sources are cut to their last whole record before this: a mutant of a few hundred KB runs in about a second."""

PCAP_US, PCAP_NS = 0xA1B2C3D4, 0xA1B23C4D
SHB, IDB, EPB, SPB, OPB = 0x0A0D0D0A, 1, 6, 3, 2
BOM = 0x1A2B3C4D
UNDECODED_LINKTYPES = (105, 127, 119, 163, 192, 108, 276, 187, 189, 195, 220, 147, 161, 200, 300, 65000, 0xFFFF)
DECODED_LINKTYPES = (0, 1, 9, 12, 14, 50, 101, 104, 113, 228, 229)


@dataclass(frozen=True)
class Source:
    """A capture of ../shared, cut to whole records: ``fmt`` is ``"pcap"`` or ``"pcapng"``."""

    name: str
    fmt: str
    data: bytes


@dataclass(frozen=True)
class Mutant:
    """The bytes of one mutant, its file suffix and how it was made (kind, source and the random choices)."""

    index: int
    kind: str
    suffix: str
    data: bytes
    recipe: dict[str, object]


# ---- the two formats as lists of records, and back ------------------------------------------------------------


@dataclass
class Pcap:
    """A pcap as its global header fields and records ``[sec, frac, incl, orig, data]``."""

    endian: str
    header: list[int]  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
    records: list[list]

    @classmethod
    def parse(cls, data: bytes) -> Pcap:
        endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        header = list(struct.unpack_from(endian + "IHHiIII", data, 0))
        records, off = [], 24
        while off + 16 <= len(data):
            sec, frac, incl, orig = struct.unpack_from(endian + "IIII", data, off)
            if off + 16 + incl > len(data):
                break
            records.append([sec, frac, incl, orig, data[off + 16 : off + 16 + incl]])
            off += 16 + incl
        return cls(endian, header, records)

    def bytes(self) -> bytes:
        out = [struct.pack(self.endian + "IHHiIII", *self.header)]
        for sec, frac, incl, orig, body in self.records:
            out.append(struct.pack(self.endian + "IIII", sec & 0xFFFFFFFF, frac & 0xFFFFFFFF, incl, orig) + body)
        return b"".join(out)

    def offsets(self) -> list[int]:
        offs, off = [], 24
        for r in self.records:
            offs.append(off)
            off += 16 + len(r[4])
        return offs


def _pcap_bytes(linktype: int, records: list[tuple[int, int, bytes]]) -> bytes:
    recs = [[s, f, len(b), len(b), b] for s, f, b in records]
    return Pcap("<", [PCAP_US, 2, 4, 0, 0, 65535, linktype], recs).bytes()


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


@dataclass
class Pcapng:
    """A single-section pcapng as blocks ``[type, body]`` (body without the type and the two lengths)."""

    endian: str
    blocks: list[list]

    @classmethod
    def parse(cls, data: bytes) -> Pcapng:
        endian = "<" if data[8:12] == struct.pack("<I", BOM) else ">"
        blocks, off = [], 0
        while off + 12 <= len(data):
            btype, blen = struct.unpack_from(endian + "II", data, off)
            if blen < 12 or blen % 4 or off + blen > len(data):
                break
            blocks.append([btype, data[off + 8 : off + blen - 4]])
            off += blen
        return cls(endian, blocks)

    @classmethod
    def from_pcap(cls, pcap: Pcap, endian: str) -> Pcapng:
        e = endian
        shb = struct.pack(e + "IHHq", BOM, 1, 0, -1)
        idb = struct.pack(e + "HHI", pcap.header[6] & 0xFFFF, 0, pcap.header[5])
        ns = pcap.header[0] == PCAP_NS
        blocks = [[SHB, shb], [IDB, idb]]
        for sec, frac, incl, orig, body in pcap.records:
            ts = sec * 1_000_000 + (frac // 1000 if ns else frac)
            blocks.append([EPB, struct.pack(e + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, incl, orig) + _pad4(body)])
        return cls(e, blocks)

    def block(self, btype: int, body: bytes) -> bytes:
        body = _pad4(body)
        return (
            struct.pack(self.endian + "II", btype, 12 + len(body))
            + body
            + struct.pack(self.endian + "I", 12 + len(body))
        )

    def bytes(self) -> bytes:
        return b"".join(self.block(t, b) for t, b in self.blocks)

    def offsets(self) -> list[int]:
        offs, off = [], 0
        for _, body in self.blocks:
            offs.append(off)
            off += 12 + len(_pad4(body))
        return offs

    def where(self, btype: int) -> list[int]:
        return [i for i, (t, _) in enumerate(self.blocks) if t == btype]


def load_sources(manifest: Path, cut: int = CUT_BYTES) -> list[Source]:
    """Every capture MANIFEST.csv lists, in its order, cut to its last whole record before ``cut`` bytes."""
    sources = []
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            data = (manifest.parent / row["file"]).read_bytes()
            fmt = "pcapng" if data[:4] == struct.pack("<I", SHB) else "pcap"
            if len(data) > cut:
                parsed = Pcap.parse(data[:cut]) if fmt == "pcap" else Pcapng.parse(data[:cut])
                data = parsed.bytes()
            sources.append(Source(row["file"], fmt, data))
    return sources


# ---- the kinds of damage --------------------------------------------------------------------------------------

Recipe = dict[str, object]
Kind = Callable[[random.Random, Pcap | Pcapng, Recipe], bytes]


def _flip(data: bytes, rng: random.Random, start: int, length: int, recipe: Recipe) -> bytes:
    b = bytearray(data)
    bits = sorted(rng.sample(range(min(length, len(b) - start) * 8), rng.randint(1, 3)))
    for bit in bits:
        b[start + bit // 8] ^= 1 << (bit % 8)
    recipe["flipped_bits"] = [start * 8 + bit for bit in bits]
    return bytes(b)


def _pick(rng: random.Random, n: int, recipe: Recipe, key: str = "record") -> int:
    i = rng.randrange(n) if n else 0
    recipe[key] = i
    return i


def _set_records(p: Pcap, rng: random.Random, recipe: Recipe, field: int, values: list[int]) -> bytes:
    """Give ``field`` of one to three records (or all, when ``values`` is one value for all) the given values."""
    idx = sorted(rng.sample(range(len(p.records)), min(len(p.records), rng.randint(1, 3)))) if p.records else []
    value = rng.choice(values)
    for i in idx:
        p.records[i][field] = value
    recipe.update(records=idx, value=value)
    return p.bytes()


def pcap_kinds() -> dict[str, Kind]:
    """Damage to a pcap, by name: truncations, flipped header bits, wrong lengths, absurd fields."""

    def cut_global(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        r["cut_at"] = rng.randint(1, 23)
        return p.bytes()[: r["cut_at"]]

    def cut_record_header(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        r["cut_at"] = p.offsets()[_pick(rng, len(p.records), r)] + rng.randint(1, 15)
        return p.bytes()[: r["cut_at"]]

    def cut_record_body(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        i = _pick(rng, len(p.records), r)
        r["cut_at"] = p.offsets()[i] + 16 + rng.randint(0, max(0, p.records[i][2] - 1))
        return p.bytes()[: r["cut_at"]]

    def flip_global(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        return _flip(p.bytes(), rng, 0, 24, r)

    def flip_record_header(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        return _flip(p.bytes(), rng, p.offsets()[_pick(rng, len(p.records), r)], 16, r)

    def incl_over_snaplen(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        i = _pick(rng, len(p.records), r)
        extra = rng.randint(1, 2048)
        p.header[5] = r["snaplen"] = rng.choice([64, 96, 1514, p.header[5]])
        rec = p.records[i]
        rec[2] = max(p.header[5], len(rec[4])) + extra
        r.update(incl=rec[2], padded=rng.random() < 0.5)  # padded: the body is as long as incl says
        if r["padded"]:
            rec[4] = rec[4] + bytes(rec[2] - len(rec[4]))
        return p.bytes()

    def incl_over_orig(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        return _set_records(p, rng, r, 3, [0, 1, 14, 20, 40])

    def incl_wrong(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        huge = [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x10000000, 1 << 20, 262_144 * 4 + 1, 262_144 * 4]
        return _set_records(p, rng, r, 2, [*huge, 0, 1, 13, 15, 17, 100, 65535])

    def magic(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        r["magic"] = rng.choice([0xA1B2CD34, 0x34CDB2A1, PCAP_NS, 0xD4C3B2A1, 0, SHB, rng.getrandbits(32)])
        return struct.pack("<I" if p.endian == "<" else ">I", r["magic"]) + p.bytes()[4:]

    def version(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        p.header[1], p.header[2] = r["version"] = rng.choice([(0, 0), (1, 0), (2, 3), (3, 0), (65535, 65535)])
        p.header[3], p.header[4] = r["zone_sigfigs"] = rng.choice([(0, 0), (-(1 << 31), 0xFFFFFFFF), (3600, 7)])
        return p.bytes()

    def snaplen(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        p.header[5] = r["snaplen"] = rng.choice([0, 1, 14, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 24])
        return p.bytes()

    def ts_absurd(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        how = r["how"] = rng.choice(["negative", "far-future", "zero", "frac-overflow", "backwards", "reversed"])
        if how in ("backwards", "reversed"):
            stamps = [(rec[0], rec[1]) for rec in p.records]
            if how == "reversed":
                stamps.reverse()
            else:
                i = _pick(rng, len(p.records), r)
                stamps[i] = (stamps[i][0] - rng.choice([1, 3600, 86400 * 365, 1 << 30]), stamps[i][1])
            for rec, (s, f) in zip(p.records, stamps, strict=True):
                rec[0], rec[1] = s, f
            return p.bytes()
        field = 1 if how == "frac-overflow" else 0
        values = {"negative": [0x80000000, 0xFFFFFFFF, 0xF0000000], "far-future": [0x7FFFFFFF, 0xFFFFFF00, 1 << 31 | 5],
                  "zero": [0], "frac-overflow": [1_000_000, 999_999_999, 0xFFFFFFFF]}[how]  # fmt: skip
        return _set_records(p, rng, r, field, values)

    def linktype(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        pool = rng.choice([UNDECODED_LINKTYPES, DECODED_LINKTYPES, (0x10000001, 0x04000001, 0xFFFF0001)])
        p.header[6] = r["linktype"] = rng.choice(pool)
        return p.bytes()

    def payload(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        idx = sorted(rng.sample(range(len(p.records)), min(len(p.records), rng.randint(1, 20))))
        for i in idx:
            body = bytearray(p.records[i][4])
            for _ in range(rng.randint(1, 8)):
                if body:
                    body[rng.randrange(min(len(body), 64))] = rng.getrandbits(8)
            p.records[i][4] = bytes(body)
        r["records"] = idx
        return p.bytes()

    def reorder(rng: random.Random, p: Pcap, r: Recipe) -> bytes:
        how = r["how"] = rng.choice(["shuffle", "duplicate", "splice-header", "trailing-garbage"])
        data = p.bytes()
        if how == "shuffle":
            rng.shuffle(p.records)
            return p.bytes()
        if how == "duplicate":
            p.records = p.records + p.records
            return p.bytes()
        at = r["at"] = p.offsets()[_pick(rng, len(p.records), r)] if p.records else 24
        if how == "splice-header":  # a second capture's header in the middle: two files cat'ed together
            return data[:at] + data[:24] + data[at:]
        return data + rng.randbytes(r.setdefault("garbage", rng.choice([3, 15, 16, 17, 200])))  # type: ignore[arg-type]

    return {"cut-global-header": cut_global, "cut-record-header": cut_record_header,
            "cut-record-body": cut_record_body, "flip-global-header": flip_global,
            "flip-record-header": flip_record_header, "incl-over-snaplen": incl_over_snaplen,
            "incl-over-orig": incl_over_orig, "incl-wrong": incl_wrong, "bad-magic": magic,
            "bad-version": version, "snaplen": snaplen, "ts-absurd": ts_absurd, "linktype": linktype,
            "payload-garbage": payload, "records-reordered": reorder}  # fmt: skip


def pcapng_kinds() -> dict[str, Kind]:
    """Damage to a pcapng, by name: truncations, blocks out of order, wrong lengths, unknown blocks, odd options."""

    def cut_block_header(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        r["cut_at"] = n.offsets()[_pick(rng, len(n.blocks), r, "block")] + rng.randint(1, 11)
        return n.bytes()[: r["cut_at"]]

    def cut_block_body(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        i = _pick(rng, len(n.blocks), r, "block")
        r["cut_at"] = n.offsets()[i] + 8 + rng.randint(0, len(_pad4(n.blocks[i][1])) + 3)
        return n.bytes()[: r["cut_at"]]

    def flip_block_header(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        i = _pick(rng, min(len(n.blocks), 6), r, "block")  # the SHB, the IDB and the first packets
        return _flip(n.bytes(), rng, n.offsets()[i], 28 if i == 0 else 8, r)

    def order(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        how = r["how"] = rng.choice(["missing-shb", "idb-after-packets", "packet-before-shb", "missing-idb",
                                     "shuffled", "second-shb"])  # fmt: skip
        shb, rest = n.blocks[0], n.blocks[1:]
        idbs = [b for b in rest if b[0] == IDB]
        others = [b for b in rest if b[0] != IDB]
        k = r["k"] = rng.randint(1, 4)
        blocks = {"missing-shb": rest, "idb-after-packets": [shb, *others[:k], *idbs, *others[k:]],
                  "packet-before-shb": [*others[:k], shb, *idbs, *others[k:]], "missing-idb": [shb, *others],
                  "shuffled": [shb, *rng.sample(rest, len(rest))],
                  "second-shb": [*n.blocks, shb, *rest]}[how]  # fmt: skip
        return Pcapng(n.endian, blocks).bytes()

    def block_length(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        i = _pick(rng, len(n.blocks), r, "block")
        data, off = bytearray(n.bytes()), n.offsets()[i]
        blen = struct.unpack_from(n.endian + "I", data, off + 4)[0]
        where = r["where"] = rng.choice(["leading", "trailing", "both"])
        value = r["value"] = rng.choice([0, 4, 11, 12, 13, blen - 4, blen + 2, blen + 4, 0x7FFFFFFC, 0xFFFFFFFF])
        if where in ("leading", "both"):
            struct.pack_into(n.endian + "I", data, off + 4, value)
        if where in ("trailing", "both"):
            struct.pack_into(n.endian + "I", data, off + blen - 4, value)
        return bytes(data)

    def unknown_block(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        btype = r["type"] = rng.choice([0x0BADBEEF, 0x80000001, 7, 8, 0x0A, 0x0B, 0x0D, 0x40000BAD, 0xFFFFFFFF])
        i = r["at"] = rng.randint(1, len(n.blocks))
        if rng.random() < 0.3 and i < len(n.blocks):  # an existing block retyped instead of a new one
            r["retyped"] = True
            n.blocks[i][0] = btype
        else:
            n.blocks.insert(i, [btype, rng.randbytes(r.setdefault("length", rng.choice([0, 4, 64, 1000])))])  # type: ignore[arg-type]
        return n.bytes()

    def shb_fields(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        bom, major, minor, seclen = struct.unpack_from(n.endian + "IHHq", n.blocks[0][1], 0)
        what = r["what"] = rng.choice(["bom", "version", "section-length"])
        if what == "bom":
            bom = r["bom"] = rng.choice([0x4D3C2B1A, 0, 0x1A2B3C4E])
        elif what == "version":
            major, minor = r["version"] = rng.choice([(0, 0), (2, 0), (1, 2), (65535, 65535)])
        else:
            seclen = r["section_length"] = rng.choice([0, 12, 1 << 40, -2])
        n.blocks[0][1] = struct.pack(n.endian + "IHHq", bom, major, minor, seclen) + n.blocks[0][1][16:]
        return n.bytes()

    def idb_fields(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        idbs = n.where(IDB)
        if not idbs:
            r["no_idb"] = True
            return n.bytes()
        i = idbs[0]
        lt, _, snap = struct.unpack_from(n.endian + "HHI", n.blocks[i][1], 0)
        what = r["what"] = rng.choice(["linktype", "snaplen", "tsresol", "bad-option"])
        opts = n.blocks[i][1][8:]
        if what == "linktype":
            lt = r["linktype"] = rng.choice(UNDECODED_LINKTYPES + DECODED_LINKTYPES)
        elif what == "snaplen":
            snap = r["snaplen"] = rng.choice([0, 1, 14, 0xFFFFFFFF])
        elif what == "tsresol":  # if_tsresol: absurd clock resolutions, so absurd timestamps
            res = r["tsresol"] = rng.choice([0, 0x7F, 0xBF, 0xFF, 0x80, 19, 3])
            opts = struct.pack(n.endian + "HH", 9, 1) + bytes([res, 0, 0, 0]) + struct.pack(n.endian + "HH", 0, 0)
        else:  # an option whose length runs past the block
            opts = struct.pack(n.endian + "HH", 2, r.setdefault("option_length", rng.choice([0xFFFF, 200, 5])))  # type: ignore[arg-type]
        n.blocks[i][1] = struct.pack(n.endian + "HHI", lt & 0xFFFF, 0, snap) + opts
        return n.bytes()

    def epb_fields(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        epbs = n.where(EPB)
        idx = sorted(rng.sample(epbs, min(len(epbs), rng.randint(1, 3))))
        what = r["what"] = rng.choice(["interface", "caplen", "origlen", "ts-far-future", "ts-backwards", "ts-zero"])
        value = r["value"] = {"interface": rng.choice([1, 7, 0xFFFFFFFF]),
                              "caplen": rng.choice([0xFFFFFFFF, 1 << 20, 0, 3, 65535]), "origlen": rng.choice([0, 1]),
                              "ts-far-future": rng.choice([0xFFFFFFFF, 0x80000000]), "ts-backwards": 0,
                              "ts-zero": 0}[what]  # fmt: skip
        for i in idx:
            iface, hi, lo, cap, orig = struct.unpack_from(n.endian + "IIIII", n.blocks[i][1], 0)
            if what == "interface":
                iface = value
            elif what == "caplen":
                cap = value
            elif what == "origlen":
                orig = value
            elif what == "ts-far-future":
                hi = value
            else:
                hi, lo = (0, 0) if what == "ts-zero" else (max(0, hi - 10), lo)
            n.blocks[i][1] = struct.pack(n.endian + "IIIII", iface, hi, lo, cap, orig) + n.blocks[i][1][20:]
        r["blocks"] = idx
        return n.bytes()

    def simple_packets(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        """Packets as simple (type 3) or obsolete (type 2) packet blocks: rare but valid, decoded by few readers."""
        btype = r["type"] = rng.choice([SPB, OPB])
        for i in n.where(EPB):
            iface, hi, lo, cap, orig = struct.unpack_from(n.endian + "IIIII", n.blocks[i][1], 0)
            data = n.blocks[i][1][20 : 20 + cap]
            if btype == SPB:
                head = struct.pack(n.endian + "I", orig)
            else:
                head = struct.pack(n.endian + "HHIIII", iface & 0xFFFF, 0, hi, lo, cap, orig)
            n.blocks[i] = [btype, head + data]
        return n.bytes()

    def payload(rng: random.Random, n: Pcapng, r: Recipe) -> bytes:
        epbs = n.where(EPB)
        idx = sorted(rng.sample(epbs, min(len(epbs), rng.randint(1, 20))))
        for i in idx:
            body = bytearray(n.blocks[i][1])
            for _ in range(rng.randint(1, 8)):
                if len(body) > 20:
                    body[20 + rng.randrange(min(len(body) - 20, 64))] = rng.getrandbits(8)
            n.blocks[i][1] = bytes(body)
        r["blocks"] = idx
        return n.bytes()

    return {"cut-block-header": cut_block_header, "cut-block-body": cut_block_body,
            "flip-block-header": flip_block_header, "blocks-out-of-order": order, "block-length": block_length,
            "unknown-block": unknown_block, "shb-fields": shb_fields, "idb-fields": idb_fields,
            "epb-fields": epb_fields, "simple-packets": simple_packets, "payload-garbage": payload}  # fmt: skip


PCAP_KINDS = pcap_kinds()
PCAPNG_KINDS = pcapng_kinds()
_PCAP_STACKABLE = ("flip-record-header", "incl-over-orig", "incl-wrong", "snaplen", "ts-absurd", "linktype",
                   "payload-garbage", "records-reordered", "cut-record-body")  # fmt: skip
_PCAPNG_STACKABLE = ("blocks-out-of-order", "block-length", "unknown-block", "shb-fields", "idb-fields", "epb-fields",
                     "simple-packets", "payload-garbage", "cut-block-body")  # fmt: skip


def _usable(parsed: Pcap | Pcapng) -> bool:
    if isinstance(parsed, Pcap):
        return bool(parsed.records)
    b = parsed.blocks
    return len(b) >= 2 and b[0][0] == SHB and len(b[0][1]) >= 16 and all(len(x) >= 20 for t, x in b if t == EPB)


def _stacked(rng: random.Random, parsed: Pcap | Pcapng, r: Recipe) -> bytes:
    """Two or three kinds one after the other (the file re-read between them), as damage comes in practice."""
    kinds, names = (PCAP_KINDS, _PCAP_STACKABLE) if isinstance(parsed, Pcap) else (PCAPNG_KINDS, _PCAPNG_STACKABLE)
    steps: list[Recipe] = []
    data = b""
    for _ in range(rng.randint(2, 3)):
        if not _usable(parsed):  # an earlier step left nothing the next one can work on
            break
        step: Recipe = {"kind": rng.choice(names)}
        data = kinds[str(step["kind"])](rng, parsed, step)
        steps.append(step)
        parsed = Pcap.parse(data) if isinstance(parsed, Pcap) else Pcapng.parse(data)
    r["steps"] = steps
    return data


PCAP_KINDS["stacked"] = _stacked
PCAPNG_KINDS["stacked"] = _stacked


def mutant(seed: int, index: int, sources: list[Source]) -> Mutant:
    """Mutant ``index`` of ``seed``: half pcap, half pcapng (of a real pcapng or a pcap rewritten as one)."""
    rng = random.Random(f"{seed}:{index}")
    if rng.random() < 0.5:
        src = rng.choice([s for s in sources if s.fmt == "pcap"])
        kind = rng.choice(sorted(PCAP_KINDS))
        recipe: Recipe = {"source": src.name, "format": "pcap", "kind": kind}
        data = PCAP_KINDS[kind](rng, Pcap.parse(src.data), recipe)
        return Mutant(index, kind, "pcap", data, recipe)
    src = rng.choice(sources)
    kind = rng.choice(sorted(PCAPNG_KINDS))
    endian = rng.choice("<>")
    ng = Pcapng.parse(src.data) if src.fmt == "pcapng" else Pcapng.from_pcap(Pcap.parse(src.data), endian)
    recipe = {"source": src.name, "format": "pcapng", "from": src.fmt, "kind": kind}
    if src.fmt == "pcap":
        recipe["byte_order"] = "little" if endian == "<" else "big"
    data = PCAPNG_KINDS[kind](rng, ng, recipe)
    return Mutant(index, "ng-" + kind, "pcapng", data, recipe)
