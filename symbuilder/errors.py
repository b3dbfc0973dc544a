"""The error types symbuilder raises: one base, located user errors, failed runs.

The CLI maps them to exit codes: a user's mistake (SpecError and subclasses) is exit 2
with one located line; a run that failed (RunError) is exit 1 with the figures.
"""
from __future__ import annotations

from typing import Optional


class SymbuilderError(Exception):
    """Base of every error symbuilder raises on purpose."""

    exit_code = 1


class SpecError(SymbuilderError):
    """A user's mistake, located: ``spec.yaml:12:5: layers[2].num_hidden: message``.

    ``file``/``line``/``column`` are 1-based and optional (a command-line mistake has none);
    ``path`` is the dotted/indexed key path inside the spec, e.g. ``layers[2].num_hidden``.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        path: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.path = path

    @property
    def location(self) -> str:
        """``file:line:col`` as far as it is known ("" when nothing is)."""
        parts = [p for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(str(p) for p in parts)

    def __str__(self) -> str:
        head = [p for p in (self.location, self.path) if p]
        return ": ".join(head + [self.message])


class DataError(SpecError):
    """The data a spec names is wrong: a missing file, a wrong column, a NaN at row r."""


class UsageError(SpecError):
    """A command-line mistake (bad flag value, missing file argument)."""


class RunError(SymbuilderError):
    """A run that failed: training diverged, a promise was broken, parity failed."""

    exit_code = 1


class ExportError(RunError):
    """Exporting failed: an op without an ONNX translation, or ONNX Runtime disagrees."""
