"""Two network namespaces joined by a veth pair: a private wire for live-capture tests and traffic.

:func:`ns_pair` builds a *client* and a *server* namespace, each holding one end of a veth pair with an
address of our own choosing (10.211.0.1/24 and 10.211.0.2/24 by default). The veth is created directly
inside the namespaces (``ip -n``), so nothing ever appears in the root namespace and the addresses exist
only on this wire. Commands run inside a namespace with ``ip netns exec``; background servers are
:class:`subprocess.Popen` objects stopped by their PID. Leaving the context stops every process still in
either namespace (only processes we started can be in a namespace whose name carries our PID), then
deletes both namespaces, which deletes the veth pair.

Two choices make the wire look like a real link to a sensor:

* IPv6 is disabled in both namespaces, so no router solicitation or MLD report appears on a quiet link.
* ``gso_max_segs 1`` on both ends: veth passes TSO super-frames (up to 64 KiB) straight to packet
  sockets, so a capture would see one 64 KiB "packet" where a NIC sends 45 frames; one segment per
  skb makes every captured frame at most MTU-sized, as on a wire.

:mod:`lab.netns_trio` builds three namespaces on a bridge from the same helpers.

Example
-------
>>> PairConfig().client_ip, PairConfig().server_ip
('10.211.0.1', '10.211.0.2')
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)

Result = subprocess.CompletedProcess[str]

_SEQ = itertools.count()  # with the PID, names stay unique across processes and across uses in one process


class NetnsError(TapwatchError):
    """A command run to build or use a namespace failed.

    Parameters
    ----------
    argv
        The command.
    returncode
        Its exit status.
    stderr
        What it wrote on standard error (stripped).
    """

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(self.argv)!r} exited with {returncode}: {self.stderr}")


@dataclass(frozen=True)
class Endpoint:
    """One end of the wire: its namespace, interface and address."""

    netns: str
    iface: str
    ip: str
    prefix: int = 24

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefix}"


@dataclass(frozen=True)
class PairConfig:
    """How :func:`create_pair` builds the wire.

    Parameters
    ----------
    client_ip, server_ip, prefix
        Addresses of the two ends; they exist only inside the namespaces.
    tag
        Prefix of namespace and interface names (keep it short: interface names have 15 characters).
    one_segment_per_frame
        Set ``gso_max_segs 1`` on both ends (see the module docstring).
    disable_ipv6
        Disable IPv6 in both namespaces so that a quiet link carries no packet at all.
    """

    client_ip: str = "10.211.0.1"
    server_ip: str = "10.211.0.2"
    prefix: int = 24
    tag: str = "tw"
    one_segment_per_frame: bool = True
    disable_ipv6: bool = True


@dataclass
class NsPair:
    """Two namespaces joined by a veth pair, and the background processes started in them.

    Example
    -------
    >>> with ns_pair() as pair:  # doctest: +SKIP
    ...     server = pair.start(pair.server, ["busybox", "httpd", "-f", "-p", "8080"])
    ...     pair.run(pair.client, ["curl", "-s", f"http://{pair.server.ip}:8080/"])
    """

    client: Endpoint
    server: Endpoint
    procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def run(self, end: Endpoint, argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> Result:
        """Run ``argv`` in ``end``'s namespace and wait for it; see :func:`run_in`."""
        return run_in(end.netns, argv, timeout=timeout, check=check)

    def start(self, end: Endpoint, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``end``'s namespace in the background; it is stopped at teardown."""
        proc = start_in(end.netns, argv, **popen)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
        """Stop one process started by :meth:`start` (SIGTERM, then SIGKILL); return its exit status."""
        code = stop_process(proc, timeout)
        if proc in self.procs:
            self.procs.remove(proc)
        return code


def _ip(*args: str, timeout: float = 30.0) -> Result:
    argv = ["ip", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetnsError(argv, -1, str(err)) from err
    if done.returncode != 0:
        raise NetnsError(argv, done.returncode, done.stderr)
    return done


def netns_problem() -> str | None:
    """Why network namespaces cannot be used here, in words for a skip message; None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and veth pairs"
    if shutil.which("ip") is None:
        return "the iproute2 'ip' command is not installed"
    probe = f"tw-probe-{os.getpid()}-{next(_SEQ)}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as err:
        return f"'ip netns add' does not work here: {err.stderr or err}"
    try:
        _ip("netns", "exec", probe, "ip", "link", "show", "lo")
    except NetnsError as err:
        return f"'ip netns exec' does not work here: {err.stderr or err}"
    finally:
        with contextlib.suppress(NetnsError):
            _ip("netns", "delete", probe)
    return None


def run_in(
    netns: str, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, stdin: str | None = None
) -> Result:
    """Run ``argv`` inside ``netns`` and return its output (text); raise :class:`NetnsError` if it fails."""
    full = ["ip", "netns", "exec", netns, *argv]
    try:
        done = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise NetnsError(full, -1, f"timed out after {timeout} s") from err
    if check and done.returncode != 0:
        raise NetnsError(full, done.returncode, done.stderr)
    return done


def start_in(netns: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` inside ``netns`` without waiting; ``popen`` goes to :class:`subprocess.Popen`.

    ``ip netns exec`` execs the command in place, so the returned PID is the command's own. Standard
    streams default to ``/dev/null``.
    """
    for stream in ("stdin", "stdout", "stderr"):
        popen.setdefault(stream, subprocess.DEVNULL)
    proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", netns, *argv], **popen)
    log.debug("netns %s: started pid %s: %s", netns, proc.pid, " ".join(argv))
    return proc


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
    """Stop a process we started, by its PID: SIGTERM, wait ``timeout`` s, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %s ignored SIGTERM for %s s; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


def wait_listening(end: Endpoint, proto: str, port: int, timeout: float = 10.0) -> None:
    """Wait until a socket listens on ``port`` (``proto`` "tcp" or "udp") in ``end``'s namespace."""
    flag = {"tcp": "-Hltn", "udp": "-Hlun"}[proto]
    deadline = time.monotonic() + timeout
    while True:
        out = run_in(end.netns, ["ss", flag, f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        if time.monotonic() > deadline:
            raise NetnsError(["ss", flag], -1, f"nothing listens on {proto}/{port} in {end.netns} after {timeout} s")
        time.sleep(0.05)


def _names(tag: str) -> tuple[str, str, str, str]:
    """Namespace and interface names, unique per process and per use (interface names ≤ 15 characters)."""
    uid = f"{os.getpid():x}{next(_SEQ):x}"
    return f"{tag}-{uid}-client", f"{tag}-{uid}-server", f"{tag}{uid}c"[:15], f"{tag}{uid}s"[:15]


def _prepare_netns(name: str, config: PairConfig) -> None:
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    if config.disable_ipv6:  # before the veth exists, so that "default" applies to it too
        keys = ("all", "default")
        run_in(name, ["sysctl", "-qw", *(f"net.ipv6.conf.{k}.disable_ipv6=1" for k in keys)])


def create_pair(config: PairConfig | None = None) -> NsPair:
    """Build the two namespaces and the veth pair; on failure delete whatever was built and raise."""
    config = config or PairConfig()
    cns, sns, cif, sif = _names(config.tag)
    client = Endpoint(cns, cif, config.client_ip, config.prefix)
    server = Endpoint(sns, sif, config.server_ip, config.prefix)
    pair = NsPair(client, server)
    gso = ["gso_max_segs", "1"] if config.one_segment_per_frame else []
    try:
        for end in (client, server):
            _prepare_netns(end.netns, config)
        _ip("-n", cns, "link", "add", cif, *gso, "type", "veth", "peer", "name", sif, *gso, "netns", sns)
        for end in (client, server):
            _ip("-n", end.netns, "addr", "add", end.cidr, "dev", end.iface)
            _ip("-n", end.netns, "link", "set", end.iface, "up")
    except BaseException:
        delete_pair(pair)
        raise
    log.info("netns pair %s (%s) <-> %s (%s)", cns, client.cidr, sns, server.cidr)
    return pair


def _pids_in(netns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def _kill_leftovers(netns: str, grace_s: float = 3.0) -> None:
    """Stop processes still inside ``netns`` (children of ours, such as a daemon's workers), by PID."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_in(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while _pids_in(netns) and time.monotonic() < deadline:
            time.sleep(0.05)


def delete_pair(pair: NsPair) -> None:
    """Stop the pair's processes, then delete both namespaces (the veth pair goes with them)."""
    _delete(pair, (pair.client, pair.server))


def _delete(owner: NsPair, ends: Sequence[Endpoint]) -> None:
    """Stop the processes started through ``owner``, then delete the namespaces of ``ends``."""
    for proc in list(owner.procs):
        owner.stop(proc)
    for end in ends:
        if not os.path.exists(f"/run/netns/{end.netns}"):
            continue
        _kill_leftovers(end.netns)
        try:
            _ip("netns", "delete", end.netns)
        except NetnsError as err:
            log.warning("netns %s: could not delete: %s", end.netns, err)


@contextlib.contextmanager
def ns_pair(config: PairConfig | None = None) -> Iterator[NsPair]:
    """Two namespaces joined by a veth pair for the duration of a ``with`` block; see :class:`NsPair`."""
    pair = create_pair(config)
    try:
        yield pair
    finally:
        delete_pair(pair)
