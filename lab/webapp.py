"""The lab's web app, and the bot's C2 server: a small threaded HTTP(S) server on the standard library only.

**WARNING — LAB ONLY. ``GET /search?q=`` IS DELIBERATELY OPEN TO SQL INJECTION** (the query is built by
string concatenation, see :func:`search_sql`) so that sqlmap has a target. Never run this outside the lab's
network namespaces; its database holds only made-up rows.

In ``--mode app`` it serves:

* ``GET /api/items?id=N`` (a parameterised query, JSON), ``GET /api/status`` (counters, JSON);
* ``POST /api/upload``: the body (at most ``--max-upload`` bytes, with a Content-Length) is read, counted
  and discarded;
* ``GET /login`` (a form) and ``POST /login`` (form fields ``username``, ``password``): the account of
  ``DATA/login`` gets "welcome", anything else a 200 page saying "invalid login", as real apps answer;
* ``GET /search?q=``: the items of kind ``q`` (``lamp``, ``desk``...); an SQL error gives a 500 page with
  the Python exception (``sqlite3.OperationalError: ...``), as a debug-mode app shows it, so that sqlmap's
  error heuristics recognise SQLite. A plain quote-terminated string (no ``LIKE '%...%'``) lets sqlmap's
  default boundaries (level 1, risk 1) find it.

In ``--mode c2`` (with ``--tls CERT KEY``) it is a botnet's callback server: ``POST /beacon`` and
``GET /tasks`` answer small JSON. One server per ``--listen`` address, so IPv4 and IPv6 both work::

    python -m lab.webapp --listen 10.213.3.2 --listen fd00:7477:3::2 --port 8080 --data DATA

Example
-------
>>> search_sql("x' OR 1=1 --")
"SELECT id, name, price FROM items WHERE kind = 'x' OR 1=1 --'"
"""

from __future__ import annotations

import hmac
import json
import logging
import random
import signal
import socket
import socketserver
import sqlite3
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 128  # threads in flight: a flood must not start thousands of threads on a 2-core machine
MAX_FORM = 64_000  # login forms and beacons are small; a bigger body is refused
HANDSHAKE_S = 10.0
LOGIN_FORM = (b"<html><body><form method='post' action='/login'><input name='username'>"
              b"<input name='password' type='password'><button>Log in</button></form></body></html>\n")  # fmt: skip
ITEMS = ("laptop", "monitor", "keyboard", "mouse", "headset", "dock", "cable", "chair", "desk", "lamp")
TASKS = ("sleep", "noop", "sysinfo", "ping")


class Mode(str, Enum):
    """What the server answers: the office's web app, or a bot's C2."""

    APP = "app"
    C2 = "c2"


@dataclass
class AppState:
    """What every request thread shares: the mode, the database, the account and the counters."""

    mode: Mode
    db: Path
    login: tuple[str, str] | None
    max_upload: int
    started: float = field(default_factory=time.time)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[key] += amount


def search_sql(q: str) -> str:
    """The search's query, built by concatenation: INJECTABLE ON PURPOSE (lab only, see the module docstring)."""
    return "SELECT id, name, price FROM items WHERE kind = '" + q + "'"


