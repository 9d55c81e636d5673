"""``tapwatch learn``: learn a site profile from the site's benign traffic (pcaps, flows CSVs, or N minutes live).

1. **Read** the learning traffic: each pcap or CSV on its own (windows never join two files); ``--interface``
   captures live for ``--minutes``. A CSV with the lab's ``family`` column gives its ``benign`` rows only.
2. **Poisoning check**: learning traffic may hold attacks. Unless ``--trust-input``, detection runs over it first
   (the model and shipped rules, as ``detect`` runs them, explanations off) and the flows of every episode it
   finds are left out: an episode about a source leaves out that host's flows from a minute before the episode
   began to its end, an episode about a victim the flows to it. The card lists the episodes and the flows left out.
3. **Learn** (:mod:`tapwatch.models.profile`, needs the train extra) and write the profile atomically (a service
   that reloads it never reads half a file).

Exit codes: 0 written; 2 bad input (no traffic, unreadable file, refused model); 1 internal error.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tapwatch.capture.options import timeout_options
from tapwatch.features.cli import run_guarded
from tapwatch.features.errors import BadInputError
from tapwatch.features.output import replaced_when_done
from tapwatch.features.profile import DEFAULT_BUDGET, Rule, RuleKind
from tapwatch.features.schema import FlowRecord

log = logging.getLogger(__name__)

BEFORE_MS = 60_000
"""A source episode leaves out its host's flows from this long before it opened (the windows that opened it)."""


@dataclass(frozen=True)
class Part:
    """One input of the learning traffic: its flows, and what the card says of it."""

    name: str
    kind: str
    records: list[FlowRecord]
    sha256: str = ""


@dataclass(frozen=True)
class Found:
    """An episode the poisoning check found: what is left out."""

    family: str
    role: str
    host: str
    first_ms: int
    last_ms: int

    def covers(self, r: FlowRecord) -> bool:
        m = r.meta
        host = m.src_ip if self.role == "source" else m.dst_ip
        return host == self.host and self.first_ms - BEFORE_MS <= m.last_seen_ms and m.first_seen_ms <= self.last_ms


def sensor_config(kw: dict[str, Any]) -> Any:
    """The capture options as the sensor reads a source when it aggregates: every flow, one-packet ones too (the
    aggregates count them; windows are built of the others)."""
    from dataclasses import replace

    from tapwatch.capture.options import capture_config

    return replace(capture_config(**kw), emit_single_packet_flows=True)


def read_pcap(path: str, kw: dict[str, Any]) -> Part:
    from prometheus_client import CollectorRegistry

    from tapwatch.capture.meter import PcapSource
    from tapwatch.capture.metrics import CaptureMetrics
    from tapwatch.models.training.export import sha256_file

    source = PcapSource([path], sensor_config(kw), CaptureMetrics(CollectorRegistry()))
    records = list(source)
    if source.problems:
        raise BadInputError(path, source.problems[0].line("nothing was learned"))
    return Part(path, "pcap", records, sha256_file(path))


def read_flows(path: str) -> Part:
    from tapwatch.models.baseline import benign_records
    from tapwatch.models.training.export import sha256_file

    if not Path(path).is_file():
        raise BadInputError(path, "no such flows CSV")
    return Part(path, "flows", list(benign_records([Path(path)])), sha256_file(path))


def read_live(interface: str, minutes: float, kw: dict[str, Any]) -> Part:
    from prometheus_client import CollectorRegistry

    from tapwatch.capture.meter import LiveSource
    from tapwatch.capture.metrics import CaptureMetrics

    source = LiveSource(interface, sensor_config(kw), CaptureMetrics(CollectorRegistry()))
    timer = threading.Timer(minutes * 60, source.stop)
    timer.start()
    try:
        records = list(source.records())
    finally:
        timer.cancel()
    return Part(f"{interface} ({minutes:g} min)", "live", records)


def episodes_in(parts: list[Part], model_path: Path | None) -> list[Found]:
    """Detection over every part, as ``detect`` runs it (explanations off): the episodes it opened."""
    from prometheus_client import CollectorRegistry

    from tapwatch.app.embedded import build_config, load_embedded_model
    from tapwatch.app.pipeline import Embedded

    found: dict[str, Found] = {}
    model = None
    with tempfile.TemporaryDirectory(prefix="tapwatch-learn-") as tmp:
        for i, part in enumerate(parts):
            out = Path(tmp) / f"alerts-{i}.jsonl"
            config = build_config({"model": model_path, "explain": False}, str(out))
            if model is None:  # one session for every part
                s = config.settings
                model = load_embedded_model(s.model, s.card, s.threads_for(True))
            Embedded(model, config, CollectorRegistry(), offline=True).process(part.records)
            for line in out.read_text().splitlines() if out.exists() else []:
                ev = json.loads(line)
                ep = ev.get("episode") or {}
                if "id" not in ep:
                    continue
                family = ev["ml"]["family"] if "ml" in ev else ev["alert"]["category"]
                found[f"{i}:{ep['id']}"] = Found(family, ep["key"], ep["host"], _ms(ep["first_seen"]),
                                                 _ms(ep["last_seen"]))  # fmt: skip
    return list(found.values())


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def leave_out(parts: list[Part], found: list[Found]) -> tuple[list[Part], int]:
    """The parts without the flows of the episodes found, and how many flows that left out."""
    by_host: dict[str, list[Found]] = {}
    for f in found:
        by_host.setdefault(f.host, []).append(f)

    def covered(r: FlowRecord) -> bool:
        return any(f.covers(r) for h in (r.meta.src_ip, r.meta.dst_ip) for f in by_host.get(h, ()))

    out, dropped = [], 0
    for p in parts:
        kept = [r for r in p.records if not covered(r)]
        dropped += len(p.records) - len(kept)
        out.append(Part(p.name, p.kind, kept, p.sha256))
    return out, dropped


