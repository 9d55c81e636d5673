"""The benign traffic of one lab client, planned ahead: a seeded schedule of sessions of office activities.

A :class:`Mix` says how often each :class:`Activity` happens, how long a client thinks between sessions,
how busy the run is (``pace``), which share goes over IPv6 and how often a page load keeps its connection
alive. :func:`plan_client` turns a mix and a seeded :class:`random.Random` into the client's
:class:`Session` list for a run: when each session starts, what it does and with which parameters (which
names, objects, sizes, commands, IP version). It does no I/O; the same seed gives the same schedule.
:mod:`lab.benign_argv` makes the commands of a session and :mod:`lab.benign` runs them in the lab.

:data:`OFFICE_MIX`, the default, is a small office's day compressed: CIC-IDS2017's benign flows are mostly
DNS and HTTPS, so a third of the sessions are DNS lookups (1-6 names, a few of them missing) and a quarter
HTTPS page loads (the index and 10-40 objects); then plain HTTP page loads (8 %), small API calls to the
web app (10 %), and 3 % each of downloads, uploads, app logins, NTP queries, mails and pings; SSH
interactive sessions, scp transfers, FTP transfers and long-lived idle connections are 2 % each. A client
starts a session every 1.25 s on average (lognormal think time, sigma 1: many quick successions, a few
long pauses), 30 % of the sessions go over IPv6, and 80 % of page loads keep their connection alive
(the rest open one connection per object, as an old client with ``Connection: close``). That makes about
2-5 flows per second per client at ``pace`` 1; ``pace`` 4 divides the think time by 4.

Example
-------
>>> plan = plan_client(OFFICE_MIX, random.Random(7), 60.0)
>>> plan == plan_client(OFFICE_MIX, random.Random(7), 60.0), all(0 <= s.offset_s < 60 for s in plan)
(True, True)
>>> plan[0].activity in OFFICE_MIX.weights
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from lab.topo_plan import LabError


class Activity(str, Enum):
    """What a benign session does (see :mod:`lab.benign_argv` for the tools)."""

    DNS = "dns"  # dig against the lab resolver, A and AAAA, a few missing names
    HTTPS_PAGE = "https_page"  # the index and its objects over TLS
    HTTP_PAGE = "http_page"  # the same over plain HTTP
    API = "api"  # small JSON calls to the web app
    DOWNLOAD = "download"  # a large file, sometimes at a limited rate
    UPLOAD = "upload"  # a generated file posted to the web app
    LOGIN = "login"  # the web app's login form with the right credentials, then a few pages
    NTP = "ntp"  # time queries that never set the clock
    SSH = "ssh"  # an interactive session: a few commands with pauses
    SCP = "scp"  # a file up and back down over ssh
    FTP = "ftp"  # a file up and back down over FTP
    SMTP = "smtp"  # a mail to the lab's SMTP sink
    PING = "ping"  # a few ICMP echoes to another lab host
    IDLE = "idle"  # a connection held open for a long time with rare keep-alives


class Think(str, Enum):
    """The distribution of the time between two session starts of one client."""

    LOGNORMAL = "lognormal"  # bursts and long pauses, as people work
    EXPONENTIAL = "exponential"  # a Poisson process


@dataclass(frozen=True)
class Mix:
    """How a benign client behaves: what it does how often, and how fast.

    Parameters
    ----------
    weights
        ``activity -> weight`` (any positive scale); an activity left out never happens.
    think
        The distribution of the time between session starts (:class:`Think`).
    think_mean_s
        Its mean at ``pace`` 1, seconds.
    think_sigma
        The lognormal's shape (larger: burstier); unused for the exponential.
    pace
        Divides the think time: 2 makes a run twice as busy.
    ipv6_share
        Share of sessions over IPv6 (0..1).
    keepalive
        Share of page loads that keep one connection alive for their objects (the rest close it per object).
    idle_hold_s
        Range of how long an idle connection is held.
    ssh_pause_s
        Range of the pause between two commands of an SSH session.

    Example
    -------
    >>> Mix(weights={Activity.DNS: 1.0}, pace=2.0).mean_think_s
    0.625
    """

    weights: Mapping[Activity, float]
    think: Think = Think.LOGNORMAL
    think_mean_s: float = 1.25
    think_sigma: float = 1.0
    pace: float = 1.0
    ipv6_share: float = 0.3
    keepalive: float = 0.8
    idle_hold_s: tuple[float, float] = (30.0, 120.0)
    ssh_pause_s: tuple[float, float] = (0.5, 8.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", MappingProxyType({Activity(a): float(w) for a, w in self.weights.items()}))
        if not self.weights or min(self.weights.values()) <= 0:
            raise LabError("mix weights must be a non-empty map of positive numbers")
        if self.think_mean_s <= 0 or self.pace <= 0 or self.think_sigma < 0:
            raise LabError(f"mix think time must be positive, got mean {self.think_mean_s} s at pace {self.pace}")
        if not (0 <= self.ipv6_share <= 1 and 0 <= self.keepalive <= 1):
            raise LabError(f"mix shares must be in 0..1, got ipv6 {self.ipv6_share}, keepalive {self.keepalive}")
        for name, (low, high) in (("idle_hold_s", self.idle_hold_s), ("ssh_pause_s", self.ssh_pause_s)):
            if not 0 <= low <= high:
                raise LabError(f"mix {name} must be a range low <= high of seconds, got {low}..{high}")

    @property
    def mean_think_s(self) -> float:
        return self.think_mean_s / self.pace

    def shares(self) -> dict[Activity, float]:
        """Each activity's share of the sessions (the weights normalised)."""
        total = sum(self.weights.values())
        return {a: w / total for a, w in self.weights.items()}


