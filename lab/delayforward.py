"""The delay line's forwarder: two packet sockets, two :class:`~lab.delayline.Lane` s, one select loop.

It runs inside the wire namespace (``python -m lab.delayline forward ...``, started by
:mod:`lab.delaywire`). Each frame read on one interface is admitted to the lane of its direction with the
kernel's receive timestamp and written to the other interface when due. On SIGTERM or SIGINT the loop ends
and :func:`serve` writes the counters as one JSON line.

Example
-------
>>> ForwarderConfig("twd1wa", "twd1wb").path.rtt_ms
0.0
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import select
import signal
import socket
import struct
import time
from dataclasses import asdict
from types import FrameType
from typing import IO

from lab.delayline import DelayLineError, ForwarderConfig, Lane, LaneStats

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
# linux/socket.h and linux/if_packet.h (Linux 4.20); Python's socket module names neither
_SOL_PACKET, _PACKET_IGNORE_OUTGOING = 263, 23
_PR_SET_TIMERSLACK = 29  # linux/prctl.h
_SIOCETHTOOL = 0x8946
_SO_TIMESTAMPNS = 35  # asm-generic/socket.h (also SCM_TIMESTAMPNS): a receive timestamp as a 64-bit timespec
_ANC_SPACE = socket.CMSG_SPACE(16)
# ethtool legacy "set" commands (linux/ethtool.h): TX checksum offload, TSO, GRO
ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGRO = 0x17, 0x1F, 0x2C
_BATCH = 64  # frames read from one socket before the other gets a turn, so one flood cannot starve a direction
# Spin (select with no timeout) this long after moving a frame and before a frame is due: waking a sleeping
# process takes some 50 µs here, which is a tenth of the lan profile's one-way delay. Costs at most this
# much CPU per burst.
_SPIN_S = 150e-6
_SOCKBUF = 4 << 20  # the kernel's rmem_max here; a burst waits in the socket while a batch is forwarded


def set_offload(iface: str, enabled: bool, commands: tuple[int, ...] = (ETHTOOL_STXCSUM, ETHTOOL_SGRO)) -> None:
    """Switch ethtool features of ``iface`` (in the caller's namespace) on or off with SIOCETHTOOL.

    veth hands frames on with a partial checksum (the "hardware" would finish it); a packet socket reads
    them so, and a frame written by the forwarder arrives with a wrong checksum and is dropped. TX checksum
    off (which also turns off TSO) makes the sender finish its checksums; GRO off keeps frames MTU-sized.
    The machine has no ethtool binary, hence the ioctl.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for cmd in commands:
            value = ctypes.create_string_buffer(struct.pack("II", cmd, int(enabled)))
            ifreq = struct.pack("16sP", iface.encode(), ctypes.addressof(value))
            try:
                fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
            except OSError as err:
                raise DelayLineError(f"{iface}: ethtool command {cmd:#x} failed: {err}") from err


def open_port(iface: str) -> socket.socket:
    """A non-blocking packet socket reading every frame arriving on ``iface`` and writing to it."""
    # Protocol 0 until bound: a socket created with ETH_P_ALL would see other interfaces' frames until bind.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with contextlib.suppress(OSError):  # older kernels: the PACKET_OUTGOING check in _drain does the job
        sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKBUF)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.bind((iface, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket, lane: Lane, out: socket.socket) -> int:
    """Read up to a batch of frames from ``sock`` into ``lane``, skipping what we sent ourselves.

    A frame's delay counts from the kernel's receive timestamp, not from when this process woke up and
    read it, so the wake-up latency (tens of µs) is part of the delay instead of added to it. A frame due
    at once (profile ``none``) leaves at once, before the next read.
    """
    mono_minus_real = time.monotonic() - time.time()
    for n in range(_BATCH):
        try:
            frame, anc, _flags, addr = sock.recvmsg(65_536, _ANC_SPACE)
        except BlockingIOError:
            return n
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        arrived = time.monotonic()
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                arrived = min(arrived, sec + nsec / 1e9 + mono_minus_real)
        if lane.admit(frame, arrived) and lane.next_release() <= time.monotonic():  # type: ignore[operator]
            _release(lane, out)
    return _BATCH


def _release(lane: Lane, out: socket.socket) -> int:
    frames = lane.pop_due(time.monotonic())
    for frame in frames:
        try:
            out.send(frame)
            lane.stats.forwarded += 1
        except OSError:  # the peer's backlog is full (ENOBUFS/EAGAIN): the frame is lost, as on a busy link
            lane.stats.send_errors += 1
    return len(frames)


def _timeout(lanes: tuple[Lane, Lane], busy_until: float) -> float | None:
    """How long select may sleep: 0 while spinning, else until _SPIN_S before the next frame is due."""
    now = time.monotonic()
    if now < busy_until:
        return 0.0
    due = [t for t in (lane.next_release() for lane in lanes) if t is not None]
    return max(0.0, min(due) - now - _SPIN_S) if due else None


def forward(config: ForwarderConfig, wake_fd: int, stopping: list[bool]) -> dict[str, LaneStats]:
    """Forward frames between the two interfaces until ``stopping[0]`` is set; return each lane's counters.

    ``wake_fd`` becomes readable when a signal arrives (``signal.set_wakeup_fd``), so ``select`` returns.
    """
    d = config.path.one_way()
    a, b = open_port(config.iface_a), open_port(config.iface_b)
    ab, ba = Lane(d, config.seed * 2, config.caps), Lane(d, config.seed * 2 + 1, config.caps)
    routes = {a.fileno(): (a, ab, b), b.fileno(): (b, ba, a)}
    fds, busy_until = [a.fileno(), b.fileno(), wake_fd], 0.0
    log.info("forwarding %s <-> %s: %s, seed %s", config.iface_a, config.iface_b, config.path, config.seed)
    try:
        while not stopping[0]:
            # select, not epoll or poll: their timeouts are whole milliseconds, select's are microseconds
            ready, _, _ = select.select(fds, [], [], _timeout((ab, ba), busy_until))
            moved = 0
            for fd in ready:
                if fd == wake_fd:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_fd, 512)
                else:
                    moved += _drain(*routes[fd])
            moved += _release(ab, b) + _release(ba, a)
            if moved:  # an answer to what we just forwarded often follows within µs: catch it without a wake-up
                busy_until = time.monotonic() + _SPIN_S
    finally:
        a.close()
        b.close()
    return {"a_to_b": ab.stats, "b_to_a": ba.stats}


