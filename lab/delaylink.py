"""Delay lines on the routed lab's links: a delayed host reaches the router through a forwarder.

::

    host namespace              wire namespace <host ns>-w (no addresses)               router namespace
    [host.iface] ==veth== [to-host] <- lab.delayline forward -> [to-router] ==veth== [host.router_iface]

:func:`delay_linker` returns a :class:`DelayLinker`, a :data:`lab.topology.Linker` that builds a plain veth
pair for :attr:`~lab.topo_plan.LinkKind.VETH` and such a wire (:func:`lab.delaywire.build_wire`) for
:attr:`~lab.topo_plan.LinkKind.DELAY`. Both ends are named, placed and left down without addresses as
:func:`lab.topology.link` says; the wire namespace is returned, so the lab's teardown deletes it.
:func:`delayed` makes a delay link of a profile, :func:`profile_spec` a lab whose clients and attackers
all sit behind one profile while servers keep plain veth links.

**What the tap sees.** The tap copies what the router receives on a host's link, after the upstream half of
that link's delay. For a delayed client and a server on a plain veth, a handshake at the tap is SYN, then
the server's SYN/ACK some µs later, then the client's ACK one full client RTT after the SYN/ACK: the
handshake RTT (:func:`lab.delayrtt.handshake_rtts`) is the client's link RTT, as a sensor near the servers
of a real network would measure it. Profile ``none`` is a forwarder without delay (some 0.2 ms).

**Seeds.** Each forwarder's RNGs are seeded by :func:`host_seed` from the run's seed and the host's name:
one run seed gives every host the same loss and jitter pattern again, and no two hosts the same one.

**Teardown.** :meth:`DelayLinker.stop` stops every forwarder by PID with SIGTERM and logs its counters;
:func:`delay_topology` calls it before the lab's teardown. A forwarder the lab's teardown stopped first
(SIGTERM to what is left in a namespace it deletes) has written its counters too, and ``stop`` reads them.

Example
-------
>>> spec = profile_spec("twdldoc", clients=2, servers=1, attackers=1, profile=Profile.WAN)
>>> [(name, p.kind.value, p.path.rtt_ms) for name, p in spec.links if p.path]
[('c1', 'delay', 40.0), ('c2', 'delay', 40.0), ('a1', 'delay', 40.0)]
>>> spec.profile_for("s1").kind.value
'veth'
>>> with delay_topology(spec, delay_linker(seed=7)) as topo:  # doctest: +SKIP
...     topo.run_in(topo.host("c1"), ["ping", "-c", "1", topo.host("s1").ipv6])
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.delayline import Caps, PathProfile, Profile
from lab.delaywire import Wire, WireConfig, build_wire, stop_forwarder
from lab.netns import Endpoint, NetnsError
from lab.topo_guard import Probes, signals_held
from lab.topo_plan import Host, LabError, LinkKind, LinkProfile, Role, TopologySpec, plan_hosts
from lab.topology import Topology, lab_topology, link

log = logging.getLogger(__name__)

INNER = ("to-host", "to-router")  # the wire's own ends; they exist only in the wire namespace
WORKDIR_TAG = "twdl"  # the forwarders' working directories (counters, log) in the temporary directory


def host_seed(seed: int, host: str) -> int:
    """The forwarder seed of ``host``'s wire in a run seeded ``seed``: stable across runs and machines.

    >>> host_seed(0, "c1"), host_seed(0, "c1") == host_seed(0, "c2"), host_seed(1, "c1") == host_seed(0, "c1")
    (3885858725, False, False)
    """
    return zlib.crc32(f"{seed}:{host}".encode())


def wire_netns(host: Host) -> str:
    """The name of the wire namespace on ``host``'s link (it starts with the lab's prefix)."""
    return f"{host.netns}-w"


def delayed(profile: Profile | PathProfile, mtu: int = 1500) -> LinkProfile:
    """A delay link with ``profile``'s RTT, jitter and loss.

    >>> delayed(Profile.LAN).kind.value, delayed(Profile.LAN).path
    ('delay', PathProfile(rtt_ms=1.0, jitter_ms=0.0, loss=0.0))
    >>> delayed(PathProfile(rtt_ms=5.0), mtu=1400).mtu
    1400
    """
    path = profile.path if isinstance(profile, Profile) else profile
    return LinkProfile(LinkKind.DELAY, mtu, path=path)


def profile_spec(
    prefix: str, clients: int, servers: int, attackers: int, profile: Profile | PathProfile, **kw: Any
) -> TopologySpec:
    """A lab whose clients and attackers all have ``profile``'s delay on their link; servers keep ``link``.

    ``kw`` goes to :class:`~lab.topo_plan.TopologySpec` (``plan``, ``link``, ``links``): the delay links take
    the MTU of ``link``, and pairs in ``links`` override the delay for single hosts.

    >>> spec = profile_spec("twdldoc", 1, 1, 0, Profile.LAN, links=(("s1", delayed(Profile.WAN)),))
    >>> [(name, p.path.rtt_ms) for name, p in spec.links]
    [('c1', 1.0), ('s1', 40.0)]
    """
    overrides = dict(kw.pop("links", ()))
    spec = TopologySpec(prefix, clients, servers, attackers, **kw)
    delay = delayed(profile, spec.link.mtu)
    links = {h.name: delay for h in plan_hosts(spec) if h.role is not Role.SERVER} | overrides
    return dataclasses.replace(spec, links=tuple(links.items()))


@dataclass
class DelayLinker:
    """Builds each host's link (a :data:`lab.topology.Linker`) and stops the delay lines' forwarders.

    Parameters
    ----------
    seed
        The run's seed; each wire's forwarder gets :func:`host_seed` of it.
    caps
        Frames and bytes each forwarder holds per direction.
    wires
        The running wires by host name (filled as the lab is built).
    stats
        Each stopped forwarder's counters by host name (None when it wrote none), filled by :meth:`stop`.
    """

    seed: int = 0
    caps: Caps = field(default_factory=Caps)
    wires: dict[str, Wire] = field(default_factory=dict)
    stats: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def __call__(self, host: Host, router: str, profile: LinkProfile) -> tuple[str, ...]:
        """Wire ``host`` to ``router`` as ``profile`` says; the contract is :func:`lab.topology.link`'s."""
        if profile.kind is LinkKind.VETH:
            return link(host, router, profile)
        if profile.kind is not LinkKind.DELAY or profile.path is None:
            raise LabError(f"link kind {profile.kind.value} is not built by lab.delaylink")
        ends = Endpoint(host.netns, host.iface, ""), Endpoint(router, host.router_iface, "")  # no address: down
        wire = Wire(wire_netns(host), *ends, INNER)
        config = WireConfig(path=profile.path, seed=host_seed(self.seed, host.name), caps=self.caps,
                            tag=WORKDIR_TAG, mtu=profile.mtu)  # fmt: skip
        try:
            build_wire(wire, config)
        except NetnsError as err:
            raise LabError(f"delay line of {host.name} ({wire.netns}): {err}") from err
        # the working directory goes when this linker does, should stop() never be called
        weakref.finalize(self, shutil.rmtree, str(wire.workdir), True)
        self.wires[host.name] = wire
        log.info("host %s: delay line %s, %s, seed %s", host.name, wire.netns, profile.path, config.seed)
        return (wire.netns,)

    def pids(self) -> dict[str, int]:
        """The PID of each running forwarder by host name."""
        return {name: wire.proc.pid for name, wire in self.wires.items() if wire.proc is not None}

    def stop(self) -> dict[str, dict[str, Any] | None]:
        """Stop every forwarder by PID (SIGTERM: it writes its counters), log the counters; idempotent."""
        for name, wire in list(self.wires.items()):
            try:
                self.stats[name] = stop_forwarder(wire)
            finally:
                if wire.workdir is not None:
                    shutil.rmtree(wire.workdir, ignore_errors=True)
                del self.wires[name]
            log.info("host %s: forwarder of %s stopped; counters %s", name, wire.netns, self.stats[name])
        return self.stats


def delay_linker(seed: int = 0) -> DelayLinker:
    """A linker for :func:`lab.topology.lab_topology`: veth for :attr:`LinkKind.VETH`, a delay line for DELAY.

    >>> delay_linker(seed=3).seed
    3
    """
    return DelayLinker(seed)


@contextlib.contextmanager
def delay_topology(
    spec: TopologySpec, linker: DelayLinker | None = None, probes: Probes | None = None
) -> Iterator[Topology]:
    """:func:`lab.topology.lab_topology` with ``linker`` (default :func:`delay_linker`), whose forwarders are
    stopped, and their counters logged, before the lab is torn down (``linker.stats`` holds them after).
    """
    linker = linker if linker is not None else delay_linker()
    try:
        with lab_topology(spec, probes, linker) as topo:
            try:
                yield topo
            finally:
                with signals_held():
                    linker.stop()
    finally:
        linker.stop()  # after a failed build: the lab's teardown stopped them; read what they wrote


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc/PID/stat`` (``proc`` injectable).

    Fields 14 and 15 count clock ticks; the command name (field 2) may hold spaces, so split after its ")".
    """
    text = (proc / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
