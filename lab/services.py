"""The lab's servers: nginx, the web app, dnsmasq, chronyd, sshd, vsftpd, an SMTP sink and the bot's C2.

:func:`lab_services` starts every service of a run in the lab's namespaces (through
:meth:`~lab.topology.Topology.start_in`, so that the lab's teardown stops them too), waits until each
listens on its host's IPv4 *and* IPv6 address, and yields the :class:`~lab.episodes.ServiceMap` that
benign clients and attack tools use to find their targets. Placement (:func:`lab.svc_render.place`): the
first server runs HTTP, HTTPS and APP; the second (or the only) server DNS, NTP, SSH, FTP and SMTP; C2 runs
on the last attacker. Ports are :data:`~lab.episodes.DEFAULT_PORTS`.

Everything a daemon writes lives under ``workdir``: configs, pid files, keys, the site, the app's
database, and one log per service capped at :attr:`ServicesConfig.log_bytes` (a flood must not fill the
disk). The site takes about 25 MB (:mod:`lab.svc_site`). Outside ``workdir``: sshd needs its privilege
separation directory ``/run/sshd`` (created, mode 0755, only when missing, and left in place for the
system's sshd); sshd records logins in ``/var/log/wtmp`` and ``btmp`` as any sshd does; vsftpd and sshd
authenticate the lab user against ``/etc/shadow`` (vsftpd through its PAM service, which needs the user's
shell in ``/etc/shells``).

NTP clients query without setting the clock: ``chronyd -Q -t 5 'server ADDR iburst maxsamples 1'`` (see
:func:`ntp_query_argv`) prints the offset and exits.

Example
-------
>>> with lab_topology(spec) as topo, lab_user(shell="/bin/sh") as user:  # doctest: +SKIP
...     with lab_services(topo, user, workdir) as services:
...         web = services.host(Service.HTTP)
...         topo.run_in(topo.host("c1"), ["curl", "-s", f"http://{web.ipv4}/index.html"])
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lab import svc_render as render
from lab.episodes import DEFAULT_PORTS, Credentials, Service, ServiceMap
from lab.labuser import LabUser
from lab.svc_site import SiteSpec, build_site
from lab.topo_plan import Host, LabError
from lab.topology import Topology

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]  # the Python servers run as ``python -m lab.X`` from here
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
PRIVSEP_DIR = Path("/run/sshd")
TOOL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServicesConfig:
    """What :func:`lab_services` runs and with which limits.

    Parameters
    ----------
    enabled
        The services to run (all by default).
    ports
        ``service -> port`` (:data:`~lab.episodes.DEFAULT_PORTS`).
    zone, zone_size
        The lab's DNS domain and how many names it holds.
    site
        The web site (:class:`~lab.svc_site.SiteSpec`).
    ftp_passive
        vsftpd's passive data ports (first, last).
    max_upload, max_mail
        The largest upload the app and the largest message the SMTP sink accept, in bytes.
    log_bytes
        Each service's log is cut at this size.
    ready_s
        How long the services have to start listening.
    """

    enabled: frozenset[Service] = frozenset(Service)
    ports: Mapping[Service, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    zone: str = "office.lab"
    zone_size: int = 300
    site: SiteSpec = field(default_factory=SiteSpec)
    ftp_passive: tuple[int, int] = (30000, 30049)
    max_upload: int = 50_000_000
    max_mail: int = 10_000_000
    log_bytes: int = 2_000_000
    ready_s: float = 20.0

    def __post_init__(self) -> None:
        missing = sorted(s.value for s in self.enabled if s not in self.ports)
        if missing:
            raise LabError(f"services config has no port for {', '.join(missing)}")
        if (Service.HTTP in self.enabled) != (Service.HTTPS in self.enabled):
            raise LabError("services HTTP and HTTPS are one nginx: enable both or neither")
        low, high = self.ftp_passive
        if not 1024 <= low <= high <= 65535:
            raise LabError(f"services ftp_passive must be a port range within 1024..65535, got {self.ftp_passive}")


class CappedLog(threading.Thread):
    """Copies a process's output into ``path`` up to ``limit`` bytes, then reads and drops the rest."""

    def __init__(self, stream: IO[bytes], path: Path, limit: int) -> None:
        super().__init__(daemon=True, name=f"log-{path.stem}")
        self.stream, self.path, self.limit = stream, path, limit
        self.start()

    def run(self) -> None:
        written = 0
        with self.path.open("wb") as out:
            while chunk := os.read(self.stream.fileno(), 1 << 16):
                if written < self.limit:
                    out.write(chunk[: self.limit - written])
                    out.flush()
                    written += len(chunk)
                    if written >= self.limit:
                        out.write(b"\n[log cut at the lab's limit]\n")
        self.stream.close()