_NICE = -15  # as sound servers run: above every tool of the lab (nice 0), below the kernel's own threads


def _fine_timers() -> None:
    """Ask for 1 µs timer slack instead of 50 µs, so that a lane's frames leave when due (lan: 0.5 ms), and a
    high priority, so that on a machine busy with the lab's own tools the forwarder wakes when a frame is due
    rather than when the scheduler gets round to it (at nice 0 a lan RTT of 1 ms measured 1.3 ms at load 4)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1_000, 0, 0, 0)
    with contextlib.suppress(OSError):  # root only; without it the forwarder still runs, later under load
        os.setpriority(os.PRIO_PROCESS, 0, _NICE)


def serve(config: ForwarderConfig, out: IO[str]) -> dict[str, object]:
    """Run :func:`forward` until SIGTERM or SIGINT, then write the counters as one JSON line to ``out``."""
    stopping = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping[0] = True

    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    _fine_timers()
    set_offload(config.iface_a, False)
    set_offload(config.iface_b, False)
    lanes = forward(config, rfd, stopping)
    report: dict[str, object] = {
        key: sum(getattr(s, key) for s in lanes.values()) for key in ("forwarded", "lost", "capped", "send_errors")
    }
    report.update({name: asdict(s) for name, s in lanes.items()})
    out.write(json.dumps(report) + "\n")
    out.flush()
    return report
