"""Live capture as a non-root user through file capabilities, the way the capture image does it.

deploy/compose/Dockerfile (stage ``capture``) copies Debian's ``python3.11`` into its venv as ``python-capture``
and gives that copy ``cap_net_raw,cap_net_admin+ep``; the container runs as uid 10001 with ``cap_add: NET_RAW,
NET_ADMIN`` and without ``no-new-privileges`` (deploy/compose/README.md says why). Here the same on the machine:
a venv of Debian's ``/usr/bin/python3.11`` in a temporary folder, two copies of the interpreter in its ``bin/``
(one setcap'd, one plain), and tapwatch reached through a ``.pth`` that adds this checkout's site-packages (the
stand-in for the image's ``pip install``). In a namespace pair, ``tapwatch capture -i VETH`` is started by root
and drops to ``nobody`` (setuid from root without keep-caps clears every capability, as Docker starts a non-root
``USER``), then executes the interpreter copy:

* the setcap'd copy captures: three UDP exchanges between the namespaces come out as three windows, and the
  process is uid 65534 with exactly CAP_NET_RAW and CAP_NET_ADMIN;
* the plain copy is refused with tapwatch's one error line (exit 2);
* the setcap'd copy under ``no_new_privs`` (compose's ``security_opt: no-new-privileges``) is refused the same way;
* with CAP_NET_ADMIN outside the bounding set (Docker's default set, a capture service without ``cap_add:
  NET_ADMIN``) the kernel refuses to execute the file at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lab.netns import NsPair, ns_pair, run_in, wait_listening
from tests.support.cli import one_error_line
from tests.support.env import REPO, free_port, need, need_netns

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
"""The interpreter of the image (Debian bookworm's python3.11), copied and setcap'd as the Dockerfile does."""
FILE_CAPS = "cap_net_raw,cap_net_admin+ep"
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
NOBODY = 65534
ECHO_PORT = 9999
HEALTHCHECK = REPO / "deploy" / "compose" / "healthcheck.py"

# Started by root inside the namespace: optionally drop CAP_NET_ADMIN from the bounding set, become nobody (setuid
# from root clears the permitted and effective sets), optionally set no_new_privs, then execute the command.
LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
mode, argv = sys.argv[1], sys.argv[2:]
if mode == "no-net-admin" and libc.prctl(24, 12, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_NET_ADMIN
    sys.exit("prctl(PR_CAPBSET_DROP) failed")
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
if mode == "no-new-privs" and libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("prctl(PR_SET_NO_NEW_PRIVS) failed")
try:
    os.execv(argv[0], argv)
except OSError as err:
    print("exec refused:", err, file=sys.stderr)
    sys.exit(126)
"""

ECHO_SERVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {ECHO_PORT}))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data.upper(), peer)
"""

CLIENT = f"""
import socket, sys
for i in range(3):  # three flows: a new socket (client port) each, a request and its answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        c.sendto(b"hello %d" % i, (sys.argv[1], {ECHO_PORT}))
        assert c.recv(2048) == b"HELLO %d" % i
"""


@dataclass(frozen=True)
class Interpreters:
    capture: Path  # the copy with file capabilities (the image's /opt/venv/bin/python-capture)
    plain: Path  # the same binary without them


@pytest.fixture(scope="module")
def interpreters() -> Iterator[Interpreters]:
    need_netns()
    need(DEBIAN_PYTHON.exists(), f"{DEBIAN_PYTHON} (Debian's python3.11, the image's interpreter) is not installed")
    need(shutil.which("setcap") is not None, "setcap is not installed (Debian package libcap2-bin)")
    # Not under pytest's tmp_path: its base folder is mode 0700, which nobody could not traverse.
    root = Path(tempfile.mkdtemp(prefix="tw-capvenv-"))
    try:
        root.chmod(0o755)
        subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
        site = root / "lib" / "python3.11" / "site-packages"
        project_site = sysconfig.get_paths()["purelib"]  # this checkout's venv: tapwatch (editable) and its deps
        (site / "tapwatch-project.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")
        found = Interpreters(capture=root / "bin" / "python-capture", plain=root / "bin" / "python-plain")
        for copy in (found.capture, found.plain):
            shutil.copy2(DEBIAN_PYTHON, copy)
        setcap = subprocess.run(["setcap", FILE_CAPS, str(found.capture)], capture_output=True, text=True)
        need(setcap.returncode == 0, f"setcap failed on {root}'s filesystem: {setcap.stderr.strip()}")
        probe = as_nobody("plain", [str(found.plain), "-c", "import tapwatch.app.cli"], netns=None)
        need(
            probe.returncode == 0,
            "the test venv cannot import tapwatch as nobody (is the checkout readable by others? Debian's python "
            f"is 3.11.2, for which redis-py needs the async-timeout package): {probe.stderr.strip()[-300:]}",
        )
        yield found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(mode: str, argv: list[str], netns: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as nobody through the launcher (in ``netns`` when given) and wait for it."""
    cmd = launcher_argv(mode, argv, netns)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", env=clean_env())


