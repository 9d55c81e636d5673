"""What a run's run.json says about it: settings, counts, the capture's account, RTTs, tools and versions.

Example
-------
>>> versions = package_versions(("iproute2", "no-such-package-twlab", "pypi:click", "python3 (lab.beacon)"))
>>> sorted(versions), versions["no-such-package-twlab"], versions["pypi:click"] != "not installed"
(['iproute2', 'no-such-package-twlab', 'pypi:click', 'python3'], 'not installed', True)
>>> sorted(all_tools())[:3]
['apache2-utils', 'busybox', 'chrony']
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.episodes import Episode

if TYPE_CHECKING:
    from lab.delayrtt import RttSummary
    from lab.run import RunConfig
    from lab.topology import TapCapture

BASE_TOOLS = ("iproute2", "tcpdump", "libpcap0.8", "nginx-light", "openssh-server", "vsftpd", "chrony", "dnsmasq-base",
              "openssl")  # fmt: skip
"""Debian packages every run uses: the lab itself, the capture and the servers (lab.services)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``run_dir/run.json`` whole or not at all: a unit with a run.json is complete (:mod:`lab.corpus`)."""
    tmp = Path(run_dir) / "run.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    tmp.replace(Path(run_dir) / "run.json")


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """``package -> version``: from dpkg for a Debian package, from the environment for ``pypi:NAME``
    (``not installed`` for a missing one); a description after the name (``python3 (lab.beacon)``) is dropped."""
    out = {}
    for pkg in sorted({p.split()[0] for p in packages}):
        if pkg.startswith("pypi:"):
            try:
                out[pkg] = metadata.version(pkg[5:])
            except metadata.PackageNotFoundError:
                out[pkg] = "not installed"
            continue
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        out[pkg] = done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "not installed"
    return out


def all_tools() -> tuple[str, ...]:
    """Every Debian package the lab's services, clients and attacks run."""
    from lab.attacks import TOOLS as ATTACK_TOOLS
    from lab.benign import TOOLS as BENIGN_TOOLS

    return tuple(sorted({*BASE_TOOLS, *_packages(ATTACK_TOOLS), *_packages(BENIGN_TOOLS)}))


def _packages(tools: Any) -> Iterable[str]:
    """The package names of a TOOLS declaration (a collection of names, or a mapping tool -> package)."""
    return tools.values() if isinstance(tools, Mapping) else tools


def manifest(cfg: RunConfig, episodes: list[Episode], flows: dict[str, int], cap: TapCapture, rtt: RttSummary,
             clients: dict[str, Any], span: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    """The run's summary (without the files' sha256, which the caller adds)."""
    attacks = [e for e in episodes if e.family.value != "benign"]
    return {
        "unit": cfg.unit, "scenario": cfg.scenario.name, "seed": cfg.seed, "link_profile": cfg.profile.value,
        "profile_rtt_ms": cfg.profile.path.rtt_ms, "scenario_settings": asdict(cfg.scenario),
        "started": span[0], "ended": span[1], "seconds": round(span[1] - span[0], 3),
        "episodes": len(episodes), "attack_episodes": dict(Counter(e.family.value for e in attacks)),
        "attacks": [{"episode_id": e.episode_id, "tool": e.tool, "family": e.family.value,
                     "seconds": e.duration_s} for e in attacks],
        "flows": flows, "flows_total": sum(flows.values()),
        "capture": {"packets": cap.captured, "kernel_dropped": cap.dropped, "budget_reached": cap.reached_limit,
                    "limit_packets": cap.max_packets},
        "handshake_rtt": asdict(rtt), "clients": _plain(clients),
        "tools": package_versions(all_tools()), "tapwatch": metadata.version("tapwatch"),
        "python": platform.python_version(), "kernel": platform.release(),
    }  # fmt: skip


def _plain(value: Any) -> Any:
    """Client stats (:class:`lab.benign.ClientStats`) as rows per activity and the sessions never started."""
    if hasattr(value, "rows"):
        return {"activities": value.rows(), "skipped": value.skipped}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
