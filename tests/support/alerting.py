"""Builders shared by the alerting tests: verdicts, alerts, the spec of their tiny model (written by
:func:`tests.support.tiny_model.write_tiny_model`) and windows it alerts on, an alerter on any bus, loopback
receivers.

No tests here; the ``test_alert*`` modules of every layer import these.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from tapwatch.alerting.alert import Alert, ExplanationStatus, from_verdict
from tapwatch.alerting.alerter import Alerter, AlertPolicy
from tapwatch.alerting.episode_alerter import EpisodeAlerter, EpisodePolicy
from tapwatch.alerting.episodes import EpisodeConfig, EpisodeTracker
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.settings import AlerterSettings
from tapwatch.alerting.signatures import signature_for
from tapwatch.alerting.sinks import FileSink, RedisStreamSink, SinkSet
from tapwatch.alerting.volume import VolumeRules
from tapwatch.bus.redisbus import RedisBus
from tapwatch.bus.state import RedisStateStore
from tapwatch.bus.streams import VERDICTS_STREAM, Bus
from tapwatch.features.baseline import SiteBaseline
from tapwatch.features.card import FeatureStats
from tapwatch.features.contract import FEATURE_NAMES, feature_set_id
from tapwatch.features.schema import ExpiryReason, FlowMeta, Verdict
from tests.support.tiny_model import TinyModel, TinySpec

T = 4
F = len(FEATURE_NAMES)
PORTSCAN_SID = 9_101_006  # hybrid family, PortScan
STRONG = {"Flow Duration": 2.0, "Total Fwd Packet": -1.5, "Flow Bytes/s": 1.0}
"""Weights of the newest row's features that drive the tiny model's logit (others: |w| <= 0.03)."""
BIAS = -1.0


def meta(i: int = 1, src: str = "10.0.0.1", dst: str = "10.0.0.2", last_seen_ms: int = 1_700_000_000_000,
         proto: int = 6) -> FlowMeta:  # fmt: skip
    return FlowMeta(
        flow_id=1000 + i, community_id=f"1:flow{i}=", src_ip=src, src_port=40000 + i, dst_ip=dst, dst_port=80,
        protocol=proto, first_seen_ms=last_seen_ms - 500, last_seen_ms=last_seen_ms, packets=6, bytes=900,
        expiry=ExpiryReason.TCP_FIN, expired_at_ms=last_seen_ms + 5, sensor="tap-1",
    )  # fmt: skip


def verdict(i: int = 1, score: float = 0.9, *, classes: tuple[str, ...] = ("BENIGN", "PortScan"),
            tensor: np.ndarray[Any, Any] | None = None, model: str = "hybrid-test", version: str = "1",
            threshold: float = 0.5, **flow: Any) -> Verdict:  # fmt: skip
    """A verdict for window ``w<i>``; probabilities put ``1 - score`` on the first (benign) class."""
    rest = [score / (len(classes) - 1)] * (len(classes) - 1)
    probs = (1.0 - score, *rest)
    predicted = classes[int(np.argmax(probs))]
    return Verdict(
        window_id=f"{1_700_000_000_000 + i}-0", sensor="tap-1", key=flow.get("src", "10.0.0.1"), flow=meta(i, **flow),
        model=model, model_version=version, class_names=classes, probabilities=probs, predicted=predicted,
        score=score, threshold=threshold, feature_set_id=feature_set_id(T), decided_at_ms=1_700_000_000_100,
        tensor=tensor if tensor is not None or score < threshold else np.zeros((T, F), np.float32),
        valid_rows=T if score >= threshold else 0,
    )  # fmt: skip


def weights(seed: int = 7) -> np.ndarray[Any, Any]:
    """(T, F) weights: the newest row has the STRONG ones and small noise; older rows a little weight."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.03, 0.03, size=(T, F))
    w[:-1] *= 3
    for name, value in STRONG.items():
        w[-1, FEATURE_NAMES.index(name)] = value
    return w.astype(np.float32)


def normal_stats() -> list[FeatureStats]:
    """N(0, 1) training statistics for every feature, with the models stage's quantile keys."""
    qs = {"p1": -2.326, "p5": -1.645, "p25": -0.674, "p50": 0.0, "p75": 0.674, "p95": 1.645, "p99": 2.326}
    return [FeatureStats(feature=f, mean=0.0, std=1.0, quantiles=qs) for f in FEATURE_NAMES]


