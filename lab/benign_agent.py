"""Small Python clients for the benign traffic, run inside a client's namespace as ``python -m lab.benign_agent``.

* ``get``: fetch several paths over one keep-alive connection (``http.client``), as a browser or an API
  client does; ``--tls`` for HTTPS (the lab's certificate is self-signed: not verified; SNI is ``--name``).
* ``post``: post a file (``--file``) to a path.
* ``idle``: hold one connection open for ``--hold`` seconds, asking for a path every ``--every`` seconds
  (a dashboard left open); SIGTERM closes it cleanly and exits 0.
* ``sntp``: ``--count`` SNTP (RFC 4330) requests from one socket; prints the offsets. It only reads time:
  nothing here can set the clock.

Exit status 0 when everything answered (HTTP status below 400), 1 otherwise, with one line on stderr.
It uses argparse, not click: it starts for every session, so its start-up time counts.

Example
-------
>>> request = sntp_request(1_700_000_000.25)
>>> len(request), request[0] == 0x23, parse_ntp_time(request[40:48])
(48, True, 1700000000.25)
"""

from __future__ import annotations

import argparse
import http.client
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Sequence
from types import FrameType

NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 (NTP's epoch) to 1970-01-01


def sntp_request(now: float) -> bytes:
    """An SNTP client request (LI 0, version 4, mode 3) whose transmit timestamp is ``now`` (epoch seconds)."""
    seconds = int(now) + NTP_EPOCH
    fraction = int((now % 1) * 2**32)
    return bytes([0x23]) + bytes(39) + struct.pack("!II", seconds, fraction)


def parse_ntp_time(raw: bytes) -> float:
    seconds, fraction = struct.unpack("!II", raw)
    return float(seconds - NTP_EPOCH + fraction / 2**32)


def sntp(host: str, port: int, count: int, timeout: float) -> list[float]:
    """The clock offsets (seconds) from ``count`` requests to ``host``; raises OSError when one gets no answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    offsets = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for i in range(count):
            if i:
                time.sleep(0.5)
            sent = time.time()
            sock.sendto(sntp_request(sent), (host, port))
            reply, _ = sock.recvfrom(512)
            got = time.time()
            if len(reply) < 48:
                raise OSError(f"short NTP reply of {len(reply)} bytes")
            server_rx, server_tx = parse_ntp_time(reply[32:40]), parse_ntp_time(reply[40:48])
            offsets.append(((server_rx - sent) + (server_tx - got)) / 2)
    return offsets


def _connection(args: argparse.Namespace) -> http.client.HTTPConnection:
    """A connection to ``--host``; with ``--tls`` the handshake names ``--name`` (SNI), as a browser would."""
    if not args.tls:
        return http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    context = ssl._create_unverified_context()  # the lab's certificate is self-signed, made at start
    conn = http.client.HTTPSConnection(args.host, args.port, timeout=args.timeout, context=context)
    raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    conn.sock = context.wrap_socket(raw, server_hostname=args.name)
    return conn


def _request(conn: http.client.HTTPConnection, args: argparse.Namespace, method: str, path: str,
             body: bytes | None = None) -> int:  # fmt: skip
    headers = {"Host": args.name, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) office-lab", "Accept": "*/*"}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return int(response.status)


def get(args: argparse.Namespace) -> int:
    conn = _connection(args)
    try:
        statuses = [_request(conn, args, "GET", path) for path in args.paths]
    finally:
        conn.close()
    bad = [(p, s) for p, s in zip(args.paths, statuses, strict=True) if s >= 400]
    if bad:
        print(f"HTTP errors: {bad[:5]}", file=sys.stderr)
    return 1 if bad else 0


def post(args: argparse.Namespace) -> int:
    with open(args.file, "rb") as fh:
        body = fh.read()
    conn = _connection(args)
    try:
        status = _request(conn, args, "POST", args.paths[0], body)
    finally:
        conn.close()
    if status >= 400:
        print(f"HTTP {status} for POST {args.paths[0]}", file=sys.stderr)
    return 1 if status >= 400 else 0


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # the run ended: close the connection (the finally below) and count the session as done


def idle(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _stop)
    conn = _connection(args)
    deadline = time.monotonic() + args.hold
    try:
        while True:
            try:
                status = _request(conn, args, "GET", args.paths[0])
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()  # the server closed the idle connection: open a new one, as a browser does
                conn = _connection(args)
                status = _request(conn, args, "GET", args.paths[0])
            if status >= 400:
                print(f"HTTP {status} for GET {args.paths[0]}", file=sys.stderr)
                return 1
            left = deadline - time.monotonic()
            if left <= 0:
                return 0
            time.sleep(min(args.every, left))
    finally:
        conn.close()


def _ntp(args: argparse.Namespace) -> int:
    offsets = sntp(args.host, args.port, args.count, args.timeout)
    print(" ".join(f"{o:+.6f}" for o in offsets))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m lab.benign_agent", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name in ("get", "post", "idle", "sntp"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--host", required=True)
        cmd.add_argument("--port", type=int, required=True)
        cmd.add_argument("--timeout", type=float, default=10.0)
        if name == "sntp":
            cmd.add_argument("--count", type=int, default=1)
            continue
        cmd.add_argument("--name", required=True, help="the Host header and the TLS server name")
        cmd.add_argument("--tls", action="store_true")
        cmd.add_argument("--file", help="post: the body")
        cmd.add_argument("--hold", type=float, default=60.0, help="idle: seconds to hold the connection")
        cmd.add_argument("--every", type=float, default=20.0, help="idle: seconds between two requests")
        cmd.add_argument("paths", nargs="+")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return {"get": get, "post": post, "idle": idle, "sntp": _ntp}[args.command](args)
    except (OSError, http.client.HTTPException) as err:
        print(f"{args.command} {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
