"""A lab scenario end to end (lab.run): ci-short over the wan profile — the lab up, services, benign clients,
one attack of each family, the tap's capture, labelled flows, teardown — and what it leaves behind: nothing.
Also: teardown after a step that fails inside the lab, and the refusal when a lab name is taken.

Every lab here has a prefix starting with ``twts``.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lab.delayline import Profile
from lab.episodes import Family, read_episodes
from lab.run import RunConfig, run_scenario
from lab.scenarios import scenario
from lab.topo_guard import root_links, root_namespaces
from lab.topo_plan import LabError
from tests.support.env import need_netns

pytestmark = pytest.mark.timeout(400)


def _stranded() -> set[tuple[int, str]]:
    """Processes a lab may have left: in a network namespace that no longer has a name (deleted, yet kept alive
    by the process) and not a child of a process in a named one, or owned by a user that no longer exists (a
    deleted lab user's sshd session).

    Other labs running on the machine at the same time (a corpus build) are in named namespaces and under
    existing users: they do not count.
    """
    root = os.stat("/proc/self/ns/net").st_ino  # the tests run in the root namespace
    named = {os.stat(f"/run/netns/{n}").st_ino for n in root_namespaces() if os.path.exists(f"/run/netns/{n}")}
    users = {u.pw_uid for u in pwd.getpwall()}
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
            uid = os.stat(f"/proc/{pid}").st_uid
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended while we looked
        if (netns not in named | {root} and not _child_of_named(pid, named)) or uid not in users:
            found.add((int(pid), cmd.strip()))
    return found


def _child_of_named(pid: str, named: set[int]) -> bool:
    """Whether the parent of ``pid`` is in a named namespace: vsftpd runs each FTP session in a network namespace
    of its own (``isolate_network``), a child of its listener in the lab's namespace."""
    try:
        ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        return os.stat(f"/proc/{ppid}/ns/net").st_ino in named
    except (OSError, IndexError):
        return False


def _lab_users() -> set[str]:
    return {u.pw_name for u in pwd.getpwall() if u.pw_name.startswith("twlab")}


@pytest.fixture(scope="module")
def before() -> dict[str, Any]:
    need_netns()
    return {"links": root_links(), "processes": _stranded(), "users": _lab_users()}


@pytest.fixture(scope="module")
def run(before: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ci-short") / "run"
    result = run_scenario(RunConfig(scenario("ci-short"), seed=11, profile=Profile.WAN, out=out, prefix="twtsc",
                                    live=True))  # fmt: skip
    yield {"out": out, "summary": result.summary}


def _nothing_left(before: dict[str, Any], prefix: str) -> None:
    assert not {n for n in root_namespaces() if n.startswith(f"{prefix}-")}
    assert root_links() == before["links"]
    assert _stranded() <= before["processes"], _stranded() - before["processes"]
    assert _lab_users() <= before["users"]


def test_every_family_has_an_episode_and_labelled_flows(run: dict[str, Any]) -> None:
    episodes = read_episodes(run["out"] / "episodes.csv")
    families = {e.family for e in episodes}
    assert families == set(Family), families
    flows = pd.read_csv(run["out"] / "flows.csv", low_memory=False)
    per_family = flows["family"].value_counts().to_dict()
    assert set(per_family) == {f.value for f in Family}, per_family
    assert per_family == run["summary"]["flows"]
    for ep in episodes:
        if ep.family is not Family.BENIGN:
            assert (flows["episode_id"] == ep.episode_id).any(), f"no flow of {ep.episode_id} {ep.tool}"
    spoofed = [e.episode_id for e in episodes if e.spoofed]
    assert spoofed and (flows["episode_id"].isin(spoofed) & (flows["Total Fwd Packet"] == 1)).sum() > 100


def test_the_handshake_rtt_at_the_tap_matches_the_wan_profile(run: dict[str, Any]) -> None:
    rtt = run["summary"]["handshake_rtt"]
    assert rtt["count"] >= 20
    assert abs(rtt["median_ms"] - 40.0) <= max(4.0, 0.2), rtt


def test_the_run_is_complete_and_accounted_for(run: dict[str, Any]) -> None:
    summary = run["summary"]
    assert sorted(p.name for p in run["out"].iterdir()) == [
        "capture.pcap", "episodes.csv", "flows.csv", "live", "run.json"
    ]  # fmt: skip
    assert summary["capture"]["kernel_dropped"] == 0 and not summary["capture"]["budget_reached"]
    assert summary["seconds"] < 120 and summary["tools"]["nmap"] != "not installed"


def test_nothing_is_left_behind(run: dict[str, Any], before: dict[str, Any]) -> None:
    _nothing_left(before, "twtsc")


def test_a_step_that_fails_inside_the_lab_still_tears_it_down(before: dict[str, Any], tmp_path: Path) -> None:
    broken = replace(scenario("ci-short"), attacks=("no-such-attack",))
    with pytest.raises(LabError, match="no-such-attack"):
        run_scenario(RunConfig(broken, seed=1, profile=Profile.NONE, out=tmp_path / "run", prefix="twtsf"))
    _nothing_left(before, "twtsf")


def test_the_scenario_refuses_to_start_when_a_lab_name_is_taken(before: dict[str, Any], tmp_path: Path) -> None:
    subprocess.run(["ip", "netns", "add", "twtsb-c1"], check=True)
    try:
        with pytest.raises(LabError, match="twtsb-c1"):
            run_scenario(RunConfig(scenario("ci-short"), seed=1, profile=Profile.NONE, out=tmp_path / "r",
                                   prefix="twtsb"))  # fmt: skip
        assert "twtsb-c1" in root_namespaces(), "the lab deleted a namespace it did not create"
        assert {n for n in root_namespaces() if n.startswith("twtsb-")} == {"twtsb-c1"}
    finally:
        subprocess.run(["ip", "netns", "delete", "twtsb-c1"], check=True)
    assert _lab_users() <= before["users"]


def test_the_episodes_report_measures_the_fresh_run(run: dict[str, Any], tmp_path: Path) -> None:
    """The short version of ``python -m tapwatch.app.episodes_report`` in CI: ``tapwatch detect`` with the shipped
    model and site baseline on a run that shaped neither; its scan is a scan episode and every line is explained."""
    from tapwatch.app.episodes_report import lab_run, render

    result = lab_run(run["out"], tmp_path, slack_s=150, reuse=False)
    attacks = {r.attack: r for r in result.results}
    assert len(attacks) == len(read_episodes(run["out"] / "episodes.csv")) - sum(
        1 for ep in read_episodes(run["out"] / "episodes.csv") if ep.family is Family.BENIGN
    )
    scans = [r for r in attacks.values() if r.family == "scan"]
    assert scans and all(r.detected and r.named for r in scans), scans
    assert result.detect.lines and all(x["ml"]["explanation"] and x["ml"]["summary"] for x in result.detect.lines)
    report = {"command": "test", "machine": "test", "versions": "test", "seconds": 0.0}
    assert "| scan | 1 | 1 | 1 |" in render(report, [result], [], [])


def test_the_live_sensor_alerts_during_the_run_and_the_acceptance_report_times_its_lines(run: dict[str, Any]) -> None:
    """``--live``: ``tapwatch run`` out of the box on the tap while the traffic plays. Every line it wrote has an
    arrival time on the lab's clock; the scan is detected and named live, its first line timed from its start."""
    from tapwatch.app.acceptance import live_run

    live = run["out"] / "live"
    sensor = run["summary"]["live"]
    assert sensor["exit_status"] == 0 and sensor["ready_s"] < 120 and sensor["unreadable_lines"] == 0
    lines = [json.loads(x) for x in (live / "alerts.jsonl").read_text().splitlines()]
    arrivals = (live / "arrivals.csv").read_text().splitlines()[1:]
    assert lines and len(arrivals) == len(lines) == sensor["lines"]
    assert "tapwatch run: model hybrid-lab" in (live / "sensor.log").read_text()  # the summary at the stop
    scored = live_run(run["out"])
    assert scored["untimed"] == 0 and scored["lines"] == len(lines)
    scans = [a for a in scored["attacks"] if a["family"] == "scan"]
    assert scans and all(a["detected"] and a["named"] and 0 <= a["delay_s"] < 120 for a in scans), scans
