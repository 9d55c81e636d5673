"""The fuzz run's fixed-seed subset (issue 17): mutants 0-99 of seed 17, made from ../shared/pcaps by
bench/fuzz_mutants.py, each run by bench/fuzz_captures.py as a process of its own under the run's limits (30 s,
1 GiB of address space), two at a time, mostly through ``tapwatch flows`` (every fifth through ``detect``).

Every file must be processed (exit 0) or refused on exactly one ``tapwatch: error:`` line naming it (exit 2): never
exit 1, a traceback, a signal, a timeout or memory exhausted. The full 1,000 and their figures are docs/fuzz.md.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from bench.fuzz_captures import DEFAULT_SEED, classify, run_all
from bench.fuzz_mutants import load_sources, mutant

SUBSET = range(100)


def test_every_fuzzed_capture_is_processed_or_refused_on_one_line(shared: Path, tmp_path: Path) -> None:
    sources = load_sources(shared / "pcaps" / "MANIFEST.csv")
    start = time.monotonic()
    results = run_all(DEFAULT_SEED, SUBSET, sources, tmp_path)
    wall = time.monotonic() - start
    defects = [f"#{r.index} {r.kind} ({r.command}): {r.defect}: {r.message} recipe={json.dumps(r.recipe)}"
               for r in results if r.outcome == "defect"]  # fmt: skip
    assert not defects, "\n".join(defects)
    outcomes = Counter(r.outcome for r in results)
    # The subset is worth running only if it reaches both ends and both formats through both commands.
    assert outcomes["processed"] >= 20 and outcomes["refused"] >= 20, outcomes
    assert {str(r.recipe["format"]) for r in results} == {"pcap", "pcapng"}
    assert Counter(r.command for r in results) == {"flows": 80, "detect": 20}
    assert max(r.seconds for r in results) < 30 and wall < 300, wall


def test_the_mutants_are_a_function_of_seed_and_index(shared: Path) -> None:
    """A defect's recipe (seed and index) makes the same bytes again, alone, in any order."""
    sources = load_sources(shared / "pcaps" / "MANIFEST.csv")
    first = [mutant(DEFAULT_SEED, i, sources) for i in (3, 41, 97)]
    again = [mutant(DEFAULT_SEED, i, sources) for i in (97, 3, 41)]
    assert [m.data for m in first] == [again[1].data, again[2].data, again[0].data]
    assert mutant(DEFAULT_SEED + 1, 3, sources).data != first[0].data


def test_the_classification_tells_a_refusal_from_a_defect() -> None:
    """The judge of the run: one error line naming the file is a refusal; the rest are defects."""
    f = "/w/0001-x.pcap"
    named = "tapwatch: error: /w/0001-x.pcap: truncated: the file ends inside record 3\n"
    assert classify(2, named, False, 90.0, f)[:2] == ("refused", None)
    assert classify(0, "", False, 90.0, f)[:2] == ("processed", None)
    assert classify(2, "tapwatch: error: pcap: bad\n", False, 90.0, f)[1] == "refusal does not name the file"
    assert classify(2, named * 2, False, 90.0, f)[1] == "exit 2 with 2 error lines"
    assert classify(1, "tapwatch: internal error: ValueError: x\n", False, 90.0, f)[1] == "exit 1"
    assert classify(0, "Traceback (most recent call last):\n", False, 90.0, f)[1] == "traceback"
    assert classify(-9, "", True, 90.0, f)[1] == "timeout"
    abort = "terminate called after throwing an instance of 'std::bad_alloc'"
    assert classify(-6, abort, False, 90.0, f)[1] == "memory"
    assert classify(-11, "", False, 90.0, f)[1] == "signal 11"
