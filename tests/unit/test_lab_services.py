"""What is pure in the lab's servers: placement, the lab zone, every config text, the site, the config checks,
the SMTP sink's answers and the web app's injectable query (lab.svc_render, lab.svc_site, lab.services,
lab.smtpsink, lab.webapp). No root, no network, no daemon."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import pytest

from lab.episodes import Service
from lab.services import ServicesConfig, listening, ntp_query_argv
from lab.smtpsink import Session, SinkConfig, Totals, handle, reply
from lab.svc_render import chrony_conf, dnsmasq_conf, nginx_conf, place, sshd_config, vsftpd_conf, zone_names
from lab.svc_site import SiteSpec, build_site
from lab.topo_plan import LabError, Role, TopologySpec, plan_hosts
from lab.webapp import init_db, search_sql

HOSTS = plan_hosts(TopologySpec(prefix="twsvu", clients=3, servers=2, attackers=2))
WORKDIR = Path("/tmp/twsv-unit-work")
NOT_PATHS = {"/", "/office.lab/"}  # chrony's "bindcmdaddress /" disables its socket; dnsmasq's domain syntax


def test_placement_follows_the_roles() -> None:
    at = place(HOSTS)
    assert {s: h.name for s, h in at.items()} == {
        Service.HTTP: "s1", Service.HTTPS: "s1", Service.APP: "s1", Service.DNS: "s2", Service.NTP: "s2",
        Service.SSH: "s2", Service.FTP: "s2", Service.SMTP: "s2", Service.C2: "a2"}  # fmt: skip
    lone = plan_hosts(TopologySpec(prefix="twsvu", clients=1, servers=1, attackers=0))
    assert {h.name for h in place(lone).values()} == {"s1"}
    assert set(place(HOSTS, {Service.DNS, Service.C2})) == {Service.DNS, Service.C2}
    with pytest.raises(LabError, match="at least one server"):
        place(plan_hosts(TopologySpec(prefix="twsvu", clients=1, servers=0, attackers=1)))


def test_the_zone_has_its_size_unique_names_and_never_an_attacker() -> None:
    at = place(HOSTS)
    names = zone_names(at, HOSTS, "office.lab", 300)
    assert len(names) == 300 and all(n.endswith(".office.lab") for n in names)
    assert names["www.office.lab"] == at[Service.HTTP] and names["mail.office.lab"] == at[Service.SMTP]
    assert names["ns1.office.lab"] == at[Service.DNS] and names["c3.office.lab"].name == "c3"
    assert not [h for h in names.values() if h.role is Role.ATTACKER]
    assert {"host001.office.lab", "host262.office.lab"} <= set(names)
    with pytest.raises(LabError, match="zone size"):
        zone_names(at, HOSTS, "office.lab", 10)


def _paths(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w:.\[])(/[\w./-]*)", text))


@pytest.mark.parametrize(
    "text",
    [
        nginx_conf(WORKDIR, HOSTS[3], 80, 443),
        sshd_config(WORKDIR, HOSTS[4], 2222, "twlab12345678"),
        vsftpd_conf(WORKDIR, HOSTS[4].ipv6, 2121, (30000, 30049)),
        chrony_conf(WORKDIR, HOSTS[4], 123, ("10.213.0.0/16", "fd00:7477::/32")),
        dnsmasq_conf(WORKDIR, HOSTS[4], 53, "office.lab", {"www.office.lab": HOSTS[3]}),
    ],
    ids=["nginx", "sshd", "vsftpd", "chrony", "dnsmasq"],
)
def test_every_config_writes_only_under_the_workdir(text: str) -> None:
    outside = {p for p in _paths(text) if not p.startswith(f"{WORKDIR}/")} - NOT_PATHS
    assert not outside, outside


def test_the_configs_listen_on_both_addresses_of_their_host() -> None:
    web, back = HOSTS[3], HOSTS[4]
    nginx = nginx_conf(WORKDIR, web, 80, 443)
    for listen in (f"{web.ipv4}:80;", f"[{web.ipv6}]:80;", f"{web.ipv4}:443 ssl;", f"[{web.ipv6}]:443 ssl;"):
        assert f"listen {listen}" in nginx
    assert "daemon off;" in nginx and "access_log off;" in nginx and "keepalive_timeout 65s;" in nginx
    sshd = sshd_config(WORKDIR, back, 2222, "twlab12345678")
    assert f"ListenAddress {back.ipv4}\nListenAddress {back.ipv6}\n" in sshd and "Port 2222\n" in sshd
    assert "AllowUsers twlab12345678\n" in sshd and "PermitRootLogin no\n" in sshd
    assert "listen=YES\nlisten_address=10." in vsftpd_conf(WORKDIR, back.ipv4, 2121, (30000, 30049))
    ftp6 = vsftpd_conf(WORKDIR, back.ipv6, 2121, (30000, 30049))
    assert f"listen_ipv6=YES\nlisten_address6={back.ipv6}\n" in ftp6
    assert "anonymous_enable=NO" in ftp6 and "userlist_deny=NO" in ftp6 and "pasv_min_port=30000" in ftp6
    chrony = chrony_conf(WORKDIR, back, 123, ("10.213.0.0/16", "fd00:7477::/32"))
    assert "cmdport 0\n" in chrony and "local stratum 8\n" in chrony and "allow fd00:7477::/32\n" in chrony
    dns = dnsmasq_conf(WORKDIR, back, 53, "office.lab", {"www.office.lab": web})
    assert f"host-record=www.office.lab,{web.ipv4},{web.ipv6}\n" in dns and "no-resolv\n" in dns
    assert f"listen-address={back.ipv6}\n" in dns and "local=/#/\n" in dns


def test_the_site_has_pages_objects_and_downloads(tmp_path: Path) -> None:
    paths = build_site(tmp_path, SiteSpec(objects=25, downloads=(10_000, 25_000)))
    index = (tmp_path / "index.html").read_text()
    objects = [p for p in paths if p.startswith("/static/")]
    assert len(objects) == 25 and all(f'"{p}"' in index for p in objects)
    assert {p.rsplit(".", 1)[1] for p in objects} == {"css", "js", "png", "jpg"}
    sizes = {(tmp_path / p.lstrip("/")).stat().st_size for p in objects}
    assert len(sizes) > 15, "objects of varied sizes"
    assert [(tmp_path / p.lstrip("/")).stat().st_size for p in paths if p.startswith("/files/")] == [10_000, 25_000]
    again = tmp_path / "again"
    build_site(again, SiteSpec(objects=25, downloads=(10_000, 25_000)))
    assert (again / "files" / "10k.bin").read_bytes() == (tmp_path / "files" / "10k.bin").read_bytes()
    with pytest.raises(LabError, match="objects"):
        SiteSpec(objects=5)


def test_the_services_config_refuses_what_cannot_run() -> None:
    with pytest.raises(LabError, match="no port for app, c2, dns, ftp, ntp, smtp, ssh"):
        ServicesConfig(ports={Service.HTTP: 80, Service.HTTPS: 443})
    with pytest.raises(LabError, match="one nginx"):
        ServicesConfig(enabled=frozenset({Service.HTTP}))
    with pytest.raises(LabError, match="ftp_passive"):
        ServicesConfig(ftp_passive=(2000, 100))
    assert ServicesConfig().ports[Service.SSH] == 2222


def test_listening_sockets_and_the_ntp_query() -> None:
    out = "tcp LISTEN 0 32 [fd00:7477:3::2]:2121 [::]:*\nudp UNCONN 0 0 10.213.3.2%twsv-s2h:53 0.0.0.0:*\n"
    assert listening(out) == {("tcp", "fd00:7477:3::2", 2121), ("udp", "10.213.3.2", 53)}
    argv = ntp_query_argv("fd00:7477:3::2", 123, 5)
    assert argv[:2] == ["chronyd", "-Q"] and "-x" not in argv and argv[-1].startswith("server fd00:7477:3::2 ")


def test_the_smtp_sink_session_accepts_counts_and_refuses_big_mail() -> None:
    session = Session(SinkConfig(max_bytes=100))
    assert reply("MAIL FROM:<a@x>", session) == "250 2.1.0 Ok" and reply("RCPT TO:<b@x>", session).startswith("250")
    script = (b"EHLO c1\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nsmall\r\n.\r\n"
              b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n" + b"x" * 200 + b"\r\n.\r\nQUIT\r\n")  # fmt: skip
    replies, totals = asyncio.run(_session(script, SinkConfig(max_bytes=100)))
    assert totals.messages == 1 and totals.bytes == len(b"small\r\n")
    codes = [line[:3] for line in replies.decode().splitlines() if line[3:4] == " "]
    assert codes == ["220", "250", "250", "250", "354", "250", "250", "250", "354", "552", "221"]


class _Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    def get_extra_info(self, _: str) -> str:
        return "test"


async def _session(script: bytes, config: SinkConfig) -> tuple[bytes, Totals]:
    reader = asyncio.StreamReader()
    reader.feed_data(script)
    reader.feed_eof()
    writer, totals = _Writer(), Totals()
    await handle(reader, writer, config, totals)  # type: ignore[arg-type]
    return writer.data, totals


def test_the_app_search_is_injectable_and_reads_the_fake_users(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    init_db(db)
    with sqlite3.connect(db) as conn:
        assert len(conn.execute(search_sql("lamp")).fetchall()) == 10
        assert len(conn.execute(search_sql("x' OR 1=1 --")).fetchall()) == 100
        union = conn.execute(search_sql("x' UNION SELECT id, name, email FROM users --")).fetchall()
    assert len(union) == 10 and all(row[2].endswith("@office.lab") for row in union)
