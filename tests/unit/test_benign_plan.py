"""The benign clients' plan (lab.benign_plan) and commands (lab.benign_argv): seeded, following the mix, and no
password on any command line."""

from __future__ import annotations

import dataclasses
import random
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lab.benign_agent import parse_ntp_time, parser, sntp_request
from lab.benign_argv import AGENT, TOOLS, Context, downloads, secret_files, steps
from lab.benign_plan import OFFICE_MIX, Activity, Mix, Session, Think, plan_client
from lab.episodes import DEFAULT_PORTS, Credentials, Service, ServiceMap
from lab.topo_plan import LabError, TopologySpec, plan_hosts

LOGIN_PASSWORD = "Zq9-login-secret"
APP_PASSWORD = "Xw7-app-secret"
FILES = ("/index.html", "/about.html", *(f"/static/obj{i:02d}.png" for i in range(30)), "/files/20m.bin",
         "/files/10k.bin", "/files/2m.bin", "/files/200k.bin")  # fmt: skip


def _context(tmp: Path = Path("/tmp/twbn-unit")) -> Context:
    c1, c2, s1, s2 = plan_hosts(TopologySpec(prefix="twbnu", clients=2, servers=2, attackers=0))
    at = {svc: (s1 if svc.value in ("http", "https", "app") else s2, port) for svc, port in DEFAULT_PORTS.items()}
    names = {"www.office.lab": s1, "app.office.lab": s1, "ns.office.lab": s2, "c1.office.lab": c1}
    services = ServiceMap(at, Credentials("twlabunit", LOGIN_PASSWORD), Credentials("alice", APP_PASSWORD), names,
                          FILES)  # fmt: skip
    return Context(services, c1, (c2, s1, s2), tmp)


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    one = plan_client(OFFICE_MIX, random.Random(11), 600)
    assert one == plan_client(OFFICE_MIX, random.Random(11), 600)
    other = plan_client(OFFICE_MIX, random.Random(12), 600)
    assert other != one
    assert [s.offset_s for s in one[:20]] != [s.offset_s for s in other[:20]]


def test_a_long_plan_has_every_activity_in_about_its_share() -> None:
    plan = plan_client(OFFICE_MIX, random.Random(3), 4 * 3600)
    counts = Counter(s.activity for s in plan)
    assert set(counts) == set(Activity)
    for activity, share in OFFICE_MIX.shares().items():
        got = counts[activity] / len(plan)
        assert abs(got - share) < max(0.01, share * 0.15), (activity, got, share)
    assert counts[Activity.DNS] > counts[Activity.HTTPS_PAGE] > counts[Activity.HTTP_PAGE]


def test_sessions_are_ordered_within_the_run_and_their_rate_follows_the_think_time_and_pace() -> None:
    plan = plan_client(OFFICE_MIX, random.Random(5), 3600)
    offsets = [s.offset_s for s in plan]
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] < 3600
    assert [s.index for s in plan] == list(range(len(plan)))
    assert 0.85 < len(plan) / (3600 / OFFICE_MIX.mean_think_s) < 1.15
    busy = plan_client(dataclasses.replace(OFFICE_MIX, pace=4.0), random.Random(5), 3600)
    assert 3.4 < len(busy) / len(plan) < 4.6
    poisson = plan_client(dataclasses.replace(OFFICE_MIX, think=Think.EXPONENTIAL), random.Random(5), 3600)
    assert 0.85 < len(poisson) / len(plan) < 1.15


def test_the_ipv6_share_and_the_keepalive_share_follow_the_mix() -> None:
    plan = plan_client(dataclasses.replace(OFFICE_MIX, ipv6_share=0.5), random.Random(8), 3600)
    v6 = sum(s.family == 6 for s in plan) / len(plan)
    assert 0.45 < v6 < 0.55 and {s.family for s in plan} == {4, 6}
    pages = [s for s in plan if s.activity in (Activity.HTTP_PAGE, Activity.HTTPS_PAGE)]
    closing = sum(s.variant == "curl-close" for s in pages) / len(pages)
    assert abs(closing - (1 - OFFICE_MIX.keepalive)) < 0.06
    assert all(11 <= len(s.picks) <= 41 for s in pages)