@dataclass(frozen=True)
class Expect:
    """A socket a service must have open before the run starts."""

    service: str
    host: Host
    proto: str  # "tcp" or "udp"
    address: str
    port: int


@dataclass
class _Run:
    topo: Topology
    workdir: Path
    config: ServicesConfig
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    logs: list[CappedLog] = field(default_factory=list)
    expect: list[Expect] = field(default_factory=list)


def listening(ss_output: str) -> set[tuple[str, str, int]]:
    """``(proto, address, port)`` of the sockets in ``ss -Hlntu`` output.

    >>> sorted(listening("udp UNCONN 0 0 10.213.4.2:53 0.0.0.0:*\\n"
    ...                  "tcp LISTEN 0 511 [fd00:7477:3::2]:80 [::]:*\\n"))
    [('tcp', 'fd00:7477:3::2', 80), ('udp', '10.213.4.2', 53)]
    """
    found = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] in ("tcp", "udp"):
            address, _, port = fields[4].rpartition(":")
            found.add((fields[0], address.strip("[]").split("%")[0], int(port)))
    return found


def ntp_query_argv(address: str, port: int = 123, timeout_s: int = 5) -> list[str]:
    """A one-shot NTP query that prints the offset and never sets the clock (``chronyd -Q``).

    Directives on the command line replace the config file, so it reads none; ``-Q`` opens no server or
    command port. Its output has ``System clock wrong by ... seconds (ignored)`` when the server answered.

    >>> ntp_query_argv("10.213.4.2")[:4]
    ['chronyd', '-Q', '-t', '5']
    """
    return ["chronyd", "-Q", "-t", str(timeout_s), f"server {address} port {port} iburst maxsamples 1"]


