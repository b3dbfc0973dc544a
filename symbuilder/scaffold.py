"""`symbuilder init`: a commented, valid spec for a CSV file, so a user starts from their data
instead of from an empty page.

The file is scanned once, streamed (bounded memory whatever its size): each column is numeric
or not, and the label's distinct values are counted up to a cap. Numeric columns become the
features (input shape, `columns:` when some are left out); the label decides the head: a
classifier (SoftmaxOutput, one output per class) for text labels or few distinct integers, a
regression (LinearRegressionOutput) for other numbers. Nothing here imports MXNet.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Dict, List, Optional, Tuple

from .errors import DataError, UsageError
from .data.sources import closest_text  # the data module's did-you-mean wording

TASKS = ("classification", "regression")
# More distinct integer labels than this and a numeric label is taken for a regression target.
MAX_CLASSES_GUESSED = 50
# Distinct label values kept while scanning; a classifier with more classes is refused.
MAX_CLASSES = 1000
_FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass
class ColumnScan:
    name: str
    numeric: bool = True
    first_bad: Optional[Tuple[int, str]] = None  # (line, cell) of the first non-numeric cell


@dataclasses.dataclass
class CsvScan:
    """What `init` needs to know of a CSV file."""
    path: str
    header: List[str]
    rows: int
    columns: Dict[str, ColumnScan]
    label_values: List[str]        # distinct label cells in first-seen order (capped)
    label_capped: bool             # more distinct values than MAX_CLASSES


def _is_number(cell: str) -> bool:
    try:
        value = float(cell)
    except ValueError:
        return False
    return math.isfinite(value) and abs(value) <= _FLOAT32_MAX


def scan_csv(path: str, label: str) -> CsvScan:
    """One streaming pass over the file: column kinds and the label's distinct values."""
    if not os.path.isfile(path):
        raise UsageError("no such CSV file", file=path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise DataError("the file is empty: init needs a header row", file=path)
            header = [h.strip() for h in header]
            duplicates = sorted({h for h in header if header.count(h) > 1})
            if duplicates:
                raise DataError(f"column names appear twice: {', '.join(duplicates)}",
                                file=path, line=1)
            if label not in header:
                raise UsageError(f"--label {label!r}: no such column in {path} "
                                 f"({closest_text(label, header)})")
            return _scan_rows(path, header, label, reader)
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text (init reads CSV files encoded as UTF-8)",
                        file=path) from None
    except csv.Error as e:
        raise DataError(f"not a readable CSV file: {e}", file=path) from None


def _scan_rows(path: str, header: List[str], label: str, reader: "csv._reader") -> CsvScan:
    columns = {name: ColumnScan(name) for name in header}
    label_index = header.index(label)
    seen: Dict[str, None] = {}
    capped = False
    rows = 0
    for rows, cells in enumerate(reader, start=1):
        if not cells:
            continue
        if len(cells) != len(header):
            raise DataError(f"{len(cells)} fields where the header has {len(header)}",
                            file=path, line=reader.line_num)
        for name, cell in zip(header, cells):
            column = columns[name]
            if column.numeric and not _is_number(cell.strip()):
                column.numeric = False
                column.first_bad = (reader.line_num, cell)
        value = cells[label_index].strip()
        if value not in seen:
            if len(seen) < MAX_CLASSES:
                seen[value] = None
            else:
                capped = True
    if rows == 0:
        raise DataError("no data rows below the header", file=path)
    return CsvScan(path, header, rows, columns, list(seen), capped)


def _integer_like(values: List[str]) -> bool:
    return all(_is_number(v) and float(v) == int(float(v)) for v in values)


def choose_task(scan: CsvScan, label: str, task: Optional[str]) -> str:
    """The task the user named, or the one the label's values suggest."""
    numeric = scan.columns[label].numeric
    if task == "regression" and not numeric:
        line, cell = scan.columns[label].first_bad or (0, "")
        raise DataError(f"--task regression needs a numeric label, but column '{label}' holds "
                        f"{cell!r}", file=scan.path, line=line)
    if task is not None:
        if task == "classification" and scan.label_capped:
            raise UsageError(f"--label {label}: more than {MAX_CLASSES} distinct values; a "
                             "classifier needs fewer (or use --task regression)")
        return task
    if not numeric:
        if scan.label_capped:
            raise UsageError(f"--label {label}: more than {MAX_CLASSES} distinct values, not "
                             "numbers: too many classes for a classifier")
        return "classification"
    few = not scan.label_capped and len(scan.label_values) <= MAX_CLASSES_GUESSED
    return "classification" if few and _integer_like(scan.label_values) else "regression"


_ID_NAME = re.compile(r"(?i)(id|.*[_\- ]id|index|row|uuid|key)")


def looks_like_an_id(name: str) -> bool:
    """A column whose name says it identifies a row (id, user_id, index, ...)."""
    return bool(_ID_NAME.fullmatch(name.strip()))


