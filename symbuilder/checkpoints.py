"""Resumable training checkpoints: params, optimizer state and the run's progress.

A run folder holds `<name>-NNNN.params` (Module.save_checkpoint's format),
`<name>-NNNN.states` (the optimizer's state WITH the optimizer object, so the update counts
and the LR schedule resume where they were), `<name>-best.params` under early stopping,
`train_log.jsonl`, and `state.json`, written last: a checkpoint exists only once state.json
names it. Every file is written to a temporary name and renamed, so SIGKILL at any moment
leaves the previous complete checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

from .errors import SpecError
from .spec.model import Spec

STATE = "state.json"
LOG = "train_log.jsonl"


@dataclasses.dataclass
class RunState:
    epoch: int = 0                       # last complete epoch with a checkpoint (1-based)
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    best_epoch: Optional[int] = None
    best_value: Optional[float] = None
    finished_early: bool = False
    fingerprint: str = ""


def spec_fingerprint(spec: Spec) -> str:
    """What must not change for a resume to continue the same run (epochs may grow)."""
    data = spec.to_dict()
    data.get("train", {}).pop("epochs", None)
    data.pop("export", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_write(path: str, payload: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_nd(path: str, arrays: Dict[str, mx.nd.NDArray]) -> None:
    tmp = f"{path}.tmp"
    mx.nd.save(tmp, arrays)
    os.replace(tmp, path)


def _split(saved: Dict[str, mx.nd.NDArray]) -> Tuple[Dict, Dict]:
    arg, aux = {}, {}
    for key, value in saved.items():
        kind, name = key.split(":", 1)
        (arg if kind == "arg" else aux)[name] = value
    return arg, aux


class RunStore:
    """The run folder of one spec's training."""

    def __init__(self, folder: str, spec: Spec) -> None:
        self.folder = folder
        self.name = spec.name
        self.fingerprint = spec_fingerprint(spec)
        self._spec = spec

    def _path(self, suffix: str) -> str:
        return os.path.join(self.folder, f"{self.name}{suffix}")

    def params_path(self, epoch: int) -> str:
        return self._path(f"-{epoch:04d}.params")

    def states_path(self, epoch: int) -> str:
        return self._path(f"-{epoch:04d}.states")

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.folder, STATE))

    def load(self) -> RunState:
        """The last complete checkpoint's state, or a fresh RunState if there is none."""
        path = os.path.join(self.folder, STATE)
        if not os.path.exists(path):
            return RunState()
        with open(path) as f:
            state = RunState(**json.load(f))
        if state.fingerprint != self.fingerprint:
            raise SpecError(f"the spec changed since the interrupted run in {self.folder} "
                            "(only train.epochs and export may change); build without "
                            "--resume to start over", file=self._spec.source)
        return state

    def last_epoch(self) -> int:
        path = os.path.join(self.folder, STATE)
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            return int(json.load(f)["epoch"])

    def start_fresh(self) -> bool:
        """Empty the folder for a new run; True if an earlier run was discarded."""
        had = self.exists()
        if os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        os.makedirs(self.folder)
        return had

    def load_params(self, epoch: int) -> Tuple[Dict, Dict]:
        return _split(mx.nd.load(self.params_path(epoch)))

    def load_best(self) -> Optional[Dict[str, Dict]]:
        path = self._path("-best.params")
        if not os.path.exists(path):
            return None
        arg, aux = _split(mx.nd.load(path))
        return {"arg": arg, "aux": aux}

    def load_optimizer(self, module: mx.mod.Module, epoch: int) -> None:
        """Restore optimizer state and the optimizer itself (update counts, LR schedule)."""
        with open(self.states_path(epoch), "rb") as f:
            blob = f.read()
        if module._update_on_kvstore:
            tmp = self.states_path(epoch)
            module._kvstore.load_optimizer_states(tmp)
            module._optimizer = module._kvstore._updater.optimizer
        else:
            module._updater.set_states(blob)
            module._optimizer = module._updater.optimizer

    def append_log(self, entry: Dict[str, Any]) -> None:
        with open(os.path.join(self.folder, LOG), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def save(self, module: mx.mod.Module, epoch: int, state: RunState,
             best: Optional[Dict[str, Dict]] = None) -> None:
        os.makedirs(self.folder, exist_ok=True)
        arg, aux = module.get_params()
        params = {f"arg:{k}": v for k, v in arg.items()}
        params.update({f"aux:{k}": v for k, v in aux.items()})
        _save_nd(self.params_path(epoch), params)
        if module._update_on_kvstore:
            module._kvstore.save_optimizer_states(self.states_path(epoch), dump_optimizer=True)
        else:
            _atomic_write(self.states_path(epoch), module._updater.get_states(dump_optimizer=True))
        if best is not None:
            saved = {f"arg:{k}": v for k, v in best["arg"].items()}
            saved.update({f"aux:{k}": v for k, v in best["aux"].items()})
            _save_nd(self._path("-best.params"), saved)
        symbol_path = self._path("-symbol.json")
        if not os.path.exists(symbol_path):
            _atomic_write(symbol_path, module.symbol.tojson().encode())
        state = dataclasses.replace(state, fingerprint=self.fingerprint)
        _atomic_write(os.path.join(self.folder, STATE),
                      json.dumps(dataclasses.asdict(state), indent=1).encode())
        # Only now is the new checkpoint complete: drop the older ones.
        for entry in os.listdir(self.folder):
            for suffix in (".params", ".states"):
                stem = entry[len(self.name) + 1:-len(suffix)] if entry.endswith(suffix) else ""
                if stem.isdigit() and int(stem) != epoch and entry.startswith(self.name + "-"):
                    os.remove(os.path.join(self.folder, entry))

    def log_lines(self) -> List[str]:
        path = os.path.join(self.folder, LOG)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
