"""Labelled traffic between two network namespaces, made with real tools, captured with tcpdump.

The server namespace runs ``busybox httpd`` (a few files of known sizes) and ``dnsmasq`` (answers a few
local names itself: ``--no-resolv``, ``--address``); the client namespace downloads with ``curl``,
queries with ``dig`` and scans with ``nmap -sS``. Every phase is recorded as a :class:`Phase` (label,
epoch start/end, client and server address), which :func:`write_labels` writes as ``OUT-labels.csv``.

* :func:`generate` makes a small labelled sample (the committed ``capture/samples/sample.pcap``).
* :func:`bulk` makes many short flows (HTTP downloads through ``curl --parallel``, a ``dig`` batch, a
  wide SYN scan) for throughput benchmarks, bounded in flow count and time.
* :mod:`lab.live_traffic` makes the live check's traffic: an attacker and a benign client
  against one server, with the labels of :data:`ATTACK_LABELS` too.

Run it as::

    python -m lab.traffic --pcap OUT.pcap [--scale N] [--bulk-flows N]

which builds its own namespaces (:func:`lab.netns.ns_pair`), captures on the client-side
veth into ``OUT.pcap`` and writes ``OUT-labels.csv``. It needs root; nothing leaves the namespaces.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

import click

from lab.netns import Endpoint, NsPair, netns_problem, ns_pair, wait_listening
from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("start", "end", "src_ip", "dst_ip", "label")
MAX_BULK_FLOWS = 1_000_000  # about 26 M packets at the default file size: far beyond any benchmark need
_SETTLE_S = 0.3  # after a tool exits, the last ACK/RST can still be on its way; a phase ends after it


class Label(str, Enum):
    """The label of a phase of generated traffic."""

    BENIGN_HTTP = "benign-http"
    BENIGN_DNS = "benign-dns"
    NMAP_SYN_SCAN = "nmap-syn-scan"
    SYN_FLOOD = "syn-flood"
    SLOWLORIS = "slowloris"


SAMPLE_LABELS = (Label.BENIGN_HTTP, Label.BENIGN_DNS, Label.NMAP_SYN_SCAN)
"""The labels of :func:`generate`'s phases, in order; the live check (:mod:`.live_traffic`) adds the others."""
ATTACK_LABELS = frozenset({Label.NMAP_SYN_SCAN, Label.SYN_FLOOD, Label.SLOWLORIS})


class TrafficError(TapwatchError):
    """A traffic tool failed or did not do what was asked (wrong download size, missing answer)."""


@dataclass(frozen=True)
class Phase:
    """Traffic of one label between two addresses in a time window (epoch seconds)."""

    label: Label
    start: float
    end: float
    src_ip: str
    dst_ip: str

    def row(self) -> list[str]:
        return [f"{self.start:.6f}", f"{self.end:.6f}", self.src_ip, self.dst_ip, self.label.value]


PhaseCallback = Callable[[Phase], None]


@dataclass(frozen=True)
class TrafficPlan:
    """What :func:`generate` makes at scale 1 (counts are multiplied by the scale).

    Parameters
    ----------
    file_sizes
        Sizes in bytes of the files the server offers; each is downloaded ``downloads`` times.
    dns_names
        Names dnsmasq answers (RFC 6761 ``.test``); each is queried ``dns_rounds`` times.
    scan_ports
        The nmap port range (not multiplied).
    """

    http_port: int = 8080
    dns_port: int = 53
    file_sizes: tuple[int, ...] = (1_024, 8_192, 32_768)
    downloads: int = 2
    dns_names: tuple[str, ...] = ("www.tapwatch.test", "mail.tapwatch.test", "files.tapwatch.test")
    dns_rounds: int = 2
    scan_ports: str = "1-200"


@dataclass(frozen=True)
class BulkPlan:
    """What :func:`bulk` makes besides its HTTP flows.

    Parameters
    ----------
    file_size
        Bytes per download; 16 KiB gives about 26 packets per flow.
    parallel
        Concurrent transfers in ``curl --parallel`` (curl's own maximum is 300).
    dns_per_http
        One DNS query for every this many HTTP flows (0: none).
    scan_ports
        The nmap port range ("" for no scan).
    timeout_s
        Upper bound of each part's run time.
    """

    file_size: int = 16_384
    parallel: int = 32
    dns_per_http: int = 10
    scan_ports: str = "1-65535"
    timeout_s: float = 3_600.0