OFFICE_MIX = Mix(weights={Activity.DNS: 34, Activity.HTTPS_PAGE: 22, Activity.HTTP_PAGE: 8, Activity.API: 10,
                          Activity.DOWNLOAD: 3, Activity.UPLOAD: 3, Activity.LOGIN: 3, Activity.NTP: 3,
                          Activity.SSH: 2, Activity.SCP: 2, Activity.FTP: 2, Activity.SMTP: 3, Activity.PING: 3,
                          Activity.IDLE: 2})  # fmt: skip
"""A small office (see the module docstring): mostly DNS and HTTPS page loads."""


@dataclass(frozen=True)
class Session:
    """One benign session of a client: when it starts, what it does, and its parameters.

    Parameters
    ----------
    index
        Its number in the client's plan.
    offset_s
        When it starts, seconds after the client starts.
    activity
        What it does.
    family
        IP version, 4 or 6.
    variant
        Which tool or way (``curl``, ``curl-parallel``, ``curl-close``, ``wget``, ``python``, ``dig``,
        ``swaks``, ``sntp``, ``chronyd``, ``interactive``, ``command``, ``http``, ``ssh``...).
    picks
        Choices among what the run's services offer, uniform in ``0..PICK`` and mapped onto the options at run
        time (:data:`PICK`): names for DNS, the page and its objects, the download, the ping target.
    words
        Literal parameters: query types for DNS, URL paths for API and login, commands for SSH.
    count
        Missing names (DNS), requests (NTP), pings (PING), recipients (SMTP).
    size
        Bytes: upload, scp, FTP and mail sizes, the ping payload, a download's rate limit (0: none).
    pauses
        Seconds: between SSH commands; ``(hold, every)`` for an idle connection.
    token
        Random hex that makes file names, missing names and mail subjects of the session unique.
    """

    index: int
    offset_s: float
    activity: Activity
    family: int
    variant: str
    picks: tuple[int, ...] = ()
    words: tuple[str, ...] = ()
    count: int = 0
    size: int = 0
    pauses: tuple[float, ...] = ()
    token: str = field(default="")


SSH_COMMANDS = ("uptime", "ls -la", "df -h", "cat /etc/os-release", "ps aux | head -20", "date", "id", "free -m",
                "uname -a", "echo $HOME", "ls -la /tmp", "cat /proc/loadavg", "who", "env | sort | head")  # fmt: skip
"""What a user types in an SSH session (read-only commands)."""
PAGE_VARIANTS = (("curl", 5), ("curl-parallel", 3), ("wget", 1), ("python", 2))
"""Ways of a keep-alive page load, weighted; a page load without keep-alive is ``curl-close``."""
PICK = 1 << 30
"""Picks are uniform in ``0..PICK``; a list of n options maps pick p to option ``p * n // PICK``."""


def _between(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 3)


