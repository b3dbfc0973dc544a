"""Module checkpoints: <name>-symbol.json and <name>-NNNN.params, written for an export and
read back (checked before MXNet parses them) by `export`, `verify` and `predict --checkpoint`."""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ..cxxlog import cxx_log_silenced
from ..errors import UsageError, mxnet_message
from ..files import write_atomic


def checkpoint_names(name: str, epoch: int) -> Dict[str, str]:
    return {"symbol": f"{name}-symbol.json", "params": f"{name}-{epoch:04d}.params"}


def save_checkpoint(folder: str, name: str, epoch: int, symbol: Any, arg_params: Mapping,
                    aux_params: Mapping) -> Dict[str, str]:
    """<name>-symbol.json and <name>-NNNN.params, the bytes mx.model.save_checkpoint writes
    (symbol.save, then arg:/aux: keys in one mx.nd.save), each written atomically."""
    import mxnet as mx  # lazy: the export folder's checks need no MXNet
    names = checkpoint_names(name, epoch)
    arrays = {f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    arrays.update({f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    write_atomic(os.path.join(folder, names["symbol"]), symbol.save)
    write_atomic(os.path.join(folder, names["params"]), lambda path: mx.nd.save(path, arrays))
    return names


def to_numpy_params(arg_params: Mapping, aux_params: Mapping) -> Dict[str, np.ndarray]:
    """Arg and aux parameters in one dict of numpy arrays (the ONNX translator's input)."""
    merged = {}
    for params in (arg_params, aux_params):
        for key, value in params.items():
            merged[key] = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return merged


def checkpoint_files(prefix: str, epoch: int) -> Tuple[str, str]:
    return f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"


def load_checkpoint(prefix: str, epoch: int) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
    """(symbol, arg_params, aux_params) of a Module checkpoint; a UsageError naming the file
    that is missing or unreadable."""
    symbol_file, params_file = checkpoint_files(prefix, epoch)
    for path in (symbol_file, params_file):
        if not os.path.isfile(path):
            others = _sibling_params(prefix) if path == params_file else []
            hint = f" (epochs present: {', '.join(others)})" if others else ""
            raise UsageError(f"no such checkpoint file{hint}", file=path)
    import mxnet as mx  # lazy: as save_checkpoint above
    try:
        text = read_symbol_json(symbol_file)
        with cxx_log_silenced():  # "Loading symbol saved by previous version ..." (C++ INFO)
            symbol = mx.sym.load_json(text)
    except mx.base.MXNetError as e:
        raise UsageError(f"not a readable MXNet symbol file: {mxnet_message(e)}",
                         file=symbol_file) from None
    try:
        saved = mx.nd.load(params_file)
    except mx.base.MXNetError as e:
        raise UsageError(f"not a readable MXNet params file: {mxnet_message(e)}",
                         file=params_file) from None
    arg_params, aux_params = {}, {}
    for key, value in (saved.items() if isinstance(saved, dict) else []):
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg_params[name] = value
        elif kind == "aux":
            aux_params[name] = value
    # Module.save_checkpoint of a graph without parameters saves {}, which mx.nd.load reads
    # back as []: an empty file is a checkpoint; arrays without arg:/aux: keys are not.
    if len(saved) and not arg_params and not aux_params:
        raise UsageError("no arg:/aux: parameters in this file (not written by "
                         "Module.save_checkpoint?)", file=params_file)
    return symbol, arg_params, aux_params


def read_symbol_json(path: str) -> str:
    """The text of an MXNet symbol file, checked before MXNet parses it: UTF-8 JSON with a
    node list in which every input refers to an earlier node (MXNet writes them in
    topological order; a later or missing one is a cycle or a dangling edge), and heads and
    arg_nodes that name nodes. A UsageError naming the file otherwise."""
    def bad(message: str) -> UsageError:
        return UsageError(f"not a readable MXNet symbol file: {message}", file=path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        graph = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"not UTF-8 JSON ({e})") from None
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise bad("expected a JSON object with a non-empty 'nodes' list")
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("op"), str) or \
                not isinstance(node.get("name"), str):
            raise bad(f"nodes[{i}]: expected an object with 'op' and 'name' strings")
        for edge in node.get("inputs", []):
            if not _edge_to(edge, i):
                raise bad(f"nodes[{i}] ('{node['name']}'): input {json.dumps(edge)} is not "
                          f"an earlier node (a cycle or a missing node)")
    for key in ("heads", "arg_nodes"):
        refs = graph.get(key, [])
        ok = isinstance(refs, list) and all(
            _edge_to(r, len(nodes)) if key == "heads" else _index_below(r, len(nodes))
            for r in refs)
        if not ok or (key == "heads" and not refs):
            raise bad(f"{key}: expected references to the {len(nodes)} nodes, found "
                      f"{json.dumps(refs)[:60]}")
    return data.decode("utf-8")


def _index_below(value: Any, limit: int) -> bool:
    return type(value) is int and 0 <= value < limit


def _edge_to(edge: Any, limit: int) -> bool:
    """[node, output(, version)] with node < limit and non-negative integers."""
    return isinstance(edge, list) and len(edge) in (2, 3) and _index_below(edge[0], limit) and \
        all(type(v) is int and v >= 0 for v in edge[1:])


def _sibling_params(prefix: str) -> List[str]:
    folder = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    pattern = re.compile(re.escape(base) + r"-(\d{4})\.params$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(m.group(1) for m in map(pattern.match, names) if m)
