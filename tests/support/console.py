"""Console test helpers: a test password and an EVE alert line shaped like the episode alerter's."""

from __future__ import annotations

import copy
from typing import Any

PASSWORD = "correct horse battery"

_LINE: dict[str, Any] = {
    "timestamp": "2026-12-01T10:00:30.000000+0000", "flow_id": 1, "event_type": "alert",
    "src_ip": "10.0.0.9", "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 22, "proto": "TCP",
    "community_id": "1:abc=", "direction": "to_server",
    "alert": {"action": "allowed", "gid": 1, "signature_id": 9200003, "rev": 1,
              "signature": "TAPWATCH Password guessing", "category": "Attempted User Privilege Gain", "severity": 1},
    "episode": {"id": "ep-1", "state": "open", "key": "source", "host": "10.0.0.9",
                "first_seen": "2026-12-01T10:00:00.000Z", "last_seen": "2026-12-01T10:00:30.000Z", "flows": 40,
                "evidence": 12, "sources": 1, "targets": 1, "ports": 1, "top_ports": [22],
                "top_sources": ["10.0.0.9"], "top_targets": ["10.0.0.2"], "max_score": 0.98, "classes": ["SSH-Patator"],
                "lines": 1},
    "ml": {"family": "bruteforce", "class": "SSH-Patator", "classes": {"SSH-Patator": 12}, "view": "window",
           "views": ["window"], "model": "hybrid-lab", "model_version": "2.0.0", "score": 0.98,
           "explanation": [{"feature": "Flow Duration", "value": 2500000.0, "weight": 0.04},
                           {"feature": "Total Fwd Packet", "value": 22.0, "weight": -0.01}],
           "summary": "Password guessing from 10.0.0.9: 40 logins to 10.0.0.2 port 22 in 30 s.", "alert_id": "a-1"},
    "host": "tap-1",
}  # fmt: skip


def eve_line(episode_id: str = "ep-1", **change: Any) -> dict[str, Any]:
    """A copy of the line for episode ``episode_id``; ``change`` replaces top-level fields. Its alert id is
    ``a-1`` for ep-1 (each line of an alert stream has its own: set another for a second line of an episode)."""
    line = copy.deepcopy(_LINE)
    line["episode"]["id"] = episode_id
    line["ml"]["alert_id"] = "a-" + episode_id.removeprefix("ep-")
    line.update(change)
    return line
