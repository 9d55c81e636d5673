"""The floor plan of docs/architecture.md, checked on every import statement of the installed rooms.

A room imports only from lower floors or from itself; lab/ (outside the floors) is imported by nothing but tests/
and bench/; only bus/ talks to Redis; only inference/ builds an ONNX Runtime session. Imports inside functions
and under ``TYPE_CHECKING`` count like the others: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import REPO

FLOORS = {"features": 1, "bus": 2, "capture": 3, "inference": 3, "alerting": 4, "models": 4, "app": 5, "console": 6}
"""Room -> floor, lowest first (docs/architecture.md). Each room is the folder of the same name."""


def rooms() -> list[str]:
    return [room for room in FLOORS if (REPO / room).is_dir()]


def modules(folder: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(folder.rglob("*.py")):
        if "reports" not in path.parts:
            yield path, ast.parse(path.read_text(), filename=str(path))


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import statement, relative imports included as written."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tapwatch" and len(parts) > 1 else None


def test_every_room_is_on_a_floor() -> None:
    """A new top-level package must be placed on the plan (here and in docs/architecture.md) before it lands."""
    installed = {d.name for d in REPO.iterdir() if (d / "__init__.py").exists()} - {"tests", "lab", "bench"}
    assert installed <= set(FLOORS), f"rooms not on the floor plan: {sorted(installed - set(FLOORS))}"


@pytest.mark.parametrize("room", rooms())
def test_a_room_imports_only_from_lower_floors_or_its_own(room: str) -> None:
    wrong = []
    for path, tree in modules(REPO / room):
        for line, module in imported(tree):
            target = room_of(module)
            if target is not None and target != room and FLOORS.get(target, 99) >= FLOORS[room]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module} (floor {FLOORS.get(target)})")
            if module.split(".")[0] in ("lab", "tests"):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module} (only tests/ and bench/ may)")
    assert not wrong, f"{room}/ is on floor {FLOORS[room]}:\n" + "\n".join(wrong)


def test_alerting_never_imports_capture_or_app() -> None:
    """The issue's own check, spelled out: alerting/ turns verdicts into alerts and needs no sensor or CLI."""
    found = [
        f"{p.relative_to(REPO)}:{line} {m}"
        for p, tree in modules(REPO / "alerting")
        for line, m in imported(tree)
        if room_of(m) in ("capture", "app")
    ]
    assert not found


def _importers(name: str) -> set[str]:
    found = set()
    for room in rooms():
        for path, tree in modules(REPO / room):
            if any(m == name or m.startswith(name + ".") for _, m in imported(tree)):
                found.add(str(path.relative_to(REPO)))
    return found


def test_only_bus_imports_redis() -> None:
    assert {p.split("/")[0] for p in _importers("redis")} <= {"bus"}, sorted(_importers("redis"))


def test_one_module_builds_an_onnx_runtime_session() -> None:
    builders = set()
    for room in rooms():
        for path, tree in modules(REPO / room):
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                    if name == "InferenceSession":
                        builders.add(str(path.relative_to(REPO)))
    assert len(builders) == 1 and next(iter(builders)).startswith("inference/"), sorted(builders)
