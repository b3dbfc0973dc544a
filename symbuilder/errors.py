"""The error types symbuilder raises: one base, located user errors, failed runs.

The CLI maps them to exit codes: a user's mistake (SpecError and subclasses) is exit 2
with one located line; a run that failed (RunError) is exit 1 with the figures.
"""
from __future__ import annotations

import re
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


_MX_PREFIXES = ("Traceback", "Stack trace", "[bt]", "File ")


def mxnet_message(error: BaseException) -> str:
    """The human part of an MXNetError: first meaningful line, without the timestamp, the
    C++ source position and the failed check expression.

    '[11:48:01] ../src/operator/nn/convolution.cc:151: Check failed: dshp.ndim() == 4U
    (2 vs. 4) : Input data should be 4D in batch-num_filter-y-x'
    -> 'Input data should be 4D in batch-num_filter-y-x (2 vs. 4)'
    """
    for line in str(error).splitlines():
        line = line.strip()
        if not line or line.startswith(_MX_PREFIXES):
            continue
        line = re.sub(r"^MXNetError: ", "", line)
        line = re.sub(r"^Error in operator [^:]+: ", "", line)
        line = re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line)
        line = re.sub(r"^\S+\.(cc|h|cu|cuh):\d+: ", "", line)
        check = re.match(r"^Check failed: .*?(\(\d+ vs\. \d+\))? : (.+)$", line)
        if check:
            line = check.group(2) + (f" {check.group(1)}" if check.group(1) else "")
        else:
            line = re.sub(r"^Check failed: ", "", line)
        return line
    return type(error).__name__
