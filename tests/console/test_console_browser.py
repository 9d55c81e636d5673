"""The console in a real browser: Debian's chromium driven by Playwright, against ``tapwatch console serve`` run as a
process on a data folder that the CLI made (a user); the browser uploads the sample capture and triages its episode.

Screenshots of each page go to tests/out/screenshots/ (gitignored).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.console import PASSWORD
from tests.support.env import REPO, free_port, need

SHOTS = REPO / "tests" / "out" / "screenshots"
SERVE_LOG: list[Path | None] = [None]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def tapwatch(*args: str, stdin: str = "", cwd: Path | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "tapwatch.app", *args], input=stdin, capture_output=True, text=True,
                          timeout=300, cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, f"tapwatch {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("console")
    data = str(tmp / "data")
    password_twice = f"{PASSWORD}\n{PASSWORD}\n"
    tapwatch("console", "user", "add", "ann", "--role", "analyst", "--data-dir", data, stdin=password_twice)
    tapwatch("console", "user", "add", "ada", "--role", "admin", "--data-dir", data, stdin=password_twice)
    port, metrics_port = free_port(), free_port()
    # The server's log goes to a file (a pipe nobody reads would stall the server once its buffer is full); a failing
    # test prints it (see `said`).
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tapwatch.app", "console", "serve", "--port", str(port),
                                 "--metrics-port", str(metrics_port), "--data-dir", data], stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    SERVE_LOG[0] = log
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the console did not listen within 60 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    need(chromium is not None, "Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed (the dev extra)")
        raise
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_analyst_uploads_a_capture_reads_its_scan_archives_it_by_keyboard_and_logs_out(
    served: str, browser: Any
) -> None:  # fmt: skip
    page = browser.new_page()
    page.set_default_timeout(60_000)  # a loaded CI machine; a page here normally takes well under a second
    errors: list[str] = []  # script errors and Content-Security-Policy refusals (not the pages' 401 and 404)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        walk(page, served)
    except Exception as err:  # what the browser showed and what the server said, for whoever reads the failure
        shot(page, "failure")
        log = SERVE_LOG[0]
        said = log.read_text(errors="replace")[-6000:] if log is not None and log.exists() else "(no log)"
        body = page.inner_text("body", timeout=5_000)[:2000] if not page.is_closed() else "(closed)"
        raise AssertionError(f"{err}\nat {page.url}; the page said:\n{body}\nthe server's log ends:\n{said}") from err
    assert not errors, errors


def walk(page: Any, served: str) -> None:
    """The analyst's and then the admin's walk through the console."""
    for path in (
        "/inbox",
        "/escalated",
        "/archived",
        "/live",
        "/hosts",
        "/hosts/10.211.0.1",
        "/overview",
        "/upload",
        "/jobs/1",
        "/admin",
        "/account",
        "/episodes/whatever",
    ):
        page.goto(served + path)
        assert "/login?next=" in page.url, path
    shot(page, "login")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.inner_text("p.error") == "Wrong user name or password."
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(served + "/episodes/whatever")  # back where the first redirect came from
    page.goto(served + "/upload")
    page.set_input_files("input[name=file]", str(REPO / "capture" / "samples" / "sample.pcap"))
    page.fill("input[name=name]", "the sample capture")
    shot(page, "upload")
    with page.expect_response(lambda r: r.url.endswith("/upload") and r.request.method == "POST") as posted:
        page.click("#upload-form button[type=submit]")
    assert posted.value.status == 302, posted.value.status  # the upload was taken; its job's page is next
    page.wait_for_url("**/jobs/1")
    page.wait_for_selector("text=Flows by predicted family", timeout=180_000)  # the page reloads when the job ends
    assert page.locator("#flows tbody tr").count() > 50 and page.locator("#download").is_visible()
    shot(page, "job")
    page.click("text=its episodes in the inbox")
    rows = page.locator("tr.episode")
    assert rows.count() == 1 and "Network scan" in rows.first.inner_text()
    assert "cursor" in (rows.first.get_attribute("class") or "")  # the keyboard cursor starts on the first row
    shot(page, "inbox")
    page.keyboard.press("o")  # open the episode under the cursor
    page.wait_for_url("**/episodes/*")
    assert "Network scan" in page.inner_text("h1") and page.locator("p.summary").inner_text().strip()
    bars = page.locator("#explanation rect")
    # The scan's explanation, drawn: LIME's (3 or more features) when a window's verdict opened the episode, the
    # counts' (flows, distinct ports) when the volume view did. Which evidence reaches the alerter first depends on
    # the machine's load (two streams, two threads; see docs/alerts.md "Known limits").
    assert bars.count() >= 2
    assert page.locator("#timeline rect").count() > 100  # its alert lines and flows on a timeline
    assert "scan" in page.locator("#episode-flows").inner_text()  # the per-flow verdicts
    shot(page, "episode")
    page.go_back()
    page.keyboard.press("e")  # archive it
    page.wait_for_load_state()
    assert page.locator("td.empty").inner_text() == "No episodes here."
    page.click("text=Archived")
    assert "Network scan" in page.locator("tr.episode").first.inner_text()
    shot(page, "archived")
    page.click("text=Hosts")
    page.click("text=10.211.0.1")  # the scanner
    assert page.locator("#windows tbody tr").count() >= 1
    page.locator("#windows a").first.click()  # its time window: its flows and verdicts
    assert "scan" in page.locator("#host-flows").inner_text()
    shot(page, "host")
    page.click("text=Overview")
    assert page.locator("#over-time rect").count() >= 1
    shot(page, "overview")
    page.click("text=Live")
    page.wait_for_selector("text=connected")  # the server-sent events stream is open
    assert page.locator("#live tbody tr").count() == 2  # the scan episode's open and close lines
    shot(page, "live")
    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto(served + "/inbox")
    assert "/login?next=" in page.url
    page.fill("input[name=username]", "ada")  # the admin reads what the analyst did
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(served + "/admin")
    audit = page.locator("table.audit").inner_text()
    assert "archive" in audit and "upload" in audit and "ann" in audit
    shot(page, "admin")
