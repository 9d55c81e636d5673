"""The error hierarchy shared by every tapwatch stage.

One root, :class:`TapwatchError`; subclasses carry structured fields. The CLI maps
:class:`BadInputError` to exit code 2 and anything else to exit code 1.
"""

from __future__ import annotations


class TapwatchError(Exception):
    """Root of every error tapwatch raises on purpose."""


class BadInputError(TapwatchError):
    """Input a person supplied is unusable (file, interface, option, CSV); the CLI exits with 2.

    Parameters
    ----------
    subject
        The file, interface or option the problem is about, named in the one-line message.
    problem
        What is wrong with it, in words a person can act on.
    """

    def __init__(self, subject: str, problem: str) -> None:
        self.subject = subject
        self.problem = problem
        super().__init__(f"{subject}: {problem}")


class ConfigError(BadInputError):
    """A setting is out of its valid range; raised at start-up, never silently corrected."""


class SchemaError(TapwatchError):
    """A record does not follow its schema (unknown version, wrong shape, wrong feature set).

    Parameters
    ----------
    record
        The record type, for example ``"window"``.
    reason
        A short, closed-set reason (used as a metric label), for example ``"version"``.
    detail
        Free text for the log line.
    """

    def __init__(self, record: str, reason: str, detail: str) -> None:
        self.record = record
        self.reason = reason
        self.detail = detail
        super().__init__(f"{record} record rejected ({reason}): {detail}")


class ModelCardError(TapwatchError):
    """A model card is malformed or does not match its ONNX file."""