def _tool(argv: Sequence[str]) -> None:
    """Run a local helper (openssl, ssh-keygen): no network, no daemon; raise LabError when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"{argv[0]} failed: {err}") from err
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()}")


def make_cert(stem: Path, name: str, host: Host) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and ``host``'s addresses: ``stem.crt`` and ``stem.key``."""
    crt, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
    stem.parent.mkdir(parents=True, exist_ok=True)
    san = f"subjectAltName=DNS:{name},IP:{host.ipv4},IP:{host.ipv6}"
    _tool(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-days", "30", "-subj", f"/CN={name}", "-addext", san, "-keyout", str(key), "-out", str(crt)])  # fmt: skip
    return crt, key


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _launch(run: _Run, name: str, host: Host, argv: Sequence[str], sockets: Sequence[tuple[str, str, int]]) -> None:
    """Start ``argv`` on ``host`` with its output in a capped log; expect ``(proto, address, port)`` sockets."""
    proc = run.topo.start_in(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    run.procs[name] = proc
    assert proc.stdout is not None
    run.logs.append(CappedLog(proc.stdout, run.workdir / "logs" / f"{name}.log", run.config.log_bytes))
    run.expect += [Expect(name, host, proto, address, port) for proto, address, port in sockets]


def _both(proto: str, host: Host, port: int) -> list[tuple[str, str, int]]:
    return [(proto, host.ipv4, port), (proto, host.ipv6, port)]


def _start_web(run: _Run, host: Host, app_login: Credentials) -> None:
    w, ports = run.workdir, run.config.ports
    if Service.HTTP in run.config.enabled:
        make_cert(w / "tls" / "web", f"www.{run.config.zone}", host)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (w / "nginx" / sub).mkdir(parents=True, exist_ok=True)
        conf = _write(w / "nginx" / "nginx.conf", render.nginx_conf(w, host, ports[Service.HTTP],
                                                                    ports[Service.HTTPS]))  # fmt: skip
        argv = ["nginx", "-p", f"{w}/nginx/", "-e", "stderr", "-c", str(conf)]
        _launch(
            run, "http", host, argv, _both("tcp", host, ports[Service.HTTP]) + _both("tcp", host, ports[Service.HTTPS])
        )
    if Service.APP in run.config.enabled:
        login = _write(w / "app" / "login", f"{app_login.user}:{app_login.password}\n", 0o600)
        _launch(run, "app", host, [sys.executable, "-m", "lab.webapp", "--listen", host.ipv4, "--listen", host.ipv6,
                                   "--port", str(ports[Service.APP]), "--data", str(login.parent),
                                   "--max-upload", str(run.config.max_upload)],
                _both("tcp", host, ports[Service.APP]))  # fmt: skip


def _start_c2(run: _Run, host: Host) -> None:
    crt, key = make_cert(run.workdir / "tls" / "c2", "cdn-update-check.net", host)
    _launch(run, "c2", host, [sys.executable, "-m", "lab.webapp", "--mode", "c2", "--listen", host.ipv4, "--listen",
                              host.ipv6, "--port", str(run.config.ports[Service.C2]), "--tls", str(crt), str(key)],
            _both("tcp", host, run.config.ports[Service.C2]))  # fmt: skip


def _start_dns_ntp(run: _Run, host: Host, names: Mapping[str, Host]) -> None:
    w, ports, plan = run.workdir, run.config.ports, run.topo.spec.plan
    if Service.DNS in run.config.enabled:
        conf = _write(w / "dns" / "dnsmasq.conf", render.dnsmasq_conf(w, host, ports[Service.DNS], run.config.zone,
                                                                      names))  # fmt: skip
        port = ports[Service.DNS]
        _launch(
            run, "dns", host, ["dnsmasq", "-k", "-C", str(conf)], _both("udp", host, port) + _both("tcp", host, port)
        )
    if Service.NTP in run.config.enabled:
        (w / "chrony").mkdir(parents=True, exist_ok=True)
        conf = _write(w / "chrony" / "chrony.conf", render.chrony_conf(w, host, ports[Service.NTP],
                                                                       (plan.ipv4, plan.ipv6)))  # fmt: skip
        _launch(run, "ntp", host, ["chronyd", "-d", "-x", "-f", str(conf)], _both("udp", host, ports[Service.NTP]))


def _start_logins(run: _Run, host: Host, user: LabUser) -> None:
    w, ports = run.workdir, run.config.ports
    if Service.SSH in run.config.enabled:
        if not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755)
            log.warning("created %s (sshd's privilege separation directory; left in place)", PRIVSEP_DIR)
        (w / "ssh").mkdir(parents=True, exist_ok=True)
        for kind, extra in (("ed25519", []), ("rsa", ["-b", "2048"])):
            key = w / "ssh" / f"ssh_host_{kind}_key"
            _tool(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "lab", "-f", str(key)])
        conf = _write(w / "ssh" / "sshd_config", render.sshd_config(w, host, ports[Service.SSH], user.name), 0o600)
        _launch(run, "ssh", host, [SSHD, "-D", "-e", "-f", str(conf)], _both("tcp", host, ports[Service.SSH]))
    if Service.FTP in run.config.enabled:
        _write(w / "ftp" / "users", f"{user.name}\n")
        (w / "ftp" / "empty").mkdir(mode=0o755, exist_ok=True)  # vsftpd's chroot before login: empty, root's
        for tag, address in (("4", host.ipv4), ("6", host.ipv6)):
            text = render.vsftpd_conf(w, address, ports[Service.FTP], run.config.ftp_passive)
            conf = _write(w / "ftp" / f"vsftpd{tag}.conf", text, 0o600)
            _launch(run, f"ftp{tag}", host, ["vsftpd", str(conf)], [("tcp", address, ports[Service.FTP])])
    if Service.SMTP in run.config.enabled:
        _launch(run, "smtp", host, [sys.executable, "-m", "lab.smtpsink", "--listen", host.ipv4, "--listen", host.ipv6,
                                    "--port", str(ports[Service.SMTP]), "--max-bytes", str(run.config.max_mail)],
                _both("tcp", host, ports[Service.SMTP]))  # fmt: skip


