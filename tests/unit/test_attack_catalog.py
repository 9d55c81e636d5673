"""The attack catalogue without running anything: families and labels, bounded command lines, no password on
any command line, word lists, and the seeded schedule (the attacks themselves: tests/netns/test_attacks.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import cast

import pytest

from lab.attack_catalog import ATTACKS, TOOLS, AttackContext, word_list
from lab.attacks import plan_attacks, run_attack
from lab.beacon import BeaconPlan, sleeps
from lab.episodes import Credentials, Family, Service, ServiceMap
from lab.topo_plan import LabError, TopologySpec, plan_hosts
from lab.topology import Topology

C1, C2, S1, S2, A1, A2 = plan_hosts(TopologySpec(prefix="twakunit", clients=2, servers=2, attackers=2))
PASSWORD, APP_PASSWORD = "Zq8-lab-login-pw-77", "Xr4-app-login-pw-55"
SERVICES = ServiceMap({Service.HTTP: (S1, 80), Service.APP: (S1, 8080), Service.DNS: (S2, 53), Service.NTP: (S2, 123),
                       Service.SSH: (S2, 2222), Service.FTP: (S2, 2121), Service.C2: (A2, 8443)},
                      Credentials("twlab0badcafe", PASSWORD), Credentials("appadmin", APP_PASSWORD))  # fmt: skip
CIC_LABELS = {"", "Portscan", "DDoS", "DoS Hulk", "DoS GoldenEye", "DoS Slowloris", "DoS Slowhttptest", "FTP-Patator",
              "SSH-Patator", "Web Attack - Brute Force", "Web Attack - SQL Injection", "Botnet"}  # fmt: skip
BOUNDS = {  # options that bound each tool in packets (a count, ports, connections) and in seconds
    "nmap": ({"-p", "--max-retries", "--max-rate"}, {"--host-timeout"}),
    "masscan": ({"--rate"}, {"--wait", "timeout"}),
    "hping3": ({"-c", "-i"}, {"-c", "-i"}),
    "slowloris": ({"-s", "--sleeptime"}, {"timeout"}),
    "slowhttptest": ({"-c", "-r"}, {"-l"}),
    "wrk": ({"-c", "-t", "-s"}, {"-d", "--timeout"}),
    "ab": ({"-n", "-c"}, {"-t", "-s"}),
    "siege": ({"-r", "-c", "-d"}, {"-r", "-d"}),
    "hydra": ({"-P", "-t"}, {"-w"}),
    "sqlmap": ({"--level", "--risk", "--threads", "--technique"}, {"--timeout", "--retries"}),
    "beacon": ({"--count"}, {"--period", "--timeout"}),
}


def _context(name: str, scale: float = 0.1, seed: int = 1, workdir: Path = Path("/tmp/twakunit")) -> AttackContext:
    spec = ATTACKS[name]
    attacker = C1 if spec.bot else A1
    victim = SERVICES.host(spec.service) if spec.service is not None and spec.service in SERVICES.at else S1
    return AttackContext(attacker, victim, SERVICES, scale, random.Random(seed), workdir)


def _build(name: str, scale: float = 0.1, seed: int = 1) -> tuple[list[str], dict[str, str]]:
    """The attack's files and command line, built in the order run_attack builds them."""
    ctx = _context(name, scale, seed)
    files = ATTACKS[name].files(ctx)
    return ATTACKS[name].argv(ctx), files


def test_every_family_has_attacks_and_every_label_is_a_cic_ids2017_class() -> None:
    families = {a.family for a in ATTACKS.values()}
    assert families == set(Family) - {Family.BENIGN}
    assert {a.cic_class for a in ATTACKS.values()} <= CIC_LABELS
    assert {a.tool for a in ATTACKS.values()} == set(TOOLS)
    assert [a.name for a in ATTACKS.values() if a.spoofed] == ["hping3-syn-spoofed", "hping3-udp-spoofed"]
    assert all(name == a.name for name, a in ATTACKS.items())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_command_line_is_bounded_in_packets_and_seconds(name: str) -> None:
    spec = ATTACKS[name]
    argv, _ = _build(name)
    counts, times = BOUNDS[spec.tool]
    options = set(argv) | {a.split("-p1-")[0] + "-p" for a in argv if a.startswith("-p1-")}
    assert counts <= options | {"-p"} and times <= options, (name, argv)
    if spec.tool == "masscan":
        assert any(a.startswith("-p1-") for a in argv)
    assert 10 < spec.timeout_s(0.1) <= spec.timeout_s(1.0) <= 200, "a bound the process is stopped at"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_counts_and_durations_grow_with_the_scale(name: str) -> None:
    small, large = _build(name, 0.1)[0], _build(name, 1.0)[0]
    assert len(small) == len(large) or name == "sqlmap"
    numbers = [(int(a), int(b)) for a, b in zip(small, large, strict=False) if a.isdigit() and b.isdigit()]
    assert all(a <= b for a, b in numbers), numbers
    fixed = ("nmap-udp", "nmap-version", "sqlmap", "beacon")  # fixed ports, payloads or rounds; hydra: its list grows
    if ATTACKS[name].tool != "hydra" and name not in fixed:
        assert any(a < b for a, b in numbers) or any(a != b for a, b in zip(small, large, strict=False)), name


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_no_password_appears_on_any_command_line(scale: float) -> None:
    for name in ATTACKS:
        argv, files = _build(name, scale)
        line = " ".join(argv)
        assert PASSWORD not in line and APP_PASSWORD not in line, name
        assert all(PASSWORD not in f and APP_PASSWORD not in f for f in files), name


