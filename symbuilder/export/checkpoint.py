"""The export's Module checkpoint: <name>-symbol.json and <name>-NNNN.params."""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping

import numpy as np

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
