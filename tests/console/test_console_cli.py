"""``tapwatch console``: users from the command line, no start without one, loading alert files, the data folder."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tapwatch.app.cli import main
from tapwatch.console.settings import ConsoleSettings, prepare_data, session_secret
from tapwatch.console.store import AlertLine, Episode, User, open_database
from tapwatch.features.errors import ConfigError
from tests.support.console import PASSWORD, eve_line


def run(args: list[str], stdin: str = "") -> tuple[int, str]:
    result = CliRunner().invoke(main, ["console", *args], input=stdin)
    return result.exit_code, result.output


def users(data: Path) -> list[tuple[str, str]]:
    with open_database(ConsoleSettings(data=data).url)() as db:
        return [(u.name, u.role.value) for u in db.scalars(select(User).order_by(User.name))]


def test_a_user_is_added_with_a_password_read_twice_and_bad_ones_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out = run(["user", "add", "ada", "--role", "admin", "--data-dir", str(data)], f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0 and "user ada (admin) added" in out
    code, out = run(["user", "add", "bob", "--role", "analyst", "--data-dir", str(data)], "short\nshort\n")
    assert code == 2 and "password: must be at least 12 characters" in out
    code, out = run(
        ["user", "add", "bob", "--role", "analyst", "--data-dir", str(data)], f"{PASSWORD}\nother one!!!!\n"
    )
    assert code == 2 and "the two lines of standard input differ" in out
    code, out = run(["user", "add", "ada", "--role", "viewer", "--data-dir", str(data)], f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 2 and "ada: this user exists already" in out
    assert users(data) == [("ada", "admin")]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    with open_database(ConsoleSettings(data=data).url)() as db:
        stored = db.scalar(select(User.password_hash))
        assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored


def test_serve_refuses_to_start_without_a_user_and_says_how_to_add_one(tmp_path: Path) -> None:
    code, out = run(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0"])
    assert code == 2 and "no user yet: add one first with `tapwatch console user add NAME --role admin`" in out


def test_the_session_secret_is_generated_once_private_and_a_short_given_one_is_refused(tmp_path: Path) -> None:
    s = ConsoleSettings(data=tmp_path / "data")
    data = prepare_data(s)
    first = session_secret(s, data)
    assert len(first) == 64 and session_secret(s, data) == first
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="at least 32 characters"):
        session_secret(ConsoleSettings(data=data, secret_key="short"), data)
    code, out = run(["user", "list", "--data-dir", str(tmp_path / "open")])
    assert code == 0
    (tmp_path / "open").chmod(0o755)
    code, out = run(["user", "list", "--data-dir", str(tmp_path / "open")])
    assert code == 2 and "the data folder is open to other users" in out


def test_ingest_stores_episode_lines_and_refuses_the_rest_with_a_count(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    update = eve_line(timestamp="2026-12-01T10:01:30.000000+0000")
    update["ml"]["alert_id"] = "a-1-close"
    update["episode"].update(state="close", flows=90, last_seen="2026-12-01T10:01:30.000Z")
    older = eve_line(timestamp="2026-12-01T10:00:10.000000+0000")  # arrives last, says less
    older["episode"].update(flows=5)
    older["ml"]["alert_id"] = "a-1-late"
    flow_mode = {k: v for k, v in eve_line().items() if k != "episode"}
    rows = [json.dumps(eve_line()), json.dumps(update), json.dumps(older), "not json", json.dumps(flow_mode), "",
            json.dumps(eve_line())]  # fmt: skip
    alerts.write_text("\n".join(rows) + "\n")
    code, out = run(["ingest", str(alerts), "--data-dir", str(tmp_path / "data")])
    assert code == 0 and "3 alert lines stored, 2 refused, 1 stored already" in out
    with open_database(ConsoleSettings(data=tmp_path / "data").url)() as db:
        e = db.get(Episode, "ep-1")
        assert e is not None and e.state == "close" and e.flows == 90 and e.lines == 3
        assert len(db.scalars(select(AlertLine)).all()) == 3


def test_purge_deletes_what_is_older_than_the_retention_with_its_files(tmp_path: Path) -> None:
    from tapwatch.console.ingest import ingest
    from tapwatch.console.store import Job, now_ms

    data = tmp_path / "data"
    settings = ConsoleSettings(data=data)
    prepare_data(settings)
    factory = open_database(settings.url)
    with factory() as db:
        ingest(db, eve_line("ep-new", timestamp="2099-01-01T00:00:00.000000+0000"))
        stale = eve_line("ep-old", timestamp="2020-01-01T00:00:30.000000+0000")
        stale["episode"].update(first_seen="2020-01-01T00:00:00.000Z", last_seen="2020-01-01T00:00:30.000Z")
        ingest(db, stale)
        for created in (now_ms() - 100 * 86_400_000, now_ms()):  # 100 days old, and new
            job = Job(name="j", owner="ann", kind="pcap", size=1, path="", records=1, status="done", created_ms=created)
            db.add(job)
            db.flush()
            (data / "jobs" / str(job.id)).mkdir()
            job.path = str(data / "jobs" / str(job.id) / "input.pcap")
            Path(job.path).write_bytes(b"x")
        db.commit()
    code, out = run(["purge", "--data-dir", str(data)])
    assert code == 0 and "purged 1 jobs and 1 episodes older than 90 days" in out
    assert sorted(p.name for p in (data / "jobs").iterdir()) == ["2"]
    with factory() as db:
        assert [e.id for e in db.scalars(select(Episode))] == ["ep-new"]


def test_serve_takes_its_addresses_from_the_environment_and_serves_process_metrics(tmp_path: Path) -> None:
    """What a container or a systemd unit sets: TAPWATCH_CONSOLE_HOST, _PORT, _METRICS_HOST, _METRICS_PORT."""
    import os
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from tests.support.env import free_port

    data = tmp_path / "data"
    assert run(["user", "add", "ada", "--role", "admin", "--data-dir", str(data)], f"{PASSWORD}\n{PASSWORD}\n")[0] == 0
    port, metrics = free_port(), free_port()
    env = {**os.environ, "TAPWATCH_CONSOLE_DATA": str(data), "TAPWATCH_CONSOLE_HOST": "127.0.0.1",
           "TAPWATCH_CONSOLE_PORT": str(port), "TAPWATCH_CONSOLE_METRICS_HOST": "127.0.0.2",
           "TAPWATCH_CONSOLE_METRICS_PORT": str(metrics)}  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tapwatch.app", "console", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5).read().decode()
                text = urllib.request.urlopen(f"http://127.0.0.2:{metrics}/metrics", timeout=5).read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert 'name="username"' in page
        assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
        with pytest.raises(urllib.error.URLError):  # the metrics listen on the address given, not on 127.0.0.1
            urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
