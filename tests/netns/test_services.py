"""The lab's servers (lab.services): every service answers a client over IPv4 and IPv6, and nothing is left after.

One lab (1 client, 2 servers, 1 attacker; prefix ``twsv1``) with the lab user and all services for the
module; each test talks to one service from the client ``c1`` with the tool a benign client would use.
Passwords go on standard input, never on a command line. The fixture's teardown checks that no ``twsv1``
namespace, no process started in the lab and no lab user is left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from lab.episodes import Service, ServiceMap
from lab.labuser import lab_user, user_exists
from lab.netns import Result
from lab.services import lab_services, ntp_query_argv
from lab.topo_guard import root_namespaces
from lab.topo_plan import Host, TopologySpec
from lab.topology import Topology, lab_topology
from tests.support.env import need_netns

pytestmark = pytest.mark.timeout(90)


@dataclass
class Lab:
    topo: Topology
    services: ServiceMap
    workdir: Path
    client: Host

    def run(self, argv: list[str], stdin: str | None = None, timeout: float = 20.0) -> Result:
        from lab import netns

        return netns.run_in(self.client.netns, argv, timeout=timeout, stdin=stdin)

    def addr(self, service: Service, family: int) -> str:
        host = self.services.host(service)
        return host.ipv4 if family == 4 else host.ipv6

    def url(self, scheme: str, service: Service, family: int, path: str) -> str:
        host = self.addr(service, family)
        return f"{scheme}://{host if family == 4 else f'[{host}]'}:{self.services.port(service)}{path}"


def _lab_pids(topo: Topology) -> set[int]:
    pids: set[int] = set()
    for host in topo.hosts:
        out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=10).stdout
        pids |= {int(p) for p in out.split()}
    return pids


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_netns()
    workdir = tmp_path_factory.mktemp("services")
    spec = TopologySpec(prefix="twsv1", clients=1, servers=2, attackers=1)
    with lab_topology(spec) as topo, lab_user(shell="/bin/sh") as user, lab_services(topo, user, workdir) as sm:
        yield Lab(topo, sm, workdir, topo.host("c1"))
        pids = _lab_pids(topo)
        assert len(pids) >= 10, pids  # nginx (master, worker), app, c2, dnsmasq, chronyd, sshd, 2 vsftpd, smtp
    assert not {n for n in root_namespaces() if n.startswith("twsv1-")}
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")], "a service outlived the lab"
    assert not user_exists(user.name)


def test_the_map_places_every_service_on_its_host(lab: Lab) -> None:
    at = {s: h.name for s, (h, _) in lab.services.at.items()}
    assert at == {Service.HTTP: "s1", Service.HTTPS: "s1", Service.APP: "s1", Service.DNS: "s2", Service.NTP: "s2",
                  Service.SSH: "s2", Service.FTP: "s2", Service.SMTP: "s2", Service.C2: "a1"}  # fmt: skip
    assert len(lab.services.names) == 300 and lab.services.login.user.startswith("twlab")
    assert lab.services.app_login.password not in repr(lab.services)


@pytest.mark.parametrize(("scheme", "service", "family"), [("http", Service.HTTP, 4), ("https", Service.HTTPS, 6)])
def test_a_page_and_its_objects_over_one_kept_alive_connection(
    lab: Lab, scheme: str, service: Service, family: int
) -> None:
    index = lab.run(["curl", "-sSk", "--fail", lab.url(scheme, service, family, "/index.html")]).stdout
    objects = re.findall(r'(?:src|href)="(/static/[^"]+)"', index)
    assert 20 <= len(objects) <= 40 and set(objects) <= set(lab.services.files)
    urls = [arg for p in objects for arg in (lab.url(scheme, service, family, p), "-o", "/dev/null")]
    out = lab.run(["curl", "-sSk", "--fail", "-w", "%{http_code} %{num_connects}\\n", *urls])
    lines = out.stdout.splitlines()
    assert len(lines) == len(objects)
    assert all(line.startswith("200 ") for line in lines)
    assert sum(int(line.split()[1]) for line in lines) == 1, "keep-alive: one connection for every object"


def test_downloads_of_several_sizes(lab: Lab) -> None:
    files = [p for p in lab.services.files if p.startswith("/files/")]
    assert files == ["/files/10k.bin", "/files/200k.bin", "/files/2m.bin", "/files/20m.bin"]
    for path, size, family in (("/files/10k.bin", 10_000, 6), ("/files/2m.bin", 2_000_000, 4)):
        url = lab.url("http", Service.HTTP, family, path)
        out = lab.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url])
        assert out.stdout == str(size)


def test_the_app_api_upload_login_and_injectable_search(lab: Lab, tmp_path: Path) -> None:
    item = json.loads(lab.run(["curl", "-sS", "--fail", lab.url("http", Service.APP, 4, "/api/items?id=3")]).stdout)
    assert item["id"] == 3 and item["name"].endswith(" 3")
    blob = tmp_path / "upload.bin"
    blob.write_bytes(os.urandom(1_000_000))
    got = lab.run(
        ["curl", "-sS", "--fail", "--data-binary", f"@{blob}", lab.url("http", Service.APP, 6, "/api/upload")]
    )
    assert json.loads(got.stdout) == {"received": 1_000_000}
    login = lab.services.app_login
    for password, answer in ((login.password, "welcome back"), ("guess123", "invalid login")):
        form = f"username={quote(login.user)}&password={quote(password)}"
        page = lab.run(["curl", "-sS", "--fail", "--data-binary", "@-", lab.url("http", Service.APP, 4, "/login")],
                       stdin=form)  # fmt: skip
        assert answer in page.stdout
    found = lab.run(["curl", "-sS", "--fail", lab.url("http", Service.APP, 6, "/search?q=lamp")]).stdout
    injected = lab.run(["curl", "-sS", "--fail", lab.url("http", Service.APP, 4, "/search?q=" + quote("x' OR 1=1 --"))])
    assert found.count("<li>") == 10 and injected.stdout.count("<li>") == 100, "the search is injectable"
    status = json.loads(lab.run(["curl", "-sS", lab.url("http", Service.APP, 4, "/api/status")]).stdout)
    counts = status["counts"]
    assert (counts["uploads"], counts["upload_bytes"], counts["logins_ok"], counts["logins_failed"]) == (
        1, 1_000_000, 1, 1)  # fmt: skip


def _dig(lab: Lab, family: int, name: str, rtype: str) -> str:
    server = lab.addr(Service.DNS, family)
    return lab.run(["dig", f"@{server}", "-p", str(lab.services.port(Service.DNS)), name, rtype, "+time=2",
                    "+tries=1"]).stdout  # fmt: skip


def test_the_resolver_answers_the_lab_zone_and_nxdomain_elsewhere(lab: Lab) -> None:
    web = lab.services.host(Service.HTTP)
    for family in (4, 6):
        for rtype, address in (("A", web.ipv4), ("AAAA", web.ipv6)):
            answer = _dig(lab, family, "www.office.lab", rtype)
            assert "status: NOERROR" in answer and re.search(rf"www\.office\.lab\.\s+\d+\s+IN\s+{rtype}\s+{address}\b",
                                                              answer), answer  # fmt: skip
    assert lab.services.names["host150.office.lab"].ipv4 in _dig(lab, 4, "host150.office.lab", "A")
    for missing in ("nosuch.office.lab", "example.com"):
        assert "status: NXDOMAIN" in _dig(lab, 6, missing, "A")


def test_an_ntp_query_prints_the_offset_and_leaves_the_clock_alone(lab: Lab) -> None:
    for family in (4, 6):
        done = lab.run(ntp_query_argv(lab.addr(Service.NTP, family)), timeout=15)
        assert re.search(r"System clock wrong by -?[\d.]+ seconds \(ignored\)", done.stdout + done.stderr), done


def test_ssh_with_the_lab_user_runs_a_command(lab: Lab, tmp_path: Path) -> None:
    login = lab.services.login
    for family in (4, 6):
        # The password goes through standard input into the environment that sshpass -e reads.
        script = ('read -r SSHPASS; export SSHPASS; exec sshpass -e ssh -F none -o StrictHostKeyChecking=no '
                  f'-o UserKnownHostsFile={tmp_path}/known_hosts -o PubkeyAuthentication=no -o ConnectTimeout=5 '
                  f'-p {lab.services.port(Service.SSH)} {login.user}@{lab.addr(Service.SSH, family)} '
                  "'true && id -un'")  # fmt: skip
        done = lab.run(["sh", "-c", script], stdin=login.password + "\n")
        assert done.stdout.strip() == login.user


def test_ftp_upload_and_download_with_curl(lab: Lab, tmp_path: Path) -> None:
    login = lab.services.login
    config = f'user = "{login.user}:{login.password}"\n'
    for family in (4, 6):
        payload = tmp_path / f"up{family}.bin"
        payload.write_bytes(os.urandom(300_000))
        url = lab.url("ftp", Service.FTP, family, f"/up{family}.bin")
        lab.run(["curl", "-sS", "--fail", "-K", "-", "-T", str(payload), url], stdin=config)
        back = tmp_path / f"back{family}.bin"
        lab.run(["curl", "-sS", "--fail", "-K", "-", "-o", str(back), url], stdin=config)
        assert back.read_bytes() == payload.read_bytes()
        assert Path(f"/home/{login.user}/up{family}.bin").exists(), "written in the lab user's home"


def test_mail_goes_into_the_sink(lab: Lab) -> None:
    """swaks over IPv4; curl over IPv6 (swaks needs Perl's IO::Socket::INET6 for IPv6, not installed here)."""
    port = str(lab.services.port(Service.SMTP))
    lab.run(["swaks", "--to", "bob@office.lab", "--from", "alice@office.lab", "--server", lab.addr(Service.SMTP, 4),
             "--port", port, "--timeout", "10", "--body", "lab mail"])  # fmt: skip
    lab.run(["curl", "-sS", "--fail", "--mail-from", "alice@office.lab", "--mail-rcpt", "bob@office.lab", "-T", "-",
             lab.url("smtp", Service.SMTP, 6, "/c1.office.lab")], stdin="Subject: hi\r\n\r\nlab mail\r\n")  # fmt: skip
    time.sleep(0.2)  # the sink logs after answering
    log = (lab.workdir / "logs" / "smtp.log").read_text()
    assert len(re.findall(r"accepted message \d+: \d+ bytes", log)) == 2, log


def test_the_c2_answers_beacons_over_https(lab: Lab) -> None:
    beacons = [(4, "/beacon")] + [(6, "/beacon")] * 3 + [(6, "/tasks")]
    for family, path in beacons:
        url = lab.url("https", Service.C2, family, path)
        data = ["--data", json.dumps({"id": "bot1", "seq": 1})] if path == "/beacon" else []
        reply = json.loads(lab.run(["curl", "-sSk", "--fail", *data, url]).stdout)
        assert reply.get("ok") is True or reply.get("tasks"), reply
