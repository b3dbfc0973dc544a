"""MXNet's C++ log lines ("Loading symbol saved by previous version", ImageRecordIter's
"use N threads") are written to file descriptor 2 directly, past Python's sys.stderr."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def cxx_log_silenced() -> Iterator[None]:
    """For one short call that only logs (its errors come back as exceptions), point file
    descriptor 2 at /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
