"""Put a delay line between two namespaces: a wire namespace, two veth pairs and the forwarder.

::

    namespace A                 wire namespace (no addresses)                 namespace B
    [a: a_ip] ==veth== [wa] <- lab.delayline forward (AF_PACKET) -> [wb] ==veth== [b: b_ip]

:func:`insert_wire` builds it between two namespaces that exist (the caller's), :func:`build_wire` with
names and ends the caller chose (:mod:`lab.delaylink` puts one on a routed lab's link); :func:`delay_pair` also
builds A and B, as :func:`lab.netns.ns_pair` does, and yields a :class:`DelayPair` whose ``pair`` is an
ordinary :class:`~lab.netns.NsPair` (so :func:`lab.traffic.capture` and the other pair helpers work on
it). Every name starts with the tag (``twd``). The A and B ends get ``gso_max_segs 1`` and TX checksum
offload and GRO off (see :func:`lab.delayforward.set_offload`), so every frame on the wire is MTU-sized and
carries a finished checksum. IPv6 is off in the wire namespace, so its ends send nothing of their own.

Profile ``none`` still runs the forwarder, so every profile takes the same path and only the numbers
differ (a direct veth would be some 0.1 ms faster but would make ``none`` a different kind of link).

Teardown (also after an exception or Ctrl-C; a second Ctrl-C during teardown waits for it): stop the
forwarder by PID (its counters land in :attr:`Wire.stats`), then delete the wire namespace, which deletes
both veth pairs and so the A and B ends.

Example
-------
>>> WireConfig(path=PathProfile(rtt_ms=40.0, jitter_ms=5.0)).path.rtt_ms
40.0
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from lab.delayline import Caps, DelayLineError, PathProfile
from lab.netns import (
    _SEQ,
    Endpoint,
    NetnsError,
    NsPair,
    PairConfig,
    _ip,
    _kill_leftovers,
    _prepare_netns,
    delete_pair,
    run_in,
    start_in,
    stop_process,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
_READY_S = 15.0  # the forwarder's start: a Python interpreter, click and two sockets


@dataclass(frozen=True)
class WireConfig:
    """How :func:`insert_wire` builds the wire.

    Parameters
    ----------
    path
        The path's RTT, jitter and loss (:class:`~lab.delayline.Profile`'s ``.path`` for the named ones).
    a_ip, b_ip, prefix
        Addresses of the A and B ends.
    seed
        Seeds the forwarder's loss and jitter.
    caps
        Frames and bytes the forwarder holds per direction.
    tag
        Prefix of every namespace and interface name (3 characters keep interface names within 15).
    mtu
        MTU of the four veth ends.

    Example
    -------
    >>> WireConfig().a_ip, WireConfig().tag
    ('10.213.0.1', 'twd')
    """

    path: PathProfile = field(default_factory=PathProfile)
    a_ip: str = "10.213.0.1"
    b_ip: str = "10.213.0.2"
    prefix: int = 24
    seed: int = 0
    caps: Caps = field(default_factory=Caps)
    tag: str = "twd"
    mtu: int = 1500


@dataclass
class Wire:
    """A wire namespace between A and B, its forwarder, and the forwarder's counters once it stopped.

    Example
    -------
    >>> with wired("ns-a", "ns-b", WireConfig(path=Profile.LAN.path)) as wire:  # doctest: +SKIP
    ...     ...
    >>> wire.stats["forwarded"]  # doctest: +SKIP
    """

    netns: str
    a: Endpoint
    b: Endpoint
    inner: tuple[str, str]
    proc: subprocess.Popen[Any] | None = field(default=None, repr=False)
    workdir: Path | None = field(default=None, repr=False)
    stats: dict[str, Any] | None = None


@dataclass
class DelayPair:
    """Namespaces A (client) and B (server) joined by a :class:`Wire`; ``pair`` is their :class:`NsPair`."""

    pair: NsPair
    wire: Wire


def lab_argv(*args: str) -> list[str]:
    """``python -m lab.delayline ARGS`` with this interpreter, runnable from any directory."""
    return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "lab.delayline", *args]


def _wire_names(tag: str) -> tuple[str, list[str]]:
    """The wire namespace's name and the interfaces a, wa, wb, b (unique per process and per use)."""
    uid = f"{os.getpid():x}{next(_SEQ):x}"
    ifaces = [f"{tag}{uid}{end}" for end in ("a", "wa", "wb", "b")]
    if max(len(i) for i in ifaces) > 15:
        raise DelayLineError(f"tag {tag!r} makes interface names longer than 15 characters: {ifaces}")
    return f"{tag}-{uid}-wire", ifaces


