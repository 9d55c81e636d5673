"""What every benchmark report says about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, cores (and how many this process may use), kernel and Python.

    >>> "cores" in machine() and "Python" in machine()
    True
    """
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")  # fmt: skip
    usable = len(os.sched_getaffinity(0))
    py = platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores ({usable} usable), Linux {platform.release()}, Python {py}"
