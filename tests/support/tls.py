"""A throwaway certificate authority and one server certificate, made by openssl, for tests of TLS to Redis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.env import need


def make_test_ca(folder: Path, subject_alt_name: str) -> tuple[Path, Path, Path]:
    """``ca.crt``, ``redis.crt`` and ``redis.key`` in ``folder`` (created if missing), the server certificate valid
    for ``subject_alt_name`` (e.g. ``DNS:localhost,IP:127.0.0.1``) for two days."""
    need(shutil.which("openssl") is not None, "openssl is not on PATH")
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=120)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=tapwatch test CA")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key", "-out", "redis.csr", "-subj", "/CN=redis")
    (folder / "ext.cnf").write_text(f"subjectAltName={subject_alt_name}\n")
    ssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "redis.crt", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return folder / "ca.crt", folder / "redis.crt", folder / "redis.key"
