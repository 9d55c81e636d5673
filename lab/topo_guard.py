"""The lab's safety rules: refuse to start on a machine where it would collide, and always get to teardown.

* :func:`require_usable` refuses when not root or when ``ip netns`` does not work.
* :func:`check_free` refuses, before anything is created, when one of the lab's namespace names, interface
  names (in the root namespace, ``ip -o link``) or subnets (overlapping an address of the root namespace,
  ``ip -o addr``) is taken. What is "in use" comes from :class:`Probes`, three functions a test can replace:
  a test may not add an address to a real interface of the root namespace, so it injects one instead.
* :func:`signals_raise` turns SIGINT into :class:`KeyboardInterrupt` and SIGTERM into :class:`SystemExit`
  inside a ``with`` block, so that the ``finally`` that tears the lab down runs when the process is
  interrupted or terminated; :func:`signals_held` keeps a signal from cutting that teardown short.

Example
-------
>>> from lab.topo_plan import TopologySpec, plan_hosts
>>> spec = TopologySpec(prefix="twtdoc")
>>> free = Probes(namespaces=set, links=set, addresses=lambda: {"192.0.2.2/24"})
>>> check_free(spec, plan_hosts(spec), free)
>>> check_free(spec, plan_hosts(spec), Probes(namespaces=set, links=set, addresses=lambda: {"10.213.2.9/24"}))
Traceback (most recent call last):
...
lab.topo_plan.LabError: lab twtdoc: address 10.213.2.9/24 of the root namespace overlaps the lab's subnet 10.213.2.0/24
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

from lab.netns import netns_problem
from lab.topo_plan import Host, LabError, TopologySpec, lab_names

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _lines(argv: list[str]) -> list[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"cannot list what is in use: {' '.join(argv)}: {err}") from err
    if done.returncode != 0:
        raise LabError(f"cannot list what is in use: {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout.splitlines()


def root_namespaces() -> set[str]:
    """Names of the named network namespaces (``ip netns list``: "NAME (id: N)" per line)."""
    return {line.split()[0] for line in _lines(["ip", "netns", "list"]) if line.strip()}


def root_links() -> set[str]:
    """Interface names of the root namespace (``ip -o link``: "N: NAME[@PEER]: <FLAGS> ...")."""
    names = set()
    for line in _lines(["ip", "-o", "link"]):
        parts = line.split(": ", 2)
        if len(parts) >= 2:
            names.add(parts[1].split("@")[0])
    return names


def root_addresses() -> set[str]:
    """Addresses of the root namespace with their prefix length (``ip -o addr``: "N: DEV inet ADDR/LEN ...")."""
    found = set()
    for line in _lines(["ip", "-o", "addr"]):
        words = line.split()
        if len(words) >= 4 and words[2] in ("inet", "inet6"):
            found.add(words[3])
    return found


@dataclass(frozen=True)
class Probes:
    """What is in use on the machine: each field returns a set of names or of ``ADDR/LEN`` strings.

    Parameters
    ----------
    namespaces
        Named network namespaces (default: :func:`root_namespaces`).
    links
        Interface names of the root namespace (default: :func:`root_links`).
    addresses
        Addresses of the root namespace (default: :func:`root_addresses`).
    """

    namespaces: Callable[[], set[str]] = root_namespaces
    links: Callable[[], set[str]] = root_links
    addresses: Callable[[], set[str]] = root_addresses


def require_usable() -> None:
    """Refuse (:class:`LabError`) when not root or when network namespaces cannot be made here."""
    problem = netns_problem()
    if problem is not None:
        raise LabError(f"network namespaces unusable: {problem}")


def check_free(spec: TopologySpec, hosts: tuple[Host, ...], probes: Probes | None = None) -> None:
    """Refuse (:class:`LabError`, naming the first thing taken) when a name or subnet of the lab is in use.

    A subnet is taken when an address of the root namespace lies in it or its network overlaps it: the lab's
    addresses would then be ambiguous in captures, alerts and routes of this machine.
    """
    probes = probes or Probes()
    namespaces, ifaces = lab_names(spec, hosts)
    taken = sorted(namespaces & probes.namespaces())
    if taken:
        raise LabError(f"lab {spec.prefix}: namespace {taken[0]} is already in use")
    taken = sorted(ifaces & probes.links())
    if taken:
        raise LabError(f"lab {spec.prefix}: interface {taken[0]} already exists in the root namespace")
    subnets = [net for h in hosts for net in (ipaddress.ip_network(f"{h.gw4}/24", strict=False),
                                              ipaddress.ip_network(f"{h.gw6}/64", strict=False))]  # fmt: skip
    for cidr in sorted(probes.addresses()):
        used = ipaddress.ip_interface(cidr)
        for net in subnets:
            if used.version == net.version and used.network.overlaps(net):
                what = f"address {cidr} of the root namespace overlaps the lab's subnet {net}"
                raise LabError(f"lab {spec.prefix}: {what}")
    log.debug("lab %s: %s namespaces, %s interfaces and %s subnets are free", spec.prefix, len(namespaces),
              len(ifaces), len(subnets))  # fmt: skip


def _raise_for(signum: int, _frame: FrameType | None) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Install ``handler`` for SIGINT and SIGTERM for the block, then put the previous handlers back.

    Python delivers signals to the main thread only; elsewhere the block runs without handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def signals_raise() -> contextlib.AbstractContextManager[None]:
    """SIGINT raises :class:`KeyboardInterrupt`, SIGTERM :class:`SystemExit` (143) inside the block.

    Example
    -------
    >>> with signals_raise():
    ...     pass
    """
    return _handlers(_raise_for)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during a teardown; one that came is raised (as above) when it is done.

    A second Ctrl-C would otherwise interrupt ``ip netns delete`` half-way and leave namespaces behind;
    the teardown is bounded by its commands' timeouts, so holding the signal delays the exit only briefly.
    """
    pending: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %s during the lab's teardown: exiting when it is done", signum)
        pending.append(signum)

    with _handlers(hold):
        yield
    if pending:
        _raise_for(pending[0], None)
