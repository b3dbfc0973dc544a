"""Reading samples for predict and for the parity checks of export and verify: CSV rows by
column name (located errors for missing and duplicate columns, non-numbers, values outside
float32), and .npy/.npz arrays through the data sources' readers (never a pickle).
"""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import DataError
from ..data.sources import read_table
from ..spec.catalog_suggest import suggest_text

def label_column(manifest: Mapping[str, Any]) -> Optional[str]:
    """The data's label column (csv) as the build's spec named it; None when unknown."""
    value: Any = manifest
    for key in ("spec", "data", "train", "label"):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def read_rows(path: str, feature_names: Optional[Sequence[str]], label: Optional[str]
              ) -> np.ndarray:
    """The feature columns of a CSV, by name, in the model's order, as float32 (N, F); a
    located error naming missing columns. Without `feature_names` every column except `label`
    is a feature, in file order."""
    if not os.path.isfile(path):
        raise DataError("no such data file", file=path)
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        try:
            rows = list(csv.reader(f))
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"not a readable CSV file: {e}", file=path) from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError("empty CSV file; expected a header row", file=path, line=1)
    header = [h.strip() for h in rows[0]]
    _refuse_duplicates(header, path)
    if feature_names is None:
        feature_names = [h for h in header if h != label]
    missing = [n for n in feature_names if n not in header]
    # Columns the model does not read are ignored (ids, a subset chosen by input.columns),
    # but named next to missing ones: there they are usually the misspelling.
    unexpected = [h for h in header if h not in feature_names and h != label]
    if missing:
        parts = []
        if missing:
            parts.append("missing column" + ("s " if len(missing) > 1 else " ") +
                         ", ".join(f"'{m}'{suggest_text(m, unexpected)}" for m in missing[:8]) +
                         (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append("unexpected column" + ("s " if len(unexpected) > 1 else " ") +
                         ", ".join(f"'{u}'" for u in unexpected[:8]) +
                         (" ..." if len(unexpected) > 8 else ""))
        raise DataError("; ".join(parts) + f" (the model takes {len(feature_names)} features"
                        f"{', and ignores ' + repr(label) if label else ''})", file=path, line=1)
    index = [header.index(n) for n in feature_names]
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"expected {len(header)} fields as in the header, found {len(row)}",
                            file=path, line=lineno)
        vals = []
        for i in index:
            text = row[i].strip()
            try:
                v = float(text)
            except ValueError:
                what = "empty value" if text == "" else f"not a number: {text!r}"
                raise DataError(f"column '{header[i]}': {what}", file=path, line=lineno) from None
            if not np.isfinite(v):
                raise DataError(f"column '{header[i]}': not a finite number: {text}", file=path,
                                line=lineno)
            if abs(v) >= FLOAT32_OVERFLOW:
                raise DataError(f"column '{header[i]}': {text} is outside float32's range "
                                f"(largest {np.finfo(np.float32).max:.7g}), the model's input "
                                "type", file=path, line=lineno)
            vals.append(v)
        out.append(vals)
    if not out:
        raise DataError("no data rows", file=path)
    return np.asarray(out, dtype=np.float32)

# The smallest magnitude float32 rounds to infinity: the largest float32 plus half an ulp.
FLOAT32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103

def _refuse_duplicates(header: Sequence[str], path: str) -> None:
    """Two columns of one name: matching by name would feed the first into both places."""
    first: Dict[str, int] = {}
    for k, name in enumerate(header, start=1):
        if name in first:
            raise DataError(f"column name '{name}' appears twice (fields {first[name]} and "
                            f"{k}); columns are matched by name, so each must be unique",
                            file=path, line=1)
        first[name] = k


def load_samples(path: str, manifest: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """Real samples from .npy, .npz (array X) or .csv; a CSV's columns are matched by the
    manifest's feature names (its label column ignored), or all taken in file order. A
    DataError naming the file for anything else (object arrays and pickles included: they are
    never loaded)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("npy", "npz"):
        if not os.path.isfile(path):
            raise DataError("no such data file", file=path)
        try:
            values = np.asarray(read_table(path, ext, label=None).features)
        except (ValueError, OSError, EOFError) as e:  # numpy's refusals: pickles, bad headers
            raise DataError(f"not a readable .{ext} file: {first_line(e)}", file=path) from None
        if values.dtype.kind not in "fiub" or values.ndim < 2 or not len(values):
            raise DataError(f"expected a numeric array of samples (N, ...), found "
                            f"{values.dtype} {list(values.shape)}", file=path)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise DataError("NaN or infinite values", file=path)
        if np.abs(values).max() >= FLOAT32_OVERFLOW:
            raise DataError("values outside float32's range, the model's input type", file=path)
        return values
    if ext != "csv":
        raise DataError("expected a .npy, .npz or .csv file", file=path)
    manifest = manifest or {}
    return read_rows(path, manifest.get("feature_names"), label_column(manifest))


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error (ORT's and numpy's run to many), shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__
