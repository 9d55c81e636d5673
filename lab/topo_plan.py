"""The description of a routed lab: roles, address plan, link profiles and the names of everything built.

A :class:`TopologySpec` (a name prefix, how many clients, servers and attackers, an :class:`AddressPlan`)
becomes a tuple of :class:`Host` by :func:`plan_hosts`, without touching the system: every namespace,
interface and address the lab will use is known before anything is created, so :mod:`lab.topo_guard` can
check that none of them is taken. :mod:`lab.topology` builds them.

Address plan: host number H (1-based: clients, then servers, then attackers) gets subnet H of the plan, a
/24 for IPv4 and a /64 for IPv6 (by default ``10.213.H.0/24`` and ``fd00:7477:H::/64``, a private and a
unique-local range, never global addresses); the router is ``.1``/``::1`` on it, the host ``.2``/``::2``.

Example
-------
>>> hosts = plan_hosts(TopologySpec(prefix="twtdoc", clients=1, servers=1, attackers=0))
>>> for h in hosts:
...     print(h.name, h.role.value, h.netns, h.iface, h.router_iface, h.ipv4, h.ipv6, h.gw4, h.gw6)
c1 client twtdoc-c1 twtdoc-c1h twtdoc-c1r 10.213.1.2 fd00:7477:1::2 10.213.1.1 fd00:7477:1::1
s1 server twtdoc-s1 twtdoc-s1h twtdoc-s1r 10.213.2.2 fd00:7477:2::2 10.213.2.1 fd00:7477:2::1
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum

from lab.delayline import PathProfile
from tapwatch.features.errors import TapwatchError

IFNAMSIZ = 15  # the kernel's limit on interface names (16 bytes with the NUL)
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,7}$")  # 8 characters leave room for "-c99h" in 15
ULA = ipaddress.IPv6Network("fc00::/7")


class LabError(TapwatchError):
    """The lab refuses to start, or something of it could not be built or removed; the message is one line."""


class Role(str, Enum):
    """What a lab host is for; its tag letter starts the host's name (``c1``, ``s1``, ``a1``)."""

    CLIENT = "client"
    SERVER = "server"
    ATTACKER = "attacker"

    @property
    def tag(self) -> str:
        return self.value[0]


class LinkKind(str, Enum):
    """How a host is wired to the router: a plain veth (:func:`lab.topology.link`), or a delay line whose
    forwarder holds each frame for the path's delay (:func:`lab.delaylink.delay_linker` builds both)."""

    VETH = "veth"
    DELAY = "delay"


@dataclass(frozen=True)
class LinkProfile:
    """What :func:`lab.topology.link` builds between a host and the router.

    Parameters
    ----------
    kind
        The kind of wire; :attr:`LinkKind.VETH` is a plain veth pair, :attr:`LinkKind.DELAY` a delay line.
    mtu
        MTU of both ends.
    one_segment_per_frame
        ``gso_max_segs 1`` on both ends, so that captured frames are at most MTU-sized (see :mod:`lab.netns`).
        A delay line needs it: its forwarder moves frames one by one, as a capture should see them.
    path
        RTT, jitter and loss of a delay line (:class:`~lab.delayline.PathProfile`); given for
        :attr:`LinkKind.DELAY` only.

    Example
    -------
    >>> LinkProfile().kind.value, LinkProfile().mtu
    ('veth', 1500)
    >>> LinkProfile(LinkKind.DELAY, path=PathProfile(rtt_ms=40.0)).path.rtt_ms
    40.0
    >>> LinkProfile(LinkKind.DELAY)
    Traceback (most recent call last):
    ...
    lab.topo_plan.LabError: a delay link needs a path (RTT, jitter, loss)
    """

    kind: LinkKind = LinkKind.VETH
    mtu: int = 1500
    one_segment_per_frame: bool = True
    path: PathProfile | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, LinkKind):
            raise LabError(f"link kind must be one of {[k.value for k in LinkKind]}, got {self.kind!r}")
        if not 1280 <= self.mtu <= 9000:  # 1280: the IPv6 minimum; 9000: a jumbo frame
            raise LabError(f"link mtu must be in 1280..9000, got {self.mtu}")
        if self.kind is LinkKind.DELAY:
            if not isinstance(self.path, PathProfile):
                raise LabError("a delay link needs a path (RTT, jitter, loss)")
            if not self.one_segment_per_frame:
                raise LabError("a delay link carries one segment per frame (one_segment_per_frame=True)")
        elif self.path is not None:
            raise LabError(f"a {self.kind.value} link has no path; use kind {LinkKind.DELAY.value} for a delay")


