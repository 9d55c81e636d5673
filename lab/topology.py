"""A routed dual-stack lab: client, server and attacker namespaces joined through a router namespace.

Each host of a :class:`~lab.topo_plan.TopologySpec` lives in its own namespace with one link to the router
namespace, made by :func:`link` (a plain veth pair; the one place another module replaces to put a delay
line on a host's path). The host's subnets are its own (:class:`~lab.topo_plan.AddressPlan`); its only routes
besides them are the lab's whole ranges via the router, and the router has no default route, so nothing can
leave the lab: an address outside it is unreachable (``ip route get`` fails) in every lab namespace.
IPv6 is on, with duplicate address detection off so that addresses work at once; ``gso_max_segs 1`` on
every link makes captured frames at most MTU-sized, as in :mod:`lab.netns`.

**The tap.** Every router-side link end copies what it receives (``tc`` ``clsact`` ingress, a ``u32``
filter that matches everything, ``mirred egress mirror``) to one ``ifb`` interface in the router namespace,
:attr:`Topology.tap`, where the copies are dropped after packet sockets saw them. One capture there sees
every packet of every path exactly once, as its sender put it on the wire (the router's own replies, such as
ARP answers, are not copied: it receives them on no link). A kernel without ``ifb`` gets a veth pair whose
peer has no address, no ARP and no IPv6. :meth:`Topology.capture` runs tcpdump there within a byte budget.

**Teardown.** :func:`lab_topology` stops every process started in the lab by PID (and anything left in its
namespaces) and deletes every namespace it created, on a normal exit, on an exception, and on SIGINT or
SIGTERM (:mod:`lab.topo_guard`). Before building anything it refuses when a name or subnet is taken.

Run ``python -m lab.topology --check`` (root) to build a small lab, ping every host from every other over
both IP versions while capturing on the tap, and print what the tap saw; ``--profile wan`` puts that delay
line on the clients' and the attacker's links (:mod:`lab.delaylink`) and the ping times show it.

Example
-------
>>> with lab_topology(TopologySpec(prefix="twtdoc")) as topo:  # doctest: +SKIP
...     c1, s1 = topo.host("c1"), topo.host("s1")
...     topo.run_in(c1, ["ping", "-c", "1", s1.ipv6])
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from lab import netns
from lab.netns import NetnsError, Result, stop_process
from lab.topo_guard import Probes, check_free, require_usable, signals_held, signals_raise
from lab.topo_plan import Host, LabError, LinkKind, LinkProfile, Role, TapPoint, TopologySpec, plan_hosts
from lab.traffic import _count, _wait_for_text
from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)

Linker = Callable[[Host, str, LinkProfile], tuple[str, ...]]
"""Builds a host's link to the router namespace (see :func:`link`); returns extra namespaces it created."""
PCAP_HEADER = 24  # bytes of a pcap file header
RECORD_HEADER = 16  # bytes before each captured frame
ETHERNET_OVERHEAD = 18  # Ethernet header and a VLAN tag


def _cmd(*argv: str) -> Result:
    """Run a tool (``tc``, ``ip``) and raise :class:`NetnsError` when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetnsError(argv, -1, str(err)) from err
    if done.returncode != 0:
        raise NetnsError(argv, done.returncode, done.stderr)
    return done


def link(host: Host, router: str, profile: LinkProfile) -> tuple[str, ...]:
    """Wire ``host`` to the ``router`` namespace: ``host.iface`` in the host's, ``host.router_iface`` in the router's.

    The contract for a replacement (a delay line): both ends exist when it returns, named as in ``host``,
    down and without addresses (the caller adds addresses, routes and the tap mirror); it returns the names
    of any namespaces it created in between, which the lab deletes at teardown.

    Parameters
    ----------
    host
        The host to wire (its namespace exists).
    router
        The router's namespace.
    profile
        The wire; this function builds :attr:`LinkKind.VETH` only.
    """
    if profile.kind is not LinkKind.VETH:
        raise LabError(f"link kind {profile.kind.value} is not built by lab.topology.link")
    opts = ["mtu", str(profile.mtu), *(["gso_max_segs", "1"] if profile.one_segment_per_frame else [])]
    _cmd("ip", "-n", host.netns, "link", "add", host.iface, *opts, "type", "veth", "peer", "name",
         host.router_iface, *opts, "netns", router)  # fmt: skip
    return ()


@dataclass
class TapCapture:
    """A capture on the tap: its file, its packet limit, and tcpdump's account when it stopped."""

    path: Path
    max_packets: int
    captured: int = -1
    dropped: int = -1
    reached_limit: bool = False


