"""A throwaway system user for the lab's login services (sshd, vsftpd), removed with its home afterwards.

:func:`lab_user` creates ``twlab<8 hex digits>`` with a random password that is returned to the caller and
never logged nor put on a command line (``chpasswd`` reads it on standard input). Its shell defaults to
``/usr/sbin/nologin``: the account cannot log in anywhere, in the lab or out of it, until a service that
needs a shell (sshd running commands) asks for ``/bin/sh``; the account still exists on the whole machine
(namespaces share ``/etc/passwd``), which is why it is short-lived and removed on every exit, SIGINT and
SIGTERM included.

Example
-------
>>> with lab_user() as user:  # doctest: +SKIP
...     print(user.name, user.home)
twlab1f2e3d4c /home/twlab1f2e3d4c
>>> LabUser("twlabdoc", "secret", "/home/twlabdoc", "/usr/sbin/nologin")
LabUser(name='twlabdoc', home='/home/twlabdoc', shell='/usr/sbin/nologin')
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lab.topo_guard import signals_held, signals_raise
from lab.topo_plan import LabError

log = logging.getLogger(__name__)

NOLOGIN = "/usr/sbin/nologin"


@dataclass(frozen=True)
class LabUser:
    """The lab user: its name, password (kept out of ``repr``), home and shell."""

    name: str
    password: str = field(repr=False)
    home: str
    shell: str


def _run(argv: Sequence[str], stdin: str | None = None) -> None:
    """Run a user-administration command; raise :class:`LabError` (without the input: it may be a password)."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"{argv[0]} failed: {err}") from err
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()}")


def user_exists(name: str) -> bool:
    """Whether a user or a group called ``name`` exists.

    >>> user_exists("root"), user_exists("twlab-no-such-user")
    (True, False)
    """
    for lookup in (pwd.getpwnam, grp.getgrnam):
        try:
            lookup(name)
        except KeyError:
            continue
        return True
    return False


def remove_user(name: str) -> None:
    """Delete the user ``name`` with its home and group; a missing user is not an error."""
    if not user_exists(name):
        return
    try:
        _run(["userdel", "--remove", name])
    except LabError as err:
        if "currently used by process" not in str(err):
            raise
        # Only lab services run as this throwaway user (an sshd session a client or a guessing tool left):
        # end them, then delete the user.
        log.warning("lab user %s still has processes (%s): ending them", name, err)
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30, check=False)
        time.sleep(0.5)
        _run(["userdel", "--remove", name])
    if user_exists(name):
        raise LabError(f"lab user {name} is still there after userdel")
    log.info("lab user %s removed", name)


@contextlib.contextmanager
def lab_user(shell: str = NOLOGIN, prefix: str = "twlab") -> Iterator[LabUser]:
    """A fresh system user for the block, removed with its home afterwards (also on SIGINT and SIGTERM).

    Parameters
    ----------
    shell
        Its login shell: ``/usr/sbin/nologin`` (no login at all) or ``/bin/sh`` for sshd sessions.
    prefix
        Start of its name; 8 random hex digits follow.
    """
    if not os.path.exists(shell):
        raise LabError(f"lab user shell {shell} does not exist")
    name = f"{prefix}{secrets.token_hex(4)}"
    if user_exists(name):
        raise LabError(f"lab user {name} already exists: refusing to reuse an account")
    user = LabUser(name, secrets.token_urlsafe(18), f"/home/{name}", shell)
    with signals_raise():
        _run(["useradd", "--system", "--create-home", "--home-dir", user.home, "--shell", shell, "--user-group",
              name])  # fmt: skip
        try:
            _run(["chpasswd"], stdin=f"{name}:{user.password}\n")
            log.info("lab user %s created (home %s, shell %s)", name, user.home, shell)
            yield user
        finally:
            with signals_held():
                remove_user(name)
