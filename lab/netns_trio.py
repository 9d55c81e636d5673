"""Three network namespaces on a bridge: a benign client and an attacker talking to one server.

The server namespace holds a bridge with the server's address; the client and the attacker namespace
each hold one end of a veth pair whose other end is a port of that bridge. A capture on the bridge sees
both clients' traffic with the server, as a tap in front of the server would. Everything else (names
unique per process, IPv6 off, one segment per frame, teardown by PID) is as in
:mod:`lab.netns`, whose helpers this module uses.

:func:`shape_link` makes the server's side a WAN-like link (:class:`WanLink`): a queueing discipline on the
bridge's egress delays and rate-limits what the server sends. tcpdump on the bridge sees those packets as
they leave the qdisc and the clients' packets as they arrive, so the capture sits on the clients' side of
the link, as CIC-IDS2017's capture sat on the victim network's side of its internet link. ``netem`` (delay,
jitter, rate) is used where the kernel has it; a kernel without ``sch_netem`` gets ``tbf`` (rate only, no
added delay), and the result says which.

Example
-------
>>> TrioConfig().attacker_ip
'10.212.0.3'
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# The pair module's builders, shared so that both wires are built and torn down the same way.
from lab.netns import _SEQ, Endpoint, NetnsError, NsPair, PairConfig, _delete, _ip, _prepare_netns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrioConfig:
    """How :func:`create_trio` builds a server namespace with two clients on one bridge.

    Parameters
    ----------
    client_ip, attacker_ip, server_ip, prefix
        Addresses; the server's sits on the bridge, so one capture on it sees both clients' traffic.
    tag
        Prefix of namespace and interface names (at most 3 characters keeps interface names unique).
    one_segment_per_frame, disable_ipv6
        As in :class:`PairConfig`; the bridge takes the smallest ``gso_max_segs`` of its ports.
    """

    client_ip: str = "10.212.0.1"
    attacker_ip: str = "10.212.0.3"
    server_ip: str = "10.212.0.2"
    prefix: int = 24
    tag: str = "twt"
    one_segment_per_frame: bool = True
    disable_ipv6: bool = True


@dataclass
class NsTrio:
    """A benign client and an attacker namespace, each wired by a veth to a bridge in the server namespace.

    ``server.iface`` is the bridge. :meth:`pair` gives the :class:`NsPair` of one client and the server,
    sharing this trio's process list, so every function written for a pair works for either client.

    Example
    -------
    >>> with ns_trio() as trio:  # doctest: +SKIP
    ...     trio.pair(trio.attacker).run(trio.attacker, ["ping", "-c1", trio.server.ip])
    """

    client: Endpoint
    attacker: Endpoint
    server: Endpoint
    procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def pair(self, end: Endpoint) -> NsPair:
        """``end`` (the client or the attacker) and the server as a pair; processes stay the trio's."""
        return NsPair(end, self.server, self.procs)


def create_trio(config: TrioConfig | None = None) -> NsTrio:
    """Build the three namespaces, the bridge and two veth pairs; on failure delete what was built and raise."""
    config = config or TrioConfig()
    uid = f"{os.getpid():x}{next(_SEQ):x}"
    ns = {role: f"{config.tag}-{uid}-{role}" for role in ("client", "attacker", "server")}
    bridge = f"{config.tag}{uid}b"[:15]
    trio = NsTrio(
        Endpoint(ns["client"], f"{config.tag}{uid}c"[:15], config.client_ip, config.prefix),
        Endpoint(ns["attacker"], f"{config.tag}{uid}a"[:15], config.attacker_ip, config.prefix),
        Endpoint(ns["server"], bridge, config.server_ip, config.prefix),
    )
    gso = ["gso_max_segs", "1"] if config.one_segment_per_frame else []
    sns = trio.server.netns
    try:
        for name in ns.values():
            _prepare_netns(name, PairConfig(disable_ipv6=config.disable_ipv6))
        _ip("-n", sns, "link", "add", bridge, *gso, "type", "bridge", "stp_state", "0")
        for end in (trio.client, trio.attacker):
            port = f"{end.iface}p"[:15]
            argv = ["link", "add", end.iface, *gso, "type", "veth", "peer", "name", port, *gso, "netns", sns]
            _ip("-n", end.netns, *argv)
            _ip("-n", sns, "link", "set", port, "master", bridge, "up")
        for end in (trio.client, trio.attacker, trio.server):
            _ip("-n", end.netns, "addr", "add", end.cidr, "dev", end.iface)
            _ip("-n", end.netns, "link", "set", end.iface, "up")
    except BaseException:
        delete_trio(trio)
        raise
    log.info("netns trio: %s, %s -> bridge %s in %s (%s)", trio.client.cidr, trio.attacker.cidr, bridge, sns,
             trio.server.cidr)  # fmt: skip
    return trio


