"""A userspace delay line: one-way delay, jitter and loss on an L2 wire between two namespaces.

This kernel has no ``sch_netem`` and no ``fq`` (so neither netem nor an eBPF earliest-departure-time
scheme can delay packets; ``tbf`` only rate-limits), hence a forwarder in userspace. The *wire* is a network
namespace of its own holding two veth ends without addresses (built by :mod:`lab.delaywire`). The
forwarder runs inside it with one ``AF_PACKET`` socket per end; each frame read on one end waits in a
FIFO :class:`Lane` for its delay and is then written to the other end. So the path is a cable with a
long, slow middle: no IP hop, no TTL decrement, ARP and everything else go through it too.

* :class:`PathProfile` is what a path looks like (RTT, jitter, loss); :class:`Profile` names the lab's
  profiles (``none``, ``lan``, ``wan``, ``lossy``). The RTT is split evenly across the two directions.
* Jitter never reorders: a frame's release time is never earlier than the previous frame's in its
  direction (as netem with ``rate`` behaves).
* Loss draws from an RNG seeded per direction, so one seed gives the same loss pattern frame by frame.
* Each direction holds at most :class:`Caps` frames and bytes; frames beyond are dropped and counted.

The forwarder (:mod:`lab.delayforward`, run as ``python -m lab.delayline forward ...``) exits on SIGTERM
or SIGINT and writes its counters as one JSON line on standard output. ``python -m lab.delayline --bench``
measures RTTs per profile and the packet rate the forwarder sustains (see :mod:`lab.delaybench`).

Example
-------
>>> Profile.WAN.path.one_way()
Direction(delay_s=0.02, jitter_s=0.0025, loss=0.0)
>>> lane = Lane(Profile.LAN.path.one_way(), seed=1)
>>> lane.admit(b"frame", now=10.0), lane.pop_due(10.0), lane.pop_due(10.0005)
(True, [], [b'frame'])
"""

from __future__ import annotations

import logging
import random
import sys
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import click

from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)

MAX_RTT_MS = 200.0  # 100 ms each way: enough for intercontinental paths, and it bounds what a lane holds


class DelayLineError(TapwatchError):
    """A path profile or forwarder setting is out of range, or the forwarder could not start."""


@dataclass(frozen=True)
class Direction:
    """One direction's impairment: delay and jitter in seconds (jitter uniform in ±jitter_s), loss 0..1."""

    delay_s: float
    jitter_s: float
    loss: float


@dataclass(frozen=True)
class PathProfile:
    """What a path looks like end to end.

    Parameters
    ----------
    rtt_ms
        Round-trip time added to the path, 0..200 ms; each direction gets half.
    jitter_ms
        The RTT varies within ±jitter_ms (each direction's delay within ±jitter_ms/2, uniform), at most rtt_ms.
    loss
        Probability that a frame is dropped, in each direction, 0 <= loss < 1.

    Example
    -------
    >>> PathProfile(rtt_ms=10, jitter_ms=2, loss=0.05).one_way()
    Direction(delay_s=0.005, jitter_s=0.001, loss=0.05)
    >>> PathProfile(rtt_ms=300)
    Traceback (most recent call last):
    ...
    lab.delayline.DelayLineError: rtt_ms must be in 0..200, got 300
    """

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rtt_ms <= MAX_RTT_MS:
            raise DelayLineError(f"rtt_ms must be in 0..{MAX_RTT_MS:g}, got {self.rtt_ms:g}")
        if not 0.0 <= self.jitter_ms <= self.rtt_ms:  # so that no delay is ever negative
            raise DelayLineError(f"jitter_ms must be in 0..rtt_ms ({self.rtt_ms:g}), got {self.jitter_ms:g}")
        if not 0.0 <= self.loss < 1.0:
            raise DelayLineError(f"loss must be in [0, 1), got {self.loss:g}")

    def one_way(self) -> Direction:
        """The impairment of each direction: half the RTT and half the jitter, the whole loss."""
        return Direction(self.rtt_ms / 2000.0, self.jitter_ms / 2000.0, self.loss)


class Profile(str, Enum):
    """The lab's named paths; :attr:`path` gives the :class:`PathProfile`."""

    NONE = "none"
    LAN = "lan"
    WAN = "wan"
    LOSSY = "lossy"

    @property
    def path(self) -> PathProfile:
        return PROFILES[self]


PROFILES: dict[Profile, PathProfile] = {
    Profile.NONE: PathProfile(),
    Profile.LAN: PathProfile(rtt_ms=1.0),
    Profile.WAN: PathProfile(rtt_ms=40.0, jitter_ms=5.0),
    Profile.LOSSY: PathProfile(rtt_ms=40.0, jitter_ms=5.0, loss=0.01),
}


@dataclass(frozen=True)
class Caps:
    """What one direction holds at most; frames beyond are dropped and counted as ``capped``.

    8192 frames / 8 MiB: 100 ms of a 500 Mbit/s stream of full frames or of 80 k small frames/s, beyond
    what the forwarder sustains (see the bench), so the cap only bites when the forwarder falls behind.
    """

    max_frames: int = 8192
    max_bytes: int = 8 << 20


