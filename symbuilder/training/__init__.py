"""Stage 5, training: `train` and `TrainResult` (training.fit), the epoch loop (loop), how a
build optimizes (optim), the run folder (runstore), metrics, progress and the dist workers
(distributed)."""
from typing import Any

__all__ = ["Progress", "TrainResult", "train", "with_epochs"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI's exit path and the launcher import training.distributed, which must
    # not pay for MXNet; training.fit imports it.
    if name in __all__:
        from . import fit  # lazy: see above
        return getattr(fit, name)
    raise AttributeError(f"module 'symbuilder.training' has no attribute {name!r}")
