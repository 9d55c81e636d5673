"""The lab's labels: families, episodes and their CSV, and where each service of a run listens.

An :class:`Episode` is one thing that happened in a scenario run: an attack (a tool run from an attacker
host against victims, from ``start`` to ``end``) or the benign traffic of one host for the whole run. A run
writes them to ``episodes.csv`` (:func:`write_episodes`); :mod:`lab.labels` gives each flow the episode it
belongs to. :class:`ServiceMap` is the contract between the lab's servers (:mod:`lab.services`) and what
talks to them (:mod:`lab.benign`, :mod:`lab.attacks`): which host and port serves what, and the throwaway
credentials of the run.

Example
-------
>>> ep = Episode("e003", Family.SCAN, "nmap", "nmap -sS -p 1-1024 10.213.3.2", ("10.213.5.2",),
...              ("10.213.3.2",), 100.0, 130.5, cic_class="PortScan")
>>> ep.row()["victims"], ep.row()["family"], ep.duration_s
('10.213.3.2', 'scan', 30.5)
>>> Episode.from_row(ep.row()) == ep
True
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from lab.topo_plan import Host, LabError


class Family(str, Enum):
    """What an operator calls a kind of traffic; every flow of the lab gets one."""

    BENIGN = "benign"
    SCAN = "scan"
    DOS = "dos"  # floods and slow attacks
    BRUTEFORCE = "bruteforce"  # password guessing
    WEBATTACK = "webattack"  # SQL injection, web login brute force
    BOTNET = "botnet"  # C2-like beaconing


EPISODE_COLUMNS = ("episode_id", "family", "cic_class", "tool", "attacker", "victims", "start", "end", "spoofed",
                   "link_profile", "command")  # fmt: skip


@dataclass(frozen=True)
class Episode:
    """One labelled stretch of a run.

    Parameters
    ----------
    episode_id
        Unique in the run (``e001``..., benign episodes ``b-c1``...).
    family
        The :class:`Family`.
    tool
        What made the traffic (``nmap``, ``hping3``, ``curl``...; ``mix`` for a benign host's whole mix).
    command
        The command line as run (shell-quoted), or a description for a benign mix.
    attacker
        Addresses of the host that acts (both IP versions): the attacker, the bot, or the benign client.
    victims
        Addresses of the hosts acted on (both IP versions of each); empty for a benign episode.
    start, end
        Epoch seconds (the capture's clock; namespaces share the host's clock).
    cic_class
        The closest CIC-IDS2017 label (``PortScan``, ``DoS Hulk``...), ``BENIGN`` for benign, "" when none fits.
    spoofed
        The attacker's packets carry random source addresses outside the lab (hping3 ``--rand-source``).
    link_profile
        The path profile of the attacker's (or client's) link: ``none``, ``lan``, ``wan``, ``lossy``.
    """

    episode_id: str
    family: Family
    tool: str
    command: str
    attacker: tuple[str, ...]
    victims: tuple[str, ...]
    start: float
    end: float
    cic_class: str = ""
    spoofed: bool = False
    link_profile: str = "none"

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise LabError(f"episode {self.episode_id} ends before it starts ({self.end} < {self.start})")

    @property
    def duration_s(self) -> float:
        return round(self.end - self.start, 6)

    def row(self) -> dict[str, str]:
        return {"episode_id": self.episode_id, "family": self.family.value, "cic_class": self.cic_class,
                "tool": self.tool, "attacker": " ".join(self.attacker), "victims": " ".join(self.victims),
                "start": f"{self.start:.6f}", "end": f"{self.end:.6f}", "spoofed": str(int(self.spoofed)),
                "link_profile": self.link_profile, "command": self.command}  # fmt: skip

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> Episode:
        try:
            return cls(row["episode_id"], Family(row["family"]), row["tool"], row["command"],
                       tuple(row["attacker"].split()), tuple(row["victims"].split()), float(row["start"]),
                       float(row["end"]), row["cic_class"], row["spoofed"] == "1", row["link_profile"])  # fmt: skip
        except (KeyError, ValueError) as err:
            raise LabError(f"episode row {dict(row)} is not valid: {err}") from err


def write_episodes(episodes: Iterable[Episode], path: Path) -> None:
    """Write ``episodes.csv`` (columns :data:`EPISODE_COLUMNS`), ordered by start."""
    with Path(path).open("w", newline="") as fh:
        out = csv.DictWriter(fh, EPISODE_COLUMNS)
        out.writeheader()
        for ep in sorted(episodes, key=lambda e: (e.start, e.episode_id)):
            out.writerow(ep.row())


def read_episodes(path: Path) -> list[Episode]:
    with Path(path).open(newline="") as fh:
        return [Episode.from_row(row) for row in csv.DictReader(fh)]


class Service(str, Enum):
    """A service the lab's servers run (see :mod:`lab.services`)."""

    HTTP = "http"  # nginx: static pages, page objects, downloads
    HTTPS = "https"  # nginx with a self-signed certificate made at start
    APP = "app"  # the lab's web app (Python): small JSON API, uploads, a login form, a search open to SQL injection
    DNS = "dns"  # dnsmasq with the lab zone
    NTP = "ntp"  # chronyd serving time, run with -x (never sets the clock)
    SSH = "ssh"  # a private sshd: only the lab user, no root
    FTP = "ftp"  # a private vsftpd: only the lab user
    SMTP = "smtp"  # a small SMTP sink
    C2 = "c2"  # the beaconing bot's HTTPS callback server (on an attacker host)


DEFAULT_PORTS: dict[Service, int] = {Service.HTTP: 80, Service.HTTPS: 443, Service.APP: 8080, Service.DNS: 53,
                                     Service.NTP: 123, Service.SSH: 2222, Service.FTP: 2121, Service.SMTP: 2525,
                                     Service.C2: 8443}  # fmt: skip


@dataclass(frozen=True)
class Credentials:
    """A throwaway account of one run (never a host account's password; kept out of ``repr``)."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ServiceMap:
    """Where each service of a run listens and the run's throwaway accounts.

    Parameters
    ----------
    at
        ``service -> (server host, port)``; a service not in the map is not running.
    login
        The lab user that sshd and vsftpd accept (:mod:`lab.labuser`).
    app_login
        The web app's one account (its login form).
    names
        ``name -> host`` for the lab zone dnsmasq answers (``www.office.lab``...); other names get NXDOMAIN.
    files
        URL paths nginx serves: page objects and downloads of several sizes (``/files/1m.bin``...).
    zone
        The lab's DNS domain.
    """

    at: Mapping[Service, tuple[Host, int]]
    login: Credentials
    app_login: Credentials
    names: Mapping[str, Host] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    zone: str = "office.lab"

    def host(self, service: Service) -> Host:
        return self._get(service)[0]

    def port(self, service: Service) -> int:
        return self._get(service)[1]

    def _get(self, service: Service) -> tuple[Host, int]:
        try:
            return self.at[service]
        except KeyError:
            raise LabError(f"service {service.value} is not running in this lab") from None
