"""Errors of the alerting stage, under the root :class:`~tapwatch.features.errors.TapwatchError`."""

from __future__ import annotations

from tapwatch.features.errors import TapwatchError


class AlertingError(TapwatchError):
    """Root of the alerting stage's errors."""


class InvalidAlert(AlertingError):
    """An :class:`~tapwatch.alerting.alert.Alert` failed validation.

    Parameters
    ----------
    field
        The offending field.
    problem
        What is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid alert field {field!r}: {problem}")


class SinkError(AlertingError):
    """A sink could not take an alert (the sink is named; the alert id is in the log line).

    Parameters
    ----------
    sink
        The sink's kind (a closed set: it is a metric label).
    detail
        Why, for the log line.
    retry
        Whether another attempt may succeed (False for a final answer such as HTTP 400).
    """

    def __init__(self, sink: str, detail: str, retry: bool = True) -> None:
        self.sink = sink
        self.detail = detail
        self.retry = retry
        super().__init__(f"sink {sink}: {detail}")


class ExplainerUnavailable(AlertingError):
    """Explanations cannot be built for this model (no training statistics, no ONNX file, bad output)."""
