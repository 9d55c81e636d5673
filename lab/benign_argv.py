"""The commands of a benign session: which real client runs with which arguments (no I/O here).

:func:`steps` turns a :class:`~lab.benign_plan.Session` into the :class:`Step` s that :mod:`lab.benign`
runs one after the other in the client's namespace. Passwords never appear in an argument: ssh and scp get
the lab user's through ``sshpass -e`` (the runner puts it in ``SSHPASS`` when :attr:`Step.secret_env` is
set), curl's FTP through a netrc file and the web app's login through a form file, both written by
:func:`secret_files` into the client's work folder (mode 0600). Every tool gets a timeout of its own and the
runner another one (:attr:`Step.timeout_s`).

Example
-------
>>> from lab.benign_plan import PICK, Activity, Session
>>> from lab.episodes import Credentials
>>> from lab.topo_plan import TopologySpec, plan_hosts
>>> c1, s1 = plan_hosts(TopologySpec(prefix="twbndoc", clients=1, servers=1, attackers=0))
>>> services = ServiceMap({Service.DNS: (s1, 53)}, Credentials("twlabx", "pw"), Credentials("alice", "pw2"),
...                       names={"www.office.lab": s1})
>>> ctx = Context(services, c1, (s1,), Path("/tmp/twbn/c1"))
>>> [st.argv[:4] for st in steps(Session(0, 0.0, Activity.DNS, 4, "dig", (0,), ("A",), 1), ctx)]
[('dig', '@10.213.2.2', '-p', '53')]
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from lab.benign_plan import PICK, Activity, Session
from lab.episodes import Service, ServiceMap
from lab.topo_plan import Host

TOOLS: dict[str, str] = {"curl": "curl", "wget": "wget", "dig": "dnsutils", "sshpass": "sshpass",
                         "ssh": "openssh-client", "scp": "openssh-client", "swaks": "swaks", "busybox": "busybox",
                         "chronyd": "chrony", "python3": "python3",
                         "perl IO::Socket::INET6": "libio-socket-inet6-perl"}  # fmt: skip
"""The Debian package of each client tool the benign traffic runs (for the corpus manifest); swaks needs the
Perl module for IPv6."""
AGENT = "lab.benign_agent"  # the Python clients (http.client, an SNTP client, an idle connection)
SSH_OPTS = ("-F", "none", "-o", "StrictHostKeyChecking=no", "-o", "PubkeyAuthentication=no", "-o",
            "PreferredAuthentications=password,keyboard-interactive", "-o", "ConnectTimeout=5", "-o",
            "LogLevel=ERROR")  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One command of a session.

    Parameters
    ----------
    argv
        The command (never holding a password).
    timeout_s
        The runner kills it after this many seconds.
    secret_env
        Run it with the lab user's password in ``SSHPASS`` (for ``sshpass -e``).
    feed
        ``(pause, text)`` written to its standard input one after the other (an SSH session's typing).
    make
        ``(path, size)``: files of random bytes to create before it runs (uploads).
    texts
        ``(path, text)``: small files to write before it runs (a mail, a chronyd configuration).
    expect
        ``(path, text)``: the step succeeded only if the file it wrote holds the text (the app's welcome page).
    agent
        It is a Python module of ``lab`` (run from the repository root).
    soft_stop
        When the run ends while it is running, SIGTERM ends it well (an idle connection): it counts as done.
    """

    argv: tuple[str, ...]
    timeout_s: float
    secret_env: bool = False
    feed: tuple[tuple[float, str], ...] = ()
    make: tuple[tuple[Path, int], ...] = ()
    texts: tuple[tuple[Path, str], ...] = ()
    expect: tuple[Path, str] | None = None
    agent: bool = False
    soft_stop: bool = False


@dataclass(frozen=True)
class Context:
    """What the commands of one client are built from.

    Parameters
    ----------
    services
        Where the run's services listen, and its accounts.
    client
        The client host.
    peers
        The hosts a ping may go to.
    workdir
        The client's folder: its secret files, known_hosts, and one folder per session.
    python
        The interpreter for the Python clients.
    """

    services: ServiceMap
    client: Host
    peers: tuple[Host, ...]
    workdir: Path
    python: str = sys.executable

    def session_dir(self, session: Session) -> Path:
        return self.workdir / f"s{session.index:05d}"

    @property
    def netrc(self) -> Path:
        return self.workdir / "netrc"

    @property
    def login_form(self) -> Path:
        return self.workdir / "login.form"