def test_word_lists_hold_the_lab_password_late_and_are_bounded() -> None:
    for name, secret in (("hydra-ssh", PASSWORD), ("hydra-ftp", PASSWORD), ("hydra-http-form", APP_PASSWORD)):
        argv, files = _build(name, 0.1)
        (path, text), = files.items()  # fmt: skip
        words = text.split()
        assert argv[argv.index("-P") + 1].endswith(path)
        assert words.count(secret) == 1 and words.index(secret) >= len(words) * 3 // 4
        assert 10 <= len(words) <= 100 and len(set(words)) == len(words)
        assert len(_build(name, 1.0)[1][path].split()) > len(words)
    assert word_list(random.Random(2), 50, "pw") == word_list(random.Random(2), 50, "pw")


def test_one_seed_gives_one_command_line() -> None:
    assert _build("beacon", seed=4) == _build("beacon", seed=4)
    assert _build("hydra-ssh", seed=4) == _build("hydra-ssh", seed=4)
    assert _build("hydra-ssh", seed=4)[1] != _build("hydra-ssh", seed=5)[1]


def test_targets_follow_the_service_map_and_ip_version() -> None:
    assert _build("nmap-syn6")[0][:2] == ["nmap", "-6"] and _build("nmap-syn6")[0][-1] == S1.ipv6
    assert _build("hping3-udp")[0][-1] == S2.ipv4 and "53" in _build("hping3-udp")[0]
    assert f"ssh://{S2.ipv4}" in _build("hydra-ssh")[0] and "2222" in _build("hydra-ssh")[0]
    assert f"https://{A2.ipv4}:8443/" in _build("beacon")[0]
    form = _build("hydra-http-form")[0]
    assert form[-2:] == ["http-post-form", "/login:username=^USER^&password=^PASS^:F=invalid login"]
    masscan = _build("masscan")[0]
    assert masscan[masscan.index("--adapter") + 1] == A1.iface
    assert _build("sqlmap")[0][2] == f"http://{S1.ipv4}:8080/search?q=lamp"


def test_the_scale_is_bounded() -> None:
    for scale in (0.0, -1.0, 11.0):
        with pytest.raises(LabError, match="scale"):
            _context("nmap-syn", scale)


def test_the_schedule_is_the_same_for_one_seed() -> None:
    names = ["nmap-syn", "hping3-syn-spoofed", "hydra-ssh", "sqlmap", "beacon", "slowloris"]

    def plan(seed: int) -> list[tuple[str, str, str, str, int]]:
        got = plan_attacks(names, [A1, A2], [S1, S2], random.Random(seed), services=SERVICES, bots=[C1, C2])
        return [(p.episode_id, p.name, p.attacker.name, p.victim.name, p.seed) for p in got]

    assert plan(11) == plan(11)
    assert plan(11) != plan(12)
    first = plan(11)
    assert [p[0] for p in first] == ["e001", "e002", "e003", "e004", "e005", "e006"]
    assert [p[1] for p in first] == names
    victims = {p[1]: p[3] for p in first}
    assert victims == {"nmap-syn": victims["nmap-syn"], "hping3-syn-spoofed": "s1", "hydra-ssh": "s2", "sqlmap": "s1",
                       "beacon": "a2", "slowloris": "s1"}  # fmt: skip
    assert {p[2] for p in first if p[1] == "beacon"} <= {"c1", "c2"}
    assert {p[2] for p in first if p[1] != "beacon"} <= {"a1", "a2"}


def test_the_schedule_refuses_what_it_cannot_plan() -> None:
    with pytest.raises(LabError, match="give bots"):
        plan_attacks(["beacon"], [A1], [S1], random.Random(1))
    with pytest.raises(LabError, match="no attack 'nmap-xmas'"):
        plan_attacks(["nmap-xmas"], [A1], [S1], random.Random(1))
    with pytest.raises(LabError, match="at least one attacker"):
        plan_attacks(["nmap-syn"], [], [S1], random.Random(1))


def test_run_attack_refuses_a_victim_that_does_not_run_the_service(tmp_path: Path) -> None:
    nothing = cast(Topology, None)  # refused before the lab is touched
    with pytest.raises(LabError, match="runs on s2, not s1"):
        run_attack(nothing, "hydra-ssh", A1, S1, SERVICES, episode_id="e001", seed=1, workdir=tmp_path)
    with pytest.raises(LabError, match="no attack"):
        run_attack(nothing, "teardrop", A1, S1, SERVICES, episode_id="e001", seed=1, workdir=tmp_path)
    no_c2 = ServiceMap({}, SERVICES.login, SERVICES.app_login)
    with pytest.raises(LabError, match="needs the c2 service"):
        run_attack(nothing, "beacon", C1, A2, no_c2, episode_id="e001", seed=1, workdir=tmp_path)


def test_the_bot_beacons_with_bounded_jitter_and_count() -> None:
    pauses = sleeps(random.Random(3), 5.0, 0.3, 200)
    assert all(3.5 <= p <= 6.5 for p in pauses) and max(pauses) - min(pauses) > 2
    for bad in ({"count": 0}, {"count": 10_001}, {"jitter": 1.0}, {"period": 0}):
        with pytest.raises(ValueError):
            BeaconPlan("https://10.213.5.2:8443/", **bad)
    with pytest.raises(ValueError, match="https"):
        BeaconPlan("http://10.213.5.2:8443/")
