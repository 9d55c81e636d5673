"""``tapwatch score`` with the shipped deployment model on ``tapwatch flows`` output of the sample pcap (the rest
of ``score``, on rows of ../shared: tests/corpus/test_score_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from tapwatch.app.cli import main
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tests.support.scoring import DEPLOYMENT, SAMPLE_PCAP, score, scored, shipped_session, windower_scores


def test_shipped_deployment_model_scores_tapwatch_flows_output(tmp_path: Path) -> None:
    model = shipped_session(DEPLOYMENT)
    flows, out = tmp_path / "flows.csv", tmp_path / "out.csv"
    assert CliRunner().invoke(main, ["flows", str(SAMPLE_PCAP), "-o", str(flows)]).exit_code == 0
    got = scored(result := score(flows, "-o", out), out)
    assert f"model {DEPLOYMENT} " in result.stderr and "tapwatch flows output" in result.stderr
    assert set(got["model"]) == {DEPLOYMENT} and set(got["window_mode"]) == {"per_host"}
    records = list(PcapSource([str(SAMPLE_PCAP)], CaptureConfig(), CaptureMetrics(CollectorRegistry())))
    values = np.array([r.values for r in records])
    by_time = sorted(range(len(records)), key=lambda i: (records[i].meta.first_seen_ms, i))
    expected = windower_scores(model, values, [r.meta.src_ip for r in records], by_time)
    assert np.allclose(got["score"].astype(float), expected, atol=1e-5)
