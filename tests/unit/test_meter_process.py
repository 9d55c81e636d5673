"""The pcap reader and NFStream's meter process: an early start, and a meter that dies is reported, never waited
for (NFStream's own loop would wait for its end message for ever)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import tapwatch.capture.plugin as plugin
from tapwatch.capture.meter import CaptureConfig, MeterDied, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"


def _flows(source: PcapSource, timeout_s: float = 60.0) -> tuple[list[Any], BaseException | None]:
    out: list[Any] = []
    error: list[BaseException] = []

    def read() -> None:
        try:
            out.extend(source)
        except BaseException as err:
            error.append(err)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "the reader hung"
    return out, error[0] if error else None


def test_started_early_or_not_the_flows_are_the_same() -> None:
    def read(early: bool) -> list[str]:
        source = PcapSource([str(SAMPLE)], CaptureConfig(sensor="s"), CaptureMetrics(CollectorRegistry()))
        if early:
            source.start()
        flows, error = _flows(source)
        assert error is None
        return [f"{r.meta.flow_id} {r.values}" for r in flows]

    late, early = read(False), read(True)
    assert late and early == late


def test_a_meter_that_dies_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    made = {"n": 0}
    real = plugin.FlowState

    def failing(*args: Any) -> Any:  # runs in the forked meter: its 20th flow crashes it
        made["n"] += 1
        if made["n"] == 20:
            raise RuntimeError("a bug in the meter")
        return real(*args)

    monkeypatch.setattr(plugin, "FlowState", failing)
    source = PcapSource([str(SAMPLE)], CaptureConfig(), CaptureMetrics(CollectorRegistry()))
    _, error = _flows(source)
    assert isinstance(error, MeterDied)
    assert str(error).startswith("the meter process exited with status 1 before the end of the capture")


def _sleep() -> None:
    import time

    time.sleep(60)


@pytest.mark.parametrize("pause_s", [0.3, 0.0])
def test_a_meter_nfstream_ended_itself_is_no_death_and_its_closed_channel_is_left_alone(pause_s: float) -> None:
    """NFStream terminates its meters when one reports an error (a capture libpcap refuses), then closes its channel
    and raises. The meter's exit code is then -15: the watch must not take that for a death and put an end message
    into the channel (after the close it raised in the watch's thread; just before it, it started the channel's
    feeder thread, which the process then waited for at exit for ever: a fuzzed capture timed out so). With no
    pause NFStream ends the meter before the watch has found it."""
    import multiprocessing
    import time

    from tapwatch.capture.meter import _Prefetch

    ctx = multiprocessing.get_context("fork")
    failures: list[BaseException] = []
    seen = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)  # type: ignore[assignment,return-value]
    made: dict[str, Any] = {}
    try:

        def nfstream_like() -> Any:  # NFStream's __iter__ in short: its locals and its error path
            meters = [ctx.Process(target=_sleep, daemon=True)]
            channel = made["channel"] = ctx.Queue()
            meters[0].start()
            time.sleep(pause_s)  # the meter opens the file and reports its error
            yield from ()
            meters[0].terminate()
            child_error = "the meter's error"
            meters[0].join()
            channel.close()
            channel.join_thread()
            raise ValueError(child_error)

        prefetch = _Prefetch(nfstream_like())
        with pytest.raises(ValueError, match="the meter's error"):
            list(prefetch.take())
        for t in threading.enumerate():
            if t.name == "tapwatch-meter-watch":
                t.join(10)
        assert made["channel"]._thread is None  # nothing was put into the channel: no feeder thread
        if pause_s:  # (with none the watch may find the meter already ended, or not at all)
            assert prefetch.meter is not None and prefetch.meter.exitcode == -15
            assert prefetch.ended.is_set() and prefetch.died() == 0
    finally:
        threading.excepthook = seen
    assert failures == []


_READER = """
import sys, time
from prometheus_client import CollectorRegistry
import tapwatch.capture.plugin as plugin
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics

def stuck(*args):  # in the meter: it never ends by itself
    time.sleep(600)

plugin.FlowState = stuck
source = PcapSource([sys.argv[1]], CaptureConfig(), CaptureMetrics(CollectorRegistry()))
source.start()
print(source._started.meter.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps it; it runs nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_meter_ends_when_its_reader_is_killed() -> None:
    """``SIGKILL`` of the reading process (``capture``, ``run``, ``detect``) left NFStream's meter running for ever:
    offline blocked on its full queue, live still sniffing the interface beside the restarted sensor."""
    import signal
    import subprocess
    import sys
    import time

    reader = subprocess.Popen([sys.executable, "-c", _READER, str(SAMPLE)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        meter = int(reader.stdout.readline())
        time.sleep(0.5)
        assert _running(meter)
        reader.send_signal(signal.SIGKILL)
        reader.wait(10)
        deadline = time.monotonic() + 20
        while _running(meter) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(meter), "the meter outlived its reader"
    finally:
        if reader.poll() is None:
            reader.kill()


def test_the_live_capture_buffer_is_16_mib_unless_the_option_or_environment_says_otherwise() -> None:
    """libpcap's 2 MiB ring dropped packets in the kernel under the lab's SYN flood; 16 MiB did not
    (docs/bench/live.md). ``--capture-buffer`` / ``TAPWATCH_CAPTURE_BUFFER_MIB`` set it; a wrong value is refused."""
    import click
    from click.testing import CliRunner

    from tapwatch.capture.options import capture_config, timeout_options

    seen: list[Any] = []

    @click.command()
    @timeout_options
    def cmd(**kw: Any) -> None:
        seen.append(capture_config(**kw))

    assert CliRunner().invoke(cmd, []).exit_code == 0
    assert CliRunner().invoke(cmd, ["--capture-buffer", "64"]).exit_code == 0
    assert CliRunner(env={"TAPWATCH_CAPTURE_BUFFER_MIB": "0"}).invoke(cmd, []).exit_code == 0
    assert [c.buffer_mib for c in seen] == [16, 64, 0]
    refused = CliRunner().invoke(cmd, ["--capture-buffer", "-1"])
    assert refused.exit_code == 2 and "--capture-buffer" in refused.output