def check_login_shell(user: LabUser, shells: Path = Path("/etc/shells")) -> None:
    """Refuse a lab user whose shell is not in ``/etc/shells``: vsftpd's PAM (``pam_shells``) would refuse every login.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix="shells") as fh:
    ...     _ = fh.write("/bin/sh\\n")
    ...     fh.flush()
    ...     check_login_shell(LabUser("twlabdoc", "pw", "/home/twlabdoc", "/usr/sbin/nologin"), Path(fh.name))
    Traceback (most recent call last):
    lab.topo_plan.LabError: lab user twlabdoc has shell /usr/sbin/nologin, not in ... use lab_user(shell="/bin/sh")
    """
    if user.shell not in shells.read_text().split():
        raise LabError(f"lab user {user.name} has shell {user.shell}, not in {shells}: sshd cannot run commands and "
                       f'vsftpd (pam_shells) refuses it; use lab_user(shell="/bin/sh")')  # fmt: skip


def _tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


def wait_ready(run: _Run) -> None:
    """Wait until every expected socket is open; raise LabError naming the first service that died or is late."""
    deadline = time.monotonic() + run.config.ready_s
    left = list(run.expect)
    while left:
        for host in {e.host for e in left}:
            out = run.topo.run_in(host, ["ss", "-Hlntu"], timeout=10).stdout
            found = listening(out)
            left = [e for e in left if e.host != host or (e.proto, e.address, e.port) not in found]
        for name, proc in run.procs.items():
            if proc.poll() is not None:
                raise LabError(f"service {name} exited with {proc.returncode} before listening: "
                               f"{_tail(run.workdir / 'logs' / f'{name}.log')}")  # fmt: skip
        if left and time.monotonic() > deadline:
            late = left[0]
            raise LabError(f"service {late.service} does not listen on {late.proto} [{late.address}]:{late.port} "
                           f"after {run.config.ready_s} s")  # fmt: skip
        if left:
            time.sleep(0.1)


def _stop_all(run: _Run) -> None:
    for name, proc in reversed(list(run.procs.items())):
        code = run.topo.stop(proc)
        log.debug("service %s stopped (%s)", name, code)
    for capped in run.logs:
        capped.join(timeout=2.0)  # a daemon's children may hold the pipe until the lab's teardown


@contextlib.contextmanager
def lab_services(topo: Topology, user: LabUser, workdir: Path,
                 config: ServicesConfig | None = None) -> Iterator[ServiceMap]:  # fmt: skip
    """Run the lab's services for the block and yield where they are; every one is stopped on exit.

    Parameters
    ----------
    topo
        The built lab (:func:`lab.topology.lab_topology`); needs at least one server host.
    user
        The lab user (:func:`lab.labuser.lab_user` with ``shell="/bin/sh"``): the one login of sshd and vsftpd.
    workdir
        Where every config, key, log, pid file and the site go (created).
    config
        What to run (:class:`ServicesConfig`).
    """
    config = config or ServicesConfig()
    if {Service.SSH, Service.FTP} & config.enabled:
        check_login_shell(user)
    workdir = Path(workdir).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    at = render.place(topo.hosts, config.enabled)
    names = render.zone_names(at, topo.hosts, config.zone, config.zone_size)
    app_login = Credentials(f"app{secrets.token_hex(3)}", secrets.token_urlsafe(12))
    run = _Run(topo, workdir, config)
    try:
        files = build_site(workdir / "www", config.site) if Service.HTTP in at or Service.HTTPS in at else ()
        if Service.HTTP in at or Service.APP in at:
            _start_web(run, at.get(Service.HTTP) or at[Service.APP], app_login)
        if Service.C2 in at:
            _start_c2(run, at[Service.C2])
        if Service.DNS in at or Service.NTP in at:
            _start_dns_ntp(run, at.get(Service.DNS) or at[Service.NTP], names)
        logins = [at[s] for s in (Service.SSH, Service.FTP, Service.SMTP) if s in at]
        if logins:
            _start_logins(run, logins[0], user)
        wait_ready(run)
        log.info("lab %s: services %s up", topo.spec.prefix, ", ".join(sorted(s.value for s in at)))
        yield ServiceMap({s: (h, config.ports[s]) for s, h in at.items()}, Credentials(user.name, user.password),
                         app_login, names if Service.DNS in at else {}, files, config.zone)  # fmt: skip
    finally:
        _stop_all(run)
