"""``python -m lab.topology --check``: every host pings every other over IPv4 and IPv6, and the tap saw it.

A small lab (2 clients, 1 server, 1 attacker) is built; while tcpdump captures on the tap, each host pings
each other host once per IP version (``ping -c 1 -W 1``). The capture is then read back (``tcpdump -r``):
a path passes when its ping was answered and the tap holds both its echo request and its echo reply.
The table shows each ping's round-trip time, so a lab with delay lines (``--profile wan``, built by
:func:`lab.delaylink.delay_linker`) shows its delay (a path's first ping also waits for neighbour discovery).

Example
-------
>>> print("\\n".join(table([PathCheck("c1", "s1", 4, True, True, 40.2), PathCheck("c1", "s1", 6, False, False)])))
src  dst  ip  ping  rtt ms  tap
c1   s1   4   ok    40.200  seen
c1   s1   6   FAIL  -       MISSING
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.topo_plan import Host, LabError, TopologySpec
from lab.topology import Linker, Topology, lab_topology, link

log = logging.getLogger(__name__)

CHECK_BUDGET_BYTES = 2_000_000  # a few hundred frames are expected; 2 MB bounds a run that goes wrong
CHECK_MAX_PACKETS = 10_000
_ECHO = re.compile(r"^\S+ IP6? (\S+) > (\S+): ICMP6?,? echo (request|reply)")
_TIME = re.compile(r"time=([0-9.]+) ms")  # iputils and busybox ping alike


@dataclass(frozen=True)
class PathCheck:
    """One directed path and IP version: did the ping get its answer, and did the tap see both?"""

    src: str
    dst: str
    family: int
    ping_ok: bool
    seen: bool
    rtt_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.ping_ok and self.seen


def ping_argv(address: str) -> list[str]:
    """One echo request, waiting 1 s: iputils ``ping`` where installed, else busybox's (both versions).

    >>> ping_argv("fd00:7477:1::2")[-5:]
    ['-c', '1', '-W', '1', 'fd00:7477:1::2']
    """
    tool = ["ping"] if shutil.which("ping") else ["busybox", "ping"]
    return [*tool, "-c", "1", "-W", "1", address]


def ping_timed(topo: Topology) -> list[tuple[Host, Host, int, bool, float | None]]:
    """Ping every host from every other over both IP versions: ``(src, dst, version, answered, rtt ms)``."""
    out = []
    for src in topo.hosts:
        for dst in topo.hosts:
            if src is dst:
                continue
            for family in (4, 6):
                done = topo.run_in(src, ping_argv(dst.addresses(family)[0]), timeout=10, check=False)
                m = _TIME.search(done.stdout)
                out.append((src, dst, family, done.returncode == 0, float(m.group(1)) if m else None))
    return out


def ping_all(topo: Topology) -> list[tuple[Host, Host, int, bool]]:
    """Ping every host from every other over both IP versions: ``(src, dst, version, answered)``."""
    return [(src, dst, family, ok) for src, dst, family, ok, _ in ping_timed(topo)]


def echoes(pcap: Path) -> set[tuple[str, str, str]]:
    """``(src, dst, "request" | "reply")`` of every ICMP and ICMPv6 echo in ``pcap``."""
    done = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise LabError(f"tcpdump cannot read {pcap}: {done.stderr.strip()}")
    found = set()
    for line in done.stdout.splitlines():
        m = _ECHO.match(line)
        if m:
            found.add((m.group(1), m.group(2), m.group(3)))
    return found


def table(checks: list[PathCheck]) -> list[str]:
    """The check's result as aligned text lines."""
    rows = [("src", "dst", "ip", "ping", "rtt ms", "tap")]
    rows += [(c.src, c.dst, str(c.family), "ok" if c.ping_ok else "FAIL",
              "-" if c.rtt_ms is None else f"{c.rtt_ms:.3f}", "seen" if c.seen else "MISSING")
             for c in checks]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def run_check(spec: TopologySpec, echo: Callable[[str], None], linker: Linker = link) -> bool:
    """Build ``spec``'s lab (links by ``linker``), ping every path while capturing on the tap, write the table
    with ``echo``.

    Returns whether every path passed; the lab is torn down whatever happens.
    """
    with tempfile.TemporaryDirectory(prefix="tapwatch-topo-") as tmp, lab_topology(spec, linker=linker) as topo:
        pcap = Path(tmp) / "tap.pcap"
        with topo.capture(pcap, CHECK_BUDGET_BYTES, CHECK_MAX_PACKETS) as cap:
            pings = ping_timed(topo)
        seen = echoes(pcap)
        checks = []
        for src, dst, family, answered, rtt in pings:
            a, b = src.addresses(family)[0], dst.addresses(family)[0]
            both = (a, b, "request") in seen and (b, a, "reply") in seen
            checks.append(PathCheck(src.name, dst.name, family, answered, both, rtt))
        for line in table(checks):
            echo(line)
        passed = sum(c.ok for c in checks)
        echo(f"lab {spec.prefix}: {passed}/{len(checks)} paths ok; tap {topo.tap.netns}/{topo.tap.iface} captured "
             f"{cap.captured} frames ({cap.dropped} dropped)")  # fmt: skip
    return passed == len(checks)
