"""Importing the C-extension packages (MXNet, ONNX Runtime) with SIGINT and SIGTERM blocked.

An interrupt inside such an import leaves a half-initialised module: the import fails with
"ImportError: initialization failed" (a traceback instead of symbuilder's one line), and a
second import of onnxruntime in the same process fails with "generic_type ... already
registered". A signal sent meanwhile is delivered when the import is done, as the usual
KeyboardInterrupt. The CLI imports what every command needs this way at start-up; what only
some runs need (ONNX Runtime for a build that exports ONNX) is imported this way on first use.
"""
from __future__ import annotations

import importlib
import signal
import threading
from types import ModuleType
from typing import List, Sequence

SIGNALS = {signal.SIGINT, signal.SIGTERM}


def import_blocking_signals(names: Sequence[str]) -> List[ModuleType]:
    """The modules, imported in order with SIGINT/SIGTERM held back, two ways: blocked in
    this thread (threads the imports start inherit the mask, so later signals reach the
    main thread, as before MXNet existed), and their handlers only noting a signal that
    another thread took (once MXNet runs, its threads may; Python then runs the handler in
    the importing thread: measured, a SIGTERM 0.8 s into a build broke the onnxruntime
    import that way). Afterwards a blocked one arrives, or the noted one is raised again,
    and the usual handler turns it into the usual KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return [importlib.import_module(name) for name in names]  # handlers: main thread only
    noted: List[int] = []
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    previous = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum))
                for sig in SIGNALS}
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a blocked one arrives here
        if noted:
            signal.raise_signal(noted[0])
