"""The whole build, one direction: spec -> data -> train -> export folder -> verified.

`build` is what `symbuilder build` runs; library users call it (or the steps) directly.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import numpy as np

from . import exporting
from .data import SplitData, load_data
from .spec.model import Spec
from .train import Progress, TrainResult, train


@dataclasses.dataclass
class BuildResult:
    out_dir: str
    manifest: Dict[str, Any]
    result: TrainResult


def default_out_dir(spec: Spec) -> str:
    return os.path.join("export", spec.name)


def export_model(spec: Spec, result: TrainResult, data: SplitData, out_dir: str) -> Dict[str, Any]:
    """Write and verify the export folder for a trained result; atomic; returns the manifest."""
    formats = spec.export.formats
    input_shape = (1,) + tuple(spec.input.shape)
    held_out = data.val.features[: spec.export.verify.samples]
    manifest: Dict[str, Any] = {
        "name": spec.name,
        "created": exporting.now_iso(),
        "epoch": result.epoch,
        "inputs": [{"name": spec.input.name, "shape": ["batch"] + list(spec.input.shape),
                    "dtype": "float32"}],
        "outputs": [_output_entry(spec, result, data)],
        "label": spec.output.label_name,
        "classes": data.classes,
        "feature_names": data.feature_names,
        "input_normalization": result.input_stats,
        "metrics": result.final_metrics,
        "history": result.history,
        "spec": spec.to_dict(),
        "versions": exporting.versions(),
    }
    with exporting.staging_dir(out_dir) as staging:
        if "checkpoint" in formats:
            manifest["checkpoint"] = exporting.save_checkpoint(
                staging, spec.name, result.epoch, result.symbol, result.arg_params,
                result.aux_params)
        if "onnx" in formats:
            onnx_path = exporting.export_onnx(
                staging, spec.name, result.symbol, result.arg_params, result.aux_params,
                {spec.input.name: input_shape}, opset=spec.export.onnx.opset,
                dynamic_batch=spec.export.onnx.dynamic_batch)
            manifest["onnx"] = {"file": os.path.basename(onnx_path),
                                "opset": spec.export.onnx.opset,
                                "dynamic_batch": spec.export.onnx.dynamic_batch}
            manifest["parity"] = exporting.parity_or_fail(
                result.symbol, result.arg_params, result.aux_params, onnx_path,
                {spec.input.name: np.ascontiguousarray(held_out)}, spec.export.verify.atol)
        exporting.write_manifest(staging, manifest)
        exporting.publish(staging, out_dir)
    return manifest


def _output_entry(spec: Spec, result: TrainResult, data: SplitData) -> Dict[str, Any]:
    from .builder import infer_shapes
    name = result.symbol.list_outputs()[0]
    shape = infer_shapes(spec, result.symbol)[name]
    meaning = {"SoftmaxOutput": "class probabilities", "LogisticRegressionOutput": "sigmoid "
               "probabilities", "LinearRegressionOutput": "values",
               "MAERegressionOutput": "values"}[spec.output.op]
    return {"name": name, "shape": ["batch"] + list(shape[1:]), "dtype": "float32",
            "meaning": meaning}


def build(spec: Spec, *, out_dir: Optional[str] = None, epochs: Optional[int] = None,
          progress: Optional[Progress] = None, verbose: bool = False) -> BuildResult:
    """Load data, train, export and verify. Raises SpecError/DataError (user mistakes, before
    anything is written) or RunError (a failed run; the previous export stays whole)."""
    out_dir = out_dir or default_out_dir(spec)
    data = load_data(spec)
    result = train(spec, data, epochs=epochs, progress=progress, verbose=verbose)
    manifest = export_model(spec, result, data, out_dir)
    return BuildResult(out_dir, manifest, result)
