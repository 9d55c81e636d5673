"""The container healthcheck of a tapwatch process: its ``/livez``, then its ``/readyz``, standard library only.

The image has no curl or wget, so compose runs this file, copied into the image as
``/usr/local/bin/tapwatch-healthcheck``::

    /opt/venv/bin/python /usr/local/bin/tapwatch-healthcheck 9641

The port is the process's ``--metrics-port``; the address is ``TAPWATCH_METRICS_HOST`` (the setting the process
itself binds), where ``0.0.0.0``, ``::`` or nothing mean the loopback of the container. Exit status 0 when both
answer 200, 1 otherwise, with one line on standard error that ``docker inspect`` shows in the health log.
/readyz fails while a stage cannot do its work (Redis unreachable, model not loaded): compose's
``depends_on: condition: service_healthy`` starts the next stage only then.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def base_url(port: int, host: str | None) -> str:
    """The URL of the metrics server from inside the container.

    >>> base_url(9641, "0.0.0.0"), base_url(9640, "172.31.250.1"), base_url(9642, "::1")
    ('http://127.0.0.1:9641', 'http://172.31.250.1:9640', 'http://[::1]:9642')
    """
    host = (host or "").strip()
    if host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def check(url: str, timeout_s: float = 3.0) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"{url}: HTTP {resp.status}"
    except urllib.error.HTTPError as err:  # /readyz answers 503 with the failing checks in its body
        body = err.read(200).decode("utf-8", "replace").strip()
        return f"{url}: HTTP {err.code} {body}"
    except (urllib.error.URLError, OSError) as err:
        return f"{url}: {getattr(err, 'reason', err)}"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: tapwatch-healthcheck PORT (address from TAPWATCH_METRICS_HOST)", file=sys.stderr)
        return 2
    base = base_url(int(argv[0]), os.environ.get("TAPWATCH_METRICS_HOST"))
    for path in ("/livez", "/readyz"):
        problem = check(base + path)
        if problem is not None:
            print(f"unhealthy: {problem}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
