"""`symbuilder predict`: an export (its ONNX model, or its checkpoint) on the rows of a CSV,
or on image files (a folder of them, or a .rec) for an export built on images.

An export is checked before it is trusted (manifest fields, file hashes, the ONNX graph
against the manifest: audit.checked_export); columns are matched by the manifest's names;
images are decoded as the build decoded its own (the manifest's image_decoding).
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple, Union

import numpy as np

from .. import proof
from ..data import first_non_byte, non_byte_message
from ..errors import DataError, ExportError, UsageError
from ..export import folder as export_folder
from .audit import (checked_export, load_export_checkpoint, manifest_dtypes, ort_session,
                    read_manifest)
from .samples import BLOCK_ROWS, csv_blocks, first_line, image_samples, is_image_input, label_column

Inputs = Union[str, Sequence[str]]  # one CSV path ('-': standard input), or image paths

@dataclasses.dataclass
class Predictions:
    """One row per input row: `columns` names the output columns; `values` (N, K) float32;
    `classes` the predicted class value per row (classification only); `kept` the cells of
    the `kept_names` columns (--keep) per row, exactly as the input has them."""
    columns: List[str]
    values: np.ndarray
    classes: Optional[List[Any]] = None
    kept: Optional[List[List[str]]] = None
    kept_names: Sequence[str] = ()

    @property
    def header(self) -> List[str]:
        return list(self.kept_names) + (["class"] if self.classes is not None else []) + \
            self.columns

    def write_csv(self, stream: TextIO, *, header: bool = True) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        if header:
            writer.writerow(self.header)
        for i, row in enumerate(self.values):
            cells = [f"{float(v):.9g}" for v in row]  # 9 digits: float32 round-trips
            writer.writerow((self.kept[i] if self.kept is not None else []) +
                            ([self.classes[i]] if self.classes is not None else []) + cells)


def predict(target: str, csv_path: Inputs, *, checkpoint: bool = False,
            batch_size: int = 1024, manifest_sha256: Optional[str] = None,
            keep: Sequence[str] = ()) -> Predictions:
    """Run an export (folder, or its .onnx; or the checkpoint with `checkpoint=True`) on the
    CSV's rows, all in memory (predict_blocks streams). Columns are matched to the manifest's
    feature names; the label column, if present, is ignored. A bare .onnx without a manifest
    takes every column in file order. An export is checked first (manifest fields, file
    hashes, the ONNX graph against the manifest): ExportError when it fails."""
    parts = list(predict_blocks(target, csv_path, checkpoint=checkpoint, batch_size=batch_size,
                                manifest_sha256=manifest_sha256, keep=keep))
    if not parts:
        raise DataError("no data rows", file=_paths(csv_path)[0])
    first = parts[0]
    return dataclasses.replace(
        first, values=np.concatenate([p.values for p in parts]),
        classes=None if first.classes is None else [c for p in parts for c in p.classes],
        kept=None if first.kept is None else [k for p in parts for k in p.kept])


def predict_blocks(target: str, csv_path: Inputs, *, checkpoint: bool = False,
                   batch_size: int = 1024, manifest_sha256: Optional[str] = None,
                   keep: Sequence[str] = (), block_rows: int = BLOCK_ROWS
                   ) -> Iterator[Predictions]:
    """predict, a block of `block_rows` rows at a time: the CSV (a path, or '-' for standard
    input) is read, predicted and handed out block by block, so memory stays bounded for
    any number of rows. The export and the header are checked now, before the first block;
    a bad row raises when its block is reached. Image inputs (is_image_input) are decoded and
    predicted whole now, one block: an undecodable image raises before anything is written."""
    paths = _paths(csv_path)
    model = _Runner(target, checkpoint, batch_size, manifest_sha256)
    if is_image_input(paths):
        return iter([model.image_predictions(paths, keep)])
    if len(paths) != 1:
        raise UsageError(f"{len(paths)} inputs: give one CSV file, or image files "
                         "(.png/.jpg/.jpeg), folders of them or one .rec", file=paths[1])
    csv_path = paths[0]
    wanted = model.wanted_columns()
    names, blocks = csv_blocks(csv_path, wanted, model.label, keep=keep, block_rows=block_rows)
    plan = model.plan(names, csv_path)
    return (model.predictions(plan, rows, cells, keep, csv_path) for rows, cells in blocks)


class _Runner:
    """An export (or a bare .onnx) ready to run: its manifest, its inputs and its forward."""

    def __init__(self, target: str, checkpoint: bool, batch_size: int,
                 manifest_sha256: Optional[str]) -> None:
        folder, manifest, onnx_path = _resolve_model(target, manifest_sha256)
        self.target, self.folder, self.manifest = target, folder, manifest or {}
        self.label = label_column(self.manifest)
        self.batch_size, self.fixed_batch = batch_size, None
        if checkpoint:
            if not folder or not self.manifest.get("checkpoint"):
                raise UsageError("--checkpoint needs an export folder with a checkpoint",
                                 file=target)
            symbol, arg_params, aux_params = load_export_checkpoint(folder, self.manifest)
            dtypes = manifest_dtypes(self.manifest)  # a uint8 input is bound as uint8
            self.run = lambda feed: (  # noqa: E731
                proof.mxnet_forward(symbol, arg_params, aux_params, feed, dtypes)[0])
            self.output_name = symbol.list_outputs()[0]
            self.graph_inputs = [(i["name"], None) for i in self.manifest["inputs"]]
            return
        if onnx_path is None:
            raise UsageError("this export has no ONNX model; use --checkpoint", file=target)
        session = ort_session(onnx_path, ExportError if folder else UsageError)
        self.graph_inputs = [(i.name, i.shape) for i in session.get_inputs()]
        if not self.graph_inputs or not session.get_outputs():
            raise UsageError("an ONNX model without inputs or outputs", file=onnx_path)
        first = self.graph_inputs[0][1]
        self.fixed_batch = first[0] if first and isinstance(first[0], int) else None
        if self.fixed_batch:
            self.batch_size = self.fixed_batch
        self.run = lambda feed: proof.onnx_forward(onnx_path, feed)[0]  # noqa: E731
        self.output_name = session.get_outputs()[0].name

    def _inputs(self) -> List[Tuple[str, Optional[List[str]], Tuple[Any, ...]]]:
        """Each input's (name, columns, sample shape): from the manifest, else (a bare ONNX
        file with one input) None for every column in file order, and the graph's shape."""
        entries = {i["name"]: i for i in self.manifest.get("inputs") or []}
        out = []
        for name, onnx_shape in self.graph_inputs:
            entry = entries.get(name, {})
            columns = entry.get("columns") or (self.manifest.get("feature_names")
                                               if len(self.graph_inputs) == 1 else None)
            if self.manifest and columns is None:
                raise UsageError(f"the manifest does not say which columns input '{name}' "
                                 "reads", file=self.target)
            shape = tuple(entry["shape"][1:]) if entry else tuple(onnx_shape[1:])
            out.append((name, columns, shape))
        return out

    def wanted_columns(self) -> Optional[List[str]]:
        """The CSV columns the model reads, in order; None: every column but the label."""
        inputs = self._inputs()
        if len(inputs) == 1 and inputs[0][1] is None:
            return None
        return list(dict.fromkeys(c for _, cols, _ in inputs for c in cols))

    def plan(self, names: List[str], csv_path: str) -> List[Tuple[str, List[int], Tuple]]:
        """Each input's (name, positions among `names`, sample shape), sizes checked."""
        position = {c: k for k, c in enumerate(names)}
        plan = []
        for name, columns, shape in self._inputs():
            columns = names if columns is None else columns
            per_sample = int(np.prod(shape)) if shape else 1
            if any(not isinstance(d, int) for d in shape) or len(columns) != per_sample:
                raise DataError(f"{len(columns)} feature columns, but the model's input "
                                f"'{name}' takes samples of shape {list(shape)}",
                                file=csv_path, line=1)
            plan.append((name, [position[c] for c in columns], shape))
        return plan

    def predictions(self, plan: List[Tuple[str, List[int], Tuple]], rows: np.ndarray,
                    cells: List[List[str]], keep: Sequence[str], csv_path: str
                    ) -> Predictions:
        self._check_bytes(plan, rows, csv_path)
        feeds = {name: np.ascontiguousarray(rows[:, idx].reshape((len(rows),) + tuple(shape)))
                 for name, idx, shape in plan}
        values = self._forward(feeds, len(rows), csv_path)
        out = self._labelled(values)
        if keep:
            out.kept, out.kept_names = cells, list(keep)
        return out

    def _check_bytes(self, plan: List[Tuple[str, List[int], Tuple]], rows: np.ndarray,
                     csv_path: str) -> None:
        """A uint8 input's cells must be whole numbers in 0..255: the model would wrap or
        truncate any other value. A DataError naming the first one's column."""
        dtypes = manifest_dtypes(self.manifest)
        for name, idx, _ in plan:
            found = first_non_byte(rows[:, idx]) if dtypes.get(name) == "uint8" else None
            if found is not None:
                columns = [c for n, cols, _ in self._inputs() if n == name for c in cols or []]
                column = columns[found[1]] if columns else f"x{found[1]}"
                raise DataError(non_byte_message(column, rows[found[0], idx[found[1]]], name),
                                file=csv_path)

    def image_predictions(self, paths: Sequence[str], keep: Sequence[str]) -> Predictions:
        """The predictions on image files (or one .rec), decoded with the manifest's
        image_decoding; the first column names each image (its path, or record index)."""
        decoding = self.manifest.get("image_decoding")
        if not decoding:
            raise UsageError("this export was not built on images (its manifest records no "
                             "image_decoding); predict it on a CSV of its feature columns",
                             file=self.target)
        if keep:
            raise UsageError("--keep names CSV columns; images have none (the first column "
                             "is each image's path, or record index)", file=paths[0])
        id_name, ids, pixels = image_samples(paths, decoding)
        name = self.graph_inputs[0][0]  # an image export has one input
        out = self._labelled(self._forward({name: pixels}, len(pixels), paths[0]))
        out.kept, out.kept_names = [[i] for i in ids], [id_name]
        return out

    def _forward(self, feeds: Dict[str, np.ndarray], n_rows: int, csv_path: str) -> np.ndarray:
        parts = []
        for start in range(0, n_rows, self.batch_size):
            chunk = {k: v[start:start + self.batch_size] for k, v in feeds.items()}
            n = len(next(iter(chunk.values())))
            if self.fixed_batch and n < self.fixed_batch:  # a fixed-batch ONNX model: pad
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], self.fixed_batch - n, axis=0)])
                         for k, v in chunk.items()}
            try:
                parts.append(np.asarray(self.run(chunk))[:n])
            except Exception as e:  # ORT/MXNet refusing the inputs: name the model and cause
                if self.folder:
                    raise ExportError(f"{self.target}: the model fails on these inputs: "
                                      f"{first_line(e)}") from None
                raise UsageError(f"the model fails on {csv_path}'s rows: {first_line(e)}",
                                 file=self.target) from None
        return np.concatenate(parts).reshape(n_rows, -1).astype(np.float32)

    def _labelled(self, values: np.ndarray) -> Predictions:
        """The output columns' names (and the predicted classes) for the values."""
        manifest = self.manifest
        classes = manifest.get("classes")
        meaning = ((manifest.get("outputs") or [{}])[0]).get("meaning", "")
        if classes and values.shape[1] == len(classes):
            return Predictions([f"p_{c}" for c in classes], values,
                               [classes[i] for i in values.argmax(axis=1)])
        base = self.label or manifest.get("label") or self.output_name
        if meaning.startswith("sigmoid"):
            base = f"p_{base}"
        columns = [base] if values.shape[1] == 1 else [f"{base}_{i}"
                                                       for i in range(values.shape[1])]
        return Predictions(columns, values)


def _paths(inputs: Inputs) -> List[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


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
