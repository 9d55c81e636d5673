"""Entries this process encoded keep their object through the in-process bus, and only those: a copy, a changed
field or anything from elsewhere is parsed and checked in full (features.schema.Encoded)."""

from __future__ import annotations

import pytest

from tapwatch.bus.streams import MemoryBus
from tapwatch.features.errors import SchemaError
from tapwatch.features.schema import Encoded, WindowEntry
from tests.support.worker import sample_window


def _read(bus: MemoryBus) -> dict[str, bytes]:
    bus.ensure_group("s", "g")
    ((_, fields),) = bus.read_group("s", "g", "c", 10, 0)
    return fields


def test_an_entry_encoded_here_is_read_back_as_its_object() -> None:
    window = sample_window(4)
    bus = MemoryBus()
    bus.add_many("s", [window.encode()])
    fields = _read(bus)
    assert WindowEntry.decode(fields) is window
    assert all(isinstance(v, bytes) for v in fields.values())  # the stored fields are what Redis would hold


def test_a_copy_or_a_changed_entry_is_parsed_and_checked() -> None:
    window = sample_window(4)
    copied = WindowEntry.decode(dict(window.encode()))
    assert copied is not window and copied.flow == window.flow and (copied.tensor == window.tensor).all()
    changed = window.encode()
    changed["v"] = "99"
    assert Encoded.object_of(changed, WindowEntry) is None
    with pytest.raises(SchemaError, match="version"):
        WindowEntry.decode(changed)
