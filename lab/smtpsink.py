"""An SMTP sink for the lab: speaks enough SMTP for swaks, curl and mail clients, accepts and discards mail.

Every message up to :attr:`SinkConfig.max_bytes` is accepted (``250 ... queued as N``), counted and thrown
away; a bigger one gets ``552`` (its data is read and discarded, so the session stays in step). No relay
check, no authentication, no STARTTLS: a sink, not a mail server. Each accepted message is logged on one
line (``accepted message N: B bytes``), which is how a test counts them. Run it as::

    python -m lab.smtpsink --listen 10.213.4.2 --listen fd00:7477:4::2 --port 2525

Example
-------
>>> reply("EHLO c1", Session(SinkConfig())).splitlines()[0]
'250-office.lab'
>>> reply("RCPT TO:<bob@office.lab>", Session(SinkConfig()))
'503 5.5.1 MAIL first'
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field

import click

log = logging.getLogger(__name__)

LINE_LIMIT = 65_536  # longer than any legal SMTP line (1000 octets); a longer one ends the session
IDLE_S = 60.0  # a silent client is dropped, as real servers do after a few minutes


@dataclass(frozen=True)
class SinkConfig:
    """How the sink answers: its name and the largest message it accepts."""

    hostname: str = "office.lab"
    max_bytes: int = 10_000_000


@dataclass
class Session:
    """One SMTP session's state: has it a sender, how many recipients."""

    config: SinkConfig
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)


@dataclass
class Totals:
    messages: int = 0
    bytes: int = 0


def reply(line: str, session: Session) -> str:
    """The answer to one command line (not DATA, which :func:`handle` reads itself); updates ``session``."""
    verb, _, arg = line.strip().partition(" ")
    verb = verb.upper()
    if verb == "EHLO":
        return f"250-{session.config.hostname}\r\n250-SIZE {session.config.max_bytes}\r\n250-8BITMIME\r\n250 PIPELINING"
    if verb == "HELO":
        return f"250 {session.config.hostname}"
    if verb == "MAIL":
        session.sender, session.recipients = arg, []
        return "250 2.1.0 Ok"
    if verb == "RCPT":
        if session.sender is None:
            return "503 5.5.1 MAIL first"
        session.recipients.append(arg)
        return "250 2.1.5 Ok"
    if verb == "RSET":
        session.sender, session.recipients = None, []
        return "250 2.0.0 Ok"
    if verb == "NOOP":
        return "250 2.0.0 Ok"
    if verb == "VRFY":
        return "252 2.0.0 Cannot VRFY user"
    return "502 5.5.2 Command not recognized"


async def _read_data(reader: asyncio.StreamReader, limit: int) -> int:
    """Read a message up to the lone ``.``; return its size, or -1 when it was over ``limit`` (still read)."""
    size = 0
    while True:
        line = await asyncio.wait_for(reader.readline(), IDLE_S)
        if not line or line in (b".\r\n", b".\n"):
            return size if size <= limit else -1
        size += len(line)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, config: SinkConfig,
                 totals: Totals) -> None:  # fmt: skip
    """One client's session, until QUIT, EOF, an idle timeout or an over-long line."""
    peer = writer.get_extra_info("peername")
    session = Session(config)
    writer.write(f"220 {config.hostname} ESMTP sink\r\n".encode())
    try:
        while True:
            line = (await asyncio.wait_for(reader.readline(), IDLE_S)).decode("latin-1")
            if not line:
                break
            verb = line.strip().split(" ")[0].upper()
            if verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            if verb != "DATA":
                writer.write(f"{reply(line, session)}\r\n".encode())
            elif not session.recipients:
                writer.write(b"503 5.5.1 RCPT first\r\n")
            else:
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                writer.write(_accept(await _read_data(reader, config.max_bytes), totals, peer).encode())
                session.sender, session.recipients = None, []
            await writer.drain()
    except (TimeoutError, ValueError, ConnectionError) as err:  # ValueError: a line over LINE_LIMIT
        log.debug("%s: session ended: %s", peer, err)
    finally:
        writer.close()


def _accept(size: int, totals: Totals, peer: object) -> str:
    if size < 0:
        return "552 5.3.4 Message too big\r\n"
    totals.messages += 1
    totals.bytes += size
    log.info("accepted message %s: %s bytes from %s", totals.messages, size, peer)
    return f"250 2.0.0 Ok: queued as {totals.messages}\r\n"


async def serve(addresses: tuple[str, ...], port: int, config: SinkConfig) -> Totals:
    """Serve on every address until SIGTERM or SIGINT; return what was accepted."""
    totals = Totals()
    server = await asyncio.start_server(lambda r, w: handle(r, w, config, totals), list(addresses), port,
                                        limit=LINE_LIMIT, backlog=128)  # fmt: skip
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    log.info("smtp sink listening on %s port %s", ", ".join(addresses), port)
    async with server:
        await stop.wait()
    log.info("smtp sink stopped: %s messages, %s bytes", totals.messages, totals.bytes)
    return totals


@click.command()
@click.option("--listen", multiple=True, required=True, help="An address to listen on (repeat for IPv4 and IPv6).")
@click.option("--port", type=click.IntRange(1, 65535), default=2525, show_default=True)
@click.option("--max-bytes", type=click.IntRange(1, 1 << 30), default=10_000_000, show_default=True)
def main(listen: tuple[str, ...], port: int, max_bytes: int) -> None:
    """An SMTP sink: accepts mail, counts it, throws it away."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(listen, port, SinkConfig(max_bytes=max_bytes)))


if __name__ == "__main__":
    main()
