"""What the lab's servers run with, as pure functions: where each service goes, the lab zone, and every config file.

:mod:`lab.services` writes these texts into its work directory and starts the daemons on them; nothing here
touches a file or the network, so that the unit tests can read every config. Each config names only paths
under the work directory (pid files, logs, temp files, keys): the namespaces share the host's filesystem,
and a daemon of the lab must not write anywhere else.

Example
-------
>>> from lab.topo_plan import TopologySpec, plan_hosts
>>> hosts = plan_hosts(TopologySpec(prefix="twsvdoc", clients=1, servers=2, attackers=1))
>>> at = place(hosts)
>>> at[Service.HTTP].name, at[Service.DNS].name, at[Service.C2].name
('s1', 's2', 'a1')
>>> names = zone_names(at, hosts, "office.lab", 300)
>>> len(names), names["www.office.lab"].name, names["mail.office.lab"].name, names["host001.office.lab"].name
(300, 's1', 's2', 'c1')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lab.episodes import Service
from lab.topo_plan import Host, LabError, Role

FRONT = (Service.HTTP, Service.HTTPS, Service.APP)  # on the first server
BACK = (Service.DNS, Service.NTP, Service.SSH, Service.FTP, Service.SMTP)  # on the second (or the only) server

SERVICE_LABELS: tuple[tuple[str, Service], ...] = (
    ("www", Service.HTTP), ("web", Service.HTTP), ("intranet", Service.HTTP), ("wiki", Service.HTTP),
    ("files", Service.HTTP), ("cdn", Service.HTTP), ("static", Service.HTTP), ("docs", Service.HTTP),
    ("portal", Service.HTTPS), ("secure", Service.HTTPS), ("hr", Service.HTTPS), ("crm", Service.HTTPS),
    ("api", Service.APP), ("app", Service.APP), ("shop", Service.APP), ("jira", Service.APP),
    ("mail", Service.SMTP), ("smtp", Service.SMTP), ("mx", Service.SMTP), ("webmail", Service.SMTP),
    ("ns", Service.DNS), ("ns1", Service.DNS), ("dns", Service.DNS),
    ("ntp", Service.NTP), ("time", Service.NTP),
    ("ssh", Service.SSH), ("git", Service.SSH), ("bastion", Service.SSH), ("build", Service.SSH),
    ("ftp", Service.FTP), ("backup", Service.FTP), ("nas", Service.FTP),
)  # fmt: skip
"""Names of the lab zone that point at the host running a service (``www.office.lab`` -> the HTTP server)."""


def place(hosts: Sequence[Host], enabled: Iterable[Service] = tuple(Service)) -> dict[Service, Host]:
    """Which host runs each enabled service: web on the first server, the rest on the second, C2 on an attacker.

    The first server runs HTTP, HTTPS and APP; the second (the first when there is only one) DNS, NTP, SSH,
    FTP and SMTP; C2 runs on the last attacker, or on the first server when there is no attacker.

    >>> from lab.topo_plan import TopologySpec, plan_hosts
    >>> at = place(plan_hosts(TopologySpec(prefix="twsvdoc", clients=1, servers=1, attackers=0)))
    >>> sorted({h.name for h in at.values()})
    ['s1']
    """
    servers = [h for h in hosts if h.role is Role.SERVER]
    attackers = [h for h in hosts if h.role is Role.ATTACKER]
    if not servers:
        raise LabError("the lab's services need at least one server host")
    front, back = servers[0], servers[1] if len(servers) > 1 else servers[0]
    wanted = set(enabled)
    at = {s: front for s in FRONT if s in wanted} | {s: back for s in BACK if s in wanted}
    if Service.C2 in wanted:
        at[Service.C2] = attackers[-1] if attackers else front
    return at


def zone_names(at: Mapping[Service, Host], hosts: Sequence[Host], zone: str, size: int) -> dict[str, Host]:
    """``size`` names of the lab zone: service names, one per client and server, then ``hostNNN`` in turn.

    Attackers get no name: an office's DNS does not name the machine that attacks it. Raises
    :class:`LabError` when ``size`` cannot hold the service and host names.
    """
    named = [h for h in hosts if h.role is not Role.ATTACKER]
    names = {f"{label}.{zone}": at[svc] for label, svc in SERVICE_LABELS if svc in at}
    names |= {f"{h.name}.{zone}": h for h in named}
    if size < len(names) or size > 5000:
        raise LabError(f"zone size must be in {len(names)}..5000 for this lab, got {size}")
    for index in range(1, size - len(names) + 1):
        names[f"host{index:03d}.{zone}"] = named[(index - 1) % len(named)]
    return names


def nginx_conf(workdir: Path, host: Host, http_port: int, https_port: int) -> str:
    """nginx in the foreground on both addresses of ``host``, every path under ``workdir``, no access log.

    No access log: a flood would fill the disk; errors go to standard error, which the lab caps.
    ``user root``: the workers must run in the namespace without a system account of the lab's.
    """
    w = workdir
    listens = "".join(f"    listen {a}:{http_port};\n    listen {a}:{https_port} ssl;\n" for a in _bracketed(host))
    temps = "".join(f"  {kind}_temp_path {w}/nginx/{kind};\n" for kind in ("client_body", "proxy", "fastcgi"))
    temps += "".join(f"  {kind}_temp_path {w}/nginx/{kind};\n" for kind in ("uwsgi", "scgi"))
    return (
        f"daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {w}/nginx/nginx.pid;\n"
        f"lock_file {w}/nginx/nginx.lock;\nerror_log stderr warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "  types { text/html html; text/css css; application/javascript js; image/png png; image/jpeg jpg;\n"
        "          image/svg+xml svg; application/json json; application/octet-stream bin; }\n"
        "  default_type application/octet-stream;\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
        "  keepalive_timeout 65s;\n  keepalive_requests 1000;\n"
        f"{temps}"
        "  server {\n"
        f"{listens}"
        "    server_name www.office.lab;\n"
        f"    ssl_certificate {w}/tls/web.crt;\n    ssl_certificate_key {w}/tls/web.key;\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        f"    root {w}/www;\n    index index.html;\n"
        "  }\n}\n"
    )


def sshd_config(workdir: Path, host: Host, port: int, user: str) -> str:
    """A private sshd: only ``user``, by password, no root, no forwarding, keys and pid file in ``workdir``.

    ``UsePAM no``: sshd checks the password against the shadow file itself and opens no PAM session (no
    ``pam_systemd``, no ``pam_motd`` writing outside the lab). ``MaxStartups`` is raised from 10:30:100
    so that a brute-force tool's parallel tries reach the password check instead of being dropped early.
    """
    keys = "".join(f"HostKey {workdir}/ssh/ssh_host_{kind}_key\n" for kind in ("ed25519", "rsa"))
    return (
        f"Port {port}\nListenAddress {host.ipv4}\nListenAddress {host.ipv6}\n{keys}"
        f"PidFile {workdir}/ssh/sshd.pid\n"
        f"AllowUsers {user}\nPermitRootLogin no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitEmptyPasswords no\nUsePAM no\nStrictModes yes\n"
        "PrintMotd no\nPrintLastLog no\nX11Forwarding no\nAllowTcpForwarding no\nAllowAgentForwarding no\n"
        "PermitTunnel no\nMaxAuthTries 6\nLoginGraceTime 30\nMaxStartups 50:30:200\nLogLevel INFO\n"
        "Subsystem sftp internal-sftp\n"
    )


def vsftpd_conf(workdir: Path, address: str, port: int, pasv: tuple[int, int]) -> str:
    """One vsftpd on one address (vsftpd listens on IPv4 or IPv6, never both): local users on a userlist only.

    ``seccomp_sandbox=NO``: vsftpd 3.0.3's own seccomp filter kills its children on syscalls a newer libc
    makes. No transfer log (``xferlog_enable=NO``); the log paths still point into ``workdir``.
    """
    family = "listen_ipv6=YES\nlisten_address6" if ":" in address else "listen=YES\nlisten_address"
    return (
        f"{family}={address}\nlisten_port={port}\nbackground=NO\n"
        "anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n"
        f"userlist_enable=YES\nuserlist_deny=NO\nuserlist_file={workdir}/ftp/users\n"
        f"pam_service_name=vsftpd\nsecure_chroot_dir={workdir}/ftp/empty\n"
        f"pasv_enable=YES\npasv_min_port={pasv[0]}\npasv_max_port={pasv[1]}\nconnect_from_port_20=NO\n"
        f"xferlog_enable=NO\nsyslog_enable=NO\nvsftpd_log_file={workdir}/ftp/vsftpd.log\n"
        f"xferlog_file={workdir}/ftp/xferlog\nseccomp_sandbox=NO\n"
        "max_clients=200\nmax_per_ip=50\nftpd_banner=office.lab FTP service\n"
    )


def chrony_conf(workdir: Path, host: Host, port: int, ranges: Sequence[str]) -> str:
    """chronyd as an NTP server of the lab's ranges at stratum 8; no command port, no command socket.

    Run with ``-x`` it never touches the clock. ``bindcmdaddress /`` disables the Unix command socket
    (the default one in /run/chrony belongs to the host's chronyd, if any).
    """
    allow = "".join(f"allow {r}\n" for r in ranges)
    return (
        f"pidfile {workdir}/chrony/chronyd.pid\ncmdport 0\nbindcmdaddress /\n"
        f"bindaddress {host.ipv4}\nbindaddress {host.ipv6}\nport {port}\nlocal stratum 8\n{allow}"
    )


def dnsmasq_conf(workdir: Path, host: Host, port: int, zone: str, names: Mapping[str, Host]) -> str:
    """dnsmasq as the lab's only resolver: the zone's names (A, AAAA and PTR), NXDOMAIN for everything else.

    No upstream (``no-resolv``), no /etc/hosts, no query log (a flood would fill it); ``local=/#/`` makes
    every name not in the zone an authoritative NXDOMAIN instead of a REFUSED for want of a server.
    """
    records = "".join(f"host-record={name},{h.ipv4},{h.ipv6}\n" for name, h in sorted(names.items()))
    return (
        f"port={port}\nno-resolv\nno-hosts\nno-poll\nbind-interfaces\n"
        f"listen-address={host.ipv4}\nlisten-address={host.ipv6}\n"
        f"pid-file={workdir}/dns/dnsmasq.pid\nlog-facility=-\ndomain={zone}\nlocal=/{zone}/\nlocal=/#/\n"
        f"domain-needed\n{records}"
    )


def _bracketed(host: Host) -> tuple[str, str]:
    return host.ipv4, f"[{host.ipv6}]"
