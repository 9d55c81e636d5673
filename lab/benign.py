"""The benign traffic of the lab: one client host runs its planned sessions against the run's services.

:func:`run_client` runs a client's :class:`~lab.benign_plan.Session` list (from
:func:`~lab.benign_plan.plan_client`) at their offsets in the client's namespace, with real tools (curl,
wget, dig, ssh, scp, swaks, chronyd, busybox ping and :mod:`lab.benign_agent`'s Python clients; see
:data:`TOOLS`), until the plan is done or ``stop`` is set. Sessions overlap (an idle connection stays open
while pages load) in a small pool of threads. A session that fails is logged and counted and the client
goes on; every command has a timeout. :class:`ClientStats` counts the sessions of each activity that ended
well, failed, or were cut when the run ended.

A scenario runner starts one thread per client host::

    services = ...  # lab.services
    stop = threading.Event()
    plan = plan_client(OFFICE_MIX, random.Random(seed), duration_s)
    thread = threading.Thread(target=run_client, args=(topo, topo.host("c1"), services, plan, stop, workdir))

Example
-------
>>> stats = ClientStats("c1")
>>> stats.add(Activity.DNS, Outcome.OK); stats.add(Activity.DNS, Outcome.FAILED)
>>> stats.ok[Activity.DNS], stats.failed[Activity.DNS], stats.total
(1, 1, 2)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from lab.benign_argv import TOOLS, Context, Step, describe, secret_files, steps
from lab.benign_plan import OFFICE_MIX, Activity, Mix, Session, plan_client
from lab.episodes import ServiceMap
from lab.topo_plan import Host, LabError, Role
from lab.topology import Topology

log = logging.getLogger(__name__)

__all__ = ["OFFICE_MIX", "TOOLS", "Activity", "ClientStats", "Mix", "Outcome", "Session", "plan_client",
           "run_client"]  # fmt: skip

POOL = 6
"""Sessions one client runs at once: an idle connection or two, an SSH session and a few quick ones. More would
let a slow server pile up processes on the lab's shared cores; a session waits for a free slot instead."""
REPO = Path(__file__).resolve().parents[1]  # where ``python -m lab.benign_agent`` finds ``lab``
_GRACE_S = 3.0  # after SIGTERM, before SIGKILL


class Outcome(str, Enum):
    OK = "ok"
    FAILED = "failed"  # a command exited non-zero, timed out, or a service it needs is missing
    CUT = "cut"  # the run ended while it ran


@dataclass
class ClientStats:
    """What one client's sessions did: counts per activity, and how many planned sessions never started."""

    client: str
    ok: Counter[Activity] = field(default_factory=Counter)
    failed: Counter[Activity] = field(default_factory=Counter)
    cut: Counter[Activity] = field(default_factory=Counter)
    skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, activity: Activity, outcome: Outcome) -> None:
        with self._lock:
            {Outcome.OK: self.ok, Outcome.FAILED: self.failed, Outcome.CUT: self.cut}[outcome][activity] += 1

    @property
    def total(self) -> int:
        return sum(self.ok.values()) + sum(self.failed.values()) + sum(self.cut.values())

    def rows(self) -> list[dict[str, object]]:
        """One row per activity seen: ``client, activity, ok, failed, cut`` (for a run's report)."""
        seen = sorted(set(self.ok) | set(self.failed) | set(self.cut), key=lambda a: a.value)
        return [{"client": self.client, "activity": a.value, "ok": self.ok[a], "failed": self.failed[a],
                 "cut": self.cut[a]} for a in seen]  # fmt: skip


def prepare_workdir(workdir: Path, services: ServiceMap) -> None:
    """The client's folder with its secret files (curl's netrc, the app's login form), readable by root only."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    for name, text in secret_files(services).items():
        path = workdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)


def _materialise(step: Step) -> None:
    """Create the files a step reads: random bytes to upload, and its small text files."""
    for path, size in step.make:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            for start in range(0, size, 1 << 20):
                fh.write(os.urandom(min(1 << 20, size - start)))
    for path, text in step.texts:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process we started and what it started (sshpass's ssh): its own session, by its PID."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _end(topo: Topology, proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
    topo.stop(proc)  # reaps it and drops it from the lab's list


def _feed(proc: subprocess.Popen[Any], step: Step, stop: threading.Event) -> None:
    """Type the step's input with its pauses, then close standard input (an SSH session's ``exit``)."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError):
        for pause, text in step.feed:
            if stop.wait(pause) or proc.poll() is not None:
                break
            proc.stdin.write(text.encode())
            proc.stdin.flush()
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.close()