def _log_size(rng: random.Random, low: int, high: int) -> int:
    """A size between ``low`` and ``high`` bytes, uniform on a log scale (many small, few large)."""
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _weighted(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _picks(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(PICK) for _ in range(n))


def _page(rng: random.Random, mix: Mix) -> dict[str, object]:
    variant = _weighted(rng, PAGE_VARIANTS) if rng.random() < mix.keepalive else "curl-close"
    return {"variant": variant, "picks": _picks(rng, rng.randint(11, 41))}  # the page, then 10-40 objects


def _api(rng: random.Random) -> dict[str, object]:
    paths = tuple("/api/status" if rng.random() < 0.25 else f"/api/items?id={rng.randint(1, 100)}"
                  for _ in range(rng.randint(1, 8)))  # fmt: skip
    return {"variant": _weighted(rng, (("curl", 3), ("python", 2))), "words": paths}


def _params(activity: Activity, rng: random.Random, mix: Mix) -> dict[str, object]:
    """The parameters of one session of ``activity`` (the fields of :class:`Session` after ``family``)."""
    if activity is Activity.DNS:
        n = rng.randint(1, 6)
        return {"variant": "dig", "picks": _picks(rng, n), "words": tuple(rng.choice(("A", "A", "AAAA")) for _ in
                range(n)), "count": int(rng.random() < 0.15) + int(rng.random() < 0.05)}  # fmt: skip
    if activity in (Activity.HTTPS_PAGE, Activity.HTTP_PAGE):
        return _page(rng, mix)
    if activity is Activity.API:
        return _api(rng)
    if activity is Activity.DOWNLOAD:
        rate = 0 if rng.random() < 0.5 else _log_size(rng, 500_000, 20_000_000)
        small_first = (min(_picks(rng, 2)),)  # downloads are listed smallest first: big ones are rarer
        return {"variant": _weighted(rng, (("curl", 2), ("curl-https", 2), ("wget", 1))), "picks": small_first,
                "size": rate}  # fmt: skip
    if activity is Activity.UPLOAD:
        return {"variant": _weighted(rng, (("curl", 3), ("python", 1))), "size": _log_size(rng, 2_000, 4_000_000)}
    if activity is Activity.LOGIN:
        after = ("/", "/api/status", "/api/items?id=1", "/search?q=report")
        return {"variant": "curl", "words": tuple(rng.sample(after, rng.randint(1, 3)))}
    if activity is Activity.NTP:
        return {"variant": _weighted(rng, (("sntp", 4), ("chronyd", 1))), "count": rng.randint(1, 4)}
    if activity is Activity.SSH:
        n = rng.randint(2, 6)
        return {"variant": _weighted(rng, (("interactive", 4), ("command", 1))),
                "words": tuple(rng.sample(SSH_COMMANDS, n)), "pauses": tuple(_between(rng, *mix.ssh_pause_s)
                                                                            for _ in range(n))}  # fmt: skip
    if activity in (Activity.SCP, Activity.FTP):
        return {"variant": "scp" if activity is Activity.SCP else "curl", "size": _log_size(rng, 1_000, 3_000_000)}
    if activity is Activity.SMTP:
        return {"variant": _weighted(rng, (("swaks", 1), ("curl", 1))), "count": rng.randint(1, 3),
                "size": _log_size(rng, 200, 200_000)}  # fmt: skip
    if activity is Activity.PING:
        return {"variant": "busybox", "picks": _picks(rng, 1), "count": rng.randint(1, 5),
                "size": rng.choice((56, 56, 56, 120, 1000))}  # fmt: skip
    hold = _between(rng, *mix.idle_hold_s)
    every = _between(rng, hold / 6, min(hold / 2, 50.0))  # under nginx's keep-alive timeout (65 s)
    return {"variant": _weighted(rng, (("http", 3), ("ssh", 1))), "pauses": (hold, every)}


def _think(mix: Mix, rng: random.Random) -> float:
    """The time to the next session start; the lognormal's mu is set so that its mean is the mix's."""
    if mix.think is Think.EXPONENTIAL:
        return rng.expovariate(1.0 / mix.mean_think_s)
    sigma = mix.think_sigma
    return rng.lognormvariate(math.log(mix.mean_think_s) - sigma * sigma / 2, sigma)


def plan_client(mix: Mix, rng: random.Random, duration_s: float) -> list[Session]:
    """The sessions one client starts in ``duration_s`` seconds, in order of their start offset.

    Pure: everything random comes from ``rng``, so the same seed gives the same plan. The first session
    starts within one think time of the start.
    """
    if duration_s <= 0:
        raise LabError(f"benign plan duration must be positive, got {duration_s} s")
    activities, weights = list(mix.weights), list(mix.weights.values())
    sessions: list[Session] = []
    offset = rng.uniform(0, mix.mean_think_s)
    while offset < duration_s:
        activity = rng.choices(activities, weights=weights)[0]
        family = 6 if rng.random() < mix.ipv6_share else 4
        params = _params(activity, rng, mix)
        token = f"{rng.getrandbits(32):08x}"
        sessions.append(Session(len(sessions), round(offset, 3), activity, family, token=token, **params))  # type: ignore[arg-type]
        offset += _think(mix, rng)
    return sessions
