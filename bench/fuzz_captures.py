"""Fuzz tapwatch's capture reading: mutated pcaps and pcapngs, each run as its own process, with limits (issue 17).

Every mutant (made by :mod:`bench.fuzz_mutants` from ``../shared/pcaps``, a pure function of seed and index) is
run as ``tapwatch flows MUTANT -o OUT.csv`` (every fifth one as ``tapwatch detect MUTANT -o OUT.jsonl``) in a
process of its own, with a 30 s timeout and a 1 GiB address-space limit (``RLIMIT_AS``), two at a time. Each
ends in one of:

- processed: exit 0;
- refused: exit 2 with exactly one ``tapwatch: error: ...`` line that names the file, no traceback;
- a defect: exit 1, a traceback, another exit code or a signal, a refusal that does not name the file or says
  it more than once, a timeout, or memory exhausted.

Usage (from the repository root, with the project's interpreter)::

    .venv/bin/python bench/fuzz_captures.py --work /tmp/fuzz             # 1,000 mutants, seed 17: ~10 min on 2 cores
    .venv/bin/python bench/fuzz_captures.py --work /tmp/fuzz --count 100 --report -   # the subset CI runs
    .venv/bin/python bench/fuzz_captures.py --work /tmp/fuzz --only 412 --keep         # make and run one again
    .venv/bin/python bench/fuzz_captures.py --work /tmp/fuzz --render    # the report again from results.json

Sources are read in place; mutants, outputs and ``results.json`` go under ``--work`` only (mutants are deleted
after their run unless ``--keep``, or unless they showed a defect). The table is printed and written to
``docs/fuzz.md`` (``--report``; ``--report -`` writes none). The same seed gives the same mutants and commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable as it is under pytest
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fuzz_mutants import Mutant, Source, load_sources, mutant

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 30.0
MEMORY_BYTES = 1 << 30
DETECT_EVERY = 5
"""Every fifth mutant runs through ``detect`` (model and alerts too); the rest through ``flows``, the faster one."""
DEFAULT_SEED = 17
FOUND = (
    "Times no output can hold. libpcap reads a pcap's 32-bit seconds as signed (0x80000000 and up are before 1970) "
    "and NFStream keeps packet times as unsigned milliseconds, so such a packet, and every later one (NFStream's clock "
    "never goes back), came out near 2^64 ms; a pcapng's 64-bit time or a coarse `if_tsresol` reached past the year "
    "9999. `tapwatch flows` then died with exit 1 writing the CSV's Timestamp (`ValueError: year 584555951 is out of "
    "range`): 10 of the first run's 1,000 mutants (kinds ts-absurd, ng-epb-fields, ng-idb-fields). Fixed in "
    "`capture/source.py` (the structure walk names the first such packet: `corrupt: invalid timestamp -2147483648 s "
    "(before 1970) at byte N`) and `capture/meter.py` (flows holding such a time are left out); regression tests in "
    "`tests/unit/test_fuzz_regressions.py`.",
    "Not a crash, an unclear line: a pcapng cut inside its first 4 bytes (`\\n\\r\\r`) was described as blank "
    "text, a pcap cut inside its magic as an unknown format. `capture/source.py` now names both as truncated "
    "(`truncated: 3 bytes, shorter than the 28-byte pcapng section header block; 0 packets read`).",
)
"""Crash classes earlier runs found, and what became of them (written into the report)."""
MEMORY_WORDS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


@dataclass
class Outcome:
    """What one mutant's run came to."""

    index: int
    kind: str
    command: str
    outcome: str  # processed | refused | defect
    defect: str | None
    exit_code: int
    seconds: float
    max_rss_mib: float
    message: str
    recipe: dict[str, object]
    file: str


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def command_for(m: Mutant) -> str:
    return "detect" if m.index % DETECT_EVERY == DETECT_EVERY - 1 else "flows"


def run_limited(argv: list[str], log: Path, timeout_s: float = TIMEOUT_S) -> tuple[int, float, float, bool, str]:
    """Run ``argv`` in a new session under the memory limit; (exit code, seconds, max RSS MiB, timed out, stderr).

    ``wait4`` gives the child's own peak RSS (with its waited-for children: NFStream's meter); on timeout the
    whole session is killed, so nothing it forked is left behind.
    """
    start = time.monotonic()
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_limit_memory, start_new_session=True, cwd=REPO)  # fmt: skip
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout_s:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    seconds = time.monotonic() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(ProcessLookupError):  # a meter the command forked and left running ends with it
        os.killpg(proc.pid, signal.SIGKILL)
    return code, seconds, usage.ru_maxrss / 1024, timed_out, log.read_text(errors="replace")