@dataclass
class Topology:
    """A built lab: its hosts, router and tap, and the processes started in it.

    Parameters
    ----------
    spec
        What was built.
    hosts
        The hosts, clients first, then servers, then attackers.
    router
        The router's namespace.
    tap
        Where :meth:`capture` captures.
    namespaces
        Every namespace this lab created, in order; teardown deletes exactly these.
    """

    spec: TopologySpec
    hosts: tuple[Host, ...]
    router: str
    tap: TapPoint
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def host(self, name: str) -> Host:
        """The host named ``name`` (``c1``, ``s1``, ``a1``)."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"lab {self.spec.prefix} has no host {name!r}")

    def by_role(self, role: Role) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.role is role)

    def run_in(self, where: Host | str, argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> Result:
        """Run ``argv`` in a host's namespace (or the namespace named ``where``) and wait for it."""
        return netns.run_in(_ns(where), argv, timeout=timeout, check=check)

    def start_in(self, where: Host | str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in a host's namespace in the background; it is stopped (by PID) at teardown."""
        proc = netns.start_in(_ns(where), argv, **popen)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
        """Stop one process started by :meth:`start_in` (SIGTERM, then SIGKILL); return its exit status."""
        code = stop_process(proc, timeout)
        if proc in self.procs:
            self.procs.remove(proc)
        return code

    def teardown(self) -> None:
        """Stop every process started in the lab, then delete every namespace it created. Idempotent."""
        for proc in list(self.procs):
            self.stop(proc)
        for name in reversed(self.namespaces):
            if os.path.exists(f"/run/netns/{name}"):
                netns._kill_leftovers(name)  # a daemon's workers, not started through start_in
                try:
                    netns._ip("netns", "delete", name)
                except NetnsError as err:
                    log.error("lab %s: could not delete namespace %s: %s", self.spec.prefix, name, err)
                    continue
            self.namespaces.remove(name)
        log.info("lab %s: torn down", self.spec.prefix)

    @contextlib.contextmanager
    def capture(self, path: Path, max_bytes: int, max_packets: int) -> Iterator[TapCapture]:
        """Capture everything the router forwards into ``path`` (pcap) for the block, within a disk budget.

        Frames on the lab's links are at most MTU + 14 bytes (one segment per frame), so a snap length of
        the largest MTU + 18 keeps every frame whole; tcpdump's ``-c`` then stops it at ``max_packets`` or at
        as many frames as ``max_bytes`` can hold at that size, whichever is fewer: the file never exceeds
        ``max_bytes`` and keeps the beginning of the run. ``reached_limit`` says whether it stopped early.
        """
        snaplen = max(self.spec.profile_for(h.name).mtu for h in self.hosts) + ETHERNET_OVERHEAD
        limit = min(max_packets, (max_bytes - PCAP_HEADER) // (snaplen + RECORD_HEADER))
        if limit < 1:
            raise LabError(f"capture budget {max_bytes} bytes holds no frame of {snaplen} bytes")
        result = TapCapture(Path(path).resolve(), limit)
        with tempfile.TemporaryFile("w+") as err:
            # -Z root, --immediate-mode and -U as in lab.traffic.capture: no privilege drop before the output
            # is opened, and no frame left in a libpcap block when tcpdump stops.
            argv = ["tcpdump", "-n", "-i", self.tap.iface, "-s", str(snaplen), "-c", str(limit), "-B", "16384",
                    "--immediate-mode", "-U", "-Z", "root", "-w", str(result.path)]  # fmt: skip
            proc = self.start_in(self.tap.netns, argv, stderr=err)
            _wait_for_text(err, "listening on", proc, 10.0)
            try:
                yield result
            finally:
                time.sleep(0.3)  # the last reply may still be on its way through the router
                result.reached_limit = proc.poll() is not None
                self.stop(proc)
                err.seek(0)
                text = err.read()
        result.captured, result.dropped = _count(text, "packets captured"), _count(text, "packets dropped by kernel")
        log.info("lab %s: captured %s packets into %s (%s dropped, limit %s)", self.spec.prefix, result.captured,
                 result.path, result.dropped, limit)  # fmt: skip


def _ns(where: Host | str) -> str:
    return where.netns if isinstance(where, Host) else where


def _add_netns(topo: Topology, name: str, router: bool) -> None:
    """Create a namespace, record it for teardown, and set IPv6 up for the lab (on, no DAD, no RA)."""
    netns._ip("netns", "add", name)  # fails if someone created the name since the check: never ours to delete
    topo.namespaces.append(name)
    netns._ip("-n", name, "link", "set", "lo", "up")
    keys = {"disable_ipv6": 0, "accept_dad": 0, "accept_ra": 0, "router_solicitations": 0}
    # "default" before the links exist, so that it applies to them; "all" for what exists already
    sysctl = [f"net.ipv6.conf.{scope}.{key}={value}" for scope in ("all", "default") for key, value in keys.items()]
    if router:
        sysctl += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
    netns.run_in(name, ["sysctl", "-qw", *sysctl])


def _make_tap(topo: Topology) -> None:
    """The tap interface in the router's namespace: an ifb, or a veth pair where the kernel has no ifb."""
    ns, tap = topo.tap.netns, topo.tap.iface
    devs = [tap]
    try:
        _cmd("ip", "-n", ns, "link", "add", tap, "type", "ifb")
    except NetnsError as err:
        log.info("lab %s: no ifb (%s); the tap is a veth pair", topo.spec.prefix, err.stderr)
        devs.append(f"{tap}p")
        _cmd("ip", "-n", ns, "link", "add", tap, "type", "veth", "peer", "name", devs[1])
    # No IPv6 and no ARP: the tap must not put frames of its own into the capture.
    netns.run_in(ns, ["sysctl", "-qw", *(f"net.ipv6.conf.{d}.disable_ipv6=1" for d in devs)])
    for dev in devs:
        _cmd("ip", "-n", ns, "link", "set", dev, "arp", "off", "up")


def _mirror(topo: Topology, host: Host) -> None:
    """Copy every frame the router receives from ``host`` to the tap.

    ``u32`` with an empty match stands for ``matchall``, which this kernel lacks (CONFIG_NET_CLS_MATCHALL);
    ingress only, so that a forwarded packet is seen once, as its sender sent it.
    """
    ns, dev = topo.router, host.router_iface
    _cmd("tc", "-n", ns, "qdisc", "add", "dev", dev, "clsact")
    _cmd("tc", "-n", ns, "filter", "add", "dev", dev, "ingress", "protocol", "all", "prio", "1", "u32", "match",
         "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", topo.tap.iface)  # fmt: skip


def _address(topo: Topology, host: Host) -> None:
    """Addresses on both ends of ``host``'s link, links up, and the lab's ranges via the router."""
    plan = topo.spec.plan
    for ns, dev, v4, v6 in ((host.netns, host.iface, host.ipv4, host.ipv6),
                            (topo.router, host.router_iface, host.gw4, host.gw6)):  # fmt: skip
        netns._ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
        netns._ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
        netns._ip("-n", ns, "link", "set", dev, "up")
    # The whole lab range, not a default route: an address outside the lab stays unreachable.
    netns._ip("-n", host.netns, "route", "add", plan.ipv4, "via", host.gw4)
    netns._ip("-n", host.netns, "-6", "route", "add", plan.ipv6, "via", host.gw6)


def build(spec: TopologySpec, probes: Probes | None = None, linker: Linker = link) -> Topology:
    """Check that the lab is free, then build it; on any failure (or signal) delete what was built and raise.

    Parameters
    ----------
    spec
        What to build.
    probes
        What is in use on the machine (:class:`~lab.topo_guard.Probes`; injectable for tests).
    linker
        Builds each host's link (default :func:`link`, a plain veth pair).
    """
    require_usable()
    hosts = plan_hosts(spec)
    check_free(spec, hosts, probes)
    topo = Topology(spec, hosts, spec.router_ns, TapPoint(spec.router_ns, spec.tap_iface))
    try:
        _add_netns(topo, topo.router, router=True)
        for host in hosts:
            _add_netns(topo, host.netns, router=False)
        _make_tap(topo)
        for host in hosts:
            topo.namespaces += linker(host, topo.router, spec.profile_for(host.name))
            _mirror(topo, host)
            _address(topo, host)
    except BaseException:
        with signals_held():
            topo.teardown()
        raise
    log.info("lab %s: %s hosts around router %s, tap %s", spec.prefix, len(hosts), topo.router, topo.tap.iface)
    return topo


@contextlib.contextmanager
def lab_topology(spec: TopologySpec, probes: Probes | None = None, linker: Linker = link) -> Iterator[Topology]:
    """The lab of ``spec`` for the duration of a ``with`` block; torn down on exit, error, SIGINT or SIGTERM.

    Parameters are those of :func:`build`. Inside the block SIGINT raises :class:`KeyboardInterrupt` and
    SIGTERM :class:`SystemExit`; the previous handlers are back after the block.
    """
    with signals_raise():
        topo = build(spec, probes, linker)
        try:
            yield topo
        finally:
            with signals_held():
                topo.teardown()


@click.command()
@click.option("--check", is_flag=True, help="Build a small lab, ping every path over IPv4 and IPv6, check the tap.")
@click.option("--prefix", default="twtchk", show_default=True, help="Prefix of the lab's namespace names.")
@click.option(
    "--profile",
    type=click.Choice(["none", "lan", "wan", "lossy"]),
    default=None,
    help="A delay line of this profile on every client's and attacker's link (servers: plain veth).",
)
@click.option("-v", "--verbose", count=True, help="More log output.")
def main(check: bool, prefix: str, profile: str | None, verbose: int) -> None:
    """The routed lab (needs root). Example: sudo python -m lab.topology --check --profile wan"""
    from lab.delayline import Profile
    from lab.delaylink import delay_linker, profile_spec
    from lab.topo_check import run_check  # these import this module

    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if not check:
        raise click.UsageError("nothing to do: give --check")
    spec, linker = TopologySpec(prefix=prefix, clients=2, servers=1, attackers=1), delay_linker()
    if profile is not None:
        spec = profile_spec(prefix, 2, 1, 1, Profile(profile))
        click.echo(f"clients and attacker: delay line {profile} ({Profile(profile).path}); servers: veth")
    try:
        ok = run_check(spec, click.echo, linker)
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err
    finally:
        linker.stop()  # the forwarders' counters, in the log (-v)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
