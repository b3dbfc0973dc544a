"""The Triton model repository of an export: triton/<name>/config.pbtxt and 1/model.onnx."""
from __future__ import annotations

import os
from typing import Any, List

from ..errors import ExportError
from ..files import write_atomic

TRITON_MAX_BATCH = 64  # max_batch_size written into config.pbtxt for a dynamic batch axis

_TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32",
                 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}


def triton_config(model: Any, name: str, *, max_batch_size: int = TRITON_MAX_BATCH) -> str:
    """config.pbtxt for the ONNX model, read off the model's own inputs and outputs. With a
    symbolic batch axis (dim 0 on every input and output), max_batch_size is set and dims omit
    it; otherwise max_batch_size is 0 and dims are the full fixed shapes."""
    import onnx  # lazy: as symbuilder.onnx does
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(bytes(model))
    values = list(model.graph.input) + list(model.graph.output)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else -1
                     for d in v.type.tensor_type.shape.dim] for v in values}
    batched = all(dims[v.name] and dims[v.name][0] == -1 for v in values)
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {max_batch_size if batched else 0}"]
    for section, entries in (("input", model.graph.input), ("output", model.graph.output)):
        blocks = []
        for v in entries:
            elem = v.type.tensor_type.elem_type
            if elem not in _TRITON_TYPES:
                raise ExportError(f"{section} '{v.name}' has ONNX element type {elem}, which "
                                  "the Triton layout does not map")
            shape = dims[v.name][1:] if batched else dims[v.name]
            blocks.append(f'  {{\n    name: "{v.name}"\n    data_type: {_TRITON_TYPES[elem]}\n'
                          f"    dims: [ {', '.join(str(d) for d in shape)} ]\n  }}")
        lines.append(f"{section} [\n" + ",\n".join(blocks) + "\n]")
    return "\n".join(lines) + "\n"


def write_triton(folder: str, name: str, model_bytes: bytes, *,
                 max_batch_size: int = TRITON_MAX_BATCH) -> List[str]:
    """triton/<name>/config.pbtxt and triton/<name>/1/model.onnx under `folder`; the paths
    written, relative to `folder`."""
    base = os.path.join(folder, "triton", name)
    config = triton_config(model_bytes, name, max_batch_size=max_batch_size)
    write_atomic(os.path.join(base, "config.pbtxt"), config.encode("utf-8"))
    write_atomic(os.path.join(base, "1", "model.onnx"), model_bytes)
    return [f"triton/{name}/config.pbtxt", f"triton/{name}/1/model.onnx"]