def classify(code: int, stderr: str, timed_out: bool, rss_mib: float, file: str) -> tuple[str, str | None, str]:
    """(outcome, defect class or None, the error line or the first line of trouble)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("tapwatch: error:")]
    first = errors[0] if errors else next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
    if timed_out:
        return "defect", "timeout", first
    if rss_mib * (1 << 20) > MEMORY_BYTES or any(w in stderr for w in MEMORY_WORDS):
        return "defect", "memory", first
    if "Traceback" in stderr:
        return "defect", "traceback", first
    if code == 0:
        return "processed", None, first
    if code == 2 and len(errors) == 1:
        if Path(file).name not in errors[0]:
            return "defect", "refusal does not name the file", first
        return "refused", None, errors[0]
    if code == 2:
        return "defect", f"exit 2 with {len(errors)} error lines", first
    return "defect", f"exit {code}" if code > 0 else f"signal {-code}", first


def run_mutant(m: Mutant, work: Path, keep: bool) -> Outcome:
    path = work / "mutants" / f"{m.index:04d}-{m.kind}.{m.suffix}"
    path.write_bytes(m.data)
    cmd = command_for(m)
    out = work / "out" / f"{m.index:04d}.{'csv' if cmd == 'flows' else 'jsonl'}"
    argv = [sys.executable, "-m", "tapwatch.app", cmd, str(path), "-o", str(out)]
    code, seconds, rss, timed_out, stderr = run_limited(argv, work / "logs" / f"{m.index:04d}.log")
    outcome, defect, message = classify(code, stderr, timed_out, rss, str(path))
    if defect is None and not keep:
        path.unlink()
        out.unlink(missing_ok=True)
    return Outcome(m.index, m.kind, cmd, outcome, defect, code, round(seconds, 2), round(rss, 1), message,
                   m.recipe, str(path))  # fmt: skip


def run_all(seed: int, indices: Iterable[int], sources: list[Source], work: Path, keep: bool = False,
            jobs: int = 2) -> list[Outcome]:  # fmt: skip
    """Make and run the mutants ``indices`` of ``seed``, ``jobs`` at a time (each made just before its run)."""
    for sub in ("mutants", "out", "logs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda i: run_mutant(mutant(seed, i, sources), work, keep), indices))


def normalise(line: str, file: str) -> str:
    """A refusal line with the file and the numbers taken out, so alike refusals count together.

    >>> normalise("tapwatch: error: /w/0007-x.pcap: corrupt: invalid record length 99 at byte 24", "/w/0007-x.pcap")
    'FILE: corrupt: invalid record length N at byte N'
    >>> normalise("tapwatch: error: /w/1: not a pcap or pcapng file: unknown format (first bytes d4c3b2a2)", "/w/1")
    'FILE: not a pcap or pcapng file: unknown format (first bytes HEX)'
    """
    line = re.sub(r"first bytes [0-9a-f]+", "first bytes HEX", line.removeprefix("tapwatch: error: "))
    return re.sub(r"\d+", "N", line.replace(file, "FILE"))


# ---- the report -----------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    mem_kib = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    return {"nproc": str(os.cpu_count()), "memory": f"{mem_kib / (1 << 20):.1f} GiB",
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "python": sys.version.split()[0]}  # fmt: skip


def _table(header: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def report(run: dict, results: list[Outcome]) -> str:
    """The markdown report of one run: ``run`` holds its command, seed, jobs, machine before and after, wall time."""
    before, after, wall_s, jobs = run["before"], run["after"], run["wall_s"], run.get("jobs", 2)
    counts = Counter(r.outcome for r in results)
    kinds = sorted({r.kind for r in results})
    by_kind = Counter((r.kind, r.outcome) for r in results)
    refusals = Counter(normalise(r.message, r.file) for r in results if r.outcome == "refused")
    defects = [r for r in results if r.outcome == "defect"]
    lines = ["# Fuzzed captures", "",
             "Generated by `bench/fuzz_captures.py` (issue 17); the mutants come from `bench/fuzz_mutants.py`.", "",
             f"    {run['command']}", "",
             f"Machine: {before['nproc']} cores, {before['memory']} memory, Python {before['python']}; load averages "
             f"{before['load']} before and {after['load']} after. {len(results)} mutants of seed {run['seed']} "
             f"(sources cut to whole records before 256 KiB) in {wall_s / 60:.1f} min, {jobs} at a time; each "
             f"a process of its own with a {TIMEOUT_S:.0f} s timeout and a 1 GiB address-space limit (RLIMIT_AS). "
             f"Every {DETECT_EVERY}th runs `tapwatch detect`, the others `tapwatch flows`.", "",
             "## Outcomes", ""]  # fmt: skip
    lines += _table(["outcome", "files"], [(k, counts.get(k, 0)) for k in ("processed", "refused", "defect")])
    lines += ["", f"Defects: {len(defects)}." if defects else "No defect: every file was processed or refused on one "
              "line naming it, none exited 1, none printed a traceback, none timed out or ran out of memory.", "",
              "## Per mutation kind", "", "`ng-` kinds are pcapng mutants (of a real pcapng, or of a pcap rewritten as "
              "pcapng in either byte order).", ""]  # fmt: skip
    lines += _table(["kind", "files", "processed", "refused", "defect"],
                    [(k, sum(by_kind[(k, o)] for o in ("processed", "refused", "defect")), by_kind[(k, "processed")],
                      by_kind[(k, "refused")], by_kind[(k, "defect")]) for k in kinds])  # fmt: skip
    lines += ["", "## Crashes found and fixed", "", *(f"- {x}" for x in FOUND)]
    lines += ["", "## Refusals", "", "Each distinct message (the file as FILE, numbers as N), with its count.", ""]
    lines += _table(["files", "message"], [(n, f"`{msg}`") for msg, n in refusals.most_common()])
    lines += ["", "## Slowest files", ""]
    slow = sorted(results, key=lambda r: -r.seconds)[:10]
    lines += _table(["index", "kind", "command", "outcome", "seconds", "max RSS MiB"],
                    [(r.index, r.kind, r.command, r.outcome, r.seconds, r.max_rss_mib) for r in slow])  # fmt: skip
    rss = sorted(r.max_rss_mib for r in results)
    lines += [
        "",
        f"Peak RSS per process (`wait4`'s ru_maxrss: the largest of the process and the children it "
        f"waited for, such as NFStream's meter): median "
        f"{rss[len(rss) // 2]:.0f} MiB, largest {rss[-1]:.0f} MiB.",
    ]
    if defects:
        lines += ["", "## Defects", "", "Make one again with `--seed SEED --only INDEX --keep`.", ""]
        lines += _table(["index", "class", "command", "message", "recipe"],
                        [(r.index, r.defect, r.command, f"`{r.message[:160]}`", f"`{json.dumps(r.recipe)}`")
                         for r in defects])  # fmt: skip
    return "\n".join(lines) + "\n"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder for mutants, outputs and logs (not the repo)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="holds pcaps/MANIFEST.csv")
    ap.add_argument("--count", type=int, default=1000, help="mutants 0..COUNT-1 (default 1000)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--only", type=int, nargs="+", help="run only these indices (no report file)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep every mutant and output")
    ap.add_argument("--report", default=str(REPO / "docs" / "fuzz.md"), help="markdown report ('-': none)")
    ap.add_argument("--render", action="store_true", help="write the report of WORK/results.json again, run nothing")
    args = ap.parse_args(argv)
    if REPO in args.work.resolve().parents or args.work.resolve() == REPO:
        ap.error("--work must be outside the repository")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    saved = args.work / "results.json"
    if args.render:
        run = json.loads(saved.read_text())
        results = [Outcome(**r) for r in run.pop("results")]
    else:
        sources = load_sources(args.shared / "pcaps" / "MANIFEST.csv")
        before, start = machine(), time.monotonic()
        results = run_all(args.seed, args.only or range(args.count), sources, args.work, args.keep, args.jobs)
        command = "python bench/fuzz_captures.py " + " ".join(argv if argv is not None else sys.argv[1:])
        run = {"command": command, "seed": args.seed, "jobs": args.jobs, "before": before, "after": machine(),
               "wall_s": time.monotonic() - start}  # fmt: skip
        saved.write_text(json.dumps({**run, "results": [asdict(r) for r in results]}, indent=1))
    text = report(run, results)
    print(text)
    if args.report != "-" and not args.only:
        Path(args.report).write_text(text)
    return 1 if any(r.outcome == "defect" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