def _forwarder_argv(wire: Wire, config: WireConfig) -> list[str]:
    p, c = config.path, config.caps
    return lab_argv("-v", "forward", "--iface-a", wire.inner[0], "--iface-b", wire.inner[1],
                    "--rtt-ms", repr(p.rtt_ms), "--jitter-ms", repr(p.jitter_ms), "--loss", repr(p.loss),
                    "--seed", str(config.seed), "--max-frames", str(c.max_frames),
                    "--max-bytes", str(c.max_bytes))  # fmt: skip


def _start_forwarder(wire: Wire, config: WireConfig) -> None:
    """Start the forwarder in the wire namespace and wait until its sockets are bound."""
    wire.workdir = Path(tempfile.mkdtemp(prefix=f"{config.tag}-"))
    with (wire.workdir / "stats.json").open("w") as out, (wire.workdir / "forwarder.log").open("w") as err:
        wire.proc = start_in(wire.netns, _forwarder_argv(wire, config), stdout=out, stderr=err)
    deadline = time.monotonic() + _READY_S
    while "forwarding" not in (text := (wire.workdir / "forwarder.log").read_text()):
        if wire.proc.poll() is not None or time.monotonic() > deadline:
            raise DelayLineError(f"the forwarder in {wire.netns} did not start: {text.strip()[-2000:] or 'no output'}")
        time.sleep(0.02)
    log.info("wire %s: forwarder pid %s, %s", wire.netns, wire.proc.pid, config.path)


def _add_end(wire: Wire, end: Endpoint, inner: str, mtu: int) -> None:
    """A veth pair from the wire namespace (``inner``, up) to ``end`` with offloads off.

    An end with an address gets it and goes up; one without (``ip`` empty) stays down, the caller's to set up.
    """
    opts = ["mtu", str(mtu), "gso_max_segs", "1"]
    _ip("-n", wire.netns, "link", "add", inner, *opts, "type", "veth", "peer", "name", end.iface, *opts,
        "netns", end.netns)  # fmt: skip
    run_in(end.netns, lab_argv("offload", end.iface))
    if end.ip:
        _ip("-n", end.netns, "addr", "add", end.cidr, "dev", end.iface)
        _ip("-n", end.netns, "link", "set", end.iface, "up")
    _ip("-n", wire.netns, "link", "set", inner, "up")


def insert_wire(a_netns: str, b_netns: str, config: WireConfig | None = None) -> Wire:
    """Build a wire between the existing namespaces ``a_netns`` and ``b_netns`` and start its forwarder.

    On failure whatever was built is removed and the error raised. Undo with :func:`remove_wire`.
    """
    config = config or WireConfig()
    name, (a_if, wa_if, wb_if, b_if) = _wire_names(config.tag)
    a = Endpoint(a_netns, a_if, config.a_ip, config.prefix)
    b = Endpoint(b_netns, b_if, config.b_ip, config.prefix)
    return build_wire(Wire(name, a, b, (wa_if, wb_if)), config)


