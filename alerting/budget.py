"""A per-second budget for explanations, a bounded queue and a deadline: an alert is never late.

The alerter submits each alert's window here and later collects the result. An explanation is computed only
when a token of the per-second budget is left and the queue has room; it must finish before the alert's
deadline, or the alert goes out without it. Whatever the reason, the alert says why
(``ml.explanation_status``) and the alerter counts it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

from tapwatch.alerting.alert import Contribution, ExplanationStatus
from tapwatch.alerting.metrics import AlerterMetrics

log = logging.getLogger(__name__)

Result = tuple[tuple[Contribution, ...] | None, ExplanationStatus]


class Explainer(Protocol):
    def explain(self, window: Any) -> tuple[Contribution, ...]: ...


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up (default: one second's worth).

    Example
    -------
    >>> now = [0.0]
    >>> b = TokenBucket(2.0, clock=lambda: now[0])
    >>> [b.take() for _ in range(3)]
    [True, True, False]
    >>> now[0] = 0.5
    >>> b.take(), b.take()
    (True, False)
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate) if burst is None else burst
        self.clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self.rate <= 0 or self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(frozen=True)
class BudgetConfig:
    """The explanation budget.

    Parameters
    ----------
    per_second
        Explanations started per second (token bucket); 0 explains nothing.
    queue
        Explanations waiting (one more runs). One worker thread explains; a handful queued already covers
        a batch's worth of alerts within the deadline, and more would only be dropped at the deadline.
    deadline_ms
        How long an alert may wait for its explanation, from submission.
    """

    per_second: float = 10.0
    queue: int = 8
    deadline_ms: int = 200


@dataclass
class Ticket:
    """One alert's claim on an explanation: a fixed status, or a future with a deadline."""

    status: ExplanationStatus | None
    future: Future[tuple[Contribution, ...] | None] | None = None
    deadline: float = 0.0


class ExplainQueue:
    """Explanations on one background thread, within :class:`BudgetConfig`.

    Parameters
    ----------
    explainer
        Has ``explain(window) -> tuple[Contribution, ...]`` (:class:`~tapwatch.alerting.explain.LimeExplainer`).
    config
        Budget, queue bound and deadline.
    metrics
        Explanation latency goes to its histogram.
    clock
        The budget's clock (tests inject one); deadlines always use the monotonic clock.
    """

    def __init__(
        self,
        explainer: Explainer,
        config: BudgetConfig | None = None,
        metrics: AlerterMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.explainer = explainer
        self.config = config or BudgetConfig()
        self.metrics = metrics
        self.bucket = TokenBucket(self.config.per_second, clock=clock)
        self._jobs: queue.Queue[tuple[Future[tuple[Contribution, ...] | None], Any, float] | None] = queue.Queue(
            maxsize=max(1, self.config.queue)
        )
        self._thread = threading.Thread(target=self._run, name="tapwatch-explain", daemon=True)
        self._thread.start()

    def submit(self, window: Any) -> Ticket:
        """Queue an explanation of ``window``, or say at once why there will be none."""
        if not self.bucket.take():
            return Ticket(ExplanationStatus.BUDGET)
        fut: Future[tuple[Contribution, ...] | None] = Future()
        deadline = time.monotonic() + self.config.deadline_ms / 1000
        try:
            self._jobs.put_nowait((fut, window, deadline))
        except queue.Full:
            return Ticket(ExplanationStatus.QUEUE_FULL)
        return Ticket(None, fut, deadline)

    def result(self, ticket: Ticket) -> Result:
        """The explanation, or None and why; waits at most until the ticket's deadline."""
        if ticket.status is not None or ticket.future is None:
            return None, ticket.status or ExplanationStatus.DISABLED
        try:
            found = ticket.future.result(timeout=max(0.0, ticket.deadline - time.monotonic()))
        except FutureTimeout:
            ticket.future.cancel()  # if it has not started, the worker skips it
            return None, ExplanationStatus.DEADLINE
        except Exception as err:  # the model or LIME failed on this window: the alert still goes out
            log.debug("explanation failed: %s: %s", type(err).__name__, err, exc_info=True)
            return None, ExplanationStatus.ERROR
        return (found, ExplanationStatus.OK) if found is not None else (None, ExplanationStatus.DEADLINE)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, window, deadline = job
            if not fut.set_running_or_notify_cancel():
                continue
            if time.monotonic() >= deadline:  # waited in the queue past its deadline: the alert is gone
                fut.set_result(None)
                continue
            start = time.perf_counter()
            try:
                found = self.explainer.explain(window)
            except Exception as err:  # handed to the alerter, which logs it with the alert's window id
                fut.set_exception(err)
                continue
            if self.metrics is not None:
                self.metrics.explain_latency.observe(time.perf_counter() - start)
            fut.set_result(found)

    def close(self) -> None:
        """Stop the worker after the queued jobs (each bounded by its deadline)."""
        while True:
            try:
                self._jobs.put(None, timeout=0.1)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    return
        self._thread.join(timeout=5.0)
