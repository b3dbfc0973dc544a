"""The export's ONNX model, translated and checked by onnx.checker before it is written."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from ..errors import ExportError
from ..files import write_atomic
from ..onnx import to_onnx
from .checkpoint import to_numpy_params

def export_onnx(folder: str, name: str, symbol: Any, arg_params: Mapping, aux_params: Mapping,
                input_shapes: Mapping[str, Any], *, opset: int, dynamic_batch: bool,
                input_dtypes: Optional[Mapping[str, str]] = None) -> str:
    """<name>.onnx in `folder`, checked by onnx.checker first; its path. `input_dtypes`: the
    graph inputs' types (float32 for an input not named)."""
    model = to_onnx(symbol, to_numpy_params(arg_params, aux_params), input_shapes,
                    opset=opset, dynamic_batch=dynamic_batch, model_name=name,
                    input_dtypes=input_dtypes)
    import onnx  # lazy: as symbuilder.onnx does, import the onnx package only to export
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError / InferenceError
        raise ExportError(f"the ONNX model fails onnx.checker: {str(e).splitlines()[0]}") from None
    path = os.path.join(folder, f"{name}.onnx")
    write_atomic(path, model.SerializeToString())
    return path