@dataclass
class LaneStats:
    """Counters of one direction."""

    forwarded: int = 0
    lost: int = 0
    capped: int = 0
    send_errors: int = 0


class Lane:
    """One direction of the wire: a FIFO of (release time, frame) with loss, jitter and caps.

    Parameters
    ----------
    direction
        Delay, jitter and loss.
    seed
        Seeds the loss RNG (and, separately, the jitter RNG), so a seed gives the same loss pattern.
    caps
        Frames and bytes held at most.

    Example
    -------
    >>> lane = Lane(Direction(0.01, 0.0, 0.0), seed=0, caps=Caps(max_frames=1))
    >>> lane.admit(b"a", now=0.0), lane.admit(b"b", now=0.0), lane.stats.capped, lane.next_release()
    (True, False, 1, 0.01)
    """

    def __init__(self, direction: Direction, seed: int, caps: Caps | None = None) -> None:
        self.direction = direction
        self.caps = caps or Caps()
        self.stats = LaneStats()
        self._queue: deque[tuple[float, bytes]] = deque()
        self._bytes = 0
        self._last_release = 0.0
        # two generators: the loss pattern must not depend on whether jitter is drawn
        self._loss_rng = random.Random(seed * 2)
        self._jitter_rng = random.Random(seed * 2 + 1)

    def admit(self, frame: bytes, now: float) -> bool:
        """Take ``frame`` read at ``now`` (monotonic seconds); False when it is lost or over the cap."""
        d = self.direction
        if d.loss and self._loss_rng.random() < d.loss:
            self.stats.lost += 1
            return False
        if len(self._queue) >= self.caps.max_frames or self._bytes + len(frame) > self.caps.max_bytes:
            self.stats.capped += 1
            return False
        jitter = self._jitter_rng.uniform(-d.jitter_s, d.jitter_s) if d.jitter_s else 0.0
        release = max(now + d.delay_s + jitter, self._last_release)  # never before the previous frame
        self._last_release = release
        self._queue.append((release, frame))
        self._bytes += len(frame)
        return True

    def next_release(self) -> float | None:
        """When the oldest frame is due, or None when the lane is empty."""
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> list[bytes]:
        """Remove and return the frames due at ``now``, oldest first."""
        out: list[bytes] = []
        while self._queue and self._queue[0][0] <= now:
            frame = self._queue.popleft()[1]
            self._bytes -= len(frame)
            out.append(frame)
        return out


@dataclass(frozen=True)
class ForwarderConfig:
    """What the forwarder process does: the two interfaces, the path, the RNG seed and the caps."""

    iface_a: str
    iface_b: str
    path: PathProfile = field(default_factory=PathProfile)
    seed: int = 0
    caps: Caps = field(default_factory=Caps)


# -- command line ---------------------------------------------------------------------------------
@click.group(invoke_without_command=True)
@click.option("--bench", is_flag=True, help="Measure RTTs per profile and the forwarder's packet rate (root).")
@click.option("--seconds", type=click.FloatRange(0.5, 60), default=3.0, show_default=True, help="Per bench rate.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.pass_context
def main(ctx: click.Context, bench: bool, seconds: float, verbose: int) -> None:
    """The lab's delay line: ``--bench``, or the ``forward`` and ``offload`` commands lab.delaywire runs."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if ctx.invoked_subcommand is not None:
        return
    if not bench:
        click.echo(ctx.get_help())
        return
    from lab.delaybench import run_bench  # imported here: the bench imports this module

    try:
        click.echo(run_bench(seconds))
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err


@main.command("forward")
@click.option("--iface-a", required=True)
@click.option("--iface-b", required=True)
@click.option("--rtt-ms", type=float, default=0.0, show_default=True)
@click.option("--jitter-ms", type=float, default=0.0, show_default=True)
@click.option("--loss", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-frames", type=click.IntRange(1), default=Caps().max_frames, show_default=True)
@click.option("--max-bytes", type=click.IntRange(1), default=Caps().max_bytes, show_default=True)
def forward_command(iface_a: str, iface_b: str, rtt_ms: float, jitter_ms: float, loss: float, seed: int,
                    max_frames: int, max_bytes: int) -> None:  # fmt: skip
    """Forward frames between two interfaces of this namespace until SIGTERM; counters as JSON on stdout."""
    try:
        config = ForwarderConfig(iface_a, iface_b, PathProfile(rtt_ms, jitter_ms, loss), seed,
                                 Caps(max_frames, max_bytes))  # fmt: skip
        from lab.delayforward import serve  # imported here: it imports this module

        serve(config, sys.stdout)
    except (DelayLineError, OSError) as err:
        raise click.ClickException(str(err)) from err


@main.command("offload")
@click.argument("ifaces", nargs=-1, required=True)
def offload_command(ifaces: tuple[str, ...]) -> None:
    """Turn TX checksum offload and GRO off on interfaces of this namespace (the wire's outer ends)."""
    from lab.delayforward import set_offload  # imported here: it imports this module

    try:
        for iface in ifaces:
            set_offload(iface, False)
    except DelayLineError as err:
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    main()
