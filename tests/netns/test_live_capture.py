"""Live capture on a veth between two network namespaces: the sensor's flows equal the traffic sent.

How the sensor gets into the namespace: NFStream only sees interfaces of the network namespace its process
lives in, and Python 3.11 has no ``os.setns``. So the sensor (:class:`LiveSource`, as the service uses it)
runs in a child process started with ``ip netns exec CLIENT python -c _SENSOR``; it writes one JSON line per
flow record (with the wall-clock time it got it) and stops when the test writes a line to its stdin.

The independent account of what was sent: payload bytes, and UDP and ICMP packet counts, by construction
(the scripts below send exact byte counts; ``ping -c 3 -s 56`` sends 3 requests in 98-byte frames); TCP
packet counts and link-layer bytes (ACKs are the kernel's choice) from tcpdump on the *other* (server) end
of the veth, read with scapy.

One session, shared through a module fixture: phase 1 (a TCP connection closed with FIN, a UDP
request/response exchange, a ping) → a quiet link, during which the UDP and ICMP flows must be emitted on
the wall clock → phase 2 (a TCP connection left open, another UDP exchange) → ``stop()``, which must flush
both as ``shutdown``. UDP is request/response because one-packet flows are not emitted (as CICFlowMeter).
``test_stop_keeps_last_packets`` documents a known loss: packets of the last second before ``stop()``
are still in libpcap's buffer when the meter flushes, so phase 2 waits ``_BUFFER_LAG_S`` before it.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.netns import NsPair, ns_pair, wait_listening
from lab.traffic import capture
from tests.support.env import need_netns

pytestmark = pytest.mark.timeout(180)

IDLE_S = 2  # the sensor's idle timeout; a quiet flow must be out within IDLE_S + _LATE_S
_LATE_S = 3.0
# NFStream opens libpcap with a 1 s read timeout (TPACKET_V3 block timeout): a packet reaches the meter
# up to 1 s after it arrived, and stop() does not drain that buffer (see test_stop_keeps_last_packets).
# Phase 2 therefore waits this long before stop(): longer than the buffer delay, shorter than IDLE_S.
_BUFFER_LAG_S = 1.3
TCP_PORT, UDP_PORT = 5001, 5002
TCP_UP, TCP_DOWN = 5_000, 20_000  # payload bytes client→server and back on the FIN connection
OPEN_UP, OPEN_DOWN = 700, 1_300  # ... and on the connection still open at stop()
UDP_SIZES_1, UDP_SIZES_2 = (100, 200, 300), (50, 60)  # request payloads; each reply is twice as long
ETH_IP_UDP = 14 + 20 + 8
PING_COUNT, PING_SIZE = 3, 56

_SENSOR = r"""
import json, sys, threading, time
from prometheus_client import CollectorRegistry
from tapwatch.capture.meter import CaptureConfig, LiveSource
from tapwatch.capture.metrics import CaptureMetrics

iface, idle = sys.argv[1], int(sys.argv[2])
src = LiveSource(iface, CaptureConfig(sensor="t", idle_timeout_s=idle, flow_timeout_s=120),
                 CaptureMetrics(CollectorRegistry()))
lock = threading.Lock()

def say(kind, **kw):
    with lock:
        sys.stdout.write(json.dumps(dict(kind=kind, at=time.time(), **kw)) + "\n")
        sys.stdout.flush()

def read():
    try:
        for rec in src.records():
            say("flow", meta=json.loads(rec.meta.to_json()), features=rec.features())
    except BaseException as err:
        say("error", error=repr(err))
    say("end")

reader = threading.Thread(target=read, daemon=True); reader.start(); src.running.wait(30)
# Ready once NFStream's meter has a packet socket on the interface (/proc/net/packet column 5 = ifindex).
ifindex = open(f"/sys/class/net/{iface}/ifindex").read().strip()
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    rows = [line.split() for line in open("/proc/net/packet").read().splitlines()[1:]]
    if any(r[4] == ifindex for r in rows):
        break
    time.sleep(0.05)
say("ready"); sys.stdin.readline()
say("stopping"); src.stop(); reader.join(60)
"""

_SERVER = r"""
import socket, sys, threading
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])