def spec_name(path: str) -> str:
    """A valid spec name from the file's name: 'my data.csv' -> 'my_data'."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem) or "model"
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


def spec_text(scan: CsvScan, label: str, task: str, *, data_path: str, hidden: int = 64) -> str:
    """The commented spec, as YAML text."""
    ids, features, skipped = _columns_used(scan, label, task)
    lines = _header_lines(scan, label, ids, skipped, features)
    lines += [f"name: {spec_name(scan.path)}", "input:", "  name: data",
              f"  shape: [{len(features)}]               # one value per feature column",
              "  normalize: {stats: dataset}    # frozen-affine input layer: exact mean/var of "
              "the training split"]
    if skipped or ids:
        lines.append(f"  columns: [{', '.join(_quote(n) for n in features)}]")
    lines += _model_lines(scan, task, hidden)
    metrics = "[acc, ce]" if task == "classification" else "[mse, mae]"
    lines += ["data:",
              f"  train: {{path: {_quote(data_path)}, format: csv, label: {_quote(label)}}}",
              "  val_fraction: 0.2              # held out, stratified for a classifier",
              "train:",
              "  epochs: 30",
              "  batch_size: 32",
              "  optimizer: adam",
              "  optimizer_params: {learning_rate: 1.0e-3}",
              "  initializer: {name: xavier, magnitude: 2.0}",
              f"  eval_metric: {metrics}",
              "  seed: 0",
              "export:",
              "  formats: [checkpoint, onnx]",
              ""]
    return "\n".join(lines)


def _columns_used(scan: CsvScan, label: str, task: str) -> Tuple[List[str], List[str], List[ColumnScan]]:
    """(id columns left out, numeric feature columns, non-numeric columns left out); a
    DataError when there is nothing to learn from or a single class."""
    ids = [n for n in scan.header if n != label and looks_like_an_id(n)]
    features = [n for n in scan.header
                if n != label and n not in ids and scan.columns[n].numeric]
    skipped = [scan.columns[n] for n in scan.header
               if n != label and n not in ids and not scan.columns[n].numeric]
    if not features:
        raise DataError(f"no numeric feature column besides the label '{label}'",
                        file=scan.path)
    if task == "classification" and len(scan.label_values) < 2:
        raise DataError(f"the label '{label}' has a single value ({scan.label_values[0]!r}): "
                        "a classifier needs at least two classes", file=scan.path)
    return ids, features, skipped


def _header_lines(scan: CsvScan, label: str, ids: List[str], skipped: List[ColumnScan],
                  features: List[str]) -> List[str]:
    """The opening comments: where the spec comes from, and why each left-out column is."""
    lines = [f"# Made by `symbuilder init {scan.path} --label {label}`: {scan.rows} rows, "
             f"{len(features)} numeric feature columns.",
             "# Build it with `symbuilder build <this file>`. Relative paths are relative to "
             "this file's folder.", ""]
    for name in ids:
        lines.append(f"# Column '{name}' is left out: its name says it identifies a row, which "
                     "a model must not learn from. `symbuilder predict --keep "
                     f"{name}` passes it through to the predictions.")
    for column in skipped:
        line, cell = column.first_bad or (0, "")
        lines.append(f"# Column '{column.name}' is left out: it is not numeric (line {line}: "
                     f"{cell!r}). Encode it as numbers (one-hot or integer codes) in the CSV "
                     "and add it to input.columns to use it.")
    if skipped or ids:
        lines.append("")
    return lines


def _model_lines(scan: CsvScan, task: str, hidden: int) -> List[str]:
    """The layers (a small MLP) and the head the task needs."""
    out_units = len(scan.label_values) if task == "classification" else 1
    why = "one output per class" if task == "classification" else "the predicted value"
    lines = ["layers:",
             f"  - {{op: FullyConnected, name: fc1, num_hidden: {hidden}}}",
             "  - {op: Activation, name: relu1, act_type: relu}",
             "  - {op: Dropout, name: drop1, p: 0.1}",
             f"  - {{op: FullyConnected, name: fc2, num_hidden: {out_units}}}   # {why}"]
    if task == "classification":
        return lines + ["output: {op: SoftmaxOutput, name: softmax}   # classes: "
                        + _class_list(scan.label_values)]
    return lines + ["output: {op: LinearRegressionOutput, name: regression}"]


def _class_list(values: List[str], shown: int = 8) -> str:
    head = ", ".join(values[:shown])
    return head + (f", ... ({len(values)} in all)" if len(values) > shown else "")


def _quote(text: str) -> str:
    """A YAML scalar for `text`: plain where YAML reads it back as the same string."""
    if re.fullmatch(r"[A-Za-z_./][A-Za-z0-9_./\-]*", text) and text.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "none", "y", "n"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def init_spec(csv_path: str, *, label: str, task: Optional[str] = None,
              spec_dir: Optional[str] = None) -> str:
    """The spec text for `csv_path`; its data path is relative to `spec_dir` (default: the
    working folder, where `symbuilder init ... > spec.yaml` puts the spec)."""
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    scan = scan_csv(csv_path, label)
    chosen = choose_task(scan, label, task)
    base = os.path.abspath(spec_dir or os.getcwd())
    data_path = os.path.relpath(os.path.abspath(csv_path), base)
    return spec_text(scan, label, chosen, data_path=data_path)