def build_wire(wire: Wire, config: WireConfig) -> Wire:
    """Create ``wire.netns``, its veth pairs to ``wire.a`` and ``wire.b`` (named as given), and the forwarder.

    ``config``'s addresses are not used: an end whose ``ip`` is empty stays down without an address (the
    caller's to configure). A taken namespace name is refused before anything is built; on a later failure
    whatever was built is removed and the error raised. Undo with :func:`remove_wire`.
    """
    _ip("netns", "add", wire.netns)  # fails when the name is taken: never ours to delete then
    try:
        _ip("-n", wire.netns, "link", "set", "lo", "up")
        # IPv6 off before the veths exist ("default" applies to them): the wire's inner ends stay silent
        run_in(wire.netns, ["sysctl", "-qw", *(f"net.ipv6.conf.{k}.disable_ipv6=1" for k in ("all", "default"))])
        _add_end(wire, wire.a, wire.inner[0], config.mtu)
        _add_end(wire, wire.b, wire.inner[1], config.mtu)
        _start_forwarder(wire, config)
    except BaseException:
        remove_wire(wire)
        raise
    return wire


def stop_forwarder(wire: Wire) -> dict[str, Any] | None:
    """Stop the forwarder by its PID and read its counters into ``wire.stats`` (None if it wrote none)."""
    if wire.proc is None:
        return wire.stats
    code = stop_process(wire.proc)
    wire.proc = None
    assert wire.workdir is not None
    lines = (wire.workdir / "stats.json").read_text().splitlines()
    wire.stats = json.loads(lines[-1]) if lines else None
    if code != 0 or wire.stats is None:
        err = (wire.workdir / "forwarder.log").read_text().strip()
        log.warning("wire %s: forwarder exited with %s: %s", wire.netns, code, err[-2000:])
    return wire.stats


def remove_wire(wire: Wire) -> None:
    """Stop the forwarder, then delete the wire namespace (its veth pairs and the A and B ends go with it)."""
    with _sigint_deferred():
        try:
            stop_forwarder(wire)
        finally:
            if os.path.exists(f"/run/netns/{wire.netns}"):
                _kill_leftovers(wire.netns)
                try:
                    _ip("netns", "delete", wire.netns)
                except NetnsError as err:
                    log.warning("netns %s: could not delete: %s", wire.netns, err)
            if wire.workdir is not None:
                shutil.rmtree(wire.workdir, ignore_errors=True)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives during teardown until teardown is done, then raise it."""
    got: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, hold)
    except ValueError:  # not the main thread: signals go to the main thread anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            raise KeyboardInterrupt


@contextlib.contextmanager
def wired(a_netns: str, b_netns: str, config: WireConfig | None = None) -> Iterator[Wire]:
    """A wire between two existing namespaces for the duration of a ``with`` block; see :class:`Wire`."""
    wire = insert_wire(a_netns, b_netns, config)
    try:
        yield wire
    finally:
        remove_wire(wire)


@contextlib.contextmanager
def delay_pair(config: WireConfig | None = None) -> Iterator[DelayPair]:
    """New namespaces A and B joined by a wire, for the duration of a ``with`` block.

    Example
    -------
    >>> with delay_pair(WireConfig(path=Profile.WAN.path)) as dp:  # doctest: +SKIP
    ...     dp.pair.run(dp.pair.client, ["ping", "-c1", dp.pair.server.ip])
    """
    config = config or WireConfig()
    uid = f"{os.getpid():x}{next(_SEQ):x}"
    a_ns, b_ns = f"{config.tag}-{uid}-client", f"{config.tag}-{uid}-server"
    placeholder = NsPair(Endpoint(a_ns, "", ""), Endpoint(b_ns, "", ""))
    try:
        for ns in (a_ns, b_ns):
            _prepare_netns(ns, PairConfig())
        wire = insert_wire(a_ns, b_ns, config)
    except BaseException:
        delete_pair(placeholder)
        raise
    dp = DelayPair(NsPair(wire.a, wire.b), wire)
    try:
        yield dp
    finally:
        try:
            remove_wire(wire)
        finally:
            with _sigint_deferred():
                delete_pair(dp.pair)
