"""Traffic through a delay line: TCP handshakes with a capture, and a UDP flood for the packet rate.

The probe programs run inside the namespaces as ``python -m lab.delaybench tcp-server|tcp-client|udp-sink|
udp-flood ...`` (tiny, standard library only). :func:`handshakes` makes short TCP connections from A to a
server in B while tcpdump captures on B's interface, for :func:`lab.delayrtt.handshake_rtts`.
:func:`run_bench` (``python -m lab.delayline --bench``) measures the RTT of each profile and the UDP
packet rate the forwarder sustains, each beside a baseline measured in the same run on a plain veth pair
without a forwarder, and returns them as text tables.

Example
-------
>>> BenchRate(rate=1000, sent=3000, received=2970, forwarded=2970, capped=0, send_errors=0).loss_pct
1.0
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from lab.delayline import DelayLineError, Profile
from lab.delayrtt import RttSummary, handshake_rtts, summarize
from lab.delaywire import DelayPair, WireConfig, delay_pair
from lab.netns import Endpoint, NsPair, PairConfig, netns_problem, ns_pair, wait_listening

log = logging.getLogger(__name__)

TCP_PORT, UDP_PORT = 8088, 9099
BASELINE_TAG = "twdl"  # the plain veth pair of the baseline (the delay pairs are "twd-...")
SUSTAINED_LOSS_PCT = 1.0  # a rate counts as sustained when at most this much of it is lost
BENCH_RATES = (5_000, 10_000, 20_000, 40_000, 80_000, 160_000)
_UDP_PAYLOAD = 64  # a small frame (106 bytes on the wire): the per-frame cost is what limits a forwarder


def probe_argv(*args: str) -> list[str]:
    """``python -m lab.delaybench ARGS`` with this interpreter, runnable from any directory."""
    repo = Path(__file__).resolve().parents[1]
    return ["env", f"PYTHONPATH={repo}", sys.executable, "-m", "lab.delaybench", *args]


# -- the probe programs ---------------------------------------------------------------------------
@click.group()
def main() -> None:
    """Probe programs run inside the lab's namespaces (see lab.delaybench)."""


@main.command("tcp-server")
@click.argument("host")
@click.argument("port", type=int)
def tcp_server(host: str, port: int) -> None:
    """Answer each connection's first bytes with the same bytes, then close; until SIGTERM (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family, backlog=128) as srv:
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(30)
                with contextlib.suppress(OSError):
                    conn.sendall(conn.recv(64))


@main.command("tcp-client")
@click.argument("host")
@click.argument("port", type=int)
@click.argument("count", type=int)
@click.option("--gap-s", type=float, default=0.02, help="Pause between connections, so handshakes do not overlap.")
def tcp_client(host: str, port: int, count: int, gap_s: float) -> None:
    """Make ``count`` connections one after the other; print how many completed as JSON."""
    done = 0
    for _ in range(count):
        # 60 s: lossy paths retransmit a lost SYN after 1 s, 3 s, 7 s ... (TCP's doubling timer)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=60) as conn:
            conn.sendall(b"tapwatch")
            done += conn.recv(64) == b"tapwatch"
        time.sleep(gap_s)
    click.echo(json.dumps({"completed": done, "attempted": count}))


@main.command("udp-sink")
@click.argument("host")
@click.argument("port", type=int)
def udp_sink(host: str, port: int) -> None:
    """Count datagrams until SIGTERM, then print the count as JSON."""
    stopping = [False]
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.__setitem__(0, True))
    received = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((host, port))
        sock.settimeout(0.1)
        click.echo("ready", err=True)
        while not stopping[0]:
            with contextlib.suppress(TimeoutError, InterruptedError):
                sock.recv(2048)
                received += 1
    click.echo(json.dumps({"received": received}))


@main.command("udp-flood")
@click.argument("host")
@click.argument("port", type=int)
@click.argument("rate", type=int)
@click.argument("seconds", type=float)
def udp_flood(host: str, port: int, rate: int, seconds: float) -> None:
    """Send ``rate`` datagrams per second for ``seconds`` (paced in 1 ms steps); print what was sent as JSON."""
    payload, sent, errors = bytes(_UDP_PAYLOAD), 0, 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                try:
                    sock.send(payload)
                except OSError:
                    errors += 1
                sent += 1
            time.sleep(0.001)
    click.echo(json.dumps({"sent": sent, "errors": errors, "seconds": round(time.monotonic() - t0, 3)}))


# -- driving them ---------------------------------------------------------------------------------
@contextlib.contextmanager
def tap(pair: NsPair, end: Endpoint, pcap: Path, max_packets: int = 10_000) -> Iterator[None]:
    """tcpdump on ``end``'s interface into ``pcap`` (headers only, at most ``max_packets``) for the block."""
    with tempfile.TemporaryFile("w+") as err:
        argv = ["tcpdump", "-n", "-i", end.iface, "-s", "128", "-c", str(max_packets), "-B", "16384",
                "--immediate-mode", "-U", "-Z", "root", "-w", str(pcap), "tcp"]  # fmt: skip
        proc = pair.start(end, argv, stderr=err)
        _wait_text(err, "listening on", proc)
        try:
            yield
        finally:
            time.sleep(0.3)  # the last ACKs are still on the wire for up to one delay
            pair.stop(proc)


