"""Which episode each flow of a scenario run belongs to.

The rule (the traffic-lab issue's): a flow belongs to an **attack episode** when its endpoints are the episode's
attacker and one of its victims, in either direction, and its first packet falls inside the episode's time; for a
spoofed episode, when one endpoint is a victim and the other is outside the lab (not one of its hosts' or
routers' addresses, nor link-local). Everything else belongs to the **benign episode of its
client**: the endpoint that is a client host, else the source's host, else the destination's; a flow with no lab
host at either end (none is expected) goes to :data:`OUTSIDE_EPISODE`. Attack episodes of a run never overlap on
the same attacker and victim (the runner runs attacks one at a time), so the first match is the only one.

Times: an episode's ``start`` and ``end`` are epoch seconds taken around the tool; a flow's ``first_seen_ms`` is
epoch milliseconds from the capture (the same clock: namespaces share the host's). ``start`` is floored and ``end``
ceiled to whole milliseconds, so a flow in the tool's first or last millisecond is still inside.

Example
-------
>>> import pandas as pd
>>> from lab.episodes import Episode, Family
>>> hosts = {"c1": ("10.213.1.2", "fd00:7477:1::2"), "s1": ("10.213.2.2", "fd00:7477:2::2"),
...          "a1": ("10.213.3.2", "fd00:7477:3::2")}
>>> scan = Episode("e001", Family.SCAN, "nmap", "nmap -sS 10.213.2.2", hosts["a1"], hosts["s1"], 100.0, 110.0,
...                cic_class="Portscan")
>>> flood = Episode("e002", Family.DOS, "hping3", "hping3 -S --rand-source", hosts["a1"], hosts["s1"], 120.0,
...                 130.0, cic_class="DDoS", spoofed=True)
>>> index = LabelIndex.build([scan, flood], LabHosts(hosts, clients=("c1",)))
>>> flows = pd.DataFrame({"Src IP": ["10.213.3.2", "10.213.1.2", "203.0.113.9", "10.213.3.2"],
...                       "Dst IP": ["10.213.2.2", "10.213.2.2", "10.213.2.2", "10.213.2.2"],
...                       "first_seen_ms": [105_000, 105_000, 125_000, 140_000]})
>>> label_frame(flows, index)[["episode_id", "family", "cic_class"]].values.tolist()
[['e001', 'scan', 'Portscan'], ['b-c1', 'benign', 'BENIGN'], ['e002', 'dos', 'DDoS'], ['b-a1', 'benign', 'BENIGN']]
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lab.episodes import Episode, Family
from lab.topo_plan import LabError

log = logging.getLogger(__name__)

OUTSIDE_EPISODE = "b-outside"
LABEL_COLUMNS = ("episode_id", "family", "cic_class")
_SRC, _DST, _FIRST = "Src IP", "Dst IP", "first_seen_ms"


def benign_id(host: str) -> str:
    """The benign episode of a lab host (``c1`` -> ``b-c1``)."""
    return f"b-{host}"


@dataclass(frozen=True)
class LabHosts:
    """The lab's hosts by name with their addresses, which of them are clients, and the lab's address ranges.

    Parameters
    ----------
    addresses
        ``host name -> its addresses`` (both IP versions; a router's addresses may be listed under its name).
    clients
        Names of the client hosts (their endpoint names a benign flow's episode first).
    """

    addresses: Mapping[str, Sequence[str]]
    clients: tuple[str, ...] = ()

    @functools.cached_property
    def owner(self) -> dict[str, str]:
        """``address -> host name``."""
        return {addr: name for name, addrs in self.addresses.items() for addr in addrs}

    def is_outside(self, address: str) -> bool:
        """Whether ``address`` is none of the lab hosts' (and not an IPv6 link-local or multicast address).

        A spoofed flood's random sources may fall anywhere, the lab's own ranges, 127/8 and IPv4's class D
        included: what matters is that no lab host has them.

        >>> hosts = LabHosts({"c1": ("10.213.1.2",)})
        >>> [hosts.is_outside(a) for a in ("10.213.1.2", "10.213.9.9", "fe80::1", "ff02::2", "230.1.2.3",
        ...                                 "127.4.5.6")]
        [False, True, False, False, True, True]
        """
        if address in self.owner:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # not an address at all (a malformed row): never count it as a spoofed source
        # IPv6 link-local and multicast are the hosts' own neighbour discovery; on the wire, any IPv4 source no
        # lab host has (127/8 and class D included) is spoofed
        return not (ip.version == 6 and (ip.is_link_local or ip.is_multicast or ip.is_unspecified))


@dataclass(frozen=True)
class LabelIndex:
    """Attack episodes in order of start, every episode by id, and the lab's hosts for the benign fallback."""

    attacks: tuple[Episode, ...]
    episodes: Mapping[str, Episode]
    hosts: LabHosts

    @classmethod
    def build(cls, episodes: Iterable[Episode], hosts: LabHosts) -> LabelIndex:
        eps = list(episodes)
        attacks = tuple(sorted((e for e in eps if e.family is not Family.BENIGN), key=lambda e: e.start))
        return cls(attacks, {e.episode_id: e for e in eps}, hosts)


def hosts_from_episodes(episodes: Iterable[Episode]) -> LabHosts:
    """The lab's hosts as a run's episodes.csv records them: each host's benign episode carries its addresses
    (clients' with the tool ``mix``); the router is ``.1``/``::1`` on each host's subnet (:mod:`lab.topo_plan`).

    >>> ep = Episode("b-c1", Family.BENIGN, "mix", "c1", ("10.213.1.2", "fd00:7477:1::2"), (), 0.0, 1.0)
    >>> hosts = hosts_from_episodes([ep])
    >>> hosts.clients, hosts.addresses["router"]
    (('c1',), ('10.213.1.1', 'fd00:7477:1::1'))
    """
    addresses: dict[str, tuple[str, ...]] = {}
    clients = []
    for ep in episodes:
        if ep.family is Family.BENIGN and ep.episode_id.startswith("b-"):
            addresses[ep.episode_id[2:]] = ep.attacker
            if ep.tool == "mix":
                clients.append(ep.episode_id[2:])
    router = tuple(str(_gateway(a)) for addrs in addresses.values() for a in addrs)
    return LabHosts(addresses | {"router": router}, clients=tuple(clients))


def _gateway(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_interface(f"{address}/{24 if ip.version == 4 else 64}").network[1]


def _attack_mask(flows: pd.DataFrame, ep: Episode, outside: pd.DataFrame) -> pd.Series:
    """Rows of ``flows`` that belong to the attack episode ``ep``."""
    first = flows[_FIRST]
    when = (first >= math.floor(ep.start * 1000)) & (first <= math.ceil(ep.end * 1000))
    src, dst = flows[_SRC], flows[_DST]
    att, vic = list(ep.attacker), list(ep.victims)
    ends = (src.isin(att) & dst.isin(vic)) | (src.isin(vic) & dst.isin(att))
    if ep.spoofed:
        ends |= (src.isin(vic) & outside.loc[:, _DST]) | (dst.isin(vic) & outside.loc[:, _SRC])
    return when & ends


def _outside(flows: pd.DataFrame, hosts: LabHosts) -> pd.DataFrame:
    """Per row, whether its source and its destination are outside the lab (computed once per address)."""
    addresses = pd.unique(pd.concat([flows[_SRC], flows[_DST]], ignore_index=True))
    verdict = {addr: hosts.is_outside(str(addr)) for addr in addresses}
    return pd.DataFrame({_SRC: flows[_SRC].map(verdict).astype(bool), _DST: flows[_DST].map(verdict).astype(bool)})


def _benign(flows: pd.DataFrame, hosts: LabHosts) -> pd.Series:
    """The benign episode of each row: its client's, else its source host's, else its destination host's."""
    owner = hosts.owner
    src, dst = flows[_SRC].map(owner), flows[_DST].map(owner)
    clients = set(hosts.clients)
    host = src.where(src.isin(clients), dst.where(dst.isin(clients), src.fillna(dst)))
    return host.map(benign_id, na_action="ignore").fillna(OUTSIDE_EPISODE)


def label_frame(flows: pd.DataFrame, index: LabelIndex) -> pd.DataFrame:
    """``flows`` with :data:`LABEL_COLUMNS` added (a copy); needs columns Src IP, Dst IP and first_seen_ms."""
    missing = [c for c in (_SRC, _DST, _FIRST) if c not in flows.columns]
    if missing:
        raise LabError(f"flows to label lack the columns {missing}")
    out = flows.copy()
    episode = _benign(flows, index.hosts)
    outside = _outside(flows, index.hosts)
    taken = pd.Series(False, index=flows.index)
    for ep in index.attacks:
        mask = _attack_mask(flows, ep, outside) & ~taken
        episode = episode.mask(mask, ep.episode_id)
        taken |= mask
    out["episode_id"] = episode
    known = {e: (ep.family.value, ep.cic_class) for e, ep in index.episodes.items()}
    out["family"] = episode.map(lambda e: known.get(e, (Family.BENIGN.value, "BENIGN"))[0])
    out["cic_class"] = episode.map(lambda e: known.get(e, (Family.BENIGN.value, "BENIGN"))[1])
    return out


def label_csv(raw: Path, episodes: Iterable[Episode], hosts: LabHosts, out: Path) -> dict[str, int]:
    """Label the flows CSV ``raw`` (written by ``tapwatch flows``) into ``out``; return flows per family."""
    flows = pd.read_csv(raw, low_memory=False)
    labelled = label_frame(flows, LabelIndex.build(episodes, hosts))
    labelled.to_csv(out, index=False)
    counts = labelled["family"].value_counts().to_dict()
    log.info("labelled %s flows of %s: %s", len(labelled), raw, counts)
    return {str(k): int(v) for k, v in counts.items()}
