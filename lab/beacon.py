"""A beaconing bot for the lab: periodic small HTTPS check-ins to a C2 server, on the standard library only.

Each round opens one TLS connection to the C2 (``--url``; its certificate is self-signed, so it is not
verified), ``POST /beacon`` a small JSON check-in (bot id, sequence number, a few random bytes of "result")
and ``GET /tasks``, then closes it and sleeps ``period`` seconds ± ``jitter`` (a fraction), as C2 implants
do to look less regular. It stops after ``--count`` rounds: bounded in packets and in seconds (each request
waits at most ``--timeout`` s). A failed round is counted, not fatal. It prints one summary line and exits 1
when no round succeeded. :mod:`lab.attacks` runs it on an infected client host::

    python -m lab.beacon --url https://10.213.5.2:8443/ --period 5 --jitter 0.3 --count 8 --seed 7

Example
-------
>>> sleeps(random.Random(7), 5.0, 0.3, 4)
[4.47, 3.95, 5.45, 3.72]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import random
import ssl
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_COUNT = 1000  # rounds: a run of the lab is minutes, not days
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)


@dataclass(frozen=True)
class BeaconPlan:
    """What the bot does.

    Parameters
    ----------
    url
        The C2's base URL (``https://host:port/``; an IPv6 host in brackets).
    period, jitter
        Seconds between rounds, and the largest relative deviation (0.3: ± 30 %).
    count
        Rounds (1..:data:`MAX_COUNT`).
    timeout
        Seconds each connection and request may take.
    seed
        Seeds the bot id, the jitter and the payloads.
    """

    url: str
    period: float = 5.0
    jitter: float = 0.3
    count: int = 8
    timeout: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme != "https" or not urlsplit(self.url).hostname:
            raise ValueError(f"the C2 url must be https://host:port/, got {self.url!r}")
        if not 1 <= self.count <= MAX_COUNT or self.period <= 0 or not 0 <= self.jitter < 1 or self.timeout <= 0:
            raise ValueError(f"need 1 <= count <= {MAX_COUNT}, period > 0, 0 <= jitter < 1, timeout > 0")


def sleeps(rng: random.Random, period: float, jitter: float, count: int) -> list[float]:
    """The pauses between rounds: ``period`` scaled by a uniform factor in ``1 ± jitter``, to 10 ms."""
    return [round(period * (1 + rng.uniform(-jitter, jitter)), 2) for _ in range(count)]


def _round(plan: BeaconPlan, bot_id: str, seq: int, rng: random.Random) -> bool:
    """One check-in and one task poll over one connection; True when both got a 2xx answer."""
    parts = urlsplit(plan.url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the lab C2's certificate is self-signed
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=plan.timeout, context=context)
    base = parts.path.rstrip("/")
    body = json.dumps({"id": bot_id, "seq": seq, "result": rng.randbytes(rng.randint(16, 96)).hex()})
    try:
        statuses = []
        for method, path, data in (("POST", "/beacon", body), ("GET", "/tasks", None)):
            headers = {"User-Agent": USER_AGENT, **({"Content-Type": "application/json"} if data else {})}
            conn.request(method, f"{base}{path}?id={bot_id}", body=data, headers=headers)
            reply = conn.getresponse()
            reply.read()
            statuses.append(reply.status)
        return all(200 <= s < 300 for s in statuses)
    except (OSError, http.client.HTTPException) as err:
        log.info("bot %s: round %s failed: %s", bot_id, seq, err)
        return False
    finally:
        conn.close()


def run(plan: BeaconPlan) -> int:
    """Run every round; return how many succeeded."""
    rng = random.Random(plan.seed)
    bot_id = f"{rng.getrandbits(48):012x}"
    ok = 0
    pauses = sleeps(rng, plan.period, plan.jitter, plan.count - 1)
    for seq in range(plan.count):
        ok += _round(plan, bot_id, seq, rng)
        if seq < len(pauses):
            time.sleep(pauses[seq])
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.beacon", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="the C2's base URL, https://host:port/")
    parser.add_argument("--period", type=float, default=5.0, help="seconds between rounds (default 5)")
    parser.add_argument("--jitter", type=float, default=0.3, help="relative deviation of the period (default 0.3)")
    parser.add_argument("--count", type=int, default=8, help=f"rounds, at most {MAX_COUNT} (default 8)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per connection (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bot id, jitter and payloads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    try:
        plan = BeaconPlan(args.url, args.period, args.jitter, args.count, args.timeout, args.seed)
    except ValueError as err:
        parser.error(str(err))
    ok = run(plan)
    print(f"beacon: {ok} of {plan.count} rounds succeeded")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