def _wait_text(fh: IO[str], text: str, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        fh.seek(0)
        if text in (seen := fh.read()):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DelayLineError(f"tcpdump did not start: {seen.strip() or 'no output'}")
        time.sleep(0.05)


def handshakes(dp: DelayPair | NsPair, count: int, pcap: Path) -> int:
    """``count`` short TCP connections from A to a server in B, captured at B; how many completed.

    ``dp`` is a delay pair, or a plain :class:`~lab.netns.NsPair` for the baseline.
    """
    pair = dp.pair if isinstance(dp, DelayPair) else dp
    server = pair.start(pair.server, probe_argv("tcp-server", pair.server.ip, str(TCP_PORT)))
    try:
        wait_listening(pair.server, "tcp", TCP_PORT)
        with tap(pair, pair.server, pcap, max_packets=20 * count + 100):
            argv = probe_argv("tcp-client", pair.server.ip, str(TCP_PORT), str(count))
            out = pair.run(pair.client, argv, timeout=60.0 + 10.0 * count).stdout
    finally:
        pair.stop(server)
    return int(json.loads(out.strip().splitlines()[-1])["completed"])


@dataclass(frozen=True)
class BenchRate:
    """One step of the packet-rate bench: datagrams offered per second, sent, received, forwarder counters."""

    rate: int
    sent: int
    received: int
    forwarded: int
    capped: int
    send_errors: int

    @property
    def loss_pct(self) -> float:
        return round(100.0 * (self.sent - self.received) / self.sent, 2) if self.sent else 0.0


def _flood(pair: NsPair, rate: int, seconds: float) -> tuple[int, int]:
    """Flood UDP from A to B at ``rate`` datagrams/s for ``seconds``; (sent, received)."""
    sink = pair.start(pair.server, probe_argv("udp-sink", pair.server.ip, str(UDP_PORT)),
                      stdout=subprocess.PIPE, text=True)  # fmt: skip
    wait_listening(pair.server, "udp", UDP_PORT)
    argv = probe_argv("udp-flood", pair.server.ip, str(UDP_PORT), str(rate), str(seconds))
    sent = json.loads(pair.run(pair.client, argv, timeout=seconds + 30).stdout)["sent"]
    time.sleep(0.5)  # what the forwarder still holds arrives
    sink.send_signal(signal.SIGTERM)
    received = json.loads(sink.communicate(timeout=10)[0])["received"]
    pair.procs.remove(sink)
    return int(sent), int(received)


def udp_rate(rate: int, seconds: float, profile: Profile = Profile.LAN) -> BenchRate:
    """Flood UDP from A to B at ``rate`` datagrams/s through a fresh wire of ``profile``; count arrivals."""
    with delay_pair(WireConfig(path=profile.path)) as dp:
        sent, received = _flood(dp.pair, rate, seconds)
    stats = dp.wire.stats or {}
    ab = stats.get("a_to_b", {})
    return BenchRate(rate, sent, received, ab.get("forwarded", -1), ab.get("capped", -1), ab.get("send_errors", -1))


def profile_rtts(profile: Profile, count: int = 30) -> tuple[RttSummary, int, dict[str, Any]]:
    """The handshake RTTs of ``count`` connections over ``profile``, connections completed, forwarder counters."""
    with tempfile.TemporaryDirectory(prefix="twd-") as tmp, delay_pair(WireConfig(path=profile.path)) as dp:
        completed = handshakes(dp, count, Path(tmp) / "hs.pcap")
        rtts = handshake_rtts(Path(tmp) / "hs.pcap")
    return summarize(rtts), completed, dp.wire.stats or {}


def baseline_rtts(count: int = 30) -> tuple[RttSummary, int]:
    """The handshake RTTs of ``count`` connections over a plain veth pair (no forwarder), connections completed."""
    with tempfile.TemporaryDirectory(prefix="twdl-") as tmp, ns_pair(PairConfig(tag=BASELINE_TAG)) as pair:
        completed = handshakes(pair, count, Path(tmp) / "hs.pcap")
        rtts = handshake_rtts(Path(tmp) / "hs.pcap")
    return summarize(rtts), completed


def baseline_rate(rate: int, seconds: float) -> BenchRate:
    """:func:`udp_rate` over a plain veth pair: what the namespaces and the probes manage without a forwarder."""
    with ns_pair(PairConfig(tag=BASELINE_TAG)) as pair:
        sent, received = _flood(pair, rate, seconds)
    return BenchRate(rate, sent, received, -1, -1, -1)


def _rtt_row(name: str, path: str, summary: RttSummary, completed: int, extra: str) -> str:
    return (f"{name:<7} {path} | {completed:>5}/{summary.count:<4} {summary.median_ms:>9.3f} {summary.p90_ms:>7.3f} "
            f"{summary.jitter_p90_ms:>12.3f} {extra}")  # fmt: skip


def rtt_table() -> list[str]:
    """The RTT of each profile beside the plain veth's, measured now: median minus the veth's median."""
    base, completed = baseline_rtts()
    lines = ["profile  target RTT  jitter  loss | handshakes  median ms  p90 ms  p90 |dev| ms  vs veth ms  lost frames",
             _rtt_row("veth", f"{'-':>11} {'-':>5} {'-':>5}", base, completed, f"{0.0:>+10.3f} {'-':>12}")]  # fmt: skip
    for profile in Profile:
        p = profile.path
        summary, completed, stats = profile_rtts(profile)
        target = f"{p.rtt_ms:>8.1f} ms {p.jitter_ms:>5.1f} {p.loss:>5.2f}"
        extra = f"{summary.median_ms - base.median_ms:>+10.3f} {stats.get('lost', -1):>12}"
        lines.append(_rtt_row(profile.value, target, summary, completed, extra))
    return lines


def _rate_row(label: str, r: BenchRate, seconds: float) -> str:
    # "-": the baseline has no forwarder to count
    fwd, capped, errors = (str(n) if n >= 0 else "-" for n in (r.forwarded, r.capped, r.send_errors))
    return (f"{label:<6} {r.rate:>9} {r.sent:>8} {r.received:>9} {r.loss_pct:>7.2f} {fwd:>10} {capped:>7} "
            f"{errors:>12} {r.received / seconds:>11.0f}")  # fmt: skip


def rate_table(seconds: float, rates: tuple[int, ...]) -> list[str]:
    """The UDP flood through the forwarder at each rate, the veth at the highest, and the rate sustained."""
    lines = [f"UDP flood A->B, {_UDP_PAYLOAD}-byte payloads, profile lan, {seconds:g} s per rate",
             "path   offered/s     sent  received  loss %  forwarded  capped  send errors  received/s",
             _rate_row("veth", baseline_rate(max(rates), seconds), seconds)]  # fmt: skip
    results = [udp_rate(rate, seconds) for rate in rates]
    lines += [_rate_row("wire", r, seconds) for r in results]
    sustained = max((r.received for r in results if r.loss_pct <= SUSTAINED_LOSS_PCT), default=0) / seconds
    peak = max(r.received for r in results) / seconds
    lines.append(f"forwarder packet rate: {sustained:.0f} frames/s sustained (loss <= {SUSTAINED_LOSS_PCT:g} %), "
                 f"{peak:.0f} frames/s at most")  # fmt: skip
    return lines


def run_bench(seconds: float = 3.0, rates: tuple[int, ...] = BENCH_RATES) -> str:
    """Measure RTTs per profile and the sustained UDP rate, each beside a plain veth; return the tables as text."""
    problem = netns_problem()
    if problem is not None:
        raise DelayLineError(f"network namespaces unusable: {problem}")
    return "\n".join([*rtt_table(), "", *rate_table(seconds, rates)])


if __name__ == "__main__":
    main()