def _wait(topo: Topology, proc: subprocess.Popen[Any], step: Step, stop: threading.Event) -> Outcome:
    deadline = time.monotonic() + step.timeout_s
    while proc.poll() is None:
        if stop.is_set():
            _end(topo, proc)
            return Outcome.OK if step.soft_stop and proc.returncode == 0 else Outcome.CUT
        if time.monotonic() > deadline:
            _end(topo, proc)
            raise LabError(f"timed out after {step.timeout_s:.0f} s")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)
    topo.stop(proc)
    if proc.returncode != 0:
        return Outcome.FAILED
    if step.expect is not None and step.expect[1] not in _read(step.expect[0]):
        raise LabError(f"{step.expect[0].name} does not say {step.expect[1]!r}")
    return Outcome.OK


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_step(topo: Topology, client: Host, step: Step, stop: threading.Event, secret: str, err: IO[bytes]) -> Outcome:
    """Run one command in the client's namespace and wait for it (or for its timeout, or the end of the run).

    ``secret`` goes into ``SSHPASS`` of a step that asks for it, and into no other environment.
    """
    _materialise(step)
    env = {k: v for k, v in os.environ.items() if k != "SSHPASS"}
    if step.secret_env:
        env["SSHPASS"] = secret
    proc = topo.start_in(client, step.argv, env=env, cwd=str(REPO) if step.agent else None, stderr=err,
                         stdin=subprocess.PIPE if step.feed else subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    if step.feed:
        _feed(proc, step, stop)
    return _wait(topo, proc, step, stop)


def _session(topo: Topology, ctx: Context, session: Session, stop: threading.Event, stats: ClientStats) -> None:
    """Run one session's steps in order; a failure ends the session, is counted and logged, never raised."""
    outcome, where = Outcome.OK, ""
    folder = ctx.session_dir(session)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as err:
            for step in steps(session, ctx):
                where = describe(step)
                outcome = run_step(topo, ctx.client, step, stop, ctx.services.login.password, err)
                if outcome is not Outcome.OK:
                    break
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
    except (LabError, OSError) as error:
        outcome, text = Outcome.FAILED, str(error)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    stats.add(session.activity, outcome)
    if outcome is Outcome.FAILED:
        log.warning("benign %s: session %s (%s) failed: %s: %s", ctx.client.name, session.index,
                    session.activity.value, where, text[-300:])  # fmt: skip


def _slot(slots: threading.Semaphore, stop: threading.Event) -> bool:
    """Wait for a free slot of the pool; False when the run ends first."""
    while not slots.acquire(timeout=0.2):
        if stop.is_set():
            return False
    return True


def run_client(topo: Topology, client: Host, services: ServiceMap, sessions: list[Session], stop: threading.Event,
               workdir: Path) -> ClientStats:  # fmt: skip
    """Run ``sessions`` at their offsets from now in ``client``'s namespace until they are done or ``stop`` is set.

    Parameters
    ----------
    topo
        The lab.
    client
        The client host.
    services
        Where the run's services listen and its accounts.
    sessions
        The plan (:func:`~lab.benign_plan.plan_client`), in order of offset.
    stop
        Set when the run ends: nothing new starts and running commands are ended (SIGTERM, then SIGKILL).
    workdir
        The client's own folder (secret files, per-session files); it is left in place, emptied of sessions.
    """
    prepare_workdir(workdir, services)
    peers = tuple(h for h in (*topo.by_role(Role.SERVER), *topo.by_role(Role.CLIENT)) if h != client)
    ctx, stats = Context(services, client, peers, workdir), ClientStats(client.name)
    slots, start = threading.Semaphore(POOL), time.monotonic()
    log.info("benign %s: %s sessions planned", client.name, len(sessions))
    with ThreadPoolExecutor(POOL, thread_name_prefix=f"benign-{client.name}") as pool:
        for n, session in enumerate(sessions):
            if stop.wait(max(0.0, start + session.offset_s - time.monotonic())) or not _slot(slots, stop):
                stats.skipped = len(sessions) - n
                break
            pool.submit(_guarded, topo, ctx, session, stop, stats, slots)
    log.info("benign %s: %s sessions ran (%s failed, %s cut), %s not started", client.name, stats.total,
             sum(stats.failed.values()), sum(stats.cut.values()), stats.skipped)  # fmt: skip
    return stats


def _guarded(topo: Topology, ctx: Context, session: Session, stop: threading.Event, stats: ClientStats,
             slots: threading.Semaphore) -> None:  # fmt: skip
    try:
        _session(topo, ctx, session, stop, stats)
    except Exception:  # a bug here must not end the client's other sessions silently
        log.exception("benign %s: session %s crashed", ctx.client.name, session.index)
        stats.add(session.activity, Outcome.FAILED)
    finally:
        slots.release()
