"""`symbuilder predict`: an export (its ONNX model, or its checkpoint) on the rows of a CSV.

An export is checked before it is trusted (manifest fields, file hashes, the ONNX graph
against the manifest: audit.checked_export); columns are matched by the manifest's names.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Dict, List, Optional, TextIO, Tuple

import numpy as np

from .. import proof
from ..errors import DataError, ExportError, UsageError
from ..export import folder as export_folder
from .audit import checked_export, load_export_checkpoint, ort_session, read_manifest
from .samples import first_line, label_column, read_rows

@dataclasses.dataclass
class Predictions:
    """One row per input row: `columns` names the output columns; `values` (N, K) float32;
    `classes` the predicted class value per row (classification only)."""
    columns: List[str]
    values: np.ndarray
    classes: Optional[List[Any]] = None

    def write_csv(self, stream: TextIO) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        head = (["class"] if self.classes is not None else []) + self.columns
        writer.writerow(head)
        for i, row in enumerate(self.values):
            cells = [f"{float(v):.9g}" for v in row]  # 9 digits: float32 round-trips
            writer.writerow(([self.classes[i]] if self.classes is not None else []) + cells)


def predict(target: str, csv_path: str, *, checkpoint: bool = False,
            batch_size: int = 1024, manifest_sha256: Optional[str] = None) -> Predictions:
    """Run an export (folder, or its .onnx; or the checkpoint with `checkpoint=True`) on the
    CSV's rows. Columns are matched to the manifest's feature names; the label column, if
    present, is ignored. A bare .onnx without a manifest takes every column in file order.
    An export is checked first (manifest fields, file hashes, the ONNX graph against the
    manifest): ExportError when it fails."""
    folder, manifest, onnx_path = _resolve_model(target, manifest_sha256)
    manifest = manifest or {}
    label = label_column(manifest)
    fixed_batch = None
    if checkpoint:
        if not folder or not manifest.get("checkpoint"):
            raise UsageError("--checkpoint needs an export folder with a checkpoint", file=target)
        symbol, arg_params, aux_params = load_export_checkpoint(folder, manifest)
        run = lambda feed: (  # noqa: E731
            proof.mxnet_forward(symbol, arg_params, aux_params, feed)[0])
        output_name = symbol.list_outputs()[0]
        graph_inputs = [(i["name"], None) for i in manifest["inputs"]]
    else:
        if onnx_path is None:
            raise UsageError("this export has no ONNX model; use --checkpoint", file=target)
        session = ort_session(onnx_path, ExportError if folder else UsageError)
        graph_inputs = [(i.name, i.shape) for i in session.get_inputs()]
        if not graph_inputs or not session.get_outputs():
            raise UsageError("an ONNX model without inputs or outputs", file=onnx_path)
        first = graph_inputs[0][1]
        fixed_batch = first[0] if first and isinstance(first[0], int) else None
        if fixed_batch:
            batch_size = fixed_batch
        run = lambda feed: proof.onnx_forward(onnx_path, feed)[0]  # noqa: E731
        output_name = session.get_outputs()[0].name
    # Each input's columns and sample shape: from the manifest, else (a bare ONNX file with one
    # input) every column in file order and the graph's own shape.
    entries = {i["name"]: i for i in manifest.get("inputs") or []}
    plan = []
    for name, onnx_shape in graph_inputs:
        entry = entries.get(name, {})
        columns = entry.get("columns") or (manifest.get("feature_names")
                                           if len(graph_inputs) == 1 else None)
        if manifest and columns is None:
            raise UsageError(f"the manifest does not say which columns input '{name}' reads",
                             file=target)
        shape = tuple(entry["shape"][1:]) if entry else tuple(onnx_shape[1:])
        plan.append((name, columns, shape))
    if len(plan) == 1 and plan[0][1] is None:
        rows = read_rows(csv_path, None, label)
        plan = [(plan[0][0], list(range(rows.shape[1])), plan[0][2])]
        position = {i: i for i in range(rows.shape[1])}
    else:
        wanted = list(dict.fromkeys(c for _, cols, _ in plan for c in cols))
        rows = read_rows(csv_path, wanted, label)
        position = {c: k for k, c in enumerate(wanted)}
    feeds = {}
    for name, columns, shape in plan:
        per_sample = int(np.prod(shape)) if shape else 1
        if any(not isinstance(d, int) for d in shape) or len(columns) != per_sample:
            raise DataError(f"{len(columns)} feature columns, but the model's input '{name}' "
                            f"takes samples of shape {list(shape)}", file=csv_path, line=1)
        x = rows[:, [position[c] for c in columns]]
        feeds[name] = np.ascontiguousarray(x.reshape((len(rows),) + tuple(shape)))
    parts = []
    for start in range(0, len(rows), batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in feeds.items()}
        n = len(next(iter(chunk.values())))
        if fixed_batch and n < fixed_batch:  # a fixed-batch ONNX model: pad the last chunk
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], fixed_batch - n, axis=0)])
                     for k, v in chunk.items()}
        try:
            parts.append(np.asarray(run(chunk))[:n])
        except Exception as e:  # ORT/MXNet refusing the inputs: name the model and the cause
            if folder:
                raise ExportError(f"{target}: the model fails on these inputs: "
                                  f"{first_line(e)}") from None
            raise UsageError(f"the model fails on {csv_path}'s rows: {first_line(e)}",
                             file=target) from None
    values = np.concatenate(parts).reshape(len(rows), -1).astype(np.float32)
    classes = manifest.get("classes")
    meaning = ((manifest.get("outputs") or [{}])[0]).get("meaning", "")
    if classes and values.shape[1] == len(classes):
        return Predictions([f"p_{c}" for c in classes], values,
                           [classes[i] for i in values.argmax(axis=1)])
    base = label or manifest.get("label") or output_name
    if meaning.startswith("sigmoid"):
        base = f"p_{base}"
    columns = [base] if values.shape[1] == 1 else [f"{base}_{i}" for i in range(values.shape[1])]
    return Predictions(columns, values)


def _resolve_model(target: str, manifest_sha256: Optional[str] = None
                   ) -> Tuple[Optional[str], Optional[Dict[str, Any]], Optional[str]]:
    """(export folder or None, checked manifest or None, onnx path or None) for a folder or
    an .onnx file."""
    if os.path.isdir(target):
        manifest = checked_export(target, manifest_sha256=manifest_sha256)
        onnx_entry = manifest.get("onnx")
        path = os.path.join(target, onnx_entry["file"]) if onnx_entry else None
        return target, manifest, path
    if not os.path.isfile(target):
        raise UsageError("no such export folder or ONNX file", file=target)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isfile(os.path.join(folder, export_folder.MANIFEST)):
        manifest = read_manifest(folder)
        if (manifest.get("onnx") or {}).get("file") == os.path.basename(target):
            return folder, checked_export(folder, manifest_sha256=manifest_sha256), target
    if manifest_sha256 is not None:
        raise UsageError("--manifest-sha256 needs an export folder (this file has no "
                         "manifest beside it)", file=target)
    return None, None, target