def alert_model_spec() -> TinySpec:
    """The alerting tests' tiny model: a logistic model over the whole window, P(PortScan) = sigmoid(sum(X * W) +
    BIAS) with W from :func:`weights`, and N(0, 1) training statistics for LIME."""
    w = np.zeros((T, F, 2), dtype=np.float32)
    w[..., 1] = weights()
    return TinySpec(name="hybrid-test", window_length=T, classes=("BENIGN", "PortScan"), weights=w, bias=(0.0, BIAS),
                    output="probabilities", card={"feature_stats": normal_stats()})  # fmt: skip


@dataclass
class WebhookServer:
    """A loopback HTTP server that records POSTed JSON; ``fail_first`` requests get ``status``."""

    fail_first: int = 0
    status: int = 500
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> WebhookServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.delay_s:
                    threading.Event().wait(outer.delay_s)
                code = outer.status if outer.requests <= outer.fail_first else 200
                if code == 200:
                    outer.bodies.append(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def read_jsonl(*paths: Path) -> Iterator[dict[str, Any]]:
    for p in paths:
        if p.exists():
            for line in p.read_text().splitlines():
                yield json.loads(line)


def alert_windows(model: TinyModel, n: int, seed: int = 3) -> list[np.ndarray[Any, Any]]:
    """Windows the model scores over its 0.5 threshold (what the alerter would explain)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray[Any, Any]] = []
    while len(out) < n:
        w = rng.normal(size=(T, len(FEATURE_NAMES))).astype(np.float32)
        if model.score(w[None])[0] >= 0.5:
            out.append(w)
    return out


def make_alert(i: int = 1, cls: str = "PortScan") -> Alert:
    v = verdict(i, 0.9)
    return from_verdict(v, signature_for(v.model, cls), None, ExplanationStatus.DISABLED)


def emit(sink: Any, alert: Alert) -> None:
    sink.write(alert, alert.to_json())


def settings(**kw: Any) -> AlerterSettings:
    base: dict[str, Any] = {"block_ms": 1, "alerter_consumer": "a1", "explain": False}
    return AlerterSettings(**{**base, **kw})


def put(bus: Bus, *verdicts: Verdict) -> list[str]:
    return bus.add_many(VERDICTS_STREAM, [v.encode() for v in verdicts])


def drain(alerter: Alerter) -> None:
    while alerter.run_once():
        pass


def sample(m: AlerterMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def make(bus: Bus, path: Path, policy: AlertPolicy | None = None, **kw: Any) -> tuple[Alerter, AlerterMetrics]:
    m = AlerterMetrics(CollectorRegistry())
    return Alerter(bus, None, settings(**kw), SinkSet([FileSink(path)], m), m, policy), m


def redis_episode_alerter(url: str, out: Path, *first: Any, stream: bool = False, **kw: Any) -> EpisodeAlerter:
    """An episode alerter on the Redis at ``url`` (episodes open on 3 windows, quiet 120 s, the volume view's floor
    rules), writing to the sinks ``first``, then the file ``out``, then (``stream``) the alert stream on its bus;
    ``kw``: its settings."""
    bus = RedisBus(url)
    m = AlerterMetrics(CollectorRegistry())
    tracker = EpisodeTracker(RedisStateStore(bus.client), EpisodeConfig(open_windows=3, quiet_s=120))
    sinks = SinkSet([*first, FileSink(out), *([RedisStreamSink(bus)] if stream else [])], m)
    return EpisodeAlerter(bus, settings(redis_url=url, **kw), sinks, m, tracker, None,
                          EpisodePolicy(rules=VolumeRules(SiteBaseline())))  # fmt: skip


class Crash(BaseException):
    """The process dies here (not an error a sink reports): nothing after it runs."""


class CrashingSink:
    """A sink at whose write the process dies: put after another sink, the process dies once that one has the
    line; put first, before any sink has it."""

    kind = "stdout"

    def write(self, alert: Any, line: str) -> None:
        raise Crash

    def close(self) -> None:
        return None