# -- servers --------------------------------------------------------------------------------------
def _dnsmasq_argv(server: Endpoint, plan: TrafficPlan, workdir: Path) -> list[str]:
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", f"--listen-address={server.ip}", f"--port={plan.dns_port}",
        f"--pid-file={workdir / 'dnsmasq.pid'}", "--user=root", "--cache-size=0",
    ]  # fmt: skip
    return argv + [f"--address=/{name}/{server.ip}" for name in plan.dns_names]


@contextlib.contextmanager
def servers(pair: NsPair, plan: TrafficPlan, workdir: Path) -> Iterator[None]:
    """Run the web and DNS servers in the server namespace; files are ``f<size>.bin`` and an index page."""
    root = workdir / "www"
    root.mkdir(parents=True, exist_ok=True)
    for size in plan.file_sizes:
        (root / f"f{size}.bin").write_bytes(bytes(i % 251 for i in range(size)))
    # Without an index page busybox answers "GET /" with 404 at once; with one it waits for the end of the
    # headers (up to 60 s), as a web server under slowloris does.
    (root / "index.html").write_text("<html><body>tapwatch test server</body></html>\n")
    srv = pair.server
    httpd = pair.start(srv, ["busybox", "httpd", "-f", "-p", f"{srv.ip}:{plan.http_port}", "-h", str(root)])
    dns = pair.start(srv, _dnsmasq_argv(srv, plan, workdir))
    try:
        wait_listening(srv, "tcp", plan.http_port)
        wait_listening(srv, "udp", plan.dns_port)
        yield
    finally:
        for proc in (dns, httpd):
            pair.stop(proc)


# -- capture --------------------------------------------------------------------------------------
@dataclass
class CaptureStats:
    """tcpdump's own account, filled in when the capture stops."""

    captured: int = -1
    dropped: int = -1


@contextlib.contextmanager
def capture(pair: NsPair, end: Endpoint, pcap: Path, snaplen: int = 0) -> Iterator[CaptureStats]:
    """Capture on ``end``'s interface into ``pcap`` with tcpdump for the duration of the block.

    ``snaplen`` 0 keeps whole frames; a small one (96) keeps every header for bulk captures, since
    flow features take lengths from the IP header, not from the captured bytes.
    """
    pcap = Path(pcap).resolve()
    stats = CaptureStats()
    with tempfile.TemporaryFile("w+") as err:
        # -Z root: Debian's tcpdump would otherwise switch to user tcpdump before opening the output;
        # -B 65536 KiB: a ring large enough that bulk bursts are not dropped; --immediate-mode and -U: without
        # them libpcap hands packets over in blocks retired after up to 1 s, and the last block before tcpdump
        # is stopped is lost (the scan at the end of a run went missing).
        argv = ["tcpdump", "-n", "-i", end.iface, "-s", str(snaplen), "-B", "65536", "--immediate-mode", "-U",
                "-Z", "root", "-w", str(pcap)]  # fmt: skip
        proc = pair.start(end, argv, stderr=err)
        _wait_for_text(err, "listening on", proc, 10.0)
        try:
            yield stats
        finally:
            time.sleep(_SETTLE_S)
            pair.stop(proc)
            err.seek(0)
            text = err.read()
    stats.captured = _count(text, "packets captured")
    stats.dropped = _count(text, "packets dropped by kernel")
    log.info("capture %s: %s packets, %s dropped by the kernel", pcap, stats.captured, stats.dropped)


