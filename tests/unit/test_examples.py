"""Every example a user is shown runs as written, or is visibly a placeholder (issue 10).

Examples come from each command's ``--help`` (``Example:`` lines) and from the README's and docs' command blocks.
Each is parsed against the real click command: its options must exist, every repository path it names must
exist, interfaces and captures a user must supply are upper-case placeholders (``IFACE``, ``PCAP``). The help
examples that need no root and no server are run, in a scratch folder that sees the repository's files.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tapwatch.app.cli import main
from tests.support.env import REPO

ROOMS = ("capture", "models", "docs", "features", "bus", "inference", "alerting", "app", "lab", "bench", "tests")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
NEEDS_MORE = ("sudo", "--redis", "--interface", "-i", "run", "capture", "worker", "alerter", "train", "export",
              "evaluate", "learn")  # fmt: skip
"""Words that make an example need root, a server or TensorFlow training: parsed, not run."""


def command(name: str) -> click.Command:
    ctx = click.Context(main)
    found = main.get_command(ctx, name)
    assert found is not None, f"no command {name!r}"
    return found


def help_examples() -> list[str]:
    out = []
    for name in main.list_commands(click.Context(main)):
        text = (command(name).help or "").replace("\n", " ")
        for found in re.findall(r"Examples?: (.*)", text):
            out += [ex.strip() for ex in found.split(" ; ")]
    return out


def doc_examples() -> list[str]:
    """Indented command lines of the docs that start with ``tapwatch`` (continuations joined, comments cut)."""
    out = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("    "):
                continue
            text = line.strip().split("&& ")[-1]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            text = re.sub(r"\s+#.*$", "", text)
            if re.match(r"(sudo )?(\.venv/bin/)?tapwatch \w", text):
                out.append(text)
    return out


def words(example: str) -> list[str]:
    argv = shlex.split(example)
    argv = argv[1:] if argv[0] == "sudo" else argv
    assert argv[0].endswith("tapwatch"), example
    return [a for a in argv[1:] if a not in ("[--profile]",)]


def option_names(cmd: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for p in cmd.params:
        names |= set(p.opts) | set(p.secondary_opts)
    return names


@pytest.mark.parametrize("example", help_examples() + doc_examples())
def test_an_example_uses_options_that_exist_and_paths_that_exist(example: str) -> None:
    argv = words(example)
    cmd = command(argv[0])
    for word in argv[1:]:  # a group's subcommands (tapwatch console user add)
        if not isinstance(cmd, click.Group) or word not in cmd.commands:
            break
        cmd = cmd.commands[word]
    known = option_names(cmd)
    for i, word in enumerate(argv[1:], 1):
        if word.startswith("-") and not word.lstrip("-").isdigit():
            assert word.split("=")[0] in known, f"{example}: {argv[0]} has no option {word}"
        if word.split("/")[0] in ROOMS and "/" in word:
            assert (REPO / word).exists(), f"{example}: {word} does not exist in the repository"
        if argv[i - 1] in ("-i", "--interface"):
            assert word == "IFACE", f"{example}: write the interface as the placeholder IFACE"
        if argv[0] in ("flows", "detect", "learn") and not word.startswith("-") and not argv[i - 1].startswith("-"):
            assert (REPO / word).exists() or word.startswith("PCAP"), f"{example}: {word} is neither a file nor PCAP"


def test_the_examples_were_found() -> None:
    examples = help_examples()
    assert {words(e)[0] for e in examples} >= {"flows", "detect", "run", "worker", "alerter", "score", "capture"}
    assert len(doc_examples()) >= 15


def test_every_help_example_that_needs_no_root_and_no_server_runs(tmp_path: Path) -> None:
    runnable = [e for e in help_examples() if not set(shlex.split(e)) & set(NEEDS_MORE)]
    assert len(runnable) >= 3, runnable
    for room in ("capture", "models"):
        (tmp_path / room).symlink_to(REPO / room)
    order = {"flows": 0, "detect": 1, "score": 2}  # score reads the flows.csv that the flows example writes
    for example in sorted(runnable, key=lambda e: order.get(words(e)[0], 9)):
        proc = subprocess.run([sys.executable, "-m", "tapwatch.app", *words(example)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, f"{example}\n{proc.stderr}"
        out = words(example)[words(example).index("-o") + 1] if "-o" in words(example) else None
        assert out is None or (tmp_path / out).stat().st_size > 0, f"{example} wrote nothing to {out}"
