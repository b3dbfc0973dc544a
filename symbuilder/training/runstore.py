"""Resumable training checkpoints: params, optimizer state and the run's progress.

A run folder holds `<name>-NNNN.params` (Module.save_checkpoint's format), the optimizer's
state as `<name>-NNNN.states.nd` (its arrays) and `<name>-NNNN.states.json` (its tree, the
update counts and the LR schedule's position; no pickle, so resuming runs no code from the
folder), `<name>-best.params` under early stopping,
`train_log.jsonl`, and `state.json`, written last: a checkpoint exists only once state.json
names it. Every file is written to a temporary name and renamed, so SIGKILL at any moment
leaves the previous complete checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from ..errors import DataError, RunError, SpecError, mxnet_message
from ..files import deferred_sync, fsync_path, write_atomic
from ..spec.model import Spec

STATE = "state.json"
# Every name RunStore writes (and the `.tmp` forms mid-write): state.json, the log, params,
# optimizer state (`.states.json` + `.states.nd`; `.states` is an older symbuilder's pickle,
# still recognised so that resume can refuse it by name), the symbol. A build refuses to
# empty a folder at the run folder's place that holds anything else.
_RUN_NAME = (r"(state\.json|train_log\.jsonl|.+\.params|.+\.states(\.json|\.nd)?"
             r"|.+-symbol\.json)")
# ...and files.write_atomic's temporary form of each (`.<name>.tmp-<8 random>`), which a kill
# mid-write leaves behind; `<name>.tmp` is an older symbuilder's.
_RUN_FILE = re.compile(rf"{_RUN_NAME}(\.tmp)?|\.{_RUN_NAME}\.tmp-[a-z0-9_]{{8}}")


def is_run_file(name: str) -> bool:
    """True for a file name RunStore writes into a run folder."""
    return bool(_RUN_FILE.fullmatch(name))
LOG = "train_log.jsonl"


@dataclasses.dataclass
class RunState:
    epoch: int = 0                       # last complete epoch with a checkpoint (1-based)
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    best_epoch: Optional[int] = None
    best_value: Optional[float] = None
    finished_early: bool = False
    fingerprint: str = ""
    # The fingerprinted spec itself, so a refused resume can name the keys that changed
    # (None in a run folder an older symbuilder wrote).
    spec: Optional[Dict[str, Any]] = None


def fingerprint_data(spec_dict: Dict[str, Any]) -> Dict[str, Any]:
    """What must not change for a resume to continue the same run: the spec as a dict
    (Spec.to_dict, or a manifest's "spec") without train.epochs (may grow) and export."""
    data = json.loads(json.dumps(spec_dict, default=str))  # a deep copy, JSON's types
    if isinstance(data.get("train"), dict):
        data["train"].pop("epochs", None)
    data.pop("export", None)
    return data


def fingerprint_of(spec_dict: Dict[str, Any]) -> str:
    text = json.dumps(fingerprint_data(spec_dict), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_fingerprint(spec: Spec) -> str:
    """The sha256 of fingerprint_data: equal specs, equal runs (epochs and export aside)."""
    return fingerprint_of(spec.to_dict())


def changed_keys(old: Any, new: Any, path: str = "") -> List[str]:
    """The keys whose values differ between two spec dicts, as spec paths
    (`train.optimizer_params.learning_rate`, `layers[1].num_hidden`), in the new one's
    order; a key only one side has is named too."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: List[str] = []
        for key in list(new) + [k for k in old if k not in new]:
            where = f"{path}.{key}" if path else str(key)
            out += changed_keys(old.get(key), new.get(key), where) \
                if key in old and key in new else [where]
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            where = f"{path}[{i}]"
            out += changed_keys(old[i], new[i], where) if i < min(len(old), len(new)) \
                else [where]
        return out
    return [] if old == new else [path or "(the whole spec)"]


def _save_nd(path: str, arrays: Dict[str, mx.nd.NDArray]) -> None:
    write_atomic(path, lambda tmp: mx.nd.save(tmp, arrays))


def _split(saved: Dict[str, mx.nd.NDArray]) -> Tuple[Dict, Dict]:
    arg, aux = {}, {}
    for key, value in saved.items():
        kind, name = key.split(":", 1)
        (arg if kind == "arg" else aux)[name] = value
    return arg, aux


# --- Optimizer state without pickle -------------------------------------------------------
# MXNet's own format (Updater.get_states / KVStore.save_optimizer_states) is a pickle of the
# states and the optimizer object: loading one runs whatever it contains, and the run folder
# may sit on a shared file system. Here the NDArray leaves go into one mx.nd.save file
# (MXNet's binary format: arrays only) and everything else into JSON. On resume the optimizer
# is the one the spec builds, as in a fresh run; only its moving parts are read back.

STATES_FORMAT = "symbuilder-optimizer-state/1"
# Optimizer attributes rebuilt from the spec and the symbol, never read from a file.
_REBUILT = frozenset({"sym_info", "param_dict", "idx2name", "lr_mult", "wd_mult",
                      "lr_scheduler", "_index_update_count"})
_NODES = ("nd", "tuple", "list", "dict")
_Number = (int, float)


class _Misfit(Exception):
    """A value in a states file that does not fit; (where, message), located by the caller."""


def _encode(value: Any, key: str, arrays: Dict[str, mx.nd.NDArray]) -> Any:
    """A Python value as a JSON node; NDArray leaves go into `arrays` under `key` (the state's
    index and its path in the tree, e.g. 'fc1_weight/1')."""
    if isinstance(value, mx.nd.NDArray):
        arrays[key] = value
        return {"nd": key}
    if isinstance(value, (tuple, list)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, f"{key}/{k}", arrays)] for k, v in value.items()]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise RunError(f"cannot checkpoint optimizer state {key} of type {type(value).__name__}")


def _decode(node: Any, where: str, arrays: Dict[str, mx.nd.NDArray], used: set) -> Any:
    """The inverse of _encode; _Misfit for anything _encode does not write."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if not (isinstance(node, dict) and len(node) == 1 and next(iter(node)) in _NODES):
        raise _Misfit(where, f"expected a value or one of {{{', '.join(_NODES)}}}, "
                             f"received {_short(node)}")
    kind, body = next(iter(node.items()))
    if kind == "nd":
        if not isinstance(body, str) or body not in arrays:
            raise _Misfit(where, f"no array {_short(body)} in the .nd file")
        used.add(body)
        return arrays[body]
    if not isinstance(body, list):
        raise _Misfit(where, f"expected a list, received {_short(body)}")
    if kind != "dict":
        items = [_decode(v, f"{where}[{i}]", arrays, used) for i, v in enumerate(body)]
        return tuple(items) if kind == "tuple" else items
    out = {}
    for i, pair in enumerate(body):
        if not (isinstance(pair, list) and len(pair) == 2 and _is_key(pair[0])):
            raise _Misfit(f"{where}[{i}]", f"expected [key, value], received {_short(pair)}")
        out[pair[0]] = _decode(pair[1], f"{where}[{pair[0]!r}]", arrays, used)
    return out


def _is_key(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fit_state(template: Any, value: Any, where: str) -> None:
    """`value` must be the tree the optimizer creates for this parameter: same nesting, and
    arrays of the same shape, dtype and storage type."""
    if isinstance(template, mx.nd.NDArray):
        if not isinstance(value, mx.nd.NDArray):
            raise _Misfit(where, f"expected an array, received {type(value).__name__}")
        want = (template.shape, np.dtype(template.dtype).name, template.stype)
        got = (value.shape, np.dtype(value.dtype).name, value.stype)
        if want != got:
            raise _Misfit(where, f"expected shape {want[0]} {want[1]} {want[2]}, "
                                 f"received {got[0]} {got[1]} {got[2]}")
    elif isinstance(template, (tuple, list)):
        if type(value) is not type(template) or len(value) != len(template):
            raise _Misfit(where, f"expected a {type(template).__name__} of {len(template)}, "
                                 f"received {_kind(value)}")
        for i, (t, v) in enumerate(zip(template, value)):
            _fit_state(t, v, f"{where}[{i}]")
    elif value is not None:
        raise _Misfit(where, f"expected no state (null), received {_kind(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def _fit_attr(fresh: Any, value: Any, where: str) -> None:
    """An optimizer or scheduler attribute: the kind a fresh one holds. A number may change
    (lr, counts, m_schedule), an unset one (None: lars's last_lr) may become a number,
    containers keep their type and lists their length."""
    def number(v: Any) -> bool:
        return isinstance(v, _Number) and not isinstance(v, bool)
    if isinstance(fresh, int) and not isinstance(fresh, bool):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif number(fresh):
        ok = number(value)
    elif fresh is None:
        ok = value is None or number(value)
    elif isinstance(fresh, (tuple, list)):
        ok = type(value) is type(fresh) and len(value) == len(fresh)
        for i, (f, v) in enumerate(zip(fresh, value) if ok else ()):
            _fit_attr(f, v, f"{where}[{i}]")
    else:
        ok = type(value) is type(fresh)
    if not ok:
        raise _Misfit(where, f"expected {_kind(fresh)} like {_short_value(fresh)}, "
                             f"received {_short_value(value)}")


def _short_value(value: Any) -> str:
    try:
        return _short(value)
    except TypeError:
        return type(value).__name__


def _attrs_of(obj: Any, skip: frozenset = frozenset()) -> Dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if k not in skip}


def _updater_of(module: mx.mod.Module) -> Any:
    """The Updater holding the states: the kvstore's when it updates (several devices with
    kvstore local/device), else the module's own (one device, and dist_sync workers)."""
    return module._kvstore._updater if module._update_on_kvstore else module._updater


def optimizer_state(module: mx.mod.Module) -> Tuple[Dict[str, Any], Dict[str, mx.nd.NDArray]]:
    """(JSON document, arrays) of what resume needs to continue bit for bit: every state tree,
    the update counts, the optimizer's changing numbers and the LR scheduler's attributes."""
    updater = _updater_of(module)
    opt = updater.optimizer
    arrays: Dict[str, mx.nd.NDArray] = {}
    current = next(k for k, v in opt._all_index_update_counts.items()
                   if v is opt._index_update_count)
    sched = opt.lr_scheduler
    doc = {"format": STATES_FORMAT, "optimizer": type(opt).__name__,
           "states": [[k, _encode(v, str(k), arrays)] for k, v in updater.states.items()],
           "attrs": _encode(_attrs_of(opt, _REBUILT), "attrs", arrays),
           "current_device": current,
           "lr_scheduler": None if sched is None else
           {"class": type(sched).__name__, "attrs": _encode(vars(sched), "sched", arrays)}}
    return doc, arrays


def _state_weights(module: mx.mod.Module) -> Dict[Any, mx.nd.NDArray]:
    """Each index the updater may hold a state for, with its parameter: Module numbers its
    own updater's indices param * devices + device; the kvstore keys them by name."""
    arg, _ = module.get_params()
    names = _updater_of(module).optimizer.idx2name
    if module._update_on_kvstore:
        return {name: arg[name] for name in names.values()}
    return {index: arg[name] for index, name in names.items()}


def _decode_states(module: mx.mod.Module, entries: Any, arrays: Dict[str, mx.nd.NDArray],
                   used: set) -> Dict[Any, Any]:
    weights = _state_weights(module)
    opt = _updater_of(module).optimizer
    if not isinstance(entries, list):
        raise _Misfit("states", f"expected a list of [index, state], received {_short(entries)}")
    states: Dict[Any, Any] = {}
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and _is_key(entry[0])):
            raise _Misfit(f"states[{i}]", f"expected [index, state], received {_short(entry)}")
        index, node = entry
        if index not in weights or index in states:
            raise _Misfit(f"states[{i}]", f"index {index!r} is "
                          + ("repeated" if index in states else
                             f"not one of this network's {len(weights)} parameter slots"))
        value = _decode(node, f"states[{i}]", arrays, used)
        _fit_state(opt.create_state_multi_precision(index, weights[index]), value,
                   f"states[{i}] ({index})")
        states[index] = value
    return states


def _decode_attrs(fresh: Dict[str, Any], node: Any, where: str,
                  arrays: Dict[str, mx.nd.NDArray], used: set) -> Dict[str, Any]:
    """Attributes for `fresh`'s object: the same names, each of the kind it holds."""
    attrs = _decode(node, where, arrays, used)
    if not isinstance(attrs, dict) or set(attrs) != set(fresh):
        got = sorted(map(str, attrs)) if isinstance(attrs, dict) else _kind(attrs)
        raise _Misfit(where, f"expected the attributes {sorted(fresh)}, received {got}")
    for name, value in attrs.items():
        _fit_attr(fresh[name], value, f"{where}.{name}")
    return attrs


def _check_counts(counts: Dict[Any, Any], slots: Dict[Any, Any], current: Any) -> None:
    for device, per_index in counts.items():
        where = f"attrs._all_index_update_counts[{device!r}]"
        if not (isinstance(device, int) and isinstance(per_index, dict)):
            raise _Misfit(where, "expected a device id and a mapping of index to count")
        for index, count in per_index.items():
            if index not in slots or not (type(count) is int and count >= 0):
                raise _Misfit(f"{where}[{index!r}]", f"expected a parameter slot's update "
                                                    f"count, received {_short_value(count)}")
    if current not in counts:
        raise _Misfit("current_device", f"expected one of {sorted(counts)}, received "
                                        f"{_short_value(current)}")


_DOC_KEYS = {"format", "optimizer", "states", "attrs", "current_device", "lr_scheduler",
             "nd_sha256"}


def restore_optimizer_state(module: mx.mod.Module, doc: Any,
                            arrays: Dict[str, mx.nd.NDArray]) -> None:
    """Set the state of the optimizer the module built from the spec; _Misfit (and nothing
    changed) if the document does not fit this network and optimizer."""
    updater = _updater_of(module)
    opt = updater.optimizer
    if not isinstance(doc, dict) or set(doc) != _DOC_KEYS:
        got = sorted(doc) if isinstance(doc, dict) else _kind(doc)
        raise _Misfit("(top level)", f"expected the keys {sorted(_DOC_KEYS)}, received {got}")
    if doc["format"] != STATES_FORMAT or doc["optimizer"] != type(opt).__name__:
        raise _Misfit("format", f"expected {STATES_FORMAT} for optimizer {type(opt).__name__}, "
                                f"received {_short([doc['format'], doc['optimizer']])}")
    used: set = set()
    states = _decode_states(module, doc["states"], arrays, used)
    attrs = _decode_attrs(_attrs_of(opt, _REBUILT), doc["attrs"], "attrs", arrays, used)
    _check_counts(attrs["_all_index_update_counts"], _state_weights(module),
                  doc["current_device"])
    sched, sched_doc = opt.lr_scheduler, doc["lr_scheduler"]
    sched_attrs = None
    if (sched is None) != (sched_doc is None) or (sched is not None and not (
            isinstance(sched_doc, dict) and set(sched_doc) == {"class", "attrs"}
            and sched_doc["class"] == type(sched).__name__)):
        want = "null" if sched is None else f"{{class: {type(sched).__name__}, attrs: ...}}"
        raise _Misfit("lr_scheduler", f"expected {want}, received {_short(sched_doc)}")
    if sched is not None:
        sched_attrs = _decode_attrs(vars(sched), sched_doc["attrs"], "lr_scheduler.attrs",
                                    arrays, used)
    if used != set(arrays):
        raise _Misfit("states", f"the .nd file has arrays no state names: "
                                f"{sorted(set(arrays) - used)[:3]}")
    # Everything fits: only now change the optimizer (a refusal leaves it fresh).
    vars(opt).update(attrs)
    opt._index_update_count = opt._all_index_update_counts[doc["current_device"]]
    if sched_attrs is not None:
        vars(sched).update(sched_attrs)
    updater.states = states
    # As Updater.set_states does: move each state to its weight's device on first use.
    updater.states_synced = dict.fromkeys(states, False)


def _load_nd(path: str) -> Dict[str, mx.nd.NDArray]:
    """An mx.nd.save file of named arrays (MXNet's binary format, no pickle)."""
    if not os.path.exists(path):
        raise DataError("missing from the run folder; build again without --resume", file=path)
    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError as e:
        raise DataError(f"not a readable NDArray file ({mxnet_message(e)}); build again "
                        "without --resume", file=path) from None
    if saved == []:  # mx.nd.load gives [] for an empty dict
        return {}
    if not isinstance(saved, dict):
        raise DataError("expected named arrays, found an unnamed list", file=path)
    return saved


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise DataError("missing from the run folder; build again without --resume",
                        file=path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg}); build again without --resume",
                        file=path, line=e.lineno, column=e.colno) from None
    except ValueError as e:  # not text at all (UnicodeDecodeError)
        raise DataError(f"not a JSON text file ({type(e).__name__}); build again without "
                        "--resume", file=path) from None


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


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

    def states_paths(self, epoch: int) -> Tuple[str, str]:
        """The optimizer state's JSON document and its arrays."""
        return self._path(f"-{epoch:04d}.states.json"), self._path(f"-{epoch:04d}.states.nd")

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
            keys = (changed_keys(state.spec, fingerprint_data(self._spec.to_dict()))
                    if isinstance(state.spec, dict) else [])
            named = f": {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''} changed" \
                if keys else ""
            raise SpecError(f"the spec changed since the interrupted run in {self.folder}"
                            f"{named} (only train.epochs and export may change); build without "
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
        return _split(_load_nd(self.params_path(epoch)))

    def load_best(self) -> Optional[Dict[str, Dict]]:
        path = self._path("-best.params")
        if not os.path.exists(path):
            return None
        arg, aux = _split(_load_nd(path))
        return {"arg": arg, "aux": aux}

    def load_optimizer(self, module: mx.mod.Module, epoch: int) -> None:
        """Set the optimizer Module built from the spec to where the checkpoint left it (states,
        update counts, LR schedule). DataError, located in the file, for anything that does
        not fit; a pickled `.states` of an older symbuilder is refused, never unpickled."""
        doc_path, nd_path = self.states_paths(epoch)
        pickled = self._path(f"-{epoch:04d}.states")
        if not os.path.exists(doc_path) and os.path.exists(pickled):
            raise DataError("optimizer state in MXNet's pickle format (an older symbuilder "
                            "wrote it), which symbuilder does not load: unpickling can run "
                            "code; build again without --resume", file=pickled)
        doc = _read_json(doc_path)
        digest = doc.get("nd_sha256") if isinstance(doc, dict) else None
        if os.path.exists(nd_path) and digest != _sha256(nd_path):
            raise DataError(f"does not match the nd_sha256 in {os.path.basename(doc_path)} "
                            "(corrupted or replaced); build again without --resume",
                            file=nd_path)
        try:
            restore_optimizer_state(module, doc, _load_nd(nd_path))
        except _Misfit as e:
            where, message = e.args
            raise DataError(f"{where}: {message}; build again without --resume",
                            file=doc_path) from None

    def append_log(self, entry: Dict[str, Any]) -> None:
        with open(os.path.join(self.folder, LOG), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def save(self, module: mx.mod.Module, epoch: int, state: RunState,
             best: Optional[Dict[str, Dict]] = None) -> None:
        os.makedirs(self.folder, exist_ok=True)
        written = []
        with deferred_sync():  # flushed together below, before the state file names them
            arg, aux = module.get_params()
            params = {f"arg:{k}": v for k, v in arg.items()}
            params.update({f"aux:{k}": v for k, v in aux.items()})
            written.append(self.params_path(epoch))
            _save_nd(written[-1], params)
            doc, arrays = optimizer_state(module)
            doc_path, nd_path = self.states_paths(epoch)
            _save_nd(nd_path, arrays)
            doc["nd_sha256"] = _sha256(nd_path)
            write_atomic(doc_path, json.dumps(doc).encode())
            written += [nd_path, doc_path]
            if best is not None:
                saved = {f"arg:{k}": v for k, v in best["arg"].items()}
                saved.update({f"aux:{k}": v for k, v in best["aux"].items()})
                written.append(self._path("-best.params"))
                _save_nd(written[-1], saved)
            symbol_path = self._path("-symbol.json")
            if not os.path.exists(symbol_path):
                write_atomic(symbol_path, module.symbol.tojson().encode())
                written.append(symbol_path)
        for path in written:
            fsync_path(path)
        fsync_path(self.folder)  # their names, before the state file's rename can land
        state = dataclasses.replace(state, fingerprint=self.fingerprint,
                                    spec=fingerprint_data(self._spec.to_dict()))
        write_atomic(os.path.join(self.folder, STATE),
                      json.dumps(dataclasses.asdict(state), indent=1).encode())
        # Only now is the new checkpoint complete: drop the older ones.
        for entry in os.listdir(self.folder):
            for suffix in (".params", ".states.nd", ".states.json"):
                stem = entry[len(self.name) + 1:-len(suffix)] if entry.endswith(suffix) else ""
                if stem.isdigit() and int(stem) != epoch and entry.startswith(self.name + "-"):
                    os.remove(os.path.join(self.folder, entry))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