def secret_files(services: ServiceMap) -> dict[str, str]:
    """The client's secret files (name in the work folder -> text): curl's netrc and the app's login form.

    >>> from lab.episodes import Credentials
    >>> sorted(secret_files(ServiceMap({}, Credentials("u", "p w"), Credentials("alice", "s&cret"))).items())
    [('login.form', 'username=alice&password=s%26cret'), ('netrc', 'default login u password "p w"\\n')]
    """
    login = services.login
    form = f"username={quote(services.app_login.user, safe='')}&password={quote(services.app_login.password, safe='')}"
    return {"netrc": f'default login {login.user} password "{_netrc_escape(login.password)}"\n', "login.form": form}


def _netrc_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def address(host: Host, family: int) -> str:
    return host.ipv4 if family == 4 else host.ipv6


def _url_host(host: Host, family: int) -> str:
    return host.ipv4 if family == 4 else f"[{host.ipv6}]"


def web_name(services: ServiceMap, service: Service) -> str | None:
    """The lab name a user types for ``service`` (one that points at its host, ``app.`` for the app); None if none.

    >>> from lab.episodes import Credentials
    >>> from lab.topo_plan import TopologySpec, plan_hosts
    >>> (s1,) = plan_hosts(TopologySpec(prefix="twbndoc", clients=0, servers=1, attackers=0))
    >>> m = ServiceMap({Service.HTTP: (s1, 80)}, Credentials("u", "p"), Credentials("a", "b"),
    ...                names={"mail.office.lab": s1, "www.office.lab": s1})
    >>> web_name(m, Service.HTTP)
    'www.office.lab'
    """
    host = services.host(service)
    names = sorted(n for n, h in services.names.items() if h == host)
    for want in (service.value, "www"):
        for name in names:
            if name.split(".")[0] == want:
                return name
    return names[0] if names else None


def _web(ctx: Context, service: Service, family: int) -> tuple[str, tuple[str, ...]]:
    """The URL base of a web service (by name when there is one) and curl's ``--resolve`` for the name."""
    host, port = ctx.services.host(service), ctx.services.port(service)
    scheme = "https" if service is Service.HTTPS else "http"
    name = web_name(ctx.services, service)
    if name is None:
        return f"{scheme}://{_url_host(host, family)}:{port}", ()
    return f"{scheme}://{name}:{port}", ("--resolve", f"{name}:{port}:{_url_host(host, family)}")


def _curl(timeout: float, *args: str) -> tuple[str, ...]:
    return ("curl", "-sS", "--fail", "-k", "--connect-timeout", "5", "--max-time", str(int(timeout)), *args)


def pages(services: ServiceMap) -> tuple[str, ...]:
    """The site's pages: the paths of :attr:`ServiceMap.files` ending in ``.html`` (``/`` when there is none)."""
    return tuple(p for p in services.files if p.endswith(".html")) or ("/",)


def page_objects(services: ServiceMap) -> tuple[str, ...]:
    """What pages are made of: the paths of :attr:`ServiceMap.files` that are neither pages nor downloads."""
    return tuple(p for p in services.files if not p.endswith(".html") and not p.startswith("/files/")) or ("/",)


def downloads(services: ServiceMap) -> tuple[str, ...]:
    """The ``/files/`` paths, smallest first (by the size in the name: ``10k.bin``, ``2m.bin``)."""
    return tuple(sorted((p for p in services.files if p.startswith("/files/")), key=_size_of)) or ("/",)


def _size_of(path: str) -> tuple[float, str]:
    stem = path.rsplit("/", 1)[-1].removesuffix(".bin")
    number, unit = (stem[:-1], stem[-1]) if stem[-1:] in ("k", "m") else (stem, "")
    try:
        return float(number) * {"k": 1e3, "m": 1e6, "": 1.0}[unit], path
    except ValueError:
        return float("inf"), path


