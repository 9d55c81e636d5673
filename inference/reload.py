"""Hot reload: notice that a model's files changed, and load the new ones (the worker decides to swap).

Polling ``stat`` is cheap (two syscalls per poll); the sha256 and every card check run only once the
files changed. A change must hold still for one poll interval before a load is tried, so a file still
being copied is not loaded half-written (and counted as a failed reload). An atomic replace (write a
temporary file, then rename) is picked up after one to two intervals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tapwatch.features.card import card_path_for
from tapwatch.inference.model import Model, load_model

Fingerprint = tuple[tuple[int, int, int], ...]


class FileWatch:
    """Tell when files changed since they were last loaded, once a change held still for one poll interval.

    Parameters
    ----------
    paths
        The files watched together (a model and its card; a site profile).
    poll_s
        Interval between polls; 0 turns polling off.
    clock
        Monotonic clock, injectable for tests.
    """

    def __init__(self, paths: tuple[Path, ...], poll_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.paths = paths
        self.poll_s = poll_s
        self._clock = clock
        self._loaded: Fingerprint | None = None
        self._candidate: Fingerprint | None = None
        self._next_poll = 0.0

    def _fingerprint(self) -> Fingerprint | None:
        try:
            stats = [os.stat(p) for p in self.paths]
        except OSError:  # in the middle of a replace: look again at the next poll
            return None
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in stats)

    def mark_loaded(self) -> None:
        """Take the files as they are now as loaded (call just before reading them)."""
        self._loaded, self._candidate = self._fingerprint(), None

    def changed(self) -> bool:
        """True when a poll is due and the files differ from the last load, unchanged since the last poll."""
        if self.poll_s <= 0 or self._clock() < self._next_poll:
            return False
        self._next_poll = self._clock() + self.poll_s
        now = self._fingerprint()
        if now is None or now == self._loaded:
            self._candidate = None
            return False
        if now != self._candidate:
            self._candidate = now
            return False
        return True


class ModelReloader:
    """Load a model from its files, and tell when those files changed since the last load.

    Parameters
    ----------
    onnx_path
        The ONNX file.
    card_path
        Its card; None: :func:`~tapwatch.features.card.card_path_for` (resolved once, here).
    threads
        ONNX Runtime intra-op threads of every session it builds.
    poll_s
        Interval between file polls; 0 turns polling off (SIGHUP still reloads).
    clock
        Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        onnx_path: str | Path,
        card_path: str | Path | None = None,
        threads: int = 1,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self.card_path = Path(card_path) if card_path is not None else card_path_for(self.onnx_path)
        self.threads = threads
        self.poll_s = poll_s
        self.watch = FileWatch((self.onnx_path, self.card_path), poll_s, clock)

    def mark_loaded(self) -> None:
        """Take the files as they are now as loaded (for a caller that loaded them by other means)."""
        self.watch.mark_loaded()

    def changed(self) -> bool:
        """True when a poll is due and the files differ from the last load, unchanged since the last poll."""
        return self.watch.changed()

    def load(self) -> Model:
        """Load and check the files as they are now; raises :class:`~tapwatch.inference.model.ModelRejected`.

        A failed load is not retried until the files change again.
        """
        self.watch.mark_loaded()
        return load_model(self.onnx_path, self.card_path, self.threads)