@dataclass(frozen=True)
class AddressPlan:
    """The lab's address ranges; host H gets the H-th /24 of ``ipv4`` and the H-th /48's first /64 of ``ipv6``.

    Parameters
    ----------
    ipv4
        A private IPv4 range of at most /16.
    ipv6
        A unique-local (fc00::/7) IPv6 range of at most /32, so that host numbers sit in the third group.

    Example
    -------
    >>> [str(n) for n in AddressPlan().subnets(3)]
    ['10.213.3.0/24', 'fd00:7477:3::/64']
    """

    ipv4: str = "10.213.0.0/16"
    ipv6: str = "fd00:7477::/32"

    def __post_init__(self) -> None:
        v4, v6 = self.net4, self.net6
        if not v4.is_private or v4.is_loopback or v4.is_link_local or v4.prefixlen > 16:
            raise LabError(f"address plan ipv4 must be a private range of at most /16, got {self.ipv4}")
        if not v6.subnet_of(ULA) or v6.prefixlen > 32:
            raise LabError(f"address plan ipv6 must be a unique-local (fc00::/7) range of at most /32, got {self.ipv6}")

    @property
    def net4(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.ipv4)

    @property
    def net6(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(self.ipv6)

    @property
    def max_hosts(self) -> int:
        return int(min(2 ** (24 - self.net4.prefixlen), 2 ** (48 - self.net6.prefixlen))) - 1

    def subnets(self, index: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        """The /24 and the /64 of host number ``index`` (1-based)."""
        v4 = ipaddress.IPv4Network((int(self.net4.network_address) + (index << 8), 24))
        v6 = ipaddress.IPv6Network((int(self.net6.network_address) + (index << 80), 64))
        return v4, v6


@dataclass(frozen=True)
class TopologySpec:
    """A routed dual-stack lab: how many hosts of each role, their names and their addresses.

    Parameters
    ----------
    prefix
        Starts every namespace and interface name (2-8 lower-case letters and digits; tests use ``twt...``).
    clients, servers, attackers
        How many hosts of each role (together 1..99).
    plan
        The address ranges (:class:`AddressPlan`).
    link
        The wire of every host to the router, unless ``links`` names another for that host.
    links
        ``(host name, profile)`` pairs overriding ``link`` for single hosts (a delay line on one path).

    Example
    -------
    >>> spec = TopologySpec(prefix="twtdoc")
    >>> spec.router_ns, spec.tap_iface, spec.size
    ('twtdoc-rt', 'twtdoc-tap', 4)
    """

    prefix: str = "twlab"
    clients: int = 2
    servers: int = 1
    attackers: int = 1
    plan: AddressPlan = field(default_factory=AddressPlan)
    link: LinkProfile = field(default_factory=LinkProfile)
    links: tuple[tuple[str, LinkProfile], ...] = ()

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise LabError(f"lab prefix must be 2-8 lower-case letters and digits starting with a letter, "
                           f"got {self.prefix!r}")  # fmt: skip
        if min(self.clients, self.servers, self.attackers) < 0 or not 1 <= self.size <= min(99, self.plan.max_hosts):
            raise LabError(f"lab host count must be 1..{min(99, self.plan.max_hosts)}, got {self.size}")

    @property
    def size(self) -> int:
        return self.clients + self.servers + self.attackers

    @property
    def router_ns(self) -> str:
        return f"{self.prefix}-rt"

    @property
    def tap_iface(self) -> str:
        return f"{self.prefix}-tap"

    def profile_for(self, host: str) -> LinkProfile:
        """The link profile of the host named ``host`` (``c1``): its override, else :attr:`link`."""
        return dict(self.links).get(host, self.link)


@dataclass(frozen=True)
class Host:
    """One lab host: its name (``c1``), role, namespace, interfaces and addresses.

    ``iface`` is the host's end of its link (in ``netns``), ``router_iface`` the router's end; ``gw4`` and
    ``gw6`` are the router's addresses on the host's subnets, the host's only next hop.
    """

    name: str
    role: Role
    netns: str
    iface: str
    router_iface: str
    ipv4: str
    ipv6: str
    gw4: str
    gw6: str

    def addresses(self, family: int) -> tuple[str, str]:
        """``(host, router)`` addresses of IP version ``family`` (4 or 6)."""
        return (self.ipv4, self.gw4) if family == 4 else (self.ipv6, self.gw6)


@dataclass(frozen=True)
class TapPoint:
    """Where a capture sees everything the router forwards: an interface in the router's namespace."""

    netns: str
    iface: str


def plan_hosts(spec: TopologySpec) -> tuple[Host, ...]:
    """Every host of ``spec`` with its names and addresses, in the order clients, servers, attackers."""
    roles = [Role.CLIENT] * spec.clients + [Role.SERVER] * spec.servers + [Role.ATTACKER] * spec.attackers
    counts = dict.fromkeys(Role, 0)
    hosts = []
    for index, role in enumerate(roles, start=1):
        counts[role] += 1
        name = f"{role.tag}{counts[role]}"
        v4, v6 = spec.plan.subnets(index)
        hosts.append(Host(name, role, f"{spec.prefix}-{name}", f"{spec.prefix}-{name}h", f"{spec.prefix}-{name}r",
                          str(v4[2]), str(v6[2]), str(v4[1]), str(v6[1])))  # fmt: skip
    return tuple(hosts)


def lab_names(spec: TopologySpec, hosts: tuple[Host, ...]) -> tuple[set[str], set[str]]:
    """The namespace names and the interface names the lab will create (each at most 15 characters).

    >>> ns, ifaces = lab_names(TopologySpec(prefix="twtdoc", clients=1, servers=0), ())
    >>> sorted(ns), sorted(ifaces)
    (['twtdoc-rt'], ['twtdoc-tap'])
    """
    namespaces = {spec.router_ns, *(h.netns for h in hosts)}
    ifaces = {spec.tap_iface, *(h.iface for h in hosts), *(h.router_iface for h in hosts)}
    assert all(len(n) <= IFNAMSIZ for n in namespaces | ifaces), "the prefix check keeps names short"
    return namespaces, ifaces
