"""The ``tapwatch`` command line as a user runs it, in a child process: its exit code, its one-line errors, and
the summary ``detect`` and ``run`` print."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import click

TAPWATCH = [sys.executable, "-m", "tapwatch.app"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TAPWATCH, *args], capture_output=True, text=True, timeout=120)


def run_as_nobody(command: click.Command, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a click ``command`` in a forked child that dropped to uid/gid 65534 (no capabilities left); its exit
    code and standard error (needs root to drop privileges)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run the command, report stderr and the exit code
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    command.main(list(args), standalone_mode=True)
                except SystemExit as exit_:
                    code = int(exit_.code or 0)
            os.write(write_fd, err.getvalue().encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        stderr = fh.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(list(args), os.waitstatus_to_exitcode(status), "", stderr)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in lines if ln.startswith("tapwatch: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def sample_pcap(shared: Path) -> Path:
    return shared / "pcaps" / "zeek" / "ssh" / "sshguess.pcap"


def tapwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
    return subprocess.Popen([*TAPWATCH, *args], env={**clean, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def summary_of(stderr: str) -> dict[str, str]:
    """The summary's ``name   value`` lines."""
    return {m[1]: m[2] for m in re.finditer(r"^  (packets|flows|windows|verdicts|alerts|dropped) +(.*)$", stderr, re.M)}


def per_class(text: str) -> dict[str, int]:
    """``"212: DoS 4, PortScan 200 (…)"`` → {"DoS": 4, "PortScan": 200}."""
    listed = text.split(":", 1)[1].split("(")[0] if ":" in text else ""
    return {name: int(n) for name, n in re.findall(r"([A-Za-z][\w-]*) (\d+)", listed)}