def launcher_argv(mode: str, argv: list[str], netns: str | None) -> list[str]:
    inner = [str(DEBIAN_PYTHON), "-c", LAUNCHER, mode, *argv]
    return ["ip", "netns", "exec", netns, *inner] if netns else inner


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TAPWATCH_", "PYTHON"))}


def capture_argv(python: Path, iface: str, metrics_port: int) -> list[str]:
    return [str(python), "-m", "tapwatch.app", "capture", "-i", iface, "--bpf", f"udp and port {ECHO_PORT}",
            "--idle-timeout", "2", "--metrics-port", str(metrics_port), "--sensor", "captest"]  # fmt: skip


def capabilities(pid: int) -> dict[str, str]:
    """Uid and capability sets of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: v.split()[0] for k, v in fields.items() if k in ("Uid", "CapPrm", "CapEff", "NoNewPrivs")}


def wait_healthy(pair: NsPair, proc: subprocess.Popen[str], port: int, timeout: float = 20) -> None:
    """The compose healthcheck (deploy/compose/healthcheck.py) against the capture, inside its namespace."""
    deadline = time.monotonic() + timeout
    env = {**clean_env(), "TAPWATCH_METRICS_HOST": "127.0.0.1"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"capture exited with {proc.returncode}: {proc.communicate()[1][-2000:]}")
        probe = subprocess.run(
            ["ip", "netns", "exec", pair.server.netns, str(DEBIAN_PYTHON), str(HEALTHCHECK), str(port)],
            capture_output=True, text=True, timeout=10, env=env,
        )  # fmt: skip
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"capture not healthy after {timeout} s: {probe.stderr.strip()}")


def test_file_capabilities_let_nobody_capture_live_in_a_namespace(interpreters: Interpreters) -> None:
    port = free_port()
    with ns_pair() as pair:
        server = pair.server
        pair.start(server, [str(DEBIAN_PYTHON), "-c", ECHO_SERVER])
        wait_listening(server, "udp", ECHO_PORT)
        proc = subprocess.Popen(
            launcher_argv("drop", capture_argv(interpreters.capture, server.iface, port), server.netns),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", env=clean_env(),
        )  # fmt: skip
        pair.procs.append(proc)  # stopped by PID at teardown if an assertion fails first
        wait_healthy(pair, proc, port)
        status = capabilities(proc.pid)
        time.sleep(0.5)  # let libpcap's handle settle before the traffic
        run_in(pair.client.netns, [str(DEBIAN_PYTHON), "-c", CLIENT, server.ip], timeout=30)
        time.sleep(3)  # past the 2 s idle timeout: the three flows close
        assert pair.stop(proc, timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
        err = proc.stderr.read() if proc.stderr else ""
    assert status["Uid"] == str(NOBODY), status
    assert int(status["CapEff"], 16) == (1 << CAP_NET_RAW) | (1 << CAP_NET_ADMIN), status
    assert "tapwatch capture: 3 windows produced, 3 sent, 0 dropped" in err, err


@pytest.mark.parametrize(
    ("python", "mode"),
    [("plain", "drop"), ("capture", "no-new-privs")],
    ids=["without-file-capabilities", "no-new-privileges"],
)
def test_without_the_capability_nobody_is_refused_with_one_error_line(
    interpreters: Interpreters, python: str, mode: str
) -> None:
    with ns_pair() as pair:
        argv = capture_argv(getattr(interpreters, python), pair.server.iface, free_port())
        done = as_nobody(mode, argv, pair.server.netns)
    line = one_error_line(done)
    assert line == f"tapwatch: error: {pair.server.iface}: permission denied: live capture needs CAP_NET_RAW", line


def test_a_file_capability_outside_the_bounding_set_is_not_executed(interpreters: Interpreters) -> None:
    """Why compose's capture service adds NET_ADMIN: Docker's default bounding set lacks it, and then the kernel
    refuses to execute a file whose capabilities it cannot grant in full."""
    with ns_pair() as pair:
        done = as_nobody("no-net-admin", capture_argv(interpreters.capture, pair.server.iface, 0), pair.server.netns)
    assert done.returncode == 126, (done.returncode, done.stderr)
    assert "exec refused" in done.stderr and "Operation not permitted" in done.stderr, done.stderr


def test_the_capture_image_is_built_the_way_this_test_builds_its_interpreter() -> None:
    """The tests above stand for the image only while the Dockerfile copies and setcaps the same interpreter."""
    dockerfile = (REPO / "deploy" / "compose" / "Dockerfile").read_text()
    assert f"cp {DEBIAN_PYTHON} /opt/venv/bin/python-capture" in dockerfile
    assert f"setcap {FILE_CAPS} /opt/venv/bin/python-capture" in dockerfile
    assert "FROM debian:12" in dockerfile and "python3.11" in dockerfile  # Debian bookworm's python3.11, as here
    capture = yaml.safe_load((REPO / "deploy" / "compose" / "compose.yaml").read_text())["services"]["capture"]
    assert capture["command"][:3] == ["/opt/venv/bin/python-capture", "-m", "tapwatch.app"]
