"""A per-second budget for explanations, a CPU cap, a bounded queue and a deadline: an alert is never late.

The alerter submits each alert's window here and later collects the result. An explanation is computed only
when a token of the per-second budget is left, the CPU share allows it and the queue has room; it must finish
before the alert's deadline, or the alert goes out without it. Whatever the reason, the alert says why
(``ml.explanation_status``) and the alerter counts it. The alerter does not wait for explanations in line:
alerts without one are written at once, and an alert with one in progress waits at most until its deadline
(:class:`~tapwatch.alerting.alerter.Alerter`).

The CPU cap exists because the count alone says nothing about cost: LIME over the shipped Hybrid model takes
about 110 ms of CPU, so 10 explanations per second would take a whole core from the workers on a 2-core host.
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
_Job = tuple["Future[tuple[Contribution, ...] | None]", Any, float, float]
"""An explanation to run: its future, the window, its deadline and the CPU seconds reserved for it."""


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


class CpuBudget:
    """At most ``share`` CPU seconds of explanation per second of ``clock``, at most one second's worth saved.

    A start reserves the expected cost (the mean of recent explanations), and :meth:`settle` books the
    measured one, so a burst of submissions cannot queue more work than the share allows.

    Example
    -------
    >>> now = [0.0]
    >>> b = CpuBudget(0.25, clock=lambda: now[0])
    >>> b.reserve(), b.settle(0.0, 0.2), b.reserve(), b.settle(0.2, 0.2), b.reserve()
    (0.0, None, 0.2, None, None)
    >>> now[0] = 1.0
    >>> round(b.reserve(), 3)
    0.2
    """

    def __init__(self, share: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.clock = clock
        self.expected_s = 0.0
        self._left = share
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._left = min(self.share, self._left + (now - self._at) * self.share)
        self._at = now

    def reserve(self) -> float | None:
        """Take the expected cost of one explanation and return it; None when the share is spent."""
        with self._lock:
            self._refill()
            if self.share <= 0 or self._left <= 0:
                return None
            self._left -= self.expected_s
            return self.expected_s

    def settle(self, reserved_s: float, used_s: float | None) -> None:
        """Book the CPU an explanation used instead of what was reserved for it (``used_s`` None: not run)."""
        with self._lock:
            self._left += reserved_s - (used_s or 0.0)
            if used_s is not None:  # the expected cost follows recent explanations (an exponential mean)
                self.expected_s = used_s if self.expected_s == 0 else 0.8 * self.expected_s + 0.2 * used_s


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
        How long an alert may wait for its explanation, from submission. An explanation that would not end
        by then (its expected cost, the mean of recent ones, says so) is not started.
    cpu_share
        CPU seconds of explanation per second (a fraction of one core), measured on the explaining thread;
        0 explains nothing.
    """

    per_second: float = 10.0
    queue: int = 8
    deadline_ms: int = 200
    cpu_share: float = 0.25


@dataclass
class Ticket:
    """One alert's claim on an explanation: a fixed status, or a future with a deadline."""

    status: ExplanationStatus | None
    future: Future[tuple[Contribution, ...] | None] | None = None
    deadline: float = 0.0

    def waiting(self, now: float) -> bool:
        """An explanation is still in progress and its deadline has not passed."""
        return self.future is not None and not self.future.done() and now < self.deadline


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
        self.cpu = CpuBudget(self.config.cpu_share, clock=clock)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, self.config.queue))
        self._thread = threading.Thread(target=self._run, name="tapwatch-explain", daemon=True)
        self._thread.start()

    def submit(self, window: Any) -> Ticket:
        """Queue an explanation of ``window``, or say at once why there will be none."""
        if self._jobs.full():
            return Ticket(ExplanationStatus.QUEUE_FULL)
        if not self.bucket.take():
            return Ticket(ExplanationStatus.BUDGET)
        reserved = self.cpu.reserve()
        if reserved is None:
            return Ticket(ExplanationStatus.BUDGET)
        fut: Future[tuple[Contribution, ...] | None] = Future()
        deadline = time.monotonic() + self.config.deadline_ms / 1000
        try:
            self._jobs.put_nowait((fut, window, deadline, reserved))
        except queue.Full:
            self.cpu.settle(reserved, None)
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
            fut, window, deadline, reserved = job
            if not fut.set_running_or_notify_cancel():
                self.cpu.settle(reserved, None)
                continue
            # Waited in the queue past its deadline, or would end after it: the alert goes (went) without it.
            if time.monotonic() + self.cpu.expected_s >= deadline:
                self.cpu.settle(reserved, None)
                fut.set_result(None)
                continue
            start, cpu0 = time.perf_counter(), time.thread_time()
            try:
                found = self.explainer.explain(window)
            except Exception as err:  # handed to the alerter, which logs it with the alert's window id
                self.cpu.settle(reserved, time.thread_time() - cpu0)
                fut.set_exception(err)
                continue
            self.cpu.settle(reserved, time.thread_time() - cpu0)
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