def test_a_mix_of_one_activity_plans_only_that_and_a_bad_mix_is_refused() -> None:
    only = Mix(weights={Activity.PING: 1.0}, idle_hold_s=(1.0, 2.0))
    assert {s.activity for s in plan_client(only, random.Random(1), 300)} == {Activity.PING}
    bad: dict[str, Any]
    for bad in ({"weights": {}}, {"weights": {Activity.DNS: -1.0}}, {"pace": 0.0}, {"ipv6_share": 1.5},
                {"idle_hold_s": (5.0, 1.0)}):  # fmt: skip
        with pytest.raises(LabError):
            dataclasses.replace(OFFICE_MIX, **bad)
    with pytest.raises(LabError):
        plan_client(OFFICE_MIX, random.Random(1), 0)


def test_no_password_is_on_any_command_line_and_the_secrets_are_in_files() -> None:
    ctx = _context()
    plan = plan_client(OFFICE_MIX, random.Random(21), 1800)
    seen: Counter[Activity] = Counter()
    for session in plan:
        for step in steps(session, ctx):
            text = shlex.join(step.argv) + "".join(t for _, t in step.feed) + "".join(t for _, t in step.texts)
            assert LOGIN_PASSWORD not in text and APP_PASSWORD not in text, step.argv
            assert LOGIN_PASSWORD not in repr(step) and APP_PASSWORD not in repr(step)
            seen[session.activity] += step.secret_env
    assert seen[Activity.SSH] and seen[Activity.SCP] and not seen[Activity.FTP]  # sshpass -e only where needed
    files = secret_files(ctx.services)
    assert LOGIN_PASSWORD in files["netrc"] and APP_PASSWORD in files["login.form"]


def test_every_step_runs_a_listed_tool_with_a_timeout_and_the_agent_parses_its_arguments() -> None:
    ctx, agent = _context(), parser()
    tools: Counter[str] = Counter()
    for session in plan_client(OFFICE_MIX, random.Random(4), 1200):
        for step in steps(session, ctx):
            assert 0 < step.timeout_s <= 200
            if step.agent:
                assert step.argv[1:3] == ("-m", AGENT)
                agent.parse_args(list(step.argv[3:]))  # exits on an argument the agent does not know
                tools["python3"] += 1
            else:
                assert step.argv[0] in TOOLS, step.argv
                tools[step.argv[0]] += 1
            assert all(str(ctx.workdir) in str(p) for p, _ in (*step.make, *step.texts))
    assert set(tools) == {"curl", "wget", "dig", "sshpass", "swaks", "busybox", "chronyd", "python3"}


def test_commands_use_the_plan_s_ip_version_and_the_services_names() -> None:
    ctx = _context()
    web, dns_host = ctx.services.host(Service.HTTPS), ctx.services.host(Service.DNS)
    (page,) = steps(Session(0, 0.0, Activity.HTTPS_PAGE, 6, "curl", picks=(0, 0, 1 << 29)), ctx)
    assert f"www.office.lab:443:[{web.ipv6}]" in page.argv
    assert {"https://www.office.lab:443/index.html", "https://www.office.lab:443/static/obj15.png"} <= set(page.argv)
    dns = Session(1, 0.0, Activity.DNS, 4, "dig", picks=(0,), words=("AAAA",), count=1, token="abcd1234")
    (dig,) = steps(dns, ctx)
    assert dig.argv[1] == f"@{dns_host.ipv4}" and "-4" in dig.argv
    assert {"nx0-abcd1234.office.lab", "AAAA", "app.office.lab"} <= set(dig.argv)
    assert downloads(ctx.services) == ("/files/10k.bin", "/files/200k.bin", "/files/2m.bin", "/files/20m.bin")


def test_the_sntp_request_carries_its_transmit_time() -> None:
    packet = sntp_request(1_234_567_890.5)
    assert packet[0] == 0x23 and len(packet) == 48 and parse_ntp_time(packet[40:48]) == 1_234_567_890.5
