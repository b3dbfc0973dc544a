"""Stage 6, the export: a trained result to an export folder, staged and published whole.

The writers sit beside this module (checkpoint, onnxfile, triton, deploy, curves; the folder,
its manifest and its publication in folder.py). The proof (stage 7) runs on the staged files
before anything is published; it is handed in as `prove` by the pipeline, which wires the
stages, so this stage imports no later one.
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ..data.images import IMAGE_FORMATS, image_read_options, pixel_statistics
from ..data.sources import ReadOptions, source_format
from ..files import deferred_sync, write_atomic
from ..spec.model import Spec
from . import checkpoint, curves, deploy, folder, triton

# prove(staging folder, manifest so far, ONNX model bytes or None): adds the figures to the
# manifest (its "parity"), raises ExportError when the staged export fails its proof.
Prove = Callable[[str, Dict[str, Any], Optional[bytes]], None]

__all__ = ["COMMAND_LINE", "Prove", "export_model", "file_digest", "input_dtypes", "provenance"]

# The symbuilder command line being run (sys.argv as the shell gave it), set by the CLI;
# None for a library call, which has no command line to repeat.
COMMAND_LINE: "contextvars.ContextVar[Optional[List[str]]]" = contextvars.ContextVar(
    "symbuilder_command_line", default=None)

if TYPE_CHECKING:  # annotations only: the export receives what the earlier stages made
    from ..data import SplitData
    from ..training import TrainResult


def export_model(spec: Spec, result: "TrainResult", data: "SplitData", out_dir: str, *,
                 prove: Optional[Prove] = None) -> Dict[str, Any]:
    """Write the export folder for a trained result, run `prove` on the staged files, then
    publish it in one step; returns the manifest. Without `prove` nothing is checked: use
    symbuilder.export_model (the pipeline's), which proves what it publishes."""
    formats = spec.export.formats
    input_shapes = {item.name: (1,) + tuple(item.shape) for item in spec.all_inputs}
    manifest = _manifest(spec, result, data)
    # The staged files are flushed together by publish's fsync_tree, not one by one.
    with folder.staging_dir(out_dir) as staging, deferred_sync():
        if "checkpoint" in formats:
            manifest["checkpoint"] = checkpoint.save_checkpoint(
                staging, spec.name, result.epoch, result.symbol, result.arg_params,
                result.aux_params)
            manifest["deploy"] = deploy.write_deploy(staging, spec.name, result.epoch,
                                                     result.symbol, input_shapes)
        model_bytes = _write_models(spec, result, staging, input_shapes, manifest)
        if "triton" in formats:
            manifest["triton"] = {"repository": "triton", "model": spec.name,
                                  "files": triton.write_triton(staging, spec.name, model_bytes)}
        if prove is not None:
            prove(staging, manifest, model_bytes)
        log = "".join(json.dumps(entry) + "\n" for entry in result.history)
        write_atomic(os.path.join(staging, "train_log.jsonl"), log.encode("utf-8"))
        if result.history:
            curves.write_curves(result.history, os.path.join(staging, "curves.svg"),
                                title=f"{spec.name} (exported epoch {result.epoch})",
                                exported_epoch=result.epoch)
        folder.write_manifest(staging, manifest)
        folder.publish(staging, out_dir)
    return manifest


def _write_models(spec: Spec, result: "TrainResult", staging: str, input_shapes: Dict[str, Any],
                  manifest: Dict[str, Any]) -> Optional[bytes]:
    """<name>.onnx when the formats want ONNX or Triton (removed again for Triton alone); its
    bytes, or None."""
    formats = spec.export.formats
    if "onnx" not in formats and "triton" not in formats:
        return None
    options = spec.export.onnx
    # Imported here: the translations (symbuilder.onnx, ~190 ops) cost 20..45 ms to import,
    # which a checkpoint-only build does not need (issue 12's whole-build benchmark).
    from . import onnxfile  # lazy: see above
    onnx_path = onnxfile.export_onnx(staging, spec.name, result.symbol, result.arg_params,
                                     result.aux_params, input_shapes, opset=options.opset,
                                     dynamic_batch=options.dynamic_batch,
                                     input_dtypes=input_dtypes(spec))
    with open(onnx_path, "rb") as f:
        model_bytes = f.read()
    if "onnx" in formats:
        manifest["onnx"] = {"file": os.path.basename(onnx_path), "opset": options.opset,
                            "dynamic_batch": options.dynamic_batch}
    else:
        os.unlink(onnx_path)
    return model_bytes


def _manifest(spec: Spec, result: "TrainResult", data: "SplitData") -> Dict[str, Any]:
    """Everything the manifest says that is known before a file is written."""
    manifest = {
        "name": spec.name,
        "created": folder.now_iso(),
        "epoch": result.epoch,
        "epochs_trained": result.epochs_trained,
        "stopped_early": result.stopped_early,
        "inputs": [{"name": item.name, "shape": ["batch"] + list(item.shape),
                    "dtype": item.dtype, "columns": data.columns.get(item.name, [])}
                   for item in spec.all_inputs],
        "outputs": [_output_entry(spec, result)],
        "label": spec.output.label_name,
        "classes": data.classes,
        "feature_names": data.feature_names,
        "input_normalization": result.input_stats,
        "metrics": result.final_metrics,
        "history": result.history,
        "spec": spec.to_dict(),
        "versions": folder.versions(),
        "provenance": provenance(spec),
    }
    if spec.data is not None and source_format(spec.data.train) in IMAGE_FORMATS:
        # The exact statistics as image people know them: per channel, pixel units, RGB.
        manifest["input_pixels"] = {name: pixel_statistics(r["exact_mean"], r["exact_var"])
                                    for name, r in result.input_stats.items()}
        manifest["image_decoding"] = image_decoding(spec)
    return manifest


def image_decoding(spec: Spec) -> Dict[str, Any]:
    """How the build decoded its images, so `predict` on image files decodes them the same:
    mx.image.imdecode (1 channel grey, 3 RGB), the shorter side resized to `resize` with
    `inter_method`, then the centre (H, W) of `shape`."""
    options = image_read_options(spec, spec.data.train, ReadOptions())
    return {"shape": list(options.shape), "resize": options.resize,  # type: ignore[attr-defined]
            "inter_method": options.inter_method,  # type: ignore[attr-defined]
            "label_width": options.label_width,  # type: ignore[attr-defined]
            "convert_channels": options.convert_channels}  # type: ignore[attr-defined]


def input_dtypes(spec: Spec) -> Dict[str, str]:
    """Each data input's dtype (input.dtype): what the ONNX graph declares and the proof
    feeds."""
    return {item.name: item.dtype for item in spec.all_inputs}


def _output_entry(spec: Spec, result: "TrainResult") -> Dict[str, Any]:
    name = result.model.output_name  # the Model built once: its shapes, not a new inference
    shape = result.model.output_shape
    meaning = {"SoftmaxOutput": "class probabilities", "LogisticRegressionOutput": "sigmoid "
               "probabilities", "LinearRegressionOutput": "values",
               "MAERegressionOutput": "values"}[spec.output.op]
    return {"name": name, "shape": ["batch"] + list(shape[1:]), "dtype": "float32",
            "meaning": meaning}


def file_digest(path: str) -> Dict[str, Any]:
    """size and sha256 of one file, read in 1 MiB blocks (data files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def _folder_digest(root: str) -> Dict[str, Any]:
    """An image folder: sha256 over the sorted [relative path, size, sha256] list of its
    files (JSON), so a renamed, added or changed image changes it."""
    files = []
    for here, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            entry = file_digest(path)
            files.append([rel, entry["size"], entry["sha256"]])
    files.sort()
    listing = json.dumps(files, separators=(",", ":")).encode("utf-8")
    return {"files": len(files), "size": sum(f[1] for f in files),
            "sha256": hashlib.sha256(listing).hexdigest()}


def _companion(source: Any, path: str) -> Optional[Tuple[str, str, str]]:
    """(role suffix, name as the spec gives it, path) of the file read beside a data file:
    the npy label file, the recordio index; both relative to the data file's folder."""
    fmt = source_format(source)
    name = (source.label if fmt == "npy" else
            source.idx or os.path.splitext(os.path.basename(path))[0] + ".idx"
            if fmt == "recordio" else None)
    if not name:
        return None
    full = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
    return ("labels" if fmt == "npy" else "index"), name, full


def _data_files(spec: Spec) -> List[Dict[str, Any]]:
    """Each file (or image folder) the build read: its role, its path as the spec gives it,
    its size and sha256."""
    out: List[Dict[str, Any]] = []
    for role, source in (("train", spec.data.train), ("val", spec.data.val)):
        if source is None:
            continue
        path = spec.resolve(source.path)
        digest = _folder_digest(path) if os.path.isdir(path) else file_digest(path)
        out.append({"role": role, "path": source.path, **digest})
        beside = None if os.path.isdir(path) else _companion(source, path)
        if beside is not None:
            out.append({"role": f"{role}_{beside[0]}", "path": beside[1],
                        **file_digest(beside[2])})
    return out


def provenance(spec: Spec) -> Dict[str, Any]:
    """Where the model came from: the data files' sizes and sha256, and the command line."""
    return {"data": _data_files(spec) if spec.data is not None else [],
            "command": COMMAND_LINE.get()}