def delete_trio(trio: NsTrio) -> None:
    """Stop the trio's processes, then delete its three namespaces (veths and bridge go with them)."""
    _delete(trio.pair(trio.client), (trio.client, trio.attacker, trio.server))


@contextlib.contextmanager
def ns_trio(config: TrioConfig | None = None) -> Iterator[NsTrio]:
    """Three namespaces on a bridge for the duration of a ``with`` block; see :class:`NsTrio`."""
    trio = create_trio(config)
    try:
        yield trio
    finally:
        delete_trio(trio)


# -- a WAN-like link on the server's side ---------------------------------------------------------
@dataclass(frozen=True)
class WanLink:
    """A WAN-like link on the server's egress: what :func:`shape_link` asks the kernel for.

    Parameters
    ----------
    rate_mbit
        The link rate, Mbit/s (both qdiscs).
    delay_ms, jitter_ms
        One-way delay and its jitter (``netem`` only; ``tbf`` cannot delay).
    burst_bytes
        Bytes ``tbf`` lets through at once: two full Ethernet frames, so that frames leave at the link rate
        rather than in bursts.
    queue_ms
        The longest a packet waits in the queue before it is dropped (a modem's buffer).

    Example
    -------
    >>> WanLink().tbf_args()
    ['tbf', 'rate', '5mbit', 'burst', '3028', 'latency', '200ms']
    """

    rate_mbit: float = 5.0
    delay_ms: float = 30.0
    jitter_ms: float = 5.0
    burst_bytes: int = 3028
    queue_ms: float = 200.0

    def netem_args(self) -> list[str]:
        # netem's queue limit is in packets: the queue_ms at the link rate in full frames, at least 100
        limit = max(100, int(self.rate_mbit * 1e6 / 8 * self.queue_ms / 1e3 / 1514))
        return ["netem", "delay", f"{self.delay_ms:g}ms", f"{self.jitter_ms:g}ms", "rate", f"{self.rate_mbit:g}mbit",
                "limit", str(limit)]  # fmt: skip

    def tbf_args(self) -> list[str]:
        return ["tbf", "rate", f"{self.rate_mbit:g}mbit", "burst", str(self.burst_bytes), "latency",
                f"{self.queue_ms:g}ms"]  # fmt: skip


@dataclass(frozen=True)
class ShapedLink:
    """What :func:`shape_link` installed: the qdisc kind, ``tc qdisc show``'s line, and why that kind."""

    kind: str
    shown: str
    note: str


def _tc(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["tc", "-n", netns, *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetnsError(argv, -1, str(err)) from err


def shape_link(end: Endpoint, link: WanLink) -> ShapedLink:
    """Make ``end.iface``'s egress (the trio's bridge: what the server sends) a :class:`WanLink`.

    ``netem`` when the kernel has it; when it answers that the qdisc kind is unknown, ``tbf`` with the same
    rate and no delay. Any other failure raises :class:`NetnsError`. The qdisc goes with the namespace.
    """
    dev = ["qdisc", "replace", "dev", end.iface, "root"]
    done = _tc(end.netns, *dev, *link.netem_args())
    kind, note = "netem", f"netem: {link.delay_ms:g} ms ± {link.jitter_ms:g} ms delay at {link.rate_mbit:g} Mbit/s"
    if done.returncode != 0 and "unknown" in done.stderr.lower():
        why = done.stderr.strip()
        done = _tc(end.netns, *dev, *link.tbf_args())
        kind = "tbf"
        note = (f"tbf: {link.rate_mbit:g} Mbit/s, no added delay (this kernel has no sch_netem: tc answered "
                f"{why!r})")  # fmt: skip
    if done.returncode != 0:
        raise NetnsError(["tc", *dev, kind], done.returncode, done.stderr)
    shown = _tc(end.netns, "qdisc", "show", "dev", end.iface).stdout.strip()
    log.info("shaped %s in %s: %s", end.iface, end.netns, shown)
    return ShapedLink(kind, shown, note)