def serve(conn):  # the client says how much to send back, in an 8-byte header: up, down
    with conn:
        head = b""
        while len(head) < 8:
            head += conn.recv(8 - len(head))
        up, down = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big")
        got = 0
        while got < up:
            got += len(conn.recv(min(65536, up - got)))
        conn.sendall(b"d" * down)
        while conn.recv(65536):  # until the client's FIN
            pass

def tcp():
    listener = socket.create_server(("0.0.0.0", tcp_port))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

threading.Thread(target=tcp, daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", udp_port))
while True:
    data, peer = udp.recvfrom(65535)
    udp.sendto(b"r" * (2 * len(data)), peer)
"""

_CLIENT = r"""
import json, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "tcp":
    up, down, hold = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "hold"
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(up.to_bytes(4, "big") + down.to_bytes(4, "big") + b"u" * up)
    got = 0
    while got < down:
        got += len(s.recv(65536))
    print(json.dumps({"sport": s.getsockname()[1], "down": got}), flush=True)
    if hold:
        sys.stdin.readline()
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    replies = []
    for size in map(int, sys.argv[4:]):
        s.sendto(b"q" * size, (host, port))
        replies.append(len(s.recvfrom(65535)[0]))
    print(json.dumps({"sport": s.getsockname()[1], "replies": replies}), flush=True)
"""


class Sensor:
    """The child process running :class:`LiveSource` in the client namespace; its lines, in a queue."""

    def __init__(self, pair: NsPair) -> None:
        argv = [sys.executable, "-c", _SENSOR, pair.client.iface, str(IDLE_S)]
        self.proc = pair.start(pair.client, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.flows: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_for("ready", 60)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        """Collect flow lines until a line of ``kind`` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the sensor sent no {kind!r} line within {timeout} s")
            assert msg["kind"] != "error", msg["error"]
            if msg["kind"] == "flow":
                self.flows.append(msg)
            if msg["kind"] == kind:
                return msg

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        stopping = self.wait_for("stopping", 10)
        self.wait_for("end", 30)
        return stopping


def _client(pair: NsPair, *args: Any) -> dict[str, Any]:
    out = pair.run(pair.client, [sys.executable, "-c", _CLIENT, *map(str, args)], timeout=30).stdout
    return dict(json.loads(out))


Key = tuple[int, str, int, str, int]  # protocol, client ip, client port, server ip, server port


@dataclass
class Account:
    """tcpdump's view of one flow: packets and link-layer bytes per direction, last packet time."""

    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    last: float = 0.0


def _account(pcap: Path, client_ip: str, until: float) -> dict[Key, Account]:
    """Bidirectional flows of the pcap (packets before ``until``), keyed from the client's side."""
    from scapy.all import ICMP, IP, TCP, UDP, PcapReader  # type: ignore[import-untyped]

    flows: dict[Key, Account] = defaultdict(Account)
    with PcapReader(str(pcap)) as reader:
        for pkt in reader:
            if IP not in pkt or float(pkt.time) >= until:
                continue
            ip = pkt[IP]
            l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
            sport, dport = (l4.sport, l4.dport) if l4 is not None else (0, 0)
            assert l4 is not None or ICMP in pkt, f"unexpected packet {pkt.summary()}"
            fwd = ip.src == client_ip
            key = (ip.proto, ip.src, sport, ip.dst, dport) if fwd else (ip.proto, ip.dst, dport, ip.src, sport)
            acc = flows[key]
            acc.packets[not fwd] += 1
            acc.bytes[not fwd] += int(pkt.wirelen)
            acc.last = max(acc.last, float(pkt.time))
    return dict(flows)


def _key(meta: dict[str, Any]) -> Key:
    return (meta["protocol"], meta["src_ip"], meta["src_port"], meta["dst_ip"], meta["dst_port"])


def _udp_expected(sizes: tuple[int, ...]) -> tuple[int, int, int, int]:
    """packets, link bytes, fwd payload, bwd payload of request/response pairs (replies twice as long)."""
    return 2 * len(sizes), sum(2 * ETH_IP_UDP + 3 * s for s in sizes), sum(sizes), sum(2 * s for s in sizes)


@dataclass
class LiveRun:
    """What one live session produced: the sensor's records, tcpdump's account, and the flows sent."""

    flows: list[dict[str, Any]]
    account: dict[Key, Account]
    keys: dict[str, Key]  # tcp (closed), udp1, icmp: phase 1; open (TCP), udp2: phase 2
    stopping_at: float
    quiet: tuple[float, float]

    def flow(self, name: str) -> dict[str, Any]:
        found = [f for f in self.flows if _key(f["meta"]) == self.keys[name]]
        assert len(found) == 1, f"{len(found)} records for the {name} flow {self.keys[name]}"
        return found[0]


def _phase1(pair: NsPair) -> dict[str, Key]:
    """A TCP connection closed with FIN, a UDP exchange, a ping."""
    cli, srv = pair.client.ip, pair.server.ip
    tcp = _client(pair, "tcp", srv, TCP_PORT, TCP_UP, TCP_DOWN, "close")
    udp = _client(pair, "udp", srv, UDP_PORT, *UDP_SIZES_1)
    assert tcp["down"] == TCP_DOWN and udp["replies"] == [2 * s for s in UDP_SIZES_1]
    ping = ["busybox", "ping", "-c", str(PING_COUNT), "-i", "0.2", "-s", str(PING_SIZE), srv]
    pair.run(pair.client, ping, timeout=30)
    return {
        "tcp": (6, cli, tcp["sport"], srv, TCP_PORT),
        "udp1": (17, cli, udp["sport"], srv, UDP_PORT),
        "icmp": (1, cli, 0, srv, 0),
    }


def _quiet(sensor: Sensor, keys: set[Key]) -> tuple[float, float]:
    """Send nothing until the sensor has emitted ``keys`` (or IDLE_S + _LATE_S + 2 s passed)."""
    start = time.time()
    deadline = time.monotonic() + IDLE_S + _LATE_S + 2
    while not keys <= {_key(f["meta"]) for f in sensor.flows} and time.monotonic() < deadline:
        sensor.wait_for("flow", max(0.1, deadline - time.monotonic()))
    return start, time.time()


def _phase2(pair: NsPair) -> tuple[subprocess.Popen[str], dict[str, Key]]:
    """A TCP connection left open (the returned client closes it on a line on stdin), a UDP exchange."""
    cli, srv = pair.client.ip, pair.server.ip
    argv = [sys.executable, "-c", _CLIENT, "tcp", srv, str(TCP_PORT), str(OPEN_UP), str(OPEN_DOWN), "hold"]
    held = pair.start(pair.client, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert held.stdout is not None
    open_port = json.loads(held.stdout.readline())["sport"]
    udp = _client(pair, "udp", srv, UDP_PORT, *UDP_SIZES_2)
    return held, {"open": (6, cli, open_port, srv, TCP_PORT), "udp2": (17, cli, udp["sport"], srv, UDP_PORT)}


def _start_server(pair: NsPair) -> None:
    pair.start(pair.server, [sys.executable, "-c", _SERVER, str(TCP_PORT), str(UDP_PORT)])
    wait_listening(pair.server, "tcp", TCP_PORT)
    wait_listening(pair.server, "udp", UDP_PORT)


def _session(pair: NsPair, workdir: Path) -> LiveRun:
    _start_server(pair)
    with capture(pair, pair.server, workdir / "account.pcap"):
        sensor = Sensor(pair)
        keys = _phase1(pair)
        quiet = _quiet(sensor, {keys["udp1"], keys["icmp"]})
        held, keys2 = _phase2(pair)
        time.sleep(_BUFFER_LAG_S)
        stopping = sensor.stop()
        held.communicate("close\n", timeout=10)  # its FIN comes after the sensor has ended
    account = _account(workdir / "account.pcap", pair.client.ip, until=stopping["at"])
    return LiveRun(sensor.flows, account, {**keys, **keys2}, stopping["at"], quiet)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> LiveRun:
    """One live session shared by the tests below (a sensor start costs about 2 s)."""
    need_netns()
    with ns_pair() as pair:
        return _session(pair, tmp_path_factory.mktemp("live"))


def test_one_record_per_flow_sent(live: LiveRun) -> None:
    """Every flow sent, and nothing else, as one record oriented from the client."""
    assert sorted(_key(f["meta"]) for f in live.flows) == sorted(live.keys.values())
    assert set(live.account) == set(live.keys.values()), sorted(live.account)


def test_counts_equal_tcpdump_account(live: LiveRun) -> None:
    for name, key in live.keys.items():
        meta, feats, acc = live.flow(name)["meta"], live.flow(name)["features"], live.account[key]
        assert (feats["Total Fwd Packet"], feats["Total Bwd packets"]) == tuple(acc.packets), name
        assert (meta["packets"], meta["bytes"]) == (sum(acc.packets), sum(acc.bytes)), name


def test_tcp_payload_by_construction(live: LiveRun) -> None:
    """Payload bytes are what the scripts sent (8-byte header + body up, body down)."""
    for name, up, down, reason in (("tcp", TCP_UP, TCP_DOWN, "fin"), ("open", OPEN_UP, OPEN_DOWN, "shutdown")):
        flow = live.flow(name)
        feats = flow["features"]
        assert (feats["Total Length of Fwd Packet"], feats["Total Length of Bwd Packet"]) == (8 + up, down)
        assert flow["meta"]["expiry"] == reason


def test_udp_by_construction(live: LiveRun) -> None:
    for name, sizes, reason in (("udp1", UDP_SIZES_1, "idle"), ("udp2", UDP_SIZES_2, "shutdown")):
        packets, link, fwd, bwd = _udp_expected(sizes)
        meta, feats = live.flow(name)["meta"], live.flow(name)["features"]
        assert (meta["packets"], meta["bytes"], meta["expiry"]) == (packets, link, reason)
        assert (feats["Total Fwd Packet"], feats["Total Bwd packets"]) == (len(sizes), len(sizes))
        assert (feats["Total Length of Fwd Packet"], feats["Total Length of Bwd Packet"]) == (fwd, bwd)


def test_icmp_by_construction(live: LiveRun) -> None:
    """``ping -c 3 -s 56``: 3 echo requests and 3 replies of 14 + 20 + 8 + 56 bytes."""
    meta, feats = live.flow("icmp")["meta"], live.flow("icmp")["features"]
    assert (meta["packets"], meta["bytes"]) == (2 * PING_COUNT, 2 * PING_COUNT * 98)
    assert (feats["Total Fwd Packet"], feats["Total Bwd packets"], feats["ICMP Type"]) == (PING_COUNT, PING_COUNT, 8)


def test_quiet_link_emits_idle_flows(live: LiveRun) -> None:
    """No packet at all after phase 1, yet its UDP and ICMP flows come out within IDLE_S + _LATE_S."""
    start, end = live.quiet
    assert not [k for k, a in live.account.items() if start + 0.5 < a.last < end], "the link was not quiet"
    for name in ("udp1", "icmp"):
        flow = live.flow(name)
        late = flow["at"] - live.account[live.keys[name]].last
        assert flow["meta"]["expiry"] == "idle" and flow["at"] < live.stopping_at
        assert IDLE_S - 0.1 <= late <= IDLE_S + _LATE_S, f"{name} emitted {late:.2f} s after its last packet"


def test_stop_flushes_open_flows(live: LiveRun) -> None:
    for name in ("open", "udp2"):
        flow = live.flow(name)
        assert flow["meta"]["expiry"] == "shutdown" and flow["at"] >= live.stopping_at


def test_stop_keeps_last_packets() -> None:
    """A UDP exchange finished just before stop() must be flushed as ``shutdown``, not lost."""
    need_netns()
    with ns_pair() as pair:
        _start_server(pair)
        sensor = Sensor(pair)
        sport = _client(pair, "udp", pair.server.ip, UDP_PORT, *UDP_SIZES_2)["sport"]
        sensor.stop()
    got = [f["meta"] for f in sensor.flows if f["meta"]["src_port"] == sport]
    packets, link, _, _ = _udp_expected(UDP_SIZES_2)
    assert [(m["packets"], m["bytes"], m["expiry"]) for m in got] == [(packets, link, "shutdown")]