def _chosen(options: tuple[str, ...], picks: tuple[int, ...]) -> list[str]:
    """Map picks (uniform in 0..PICK) onto ``options`` by proportion, so that a low pick is an early option."""
    return [options[p * len(options) // PICK] for p in picks]


def _dns(s: Session, ctx: Context) -> list[Step]:
    host, port = ctx.services.host(Service.DNS), ctx.services.port(Service.DNS)
    names = tuple(sorted(ctx.services.names)) or (f"www.{ctx.services.zone}",)
    queries = [arg for name, qtype in zip(_chosen(names, s.picks), s.words, strict=False) for arg in (name, qtype)]
    queries += [arg for i in range(s.count) for arg in (f"nx{i}-{s.token}.{ctx.services.zone}", "A")]
    argv = ("dig", f"@{address(host, s.family)}", "-p", str(port), f"-{s.family}", "+time=2", "+tries=1", *queries)
    return [Step(argv, 5 + 3 * len(queries) / 2)]


def _page(s: Session, ctx: Context) -> list[Step]:
    service = Service.HTTPS if s.activity is Activity.HTTPS_PAGE else Service.HTTP
    paths = [*_chosen(pages(ctx.services), s.picks[:1]), *_chosen(page_objects(ctx.services), s.picks[1:])]
    if s.variant == "python":
        return [_agent_get(s, ctx, service, paths)]
    base, resolve = _web(ctx, service, s.family)
    urls = [base + p for p in paths]
    if s.variant == "wget":
        ip_base = _ip_base(ctx, service, s.family)
        return [Step(("wget", "-q", "-p", "-nd", "--delete-after", "-P", str(ctx.session_dir(s)), "-T", "10",
                      "-t", "1", "--no-check-certificate", *_wget_host(ctx, service), *(ip_base + p for p in paths)),
                     40)]  # fmt: skip
    extra = {"curl-parallel": ("--parallel", "--parallel-max", "4", "--http1.1"),
             "curl-close": ("--http1.1", "-H", "Connection: close")}.get(s.variant, ())  # fmt: skip
    return [Step(_curl(30, *resolve, *extra, *urls), 35)]


def _agent_get(s: Session, ctx: Context, service: Service, paths: list[str], *opts: str, method: str = "get",
               timeout: float = 30) -> Step:  # fmt: skip
    """A Python client (:mod:`lab.benign_agent`) of a web service: ``get``, ``post`` or ``idle`` ``paths``."""
    host, port = ctx.services.host(service), ctx.services.port(service)
    name = web_name(ctx.services, service) or address(host, s.family)
    tls = ("--tls",) if service is Service.HTTPS else ()
    argv = (ctx.python, "-m", AGENT, method, "--host", address(host, s.family), "--port", str(port), "--name", name,
            *tls, "--timeout", "10", *opts, *paths)  # fmt: skip
    return Step(argv, timeout, agent=True, soft_stop=method == "idle")


def _api(s: Session, ctx: Context) -> list[Step]:
    if s.variant == "python":
        return [_agent_get(s, ctx, Service.APP, list(s.words))]
    base, resolve = _web(ctx, Service.APP, s.family)
    return [Step(_curl(15, *resolve, *(base + p for p in s.words)), 20)]


def _download(s: Session, ctx: Context) -> list[Step]:
    service = Service.HTTPS if s.variant == "curl-https" else Service.HTTP
    base, resolve = _web(ctx, service, s.family)
    path = _chosen(downloads(ctx.services), s.picks)[0]
    rate = ("--limit-rate", str(s.size)) if s.size else ()
    if s.variant == "wget":  # wget has no --resolve: the address in the URL, the name in the Host header
        return [Step(("wget", "-q", "-O", "-", "-T", "10", "-t", "1", *rate, *_wget_host(ctx, service),
                      _ip_base(ctx, service, s.family) + path), 120)]  # fmt: skip
    return [Step(_curl(110, *resolve, *rate, base + path), 120)]


def _ip_base(ctx: Context, service: Service, family: int) -> str:
    scheme = "https" if service is Service.HTTPS else "http"
    return f"{scheme}://{_url_host(ctx.services.host(service), family)}:{ctx.services.port(service)}"


def _wget_host(ctx: Context, service: Service) -> tuple[str, ...]:
    name = web_name(ctx.services, service)
    return ("--header", f"Host: {name}") if name else ()


def _upload(s: Session, ctx: Context) -> list[Step]:
    path = ctx.session_dir(s) / f"up-{s.token}.bin"
    if s.variant == "python":
        step = _agent_get(s, ctx, Service.APP, ["/api/upload"], "--file", str(path), method="post", timeout=60)
        return [Step(step.argv, step.timeout_s, make=((path, s.size),), agent=True)]
    base, resolve = _web(ctx, Service.APP, s.family)
    return [Step(_curl(55, *resolve, "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{path}",
                       f"{base}/api/upload"), 60, make=((path, s.size),))]  # fmt: skip


def _login(s: Session, ctx: Context) -> list[Step]:
    base, resolve = _web(ctx, Service.APP, s.family)
    jar, page = str(ctx.session_dir(s) / "cookies"), ctx.session_dir(s) / "welcome.html"
    login = Step(_curl(15, *resolve, "-c", jar, "-b", jar, "-o", str(page), "--data", f"@{ctx.login_form}",
                       f"{base}/login"), 20, expect=(page, "welcome"))  # fmt: skip
    return [
        Step(_curl(15, *resolve, f"{base}/login"), 20),
        login,
        Step(_curl(15, *resolve, "-b", jar, *(base + p for p in s.words)), 20),
    ]


def _ntp(s: Session, ctx: Context) -> list[Step]:
    host, port = ctx.services.host(Service.NTP), ctx.services.port(Service.NTP)
    if s.variant == "sntp":
        return [Step((ctx.python, "-m", AGENT, "sntp", "--host", address(host, s.family), "--port", str(port),
                      "--count", str(s.count), "--timeout", "2"), 15, agent=True)]  # fmt: skip
    # -Q: print the offset and exit, never touching the clock, no server or command port; a directive on the
    # command line replaces the config file (lab.services' ntp_query_argv); -t: give up after 8 s
    directive = f"server {address(host, s.family)} port {port} iburst maxsamples {max(1, s.count)}"
    return [Step(("chronyd", "-Q", "-t", "8", directive), 15)]


def _ssh_base(ctx: Context, tool: str, every: float = 15) -> tuple[str, ...]:
    known = ("-o", f"UserKnownHostsFile={ctx.workdir / 'known_hosts'}", "-o", f"ServerAliveInterval={int(every)}")
    port = ("-P" if tool == "scp" else "-p", str(ctx.services.port(Service.SSH)))
    return ("sshpass", "-e", tool, *(("-O",) if tool == "scp" else ()), *port, *SSH_OPTS, *known)


def _remote(ctx: Context, family: int) -> str:
    return f"{ctx.services.login.user}@{_url_host(ctx.services.host(Service.SSH), family)}"


def _ssh(s: Session, ctx: Context) -> list[Step]:
    target = f"{ctx.services.login.user}@{address(ctx.services.host(Service.SSH), s.family)}"
    if s.variant == "command":
        return [Step((*_ssh_base(ctx, "ssh"), "-T", target, "; ".join(s.words)), 30, secret_env=True)]
    feed = tuple((pause, f"{cmd}\n") for pause, cmd in zip((0.5, *s.pauses), (*s.words, "exit"), strict=False))
    return [Step((*_ssh_base(ctx, "ssh"), "-T", target), 30 + sum(s.pauses), secret_env=True, feed=feed)]


def _scp(s: Session, ctx: Context) -> list[Step]:
    local, back = ctx.session_dir(s) / f"up-{s.token}.bin", ctx.session_dir(s) / f"down-{s.token}.bin"
    remote = f"{_remote(ctx, s.family)}:up-{s.token}.bin"
    return [Step((*_ssh_base(ctx, "scp"), str(local), remote), 60, secret_env=True, make=((local, s.size),)),
            Step((*_ssh_base(ctx, "scp"), remote, str(back)), 60, secret_env=True)]  # fmt: skip


def _ftp(s: Session, ctx: Context) -> list[Step]:
    local, back = ctx.session_dir(s) / f"up-{s.token}.bin", ctx.session_dir(s) / f"down-{s.token}.bin"
    host, port = ctx.services.host(Service.FTP), ctx.services.port(Service.FTP)
    url = f"ftp://{_url_host(host, s.family)}:{port}/"
    netrc = ("--netrc-file", str(ctx.netrc))
    return [Step(_curl(55, *netrc, "-T", str(local), f"{url}up-{s.token}.bin"), 60, make=((local, s.size),)),
            Step(_curl(55, *netrc, "-o", str(back), f"{url}up-{s.token}.bin"), 60),
            Step(_curl(15, *netrc, "--list-only", url), 20)]  # fmt: skip


def _smtp(s: Session, ctx: Context) -> list[Step]:
    host, port, zone = ctx.services.host(Service.SMTP), ctx.services.port(Service.SMTP), ctx.services.zone
    sender, rcpts = f"{ctx.client.name}@{zone}", [f"user{i}@{zone}" for i in range(1, s.count + 1)]
    body = "".join(f"line {i} of the weekly report {s.token}\r\n" for i in range(max(1, s.size // 40)))
    if s.variant == "swaks":
        path = ctx.session_dir(s) / "body.txt"
        return [Step(("swaks", "--server", address(host, s.family), "--port", str(port), f"-{s.family}", "--from",
                      sender, "--to", ",".join(rcpts), "--h-Subject", f"report {s.token}", "--body", str(path),
                      "--timeout", "10"), 30, texts=((path, body),))]  # fmt: skip
    path = ctx.session_dir(s) / "mail.txt"
    mail = f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: report {s.token}\r\n\r\n{body}"
    rcpt = [arg for r in rcpts for arg in ("--mail-rcpt", r)]
    return [Step(_curl(25, "--mail-from", sender, *rcpt, "-T", str(path), f"smtp://{_url_host(host, s.family)}:"
                       f"{port}/{ctx.client.name}"), 30, texts=((path, mail),))]  # fmt: skip


def _ping(s: Session, ctx: Context) -> list[Step]:
    peers = tuple(p for p in ctx.peers if p != ctx.client) or (ctx.services.host(Service.DNS),)
    target = peers[s.picks[0] * len(peers) // PICK] if s.picks else peers[0]
    argv = ("busybox", "ping", f"-{s.family}", "-c", str(s.count), "-s", str(s.size), "-W", "2", "-w",
            str(s.count + 3), address(target, s.family))  # fmt: skip
    return [Step(argv, s.count + 6)]


def _idle(s: Session, ctx: Context) -> list[Step]:
    hold, every = s.pauses
    if s.variant == "ssh":
        target = f"{ctx.services.login.user}@{address(ctx.services.host(Service.SSH), s.family)}"
        return [Step((*_ssh_base(ctx, "ssh", every), "-T", target, f"sleep {int(hold)}"), hold + 20,
                     secret_env=True, soft_stop=True)]  # fmt: skip
    # nginx, whose keep-alive timeout (65 s) outlasts the pauses; the app drops a connection idle for 30 s
    hold_opts = ("--hold", str(hold), "--every", str(every))
    return [_agent_get(s, ctx, Service.HTTP, ["/index.html"], *hold_opts, method="idle", timeout=hold + 20)]


BUILDERS: dict[Activity, Callable[[Session, Context], list[Step]]] = {
    Activity.DNS: _dns, Activity.HTTPS_PAGE: _page, Activity.HTTP_PAGE: _page, Activity.API: _api,
    Activity.DOWNLOAD: _download, Activity.UPLOAD: _upload, Activity.LOGIN: _login, Activity.NTP: _ntp,
    Activity.SSH: _ssh, Activity.SCP: _scp, Activity.FTP: _ftp, Activity.SMTP: _smtp, Activity.PING: _ping,
    Activity.IDLE: _idle}  # fmt: skip
"""The service each activity needs is the one its builder asks ``ServiceMap`` for; a missing one is a LabError."""


def steps(session: Session, ctx: Context) -> tuple[Step, ...]:
    """The commands of ``session`` in order; a :class:`~lab.topo_plan.LabError` when it needs a missing service."""
    return tuple(BUILDERS[session.activity](session, ctx))


def describe(step: Step) -> str:
    """The step's command line, shell-quoted (for logs: it never holds a password)."""
    return shlex.join(step.argv)