def _wait_for_text(fh: IO[str], text: str, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        fh.seek(0)
        seen = fh.read()
        if text in seen:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TrafficError(f"tcpdump did not start: {seen.strip() or 'no output'}")
        time.sleep(0.05)


def _count(text: str, what: str) -> int:
    m = re.search(rf"(\d+) {what}", text)
    return int(m.group(1)) if m else -1


# -- phases ---------------------------------------------------------------------------------------
def run_tool(pair: NsPair, argv: list[str], timeout: float) -> str:
    """Run ``argv`` in the pair's client namespace; its standard output, or :class:`TrafficError`."""
    done = pair.run(pair.client, argv, timeout=timeout, check=False)
    if done.returncode != 0:
        raise TrafficError(f"{argv[0]} exited with {done.returncode}: {done.stderr.strip()[:500]}")
    return str(done.stdout)


@contextlib.contextmanager
def record_phase(pair: NsPair, label: Label, on_phase: PhaseCallback | None, out: list[Phase]) -> Iterator[None]:
    """The block's traffic as a phase from the pair's client to its server, ending ``_SETTLE_S`` after the block."""
    start = time.time()
    yield
    time.sleep(_SETTLE_S)
    phase = Phase(label, start, time.time(), pair.client.ip, pair.server.ip)
    log.info("phase %s: %.3f-%.3f", label.value, phase.start, phase.end)
    out.append(phase)
    if on_phase is not None:
        on_phase(phase)


def download(pair: NsPair, port: int, sizes: list[int], timeout: float = 60.0) -> None:
    """Fetch ``f<size>.bin`` for every size, one connection each (busybox httpd closes after a reply)."""
    argv = ["curl", "--silent", "--show-error", "--fail", "--max-time", str(timeout), "-w", "%{size_download}\\n"]
    for size in sizes:
        argv += ["-o", "/dev/null", f"http://{pair.server.ip}:{port}/f{size}.bin"]
    got = [int(x) for x in run_tool(pair, argv, timeout * max(len(sizes), 1)).split()]
    if got != sizes:
        raise TrafficError(f"curl downloaded {got} bytes, expected {sizes}")


def resolve(pair: NsPair, port: int, names: list[str], timeout: float = 60.0) -> None:
    """Ask dnsmasq for ``names`` with one ``dig`` (a query each, from its own source port)."""
    argv = ["dig", f"@{pair.server.ip}", "-p", str(port), "+tries=1", "+time=2", "+short", *names]
    answers = run_tool(pair, argv, timeout).split()
    if len(answers) != len(names):
        raise TrafficError(f"dig got {len(answers)} answers for {len(names)} queries")


def syn_scan(pair: NsPair, ports: str, timeout: float = 600.0) -> None:
    """``nmap -sS`` of ``ports`` on the server: a SYN per port, answered by SYN/ACK or RST/ACK."""
    argv = ["nmap", "-sS", "-n", "-Pn", "-T4", "--max-retries", "1", "-p", ports, pair.server.ip]
    if "(1 host up)" not in run_tool(pair, argv, timeout):
        raise TrafficError(f"nmap did not find {pair.server.ip} up")


def generate(
    pair: NsPair, scale: int = 1, on_phase: PhaseCallback | None = None, plan: TrafficPlan | None = None
) -> list[Phase]:
    """Make labelled benign HTTP, benign DNS and an nmap SYN scan between the pair; return the phases.

    Starts and stops its own servers. ``on_phase`` is called as each phase ends.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    plan = plan or TrafficPlan()
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="tapwatch-traffic-") as tmp, servers(pair, plan, Path(tmp)):
        with record_phase(pair, Label.BENIGN_HTTP, on_phase, phases):
            for _ in range(plan.downloads * scale):
                download(pair, plan.http_port, list(plan.file_sizes))
        with record_phase(pair, Label.BENIGN_DNS, on_phase, phases):
            for _ in range(plan.dns_rounds * scale):
                resolve(pair, plan.dns_port, list(plan.dns_names))
        with record_phase(pair, Label.NMAP_SYN_SCAN, on_phase, phases):
            syn_scan(pair, plan.scan_ports)
    return phases


# -- bulk -----------------------------------------------------------------------------------------
def _bulk_http(pair: NsPair, flows: int, port: int, bplan: BulkPlan, workdir: Path) -> None:
    url = f"http://{pair.server.ip}:{port}/f{bplan.file_size}.bin"
    cfg = workdir / "curl.cfg"
    with cfg.open("w") as fh:
        for _ in range(flows):
            fh.write(f'url = "{url}"\noutput = "/dev/null"\n')
    argv = ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-max", str(bplan.parallel),
            "--max-time", "30", "-w", "%{size_download}\\n", "-K", str(cfg)]  # fmt: skip
    sizes = run_tool(pair, argv, bplan.timeout_s).split()
    short = sum(1 for s in sizes if int(s) != bplan.file_size)
    if len(sizes) != flows or short:
        raise TrafficError(f"bulk: {len(sizes)} of {flows} downloads finished, {short} short")


def _bulk_dns(pair: NsPair, queries: int, plan: TrafficPlan, workdir: Path, timeout: float) -> None:
    batch = workdir / "dig.batch"
    names = plan.dns_names
    batch.write_text("".join(f"{names[i % len(names)]}\n" for i in range(queries)))
    argv = ["dig", f"@{pair.server.ip}", "-p", str(plan.dns_port), "+tries=1", "+time=2", "+short", "-f", str(batch)]
    answers = run_tool(pair, argv, timeout).split()
    if len(answers) != queries:
        raise TrafficError(f"bulk: dig got {len(answers)} answers for {queries} queries")


def _widen_client_ports(pair: NsPair) -> None:
    """Tens of thousands of connections need more than the 28k default ephemeral ports."""
    pair.run(pair.client, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])


def bulk(pair: NsPair, flows: int, on_phase: PhaseCallback | None = None, bplan: BulkPlan | None = None) -> list[Phase]:
    """Make ``flows`` HTTP downloads, ``flows // dns_per_http`` DNS queries and a SYN scan, in phases."""
    if not 1 <= flows <= MAX_BULK_FLOWS:
        raise ValueError(f"flows must be in 1..{MAX_BULK_FLOWS}, got {flows}")
    bplan = bplan or BulkPlan()
    plan = TrafficPlan(file_sizes=(bplan.file_size,))
    phases: list[Phase] = []
    _widen_client_ports(pair)
    with tempfile.TemporaryDirectory(prefix="tapwatch-bulk-") as tmp, servers(pair, plan, Path(tmp)):
        with record_phase(pair, Label.BENIGN_HTTP, on_phase, phases):
            _bulk_http(pair, flows, plan.http_port, bplan, Path(tmp))
        queries = flows // bplan.dns_per_http if bplan.dns_per_http > 0 else 0
        if queries:
            with record_phase(pair, Label.BENIGN_DNS, on_phase, phases):
                _bulk_dns(pair, queries, plan, Path(tmp), bplan.timeout_s)
        if bplan.scan_ports:
            with record_phase(pair, Label.NMAP_SYN_SCAN, on_phase, phases):
                syn_scan(pair, bplan.scan_ports, bplan.timeout_s)
    return phases


# -- labels and command line ----------------------------------------------------------------------
def labels_path(pcap: Path) -> Path:
    """``OUT.pcap`` → ``OUT-labels.csv``.

    >>> labels_path(Path("capture/samples/sample.pcap")).as_posix()
    'capture/samples/sample-labels.csv'
    """
    return pcap.with_name(f"{pcap.stem}-labels.csv")


def write_labels(phases: list[Phase], path: Path) -> None:
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(LABEL_COLUMNS)
        for phase in phases:
            w.writerow(phase.row())


@click.command()
@click.option("--pcap", "pcap", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output pcap.")
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True, help="Multiplies the sample.")
@click.option("--scan-ports", default="1-200", show_default=True, help="nmap port range of the sample's scan.")
@click.option("--bulk-flows", type=click.IntRange(0, MAX_BULK_FLOWS), default=0, show_default=True,
              help="After the sample, this many bulk HTTP flows (plus DNS and a full-range scan).")  # fmt: skip
@click.option("--snaplen", type=click.IntRange(0, 262_144), default=0, show_default=True,
              help="tcpdump snap length (0: whole frames; 96 keeps all headers of bulk traffic).")  # fmt: skip
@click.option("-v", "--verbose", count=True, help="More log output.")
def main(pcap: Path, scale: int, scan_ports: str, bulk_flows: int, snaplen: int, verbose: int) -> None:
    """Generate labelled traffic between two fresh network namespaces and capture it (needs root)."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    problem = netns_problem()
    if problem is not None:
        raise click.ClickException(f"network namespaces unusable: {problem}")
    phases: list[Phase] = []
    try:
        with ns_pair() as pair, capture(pair, pair.client, pcap, snaplen) as stats:
            phases += generate(pair, scale, plan=TrafficPlan(scan_ports=scan_ports))
            if bulk_flows:
                phases += bulk(pair, bulk_flows)
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err
    write_labels(phases, labels_path(pcap))
    click.echo(f"{pcap}: {stats.captured} packets ({stats.dropped} dropped); labels in {labels_path(pcap)}")


if __name__ == "__main__":
    main()
