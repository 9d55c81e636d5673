"""The live check's traffic: an attacker and a benign client against one server, labelled per phase.

Three namespaces (:func:`lab.netns_trio.ns_trio`): the server runs busybox httpd and dnsmasq
(:func:`lab.traffic.servers`). The attacker runs, one after the other, an ``nmap -sS`` scan, an
``hping3 -S`` SYN flood bounded in packet count and rate, and ``slowloris`` against the httpd (the Python
implementation of the ``slowloris`` package, a ``dev`` dependency: it opens many connections and keeps each
one open by sending a header line every few seconds, never ending the request). Meanwhile the benign client
alternates HTTP downloads of several sizes (curl) and DNS queries (dig) until the attacker is done. tcpdump
on the server's bridge captures both into one pcap; every phase is recorded with its source and destination
address, so a flow is labelled by its addresses and start time (``OUT-labels.csv``). With ``LivePlan.link``
the server's side of the bridge is a WAN-like link (:func:`lab.netns_trio.shape_link`); without
it the namespaces talk at memory speed (LAN).

Run it as::

    python -m lab.live_traffic --pcap OUT.pcap [--short] [--wan]

It needs root; nothing leaves the namespaces. The full plan takes about a minute.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import click

from lab.netns import NsPair, netns_problem
from lab.netns_trio import NsTrio, ShapedLink, WanLink, ns_trio, shape_link
from lab.traffic import (
    CaptureStats,
    Label,
    Phase,
    PhaseCallback,
    TrafficError,
    TrafficPlan,
    capture,
    download,
    labels_path,
    record_phase,
    resolve,
    servers,
    syn_scan,
    write_labels,
)
from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivePlan:
    """What :func:`live_traffic` makes.

    Parameters
    ----------
    file_sizes, dns_names
        Each benign round downloads every file once and asks for every name once.
    scan_ports
        The nmap port range.
    flood_packets, flood_rate
        SYNs hping3 sends, and how many per second (bounded: the flood is a sample, not a load test).
    slowloris_sockets, slowloris_sleep_s, slowloris_s
        Connections slowloris holds open, seconds between its header lines, seconds it runs (under the 60 s
        busybox httpd allows for a request's headers, so that the attacker, not the server, ends them).
    benign_pause_s, min_benign_rounds
        Pause between benign rounds; rounds made even if the attacker is done sooner.
    snaplen
        tcpdump snap length: 0 keeps whole frames (the PyPI ``cicflowmeter`` the live check runs beside
        tapwatch takes lengths from the captured bytes); 96 would keep every header tapwatch reads.
    link
        ``None``: no shaping (LAN); else the WAN-like link on the server's side.

    Example
    -------
    >>> SHORT_PLAN.flood_packets < LivePlan().flood_packets
    True
    """

    file_sizes: tuple[int, ...] = (2_048, 65_536, 1_048_576)
    dns_names: tuple[str, ...] = TrafficPlan().dns_names
    scan_ports: str = "1-1000"
    flood_packets: int = 3_000
    flood_rate: int = 1_000
    slowloris_sockets: int = 50
    slowloris_sleep_s: int = 5
    slowloris_s: float = 40.0
    benign_pause_s: float = 1.0
    min_benign_rounds: int = 2
    snaplen: int = 0
    link: WanLink | None = None

    @property
    def server_plan(self) -> TrafficPlan:
        """What :func:`lab.traffic.servers` serves for this plan."""
        return TrafficPlan(file_sizes=self.file_sizes, dns_names=self.dns_names)


SHORT_PLAN = LivePlan(scan_ports="1-100", flood_packets=200, flood_rate=400, slowloris_sockets=10,
                      slowloris_sleep_s=1, slowloris_s=4.0, benign_pause_s=0.5, min_benign_rounds=2)  # fmt: skip
"""A plan for tests: every phase, in about 15 s."""


# -- attacks --------------------------------------------------------------------------------------
def syn_flood(pair: NsPair, port: int, packets: int, rate: int) -> None:
    """``hping3 -S``: ``packets`` SYNs to ``port`` at ``rate`` per second, each from the next source port.

    The attacker's own address is used (no spoofing), so its flows can be labelled by address; its kernel
    answers each SYN/ACK with a RST, as it knows no such connection.
    """
    if packets < 1 or rate < 1:
        raise ValueError(f"flood packets and rate must be >= 1, got {packets} and {rate}")
    argv = ["hping3", "-S", "-q", "-p", str(port), "-c", str(packets), "-i", f"u{max(1, 1_000_000 // rate)}",
            pair.server.ip]  # fmt: skip
    done = pair.run(pair.client, argv, timeout=packets / rate + 60, check=False)
    sent = re.search(r"(\d+) packets transmitted", done.stdout + done.stderr)
    if sent is None or int(sent.group(1)) != packets:
        raise TrafficError(f"hping3 sent {sent.group(1) if sent else 'no'} of {packets} SYNs: {done.stderr.strip()}")


def slowloris_command() -> str:
    """The ``slowloris`` script of this Python environment (the ``dev`` extra installs it)."""
    beside = Path(sys.executable).with_name("slowloris")
    found = str(beside) if beside.exists() else shutil.which("slowloris")
    if found is None:
        raise TrafficError("the slowloris command is not installed (pip install slowloris, or the dev extra)")
    return found


def slowloris(pair: NsPair, port: int, plan: LivePlan) -> int:
    """Run slowloris against the httpd for ``plan.slowloris_s`` seconds; return the sockets it held open."""
    argv = [slowloris_command(), pair.server.ip, "-p", str(port), "-s", str(plan.slowloris_sockets),
            "--sleeptime", str(plan.slowloris_sleep_s)]  # fmt: skip
    with tempfile.TemporaryFile("w+") as err:
        proc = pair.start(pair.client, argv, stderr=err)
        time.sleep(plan.slowloris_s)
        early = proc.poll()
        pair.stop(proc)  # SIGTERM: the kernel closes every socket (FIN), as when the tool is interrupted
        err.seek(0)
        text = err.read()
    held = [int(n) for n in re.findall(r"Socket count: (\d+)", text)]
    if early is not None or not held or max(held) < plan.slowloris_sockets:
        tail = text.strip()[-300:] or "no output"
        raise TrafficError(f"slowloris held {max(held, default=0)} of {plan.slowloris_sockets} sockets: {tail}")
    return max(held)


# -- the scenario ---------------------------------------------------------------------------------
def _attacker(pair: NsPair, plan: LivePlan, on_phase: PhaseCallback | None, out: list[Phase]) -> None:
    http = plan.server_plan.http_port
    with record_phase(pair, Label.NMAP_SYN_SCAN, on_phase, out):
        syn_scan(pair, plan.scan_ports)
    with record_phase(pair, Label.SYN_FLOOD, on_phase, out):
        syn_flood(pair, http, plan.flood_packets, plan.flood_rate)
    with record_phase(pair, Label.SLOWLORIS, on_phase, out):
        slowloris(pair, http, plan)


def _benign(pair: NsPair, plan: LivePlan, done: threading.Event, out: list[Phase], errors: list[Exception]) -> None:
    srv = plan.server_plan
    try:
        rounds = 0
        while rounds < plan.min_benign_rounds or not done.is_set():
            with record_phase(pair, Label.BENIGN_HTTP, None, out):
                download(pair, srv.http_port, list(plan.file_sizes))
            with record_phase(pair, Label.BENIGN_DNS, None, out):
                resolve(pair, srv.dns_port, list(plan.dns_names))
            rounds += 1
            time.sleep(plan.benign_pause_s)
    except Exception as err:  # re-raised in the main thread, which owns the namespaces
        errors.append(err)


def live_traffic(trio: NsTrio, plan: LivePlan, on_phase: PhaseCallback | None = None) -> list[Phase]:
    """The attacker's phases and, at the same time, benign rounds from the client; phases by start time."""
    phases: list[Phase] = []
    errors: list[Exception] = []
    done = threading.Event()
    attacker, client = trio.pair(trio.attacker), trio.pair(trio.client)
    with tempfile.TemporaryDirectory(prefix="tapwatch-live-") as tmp, servers(client, plan.server_plan, Path(tmp)):
        benign = threading.Thread(target=_benign, args=(client, plan, done, phases, errors), name="benign")
        benign.start()
        try:
            _attacker(attacker, plan, on_phase, phases)
        finally:
            done.set()
            benign.join()
    if errors:
        raise errors[0]
    return sorted(phases, key=lambda p: p.start)


@dataclass(frozen=True)
class LiveRun:
    """A finished live-check capture: the pcap, its labels, tcpdump's counts, the wall time."""

    pcap: Path
    labels: Path
    phases: list[Phase]
    stats: CaptureStats
    wall_s: float
    shaped: ShapedLink | None = None


def make_live_capture(pcap: Path, plan: LivePlan) -> LiveRun:
    """Build the namespaces (shape the server's side if ``plan.link``), capture :func:`live_traffic` on the
    server's bridge, write the labels."""
    problem = netns_problem()
    if problem is not None:
        raise TrafficError(f"network namespaces unusable: {problem}")
    slowloris_command()  # fail before building anything
    t0 = time.monotonic()
    with ns_trio() as trio:
        shaped = shape_link(trio.server, plan.link) if plan.link is not None else None
        with capture(trio.pair(trio.client), trio.server, pcap, plan.snaplen) as stats:
            phases = live_traffic(trio, plan)
    write_labels(phases, labels_path(pcap))
    return LiveRun(Path(pcap), labels_path(pcap), phases, stats, time.monotonic() - t0, shaped)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({err})"
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else "unknown"


def tool_versions() -> dict[str, str]:
    """The version line of every tool the scenario runs."""
    try:
        slow = f"slowloris {metadata.version('slowloris')} (Python package)"
    except metadata.PackageNotFoundError:
        slow = "not installed"
    return {
        "nmap": _first_line(["nmap", "--version"]),
        "hping3": _first_line(["hping3", "--version"]),
        "slowloris": slow,
        "tcpdump": _first_line(["tcpdump", "--version"]),
        "curl": _first_line(["curl", "--version"]),
        "dig": _first_line(["dig", "-v"]),
        "busybox": _first_line(["busybox"]),
        "dnsmasq": _first_line(["dnsmasq", "--version"]),
        "kernel": _first_line(["uname", "-sr"]),
    }


@click.command()
@click.option("--pcap", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output pcap.")
@click.option("--short", is_flag=True, help="The short plan of the tests (about 15 s).")
@click.option("--wan", is_flag=True, help="Shape the server's side as a WAN-like link (WanLink's defaults).")
@click.option("-v", "--verbose", count=True, help="More log output.")
def main(pcap: Path, short: bool, wan: bool, verbose: int) -> None:
    """Make the live check's labelled traffic in three fresh network namespaces and capture it (needs root)."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        plan = SHORT_PLAN if short else LivePlan()
        run = make_live_capture(pcap, replace(plan, link=WanLink()) if wan else plan)
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err
    link = run.shaped.note if run.shaped else "LAN (no shaping)"
    click.echo(f"{pcap}: {run.stats.captured} packets ({run.stats.dropped} dropped) in {run.wall_s:.0f} s; "
               f"labels in {run.labels}; link: {link}")  # fmt: skip


if __name__ == "__main__":
    main()
