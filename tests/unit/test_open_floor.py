"""What ``episode_open_windows`` is chosen on: evidence per attack and per benign host within a minute."""

from __future__ import annotations

import json
from pathlib import Path

from tapwatch.app.open_floor import main, measure


def verdict(t_s: float, src: str, dst: str, family: str, evidence: bool = True, novelty: float = 0.5,
            cid: str = "") -> str:  # fmt: skip
    stamp = f"2026-12-01T10:{int(t_s // 60):02d}:{t_s % 60:06.3f}+0000"
    return json.dumps({"timestamp": stamp, "src_ip": src, "dest_ip": dst, "family": family, "evidence": evidence,
                       "novelty": novelty, "community_id": cid})  # fmt: skip


def write_run(tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    run.mkdir()
    (run / "episodes.csv").write_text(
        "episode_id,family,tool,attacker,victims,start,end,spoofed\n"
        "e001,scan,nmap,10.0.0.9,10.0.0.2,1796119200,1796119260,0\n"
        "e002,dos,slowloris,10.0.0.8,10.0.0.3,1796119200,1796119500,0\n"
    )
    rows = [verdict(i * 0.5, "10.0.0.9", "10.0.0.2", "scan", novelty=3.0 if i < 2 else 0.2) for i in range(20)]
    rows += [verdict(i * 10.0, "10.0.0.8", "10.0.0.3", "dos", cid=f"1:d{i}") for i in range(12)]  # 7 in a minute
    # the slowloris connections last 35 s each: at most 4 open at once; the office's two are 1 s each, apart
    rows += [verdict(400.0 + i * 30, "10.0.0.1", "10.0.0.3", "dos", cid=f"1:o{i}") for i in range(2)]
    t0 = 1_796_119_200_000  # 2026-12-01T10:00:00Z
    flows = [f"1:d{i},{t0 + i * 10_000 - 35_000},{t0 + i * 10_000}" for i in range(12)]
    flows += [f"1:o{i},{t0 + 399_000 + i * 30_000},{t0 + 400_000 + i * 30_000}" for i in range(2)]
    (run / "flows.csv").write_text("community_id,first_seen_ms,last_seen_ms\n" + "\n".join(flows) + "\n")
    rows += [verdict(i * 20.0, "10.0.0.5", "10.0.0.6", "bruteforce") for i in range(5)]  # benign: 4 within a minute
    rows += [verdict(1.0, "10.0.0.7", "10.0.0.6", "benign", evidence=False)]
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text("\n".join(rows) + "\n")
    return run, verdicts


def test_each_attack_s_busiest_minute_and_the_benign_hosts_busiest(tmp_path: Path) -> None:
    run, verdicts = write_run(tmp_path)
    found = measure(run, verdicts)
    assert [(r["attack"], r["evidence_60s"], r["as"]) for r in found["attacks"]] == [("e001", 20, "scan"),
                                                                                      ("e002", 7, "dos")]  # fmt: skip
    assert [r["concurrent"] for r in found["attacks"]] == [None, 4]  # open at once: a flood's victim only
    assert found["benign_max_concurrent"] == 1  # the victim's traffic outside the attack
    assert found["benign_max_60s"] == 4 and found["benign_top"][0]["host"] == "10.0.0.5"
    assert found["novelty"]["evidence"]["windows"] == 39 and found["novelty"]["other"]["windows"] == 1
    novel = measure(run, verdicts, novel=True)  # only the windows the novel rule keeps
    assert [r["evidence_60s"] for r in novel["attacks"]] == [2, 0] and novel["benign_max_60s"] == 0


def test_the_command_writes_the_report(tmp_path: Path) -> None:
    run, verdicts = write_run(tmp_path)
    assert main(["--run", f"{run}:{verdicts}", "-o", str(tmp_path / "floor")]) == 0
    md = (tmp_path / "floor.md").read_text()
    assert "Most evidence any benign host gave within 60 s: **4**" in md
    assert "Least evidence within 60 s of an attack the window view found (more than any benign host): **7**" in md
    assert "**1** of 2" in md  # the scan reaches 8, the slowloris only 7
    assert "outside the attacks on it: **1**; least at a DoS attack the window view found: **4**" in md
