"""The flow-cutting options of every command that reads packets, and the capture config they build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def timeout_options(fn: F) -> F:
    """Flow-cutting options shared by every command that reads packets."""
    opts = [
        click.option("--sensor", envvar="TAPWATCH_SENSOR", help="Sensor name written into every record."),
        click.option("--bpf", "bpf_filter", help="BPF filter, for example 'tcp or udp'."),
        click.option(
            "--flow-timeout", type=click.IntRange(1, 86_400), default=120, show_default=True,
            help="Seconds after a flow's first packet at which it is cut (CICFlowMeter: 120).",
        ),
        click.option(
            "--idle-timeout", type=click.IntRange(1, 86_400), default=None,
            help="Seconds without packets after which a flow is closed [default: the flow timeout].",
        ),
        click.option(
            "--activity-timeout", type=click.FloatRange(0.001, 3600), default=5.0, show_default=True,
            help="Seconds that split active and idle periods (CICFlowMeter: 5).",
        ),
        click.option(
            "--termination-linger", type=click.FloatRange(0, 3600), default=2.0, show_default=True,
            help="Seconds a TCP flow ended by RST or FIN/ACK waits for trailing packets before it is closed.",
        ),
        click.option(
            "--single-packet-flows/--no-single-packet-flows", default=False, show_default=True,
            help="Emit one-packet flows (CICFlowMeter and the training data have none).",
        ),
        click.option(
            "--capture-buffer", "capture_buffer_mib", type=click.IntRange(0, 4096), default=None,
            envvar="TAPWATCH_CAPTURE_BUFFER_MIB",
            help="Live capture: the kernel's capture buffer in MiB (0: libpcap's 2 MiB) [16].",
        ),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def capture_config(**kw: Any) -> Any:
    from tapwatch.capture.meter import CaptureConfig

    cfg: dict[str, Any] = {
        "bpf_filter": kw.get("bpf_filter"),
        "flow_timeout_s": kw["flow_timeout"],
        "idle_timeout_s": kw.get("idle_timeout") or kw["flow_timeout"],
        "activity_timeout_s": kw["activity_timeout"],
        "emit_single_packet_flows": kw["single_packet_flows"],
        "termination_linger_s": kw["termination_linger"],
    }
    if kw.get("sensor"):
        cfg["sensor"] = kw["sensor"]
    if kw.get("capture_buffer_mib") is not None:
        cfg["buffer_mib"] = kw["capture_buffer_mib"]
    return CaptureConfig(**cfg)