def learn(
    parts: list[Part], model_path: Path | None, output: str, trust_input: bool, cfg_kw: dict[str, Any]
) -> dict[str, Any]:
    """Check, learn and write; returns the profile's card (as JSON data)."""
    from tapwatch.app.embedded import load_embedded_model, shipped_model
    from tapwatch.models.profile import LearnConfig, learn_profile
    from tapwatch.models.training.export import sha256_file

    if not sum(len(p.records) for p in parts):
        raise BadInputError(", ".join(p.name for p in parts) or "input", "no benign flows to learn from")
    start = time.monotonic()
    found: list[Found] = []
    dropped = 0
    if not trust_input:
        found = episodes_in(parts, model_path)
        parts, dropped = leave_out(parts, found)
        for f in found:
            log.warning("left out: %s episode about %s %s (%d flows left out in all)", f.family, f.role, f.host,
                        dropped)  # fmt: skip
    model = load_embedded_model(model_path, None, 1)
    path = model_path or shipped_model()
    card = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "tapwatch_version": _version(),
        "command": "tapwatch learn " + " ".join(sys.argv[2:]),
        "data": [{"path": p.name, "kind": p.kind, "sha256": p.sha256, "flows": len(p.records)} for p in parts],
        "poisoning": {"checked": not trust_input, "flows_left_out": dropped,
                      "episodes": [{"family": f.family, "role": f.role, "host": f.host} for f in found]},
    }  # fmt: skip
    names = ", ".join(p.name for p in parts)
    if not sum(len(p.records) for p in parts):
        raise BadInputError(names, f"every flow belonged to one of the {len(found)} episodes detection found in it: "
                            "nothing benign is left to learn from")  # fmt: skip
    try:
        profile = learn_profile([p.records for p in parts], model, sha256_file(path), LearnConfig(**cfg_kw), card)
    except ValueError as err:  # too little traffic for the novelty model
        raise BadInputError(names, f"{err}; learn from more traffic, or use --no-novelty") from err
    profile = profile.model_copy(
        update={"card": profile.card.model_copy(update={"seconds": round(time.monotonic() - start, 1)})}
    )
    with replaced_when_done(output) as tmp:
        tmp.write_text(profile.model_dump_json(indent=1) + "\n")
    return profile.card.model_dump(mode="json")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tapwatch")
    except PackageNotFoundError:
        return "unknown"


@click.command("learn")
@click.argument("pcaps", nargs=-1, type=click.Path(dir_okay=False, path_type=str))
@click.option("--flows", "flows_csv", multiple=True, help="A tapwatch flows CSV of the site (repeatable).")
@click.option("-i", "--interface", help="Learn from live traffic on this interface (with --minutes).")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), help="How long to capture live.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), help="ONNX model [the shipped one].")
@click.option("-o", "--output", required=True, help="The profile file to write (JSON).")
@click.option("--budget", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_BUDGET, show_default=True,
              help="Benign windows allowed over each family's threshold.")  # fmt: skip
@click.option("--rule", type=click.Choice([k.value for k in RuleKind]), default=RuleKind.SUPERVISED.value,
              show_default=True, help="How family scores and novelty combine (docs/profiles.md).")  # fmt: skip
@click.option("--novelty/--no-novelty", default=True, help="Train the novelty autoencoder [on].")
@click.option("--epochs", type=click.IntRange(1, 100), default=4, show_default=True, help="Novelty model epochs.")
@click.option("--trust-input", is_flag=True, help="Skip the poisoning check (the input holds no attack).")
@timeout_options
def learn_command(pcaps: tuple[str, ...], flows_csv: tuple[str, ...], interface: str | None, minutes: float | None,
                  model: Path | None, output: str, budget: float, rule: str, novelty: bool, epochs: int,
                  trust_input: bool, **kw: Any) -> None:  # fmt: skip
    """Learn a site profile from benign traffic of the site (pcaps, flows CSVs, or N minutes live).

    Detection runs over the input first and the episodes it finds are left out (--trust-input skips that).
    Needs the train extra (TensorFlow) for the novelty model; serving the profile does not.

    Example: tapwatch learn PCAP -o site.profile.json
    """

    def body() -> int:
        if bool(interface) != bool(minutes):
            raise BadInputError("--interface", "live learning needs both --interface and --minutes")
        if not (pcaps or flows_csv or interface):
            raise BadInputError("input", "give pcaps, --flows CSVs or --interface with --minutes")
        if rule == RuleKind.NOVEL.value and not novelty:
            raise BadInputError("--rule", "the novel rule needs the novelty model (drop --no-novelty)")
        if novelty and importlib.util.find_spec("tensorflow") is None:
            raise BadInputError("--novelty", "the novelty model is trained with the train extra (pip install "
                                "'tapwatch[train]'); without it, learn with --no-novelty")  # fmt: skip
        parts = [read_pcap(p, kw) for p in pcaps] + [read_flows(f) for f in flows_csv]
        if interface and minutes:
            parts.append(read_live(interface, minutes, kw))
        cfg = {"budget": budget, "novelty": novelty, "novelty_epochs": epochs, "rule": Rule(kind=RuleKind(rule))}
        card = learn(parts, model, output, trust_input, cfg)
        p = card["poisoning"]
        click.echo(f"wrote {output}: {card['flows']} benign flows, {card['windows']} windows, "
                   f"{len(p.get('episodes', []))} episodes left out ({p.get('flows_left_out', 0)} flows), "
                   f"{card['seconds']} s", err=True)  # fmt: skip
        return 0

    run_guarded(body)
