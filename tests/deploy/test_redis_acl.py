"""The Redis ACL users of deploy/redis/users.acl are enough for each stage and no more, over plain TCP and TLS.

A real redis-server loads the ACL file the Redis pod's init container writes: the committed rules (which hold no
password) with generated passwords added by the committed ``deploy/redis/build-acl.sh``, the very script the pod runs.
Only the tests add one more user, ``inspector`` (every right), to look at what the stages wrote. Then the real stages
run as processes, each with its own user in its Redis URL (``redis://USER:PASSWORD@host:port/0``): ``tapwatch capture``
on the committed sample pcap, ``tapwatch worker``, ``tapwatch alerter`` (with deploy/k8s's threshold.config and
allow-list) and ``tapwatch console serve`` reading the alert stream; an alert line about the sample's scan reaches the
console, and Redis's ACL LOG shows that nothing any stage sent was refused. The KEDA user reads the group's lag and
pending count. Then each user is refused, with NOPERM, what its stage must not do. The TLS test starts Redis from
deploy/k8s/config/redis.conf (only paths and the port replaced) with certificates from a CA made by openssl in tmp,
and capture writes through ``rediss://...?ssl_ca_certs=CA`` as in the manifests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.cli import TAPWATCH
from tests.support.env import REPO, free_port, need
from tests.support.tls import make_test_ca

RULES = REPO / "deploy" / "redis" / "users.acl"
BUILD_ACL = REPO / "deploy" / "redis" / "build-acl.sh"
REDIS_CONF = REPO / "deploy" / "k8s" / "config" / "redis.conf"
ALERTING_CONFIG = REPO / "deploy" / "k8s" / "config"
SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
MODEL = REPO / "models" / "hybrid-lab.onnx"
CARD = REPO / "models" / "hybrid-lab.card.json"
STAGES = ("capture", "worker", "alerter", "console", "keda", "probe")
SAMPLE_WINDOWS = 212  # windows `tapwatch capture` writes for capture/samples/sample.pcap with the hybrid-lab card


def _redis_server() -> str:
    found = shutil.which("redis-server")
    need(found is not None, "Debian's redis-server (with TLS) is not on PATH")
    assert found is not None
    return found


def _acl_users(workdir: Path) -> tuple[Path, dict[str, str]]:
    """The ACL file as the init container builds it, plus the test's inspector; the passwords by user."""
    passwords = {user: secrets.token_hex(16) for user in (*STAGES, "inspector")}
    pwdir = workdir / "passwords"
    pwdir.mkdir(parents=True)
    for user in STAGES:
        (pwdir / user).write_text(passwords[user] + "\n")  # a trailing newline, as `echo` leaves, is not the password
    acl = workdir / "users.acl"
    subprocess.run(["sh", str(BUILD_ACL), str(RULES), str(pwdir), str(acl)], check=True, capture_output=True)
    with acl.open("a") as fh:
        fh.write(f"user inspector on >{passwords['inspector']} ~* &* +@all\n")
    return acl, passwords


class _Redis:
    """A private redis-server with the given arguments; ``client(user)`` connects as that ACL user."""

    def __init__(self, workdir: Path, passwords: dict[str, str], args: list[str], tls_ca: Path | None = None):
        self.port = free_port()
        self.passwords = passwords
        self.tls_ca = tls_ca
        port_args = ["--tls-port", str(self.port), "--port", "0"] if tls_ca else ["--port", str(self.port)]
        self.log = workdir / "redis.log"
        cmd = [_redis_server(), *args, *port_args, "--bind", "127.0.0.1", "--dir", str(workdir), "--logfile",
               str(self.log)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client("inspector").ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.log.read_text() if self.log.exists() else ""
                    raise RuntimeError(f"redis-server did not start: {log[-2000:]}") from None
                time.sleep(0.05)

    def url(self, user: str) -> str:
        scheme = "rediss" if self.tls_ca else "redis"
        query = f"?ssl_ca_certs={self.tls_ca}" if self.tls_ca else ""
        return f"{scheme}://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0{query}"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user), socket_timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def _server(tmp_path: Path, args: list[str] | None = None, tls_ca: Path | None = None) -> Iterator[_Redis]:
    acl, passwords = _acl_users(tmp_path / "acl")
    server = _Redis(tmp_path, passwords, [*(args or []), "--aclfile", str(acl)], tls_ca)
    try:
        yield server
    finally:
        server.stop()