def init_db(path: Path) -> None:
    """Create the app's sqlite database: 100 items and a few made-up users (for sqlmap to find)."""
    rng = random.Random(7)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, kind TEXT, name TEXT, price REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, role TEXT)")
        db.execute("DELETE FROM items")
        db.execute("DELETE FROM users")
        kinds = [ITEMS[i % len(ITEMS)] for i in range(101)]
        items = [(i, kinds[i], f"{kinds[i]} {i}", round(rng.uniform(5, 900), 2)) for i in range(1, 101)]
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", items)
        db.executemany("INSERT INTO users VALUES (?, ?, ?, ?)",
                       [(i, f"user{i}", f"user{i}@office.lab", "staff") for i in range(1, 11)])  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    """Routes a request to the app's or the C2's answers; every answer has a Content-Length (keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "OfficeApp/1.4"
    timeout = 30  # an idle or slow connection is dropped, as a real app server does
    server: LabServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json", close: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, json.dumps(obj).encode() + b"\n")

    def _body(self, limit: int) -> bytes | None:
        """Read the body of at most ``limit`` bytes into memory; None (after answering) when refused."""
        length = self._length(limit)
        return None if length is None else self.rfile.read(length)

    def _length(self, limit: int) -> int | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, b"length required\n", "text/plain", close=True)
            return None
        if not 0 <= length <= limit:
            self._send(413, b"too large\n", "text/plain", close=True)
            return None
        return length

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        state = self.server.state
        state.count("requests")
        routes = {"/api/status": self._status, "/api/items": self._item, "/login": self._login_form,
                  "/search": self._search} if state.mode is Mode.APP else {"/tasks": self._tasks}  # fmt: skip
        route = routes.get(url.path) or (self._index if url.path == "/" else None)
        if route is None:
            self._send(404, b"not found\n", "text/plain")
        else:
            route(query)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        state = self.server.state
        state.count("requests")
        path = urlsplit(self.path).path
        routes = {"/api/upload": self._upload, "/login": self._login} if state.mode is Mode.APP else {
            "/beacon": self._beacon}  # fmt: skip
        route = routes.get(path)
        if route is None:
            if self._body(MAX_FORM) is not None:
                self._send(404, b"not found\n", "text/plain")
        else:
            route()

    def _index(self, _: dict[str, str]) -> None:
        self._send(200, b"<html><body><a href='/login'>login</a> <a href='/search?q=lamp'>search</a></body></html>\n",
                   "text/html")  # fmt: skip

    def _status(self, _: dict[str, str]) -> None:
        state = self.server.state
        with state.lock:
            counts = dict(state.counts)
        self._json({"status": "ok", "mode": state.mode.value, "uptime_s": round(time.time() - state.started, 1),
                    "counts": counts})  # fmt: skip

    def _item(self, query: dict[str, str]) -> None:
        try:
            item_id = int(query.get("id", ""))
        except ValueError:
            self._json({"error": "id must be an integer"}, 400)
            return
        with sqlite3.connect(f"file:{self.server.state.db}?mode=ro", uri=True) as db:
            row = db.execute("SELECT id, name, price FROM items WHERE id = ?", (item_id,)).fetchone()
        self._json({"id": row[0], "name": row[1], "price": row[2]} if row else {"error": "no such item"},
                   200 if row else 404)  # fmt: skip

    def _search(self, query: dict[str, str]) -> None:
        self.server.state.count("searches")
        try:  # read-only, and sqlite3 runs one statement per execute: injection reads, it cannot write
            with sqlite3.connect(f"file:{self.server.state.db}?mode=ro", uri=True) as db:
                rows = db.execute(search_sql(query.get("q", ""))).fetchall()
        except sqlite3.Error as err:
            error = f"{type(err).__module__}.{type(err).__name__}: {err}"
            self._send(500, f"<html><body><pre>{error}</pre></body></html>\n".encode(), "text/html")
            return
        items = "".join(f"<li>{r[0]} {r[1]} {r[2]}</li>" for r in rows)
        self._send(200, f"<html><body><ul>{items}</ul></body></html>\n".encode(), "text/html")

    def _login_form(self, _: dict[str, str]) -> None:
        self._send(200, LOGIN_FORM, "text/html")

    def _login(self) -> None:
        body = self._body(MAX_FORM)
        if body is None:
            return
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        login = self.server.state.login
        given = (form.get("username", ""), form.get("password", ""))
        ok = login is not None and all(
            hmac.compare_digest(a.encode(), b.encode()) for a, b in zip(given, login, strict=True)
        )
        self.server.state.count("logins_ok" if ok else "logins_failed")
        page = b"<html><body>welcome back</body></html>\n" if ok else b"<html><body>invalid login</body></html>\n"
        self._send(200, page, "text/html")

    def _upload(self) -> None:
        length = self._length(self.server.state.max_upload)
        if length is None:
            return
        left = length
        while left > 0:  # discarded as it arrives: an upload never sits in memory
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            left -= len(chunk)
        self.server.state.count("uploads")
        self.server.state.count("upload_bytes", length)
        self._json({"received": length})

    def _beacon(self) -> None:
        body = self._body(MAX_FORM)
        if body is not None:
            self.server.state.count("beacons")
            self._json({"ok": True, "sleep": random.choice((5, 10, 30, 60))})

    def _tasks(self, _: dict[str, str]) -> None:
        self.server.state.count("task_polls")
        self._json({"tasks": [random.choice(TASKS)]})


class LabServer(ThreadingHTTPServer):
    """One listening address (IPv4 or IPv6), at most :data:`MAX_CONNECTIONS` threads, TLS when given a context."""

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: AppState, tls: ssl.SSLContext | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.state, self.tls = state, tls
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up in DNS (getfqdn); the lab has no resolver for it
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.acquire()  # a full server stops accepting; the kernel's backlog queues the rest
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_S)  # the handshake runs in the connection's thread, bounded
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as err:
            log.debug("%s: TLS handshake failed: %s", client_address[0], err)
            return
        try:
            Handler(conn, client_address, self)
        finally:
            conn.close()


def serve(addresses: tuple[str, ...], port: int, state: AppState, tls: ssl.SSLContext | None) -> None:
    """Serve on every address until SIGTERM or SIGINT."""
    servers = [LabServer((a, port), state, tls) for a in addresses]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for thread in threads:
        thread.start()
    log.info("%s listening on %s port %s%s", state.mode.value, ", ".join(addresses), port, " (TLS)" if tls else "")
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    log.info("%s stopped: %s", state.mode.value, dict(state.counts))


def _read_login(path: Path) -> tuple[str, str] | None:
    """``user:password`` from the first line of a file (never from the command line: ``ps`` shows it)."""
    if not path.exists():
        return None
    user, sep, password = (path.read_text().splitlines() or [""])[0].partition(":")
    if not sep or not user or not password:
        raise click.BadParameter(f"{path} must hold one line user:password", param_hint="--data")
    return user, password


@click.command()
@click.option("--listen", multiple=True, required=True, help="An address to listen on (repeat for IPv4 and IPv6).")
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.APP.value, show_default=True)
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="App mode: the app's folder; app.db is made there, and the file 'login' holds its one account "
                   "as user:password (no file: no account).")  # fmt: skip
@click.option("--tls", nargs=2, type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="CERT KEY", help="Serve HTTPS with this certificate and key.")  # fmt: skip
@click.option("--max-upload", type=click.IntRange(0, 1 << 30), default=50_000_000, show_default=True)
def main(listen: tuple[str, ...], port: int, mode: str, data: Path | None, tls: tuple[Path, Path] | None,
         max_upload: int) -> None:  # fmt: skip
    """The lab's web app or C2 server (lab only: /search is open to SQL injection on purpose)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_mode = Mode(mode)
    if app_mode is Mode.APP and data is None:
        raise click.UsageError("--mode app needs --data")
    login = None
    if data is not None:
        data.mkdir(parents=True, exist_ok=True)
        init_db(data / "app.db")
        login = _read_login(data / "login")
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
    state = AppState(app_mode, (data or Path("/nonexistent")) / "app.db", login, max_upload)
    serve(listen, port, state, context)


if __name__ == "__main__":
    main()
