"""The pcap structure walk compiled (``walk_pcap`` in capture/_cicflow.c) and in Python give the same account of
every capture: the real pcaps of ../shared and 1,000 fuzzed mutants (truncations, wrong lengths, absurd and
signed timestamps, ...), packets, offset, time and the problem's words."""

from __future__ import annotations

from pathlib import Path

import pytest

import tapwatch.capture.fastpath as fastpath
import tapwatch.capture.source as source
from bench.fuzz_captures import DEFAULT_SEED
from bench.fuzz_mutants import load_sources, mutant
from tapwatch.features.errors import BadInputError
from tests.support.env import need


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    def scan() -> object:
        try:
            return source.scan_pcap(path)
        except BadInputError as err:
            return ("refused", err.problem)

    compiled = scan()
    with monkeypatch.context() as m:
        m.setattr(source, "walk_pcap", None)
        pure = scan()
    return compiled, pure


def test_the_compiled_walk_is_the_python_walk(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(fastpath.walk_pcap is not None, "compiled meter not built")
    pcaps = sorted((shared / "pcaps").rglob("*.pcap"))
    assert len(pcaps) > 100
    for p in pcaps:
        compiled, pure = _both(p, monkeypatch)
        assert compiled == pure, p
    sources = load_sources(shared / "pcaps" / "MANIFEST.csv")
    broken = 0
    for i in range(1000):
        m = mutant(DEFAULT_SEED, i, sources)
        if m.suffix != "pcap":
            continue
        f = tmp_path / f"m{i}.pcap"
        f.write_bytes(m.data)
        compiled, pure = _both(f, monkeypatch)
        assert compiled == pure, m.recipe
        broken += isinstance(pure, tuple) or getattr(pure, "problem", None) is not None
    assert broken > 100  # the mutants reach the Python loop's messages, not only whole files