class _Stages:
    """The tapwatch processes a test started (by PID), their logs, and their end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen([*TAPWATCH, *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                                **(env or {})}, cwd=REPO)  # fmt: skip
        self.procs[name] = proc
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.tmp_path / f'{n}.log').read_text()[-3000:]}" for n in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _console_stored(metrics_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    found = re.search(r'^tapwatch_console_alert_lines_total\{outcome="stored"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def test_committed_rules_load_and_let_nobody_in(tmp_path: Path) -> None:
    """The committed file is valid ACL syntax for Redis 7, and as committed (no passwords) no user can log in: not
    the default user (off), not a stage's."""
    port = free_port()
    cmd = [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--aclfile", str(RULES)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        once = Retry(NoBackoff(), 0)  # redis-py retries a refused login for seconds by default
        anonymous = redis.Redis(port=port, socket_timeout=5, protocol=2, retry=once)
        deadline = time.monotonic() + 10
        while True:
            try:
                with pytest.raises(redis.AuthenticationError, match="Authentication required"):  # NOAUTH
                    anonymous.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server refused the ACL file"
                time.sleep(0.05)
        for user in STAGES:
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port, username=user, password="any", socket_timeout=5, retry=once).ping()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_build_acl_refuses_unset_passwords(tmp_path: Path) -> None:
    """An empty password or the example placeholder stops the build (Redis never starts with it); a user without a
    password file keeps no password, and the build says so."""
    for bad in ("", "CHANGE-ME-worker"):
        pwdir = tmp_path / f"pw{len(bad)}"
        pwdir.mkdir()
        (pwdir / "worker").write_text(bad)
        out = subprocess.run(["sh", str(BUILD_ACL), str(RULES), str(pwdir), str(tmp_path / "x.acl")],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 1 and "worker" in out.stderr, out
        assert not (tmp_path / "x.acl").exists()
    pwdir = tmp_path / "only-capture"
    pwdir.mkdir()
    (pwdir / "capture").write_text("s3cret-capture")
    out = subprocess.run(["sh", str(BUILD_ACL), str(RULES), str(pwdir), str(tmp_path / "y.acl")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "user worker cannot log in" in out.stderr
    lines = {ln.split()[1]: ln for ln in (tmp_path / "y.acl").read_text().splitlines()}
    assert lines["capture"].endswith(" #" + hashlib.sha256(b"s3cret-capture").hexdigest())
    assert "#" not in lines["worker"] and "s3cret" not in (tmp_path / "y.acl").read_text()
    assert (tmp_path / "y.acl").stat().st_mode & 0o077 == 0


def _start_console(stages: _Stages, server: _Redis, tmp_path: Path) -> int:
    """``tapwatch console serve`` reading the alert stream as user console (from the environment, as in the pod),
    after its first user is added; returns its metrics port."""
    env = {"TAPWATCH_CONSOLE_DATA": str(tmp_path / "console"), "TAPWATCH_CONSOLE_REDIS_URL": server.url("console")}
    add_admin = [*TAPWATCH, "console", "user", "add", "admin", "--role", "admin"]
    subprocess.run(add_admin, input=b"pw-0123456789ab\n" * 2, env={**os.environ, **env}, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    metrics_port = free_port()
    stages.start("console", "console", "serve", "--port", str(free_port()), "--metrics-port", str(metrics_port),
                 env=env)  # fmt: skip
    return metrics_port


def _run_pipeline(stages: _Stages, server: _Redis, tmp_path: Path) -> None:
    """Capture the sample, then worker, alerter and console until the console has stored an alert line."""
    capture = stages.start("capture", "capture", "-r", str(SAMPLE), "--card", str(CARD), "--redis",
                           server.url("capture"), "--metrics-port", "0")  # fmt: skip
    assert capture.wait(timeout=120) == 0, stages.logs()
    metrics_port = _start_console(stages, server, tmp_path)
    stages.start("worker", "worker", "--model", str(MODEL), "--redis", server.url("worker"), "--metrics-port", "0")
    stages.start("alerter", "alerter", "--card", str(CARD), "--redis", server.url("alerter"), "--quiet", "3",
                 "--threshold-file", str(ALERTING_CONFIG / "threshold.config"), "--allow-list",
                 str(ALERTING_CONFIG / "allow-list.txt"), "--metrics-port", "0")  # fmt: skip
    deadline = time.monotonic() + 120
    while _console_stored(metrics_port) < 1:
        assert time.monotonic() < deadline, stages.logs()
        assert all(p.poll() is None for n, p in stages.procs.items() if n != "capture"), stages.logs()
        time.sleep(0.5)


def _run_flows_alerter(server: _Redis, tmp_path: Path) -> None:
    """The previous release's per-window alerts (--alert-mode flows), in a consumer group of its own on the same
    verdicts, until it has written a dedup key (with its alert entry, by one Lua script: EVALSHA, SCRIPT LOAD)."""
    (tmp_path / "flows").mkdir()
    flows = _Stages(tmp_path / "flows")
    inspector = server.client("inspector")
    try:
        alerter = flows.start("alerter", "alerter", "--card", str(CARD), "--redis", server.url("alerter"),
                              "--alert-mode", "flows", "--metrics-port", "0",
                              env={"TAPWATCH_ALERTER_GROUP": "alerters-flows"})  # fmt: skip
        deadline = time.monotonic() + 60
        while not list(inspector.scan_iter("tapwatch:alerted:*", count=1000)):
            assert time.monotonic() < deadline and alerter.poll() is None, flows.logs()
            time.sleep(0.5)
    finally:
        flows.stop()


@pytest.mark.slow
def test_every_stage_runs_with_its_own_user(tmp_path: Path) -> None:
    """Capture, worker, alerter (both modes) and the console's stream reader, each with its user, turn the sample's
    scan into an alert line the console stores; no command of theirs is refused; the KEDA user reads lag and
    pending."""
    with _server(tmp_path) as server:
        inspector = server.client("inspector")
        stages = _Stages(tmp_path)
        try:
            _run_pipeline(stages, server, tmp_path)
            keda = server.client("keda")
            groups = {g["name"]: g for g in keda.xinfo_groups("tapwatch:windows")}
            assert groups[b"workers"]["lag"] == 0 and groups[b"workers"]["entries-read"] == SAMPLE_WINDOWS
            assert keda.xpending("tapwatch:windows", "workers")["pending"] == 0
            assert int(keda.info("server")["redis_version"].split(".")[0]) >= 7
        finally:
            stages.stop()
        assert inspector.xlen("tapwatch:windows") == inspector.xlen("tapwatch:verdicts") == SAMPLE_WINDOWS
        assert inspector.xlen("tapwatch:aggregates") > 0
        alerts = inspector.xrange("tapwatch:alerts")
        assert alerts and all(b'"family":"scan"' in fields[b"eve"] for _, fields in alerts), alerts[:1]
        assert inspector.exists("tapwatch:dead") == 0
        _run_flows_alerter(server, tmp_path)
        assert inspector.xlen("tapwatch:alerts") > len(alerts)
        refused = inspector.acl_log()
        assert refused == [], refused  # nothing a stage sent was refused by its ACL user


# (user, command that user's stage must never send); each is refused with NOPERM.
REFUSED = [
    ("capture", ("XRANGE", "tapwatch:verdicts", "-", "+")),
    ("capture", ("XREADGROUP", "GROUP", "workers", "c", "STREAMS", "tapwatch:windows", ">")),
    ("capture", ("XADD", "tapwatch:alerts", "*", "eve", "{}")),
    ("capture", ("XADD", "tapwatch:verdicts", "*", "v", "1")),
    ("worker", ("XADD", "tapwatch:alerts", "*", "eve", "{}")),
    ("worker", ("XADD", "tapwatch:windows", "*", "w", "1")),
    ("worker", ("XREADGROUP", "GROUP", "alerters", "c", "STREAMS", "tapwatch:verdicts", ">")),
    ("worker", ("SET", "tapwatch:episode:x", "{}")),
    ("alerter", ("XADD", "tapwatch:windows", "*", "w", "1")),
    ("alerter", ("XADD", "tapwatch:verdicts", "*", "v", "1")),
    ("alerter", ("SET", "other", "1")),
    ("alerter", ("XREADGROUP", "GROUP", "workers", "c", "STREAMS", "tapwatch:windows", ">")),
    ("console", ("XADD", "tapwatch:alerts", "*", "eve", "{}")),
    ("console", ("XRANGE", "tapwatch:verdicts", "-", "+")),
    ("console", ("GET", "tapwatch:episode:x")),
    ("keda", ("XADD", "tapwatch:windows", "*", "w", "1")),
    ("keda", ("XRANGE", "tapwatch:windows", "-", "+")),
    ("keda", ("XINFO", "GROUPS", "tapwatch:alerts")),
    ("probe", ("XLEN", "tapwatch:windows")),
    *[(user, ("KEYS", "*")) for user in STAGES],
    *[(user, ("FLUSHALL",)) for user in STAGES],
    *[(user, ("CONFIG", "GET", "requirepass")) for user in STAGES],
    *[(user, ("ACL", "LIST")) for user in STAGES],
]
# One thing each user may do, so that a refusal above is the ACL's and not a wrong password.
ALLOWED = [
    ("capture", ("XADD", "tapwatch:windows", "*", "w", "1")),
    ("worker", ("XADD", "tapwatch:verdicts", "*", "v", "1")),
    ("alerter", ("XADD", "tapwatch:alerts", "*", "eve", "{}")),
    ("alerter", ("SET", "tapwatch:episode:x", "{}")),
    ("worker", ("XADD", "tapwatch:dead", "*", "reason", "test")),
    ("alerter", ("XADD", "tapwatch:dead", "*", "reason", "test")),
    ("console", ("XADD", "tapwatch:dead", "*", "reason", "test")),
    ("keda", ("XLEN", "tapwatch:windows")),
    ("probe", ("PING",)),
]


def test_each_user_is_refused_what_its_stage_must_not_do(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        for user, command in ALLOWED:
            server.client(user).execute_command(*command)
        for user, command in REFUSED:
            # redis-py raises NoPermissionError for Redis's NOPERM reply (and strips the word from the message).
            with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
                server.client(user).execute_command(*command)
        assert len(server.client("inspector").acl_log(count=1000)) >= len(REFUSED) // 2  # Redis groups repeats


def _test_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost, made by openssl."""
    return make_test_ca(tmp, "DNS:localhost,IP:127.0.0.1")


def _deployed_conf(tmp_path: Path, ca: Path, cert: Path, key: Path) -> Path:
    """deploy/k8s/config/redis.conf with the Redis pod's mount paths mapped into tmp (Redis reads ``dir`` while it
    parses the file, before any command-line option, so the paths cannot be overridden on the command line)."""
    text = REDIS_CONF.read_text()
    mounts = {"/etc/redis/tls/tls.crt": cert, "/etc/redis/tls/tls.key": key, "/etc/redis/tls/ca.crt": ca,
              "dir /data": f"dir {tmp_path}", "aclfile /run/redis/users.acl": ""}  # fmt: skip
    for mount, local in mounts.items():
        assert text.count(mount) == 1, f"{mount} is not in {REDIS_CONF} once"
        text = text.replace(mount, str(local))
    conf = tmp_path / "redis.conf"
    conf.write_text(text)
    return conf


def test_tls_with_the_deployed_redis_conf(tmp_path: Path) -> None:
    """Redis from deploy/k8s/config/redis.conf, TLS only; capture and a worker work through rediss:// with the CA in
    their URL, a client without the CA is refused, and the Redis pod's probe command answers PONG."""
    ca, cert, key = _test_ca(tmp_path / "tls")
    with _server(tmp_path, [str(_deployed_conf(tmp_path, ca, cert, key))], tls_ca=ca) as server:
        capture = subprocess.run([*TAPWATCH, "capture", "-r", str(SAMPLE), "--card", str(CARD), "--redis",
                                  server.url("capture"), "--metrics-port", "0"], capture_output=True, text=True,
                                 timeout=120, cwd=REPO)  # fmt: skip
        assert capture.returncode == 0, capture.stderr
        assert f"{SAMPLE_WINDOWS} sent, 0 dropped" in capture.stderr
        inspector = server.client("inspector")
        assert inspector.xlen("tapwatch:windows") == SAMPLE_WINDOWS
        stages = _Stages(tmp_path)  # the worker's pipelined writes (hiredis-packed) over TLS too
        try:
            worker = stages.start("worker", "worker", "--model", str(MODEL), "--redis", server.url("worker"),
                                  "--metrics-port", "0")  # fmt: skip
            deadline = time.monotonic() + 60
            while inspector.xlen("tapwatch:verdicts") < SAMPLE_WINDOWS:
                assert time.monotonic() < deadline and worker.poll() is None, stages.logs()
                time.sleep(0.3)
        finally:
            stages.stop()
        assert inspector.acl_log() == []

        no_ca = f"rediss://keda:{server.passwords['keda']}@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            redis.Redis.from_url(no_ca, socket_timeout=5).ping()
        plain = f"redis://keda:{server.passwords['keda']}@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(plain, socket_timeout=2).ping()

        (tmp_path / "probe").write_text(server.passwords["probe"])
        probe = subprocess.run(["sh", "-c", f'redis-cli --tls --cacert {ca} -h 127.0.0.1 -p {server.port} --user probe'
                                f' --pass "$(cat {tmp_path / "probe"})" --no-auth-warning ping'],
                               capture_output=True, text=True, timeout=30)  # fmt: skip
        assert probe.stdout.strip() == "PONG", probe
