"""Reading samples for predict and for the parity checks of export and verify: CSV rows by
column name (located errors for missing and duplicate columns, non-numbers, values outside
float32), .npy/.npz arrays through the data sources' readers (never a pickle), and image
files or an im2rec .rec decoded as the build decoded its images (data.images).
"""
from __future__ import annotations

import csv
import io
import os
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from ..errors import DataError, UsageError
from ..data.images import (IMAGE_EXTENSIONS, ImageReadOptions, decode_image, list_image_folder,
                           read_recordio)
from ..data.sources import display_path, read_table
from ..spec.catalog_suggest import suggest_text

def label_column(manifest: Mapping[str, Any]) -> Optional[str]:
    """The data's label column (csv) as the build's spec named it; None when unknown."""
    value: Any = manifest
    for key in ("spec", "data", "train", "label"):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


BLOCK_ROWS = 8192  # rows parsed, predicted and written at a time: bounds predict's memory

Block = Tuple[np.ndarray, List[List[str]]]  # float32 features (n, F), the kept cells per row


def read_rows(path: str, feature_names: Optional[Sequence[str]], label: Optional[str]
              ) -> np.ndarray:
    """The feature columns of a CSV, by name, in the model's order, as float32 (N, F); a
    located error naming missing columns. Without `feature_names` every column except `label`
    is a feature, in file order."""
    _, blocks = csv_blocks(path, feature_names, label)
    parts = [rows for rows, _ in blocks]
    if not parts:
        raise DataError("no data rows", file=path)
    return np.concatenate(parts)


def csv_blocks(path: str, feature_names: Optional[Sequence[str]], label: Optional[str], *,
               keep: Sequence[str] = (), block_rows: int = BLOCK_ROWS
               ) -> Tuple[List[str], Iterator[Block]]:
    """(the feature names, the rows in blocks of `block_rows`): the header is read and
    checked now, the rows as the blocks are taken, so memory stays bounded whatever the
    file's length. `path` '-' is standard input. `keep`: columns whose cells come with each
    row exactly as written (ids); a missing one is a located error with a did-you-mean."""
    stream = _open_text(path)
    try:
        reader = _records(csv.reader(stream), path)
        first = next(reader, None)
        if first is None or not any(c.strip() for c in first):
            raise DataError("empty CSV file; expected a header row", file=path, line=1)
        header = [h.strip() for h in first]
        _refuse_duplicates(header, path)
        names = list(feature_names) if feature_names is not None else [
            h for h in header if h != label]
        _check_columns(header, names, label, path)
        _check_keep(header, keep, path)
    except BaseException:
        _release(stream, path)
        raise
    return names, _blocks(stream, reader, header, names, keep, path, block_rows)


def _open_text(path: str) -> TextIO:
    if path == "-":  # the bytes, decoded as a file is (a BOM dropped, newlines as they are)
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    if not os.path.isfile(path):
        raise DataError("no such data file", file=path)
    return open(path, "r", newline="", encoding="utf-8-sig")


def _records(reader: Iterator[List[str]], path: str) -> Iterator[List[str]]:
    try:
        yield from reader
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"not a readable CSV file: {e}", file=path) from None


def _check_columns(header: List[str], names: Sequence[str], label: Optional[str],
                   path: str) -> None:
    """Missing feature columns, each with a did-you-mean among the columns the model does
    not read (there they are usually the misspelling), which are named too."""
    missing = [n for n in names if n not in header]
    if not missing:
        return
    unexpected = [h for h in header if h not in names and h != label]
    parts = ["missing column" + ("s " if len(missing) > 1 else " ") +
             ", ".join(f"'{m}'{suggest_text(m, unexpected)}" for m in missing[:8]) +
             (" ..." if len(missing) > 8 else "")]
    if unexpected:
        parts.append("unexpected column" + ("s " if len(unexpected) > 1 else " ") +
                     ", ".join(f"'{u}'" for u in unexpected[:8]) +
                     (" ..." if len(unexpected) > 8 else ""))
    raise DataError("; ".join(parts) + f" (the model takes {len(names)} features"
                    f"{', and ignores ' + repr(label) if label else ''})", file=path, line=1)


def _check_keep(header: List[str], keep: Sequence[str], path: str) -> None:
    for name in keep:
        if name not in header:
            raise DataError(f"--keep '{name}': no such column{suggest_text(name, header)}",
                            file=path, line=1)


def _blocks(stream: TextIO, reader: Iterator[List[str]], header: List[str],
            names: Sequence[str], keep: Sequence[str], path: str, block_rows: int
            ) -> Iterator[Block]:
    index = [header.index(n) for n in names]
    kept = [header.index(n) for n in keep]
    try:
        out: List[List[float]] = []
        cells: List[List[str]] = []
        for lineno, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"expected {len(header)} fields as in the header, found "
                                f"{len(row)}", file=path, line=lineno)
            out.append([_number(row[i], header[i], path, lineno) for i in index])
            cells.append([row[i] for i in kept])
            if len(out) == block_rows:
                yield np.asarray(out, dtype=np.float32), cells
                out, cells = [], []
        if out:
            yield np.asarray(out, dtype=np.float32), cells
    finally:
        _release(stream, path)


def _release(stream: TextIO, path: str) -> None:
    """Close the file; standard input's wrapper is detached instead (closing it, or its
    garbage collection, would close sys.stdin's own buffer)."""
    if path == "-":
        stream.detach()  # type: ignore[attr-defined]
    else:
        stream.close()


def _number(cell: str, column: str, path: str, lineno: int) -> float:
    """One feature cell as a float; a located error for text, empty, NaN/inf, or a value
    outside float32."""
    text = cell.strip()
    try:
        v = float(text)
    except ValueError:
        what = "empty value" if text == "" else f"not a number: {text!r}"
        raise DataError(f"column '{column}': {what}", file=path, line=lineno) from None
    if not np.isfinite(v):
        raise DataError(f"column '{column}': not a finite number: {text}", file=path,
                        line=lineno)
    if abs(v) >= FLOAT32_OVERFLOW:
        raise DataError(f"column '{column}': {text} is outside float32's range "
                        f"(largest {np.finfo(np.float32).max:.7g}), the model's input "
                        "type", file=path, line=lineno)
    return v


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


RECORDIO_EXTENSION = ".rec"


def is_image_input(paths: Sequence[str]) -> bool:
    """Whether predict's inputs are images: a folder, a .png/.jpg/.jpeg file or a .rec (any
    other single path is a CSV file, '-' standard input, as before)."""
    return any(os.path.isdir(p) or os.path.splitext(p)[1].lower() in
               IMAGE_EXTENSIONS + (RECORDIO_EXTENSION,) for p in paths)


def image_samples(paths: Sequence[str], decoding: Mapping[str, Any]
                  ) -> Tuple[str, List[str], np.ndarray]:
    """(id column name, one id per image, (N, C, H, W) float32 pixels) of image files,
    folders of them (their .png/.jpg/.jpeg files, sorted) or one .rec (its .idx beside
    it), decoded with `decoding` (a manifest's image_decoding: the build's shape, resize and
    inter_method). The ids are the file paths as given, or the record indices. A located
    DataError for a file that is missing or does not decode."""
    options = ImageReadOptions(shape=tuple(decoding["shape"]), resize=decoding["resize"],
                               inter_method=decoding["inter_method"],
                               label_width=decoding.get("label_width", 1),
                               convert_channels=bool(decoding.get("convert_channels", False)))
    records = [p for p in paths if os.path.splitext(p)[1].lower() == RECORDIO_EXTENSION]
    if records:
        if len(paths) > 1:
            raise UsageError("a .rec file is predicted on its own, not with other inputs",
                             file=records[0])
        if not os.path.isfile(records[0]):
            raise DataError("no such file", file=records[0])
        table = read_recordio(records[0], label=None, features=None,
                              shown=display_path(records[0]), options=options)
        return "record", [str(i) for i in range(len(table))], np.asarray(table.features)
    files = _image_files(paths)
    pixels = np.empty((len(files),) + options.shape, np.float32)
    for i, name in enumerate(files):
        try:
            with open(name, "rb") as f:
                pixels[i] = decode_image(f.read(), options)
        except OSError as e:
            raise DataError(f"cannot be read: {e.strerror}", file=name) from None
        except ValueError as e:
            raise DataError(str(e), file=name) from None
    return "path", files, pixels


def _image_files(paths: Sequence[str]) -> List[str]:
    """Each path, a folder standing for its images (sorted), or for the images of its class
    folders when it holds none itself (an image_folder source's layout, in its order); a
    DataError for a missing file, a file that is no image, a folder without images."""
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            names = [n for n in os.listdir(path) if not n.startswith(".")]
            images = sorted(n for n in names if os.path.splitext(n)[1].lower() in
                            IMAGE_EXTENSIONS and os.path.isfile(os.path.join(path, n)))
            if not images and any(os.path.isdir(os.path.join(path, n)) for n in names):
                files += list_image_folder(path, path)[0]
                continue
            if not images:
                raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder",
                                file=path)
            files += [os.path.join(path, n) for n in images]
        elif not os.path.isfile(path):
            raise DataError("no such file", file=path)
        elif os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"expected an image ({', '.join(IMAGE_EXTENSIONS)}), a folder of "
                            "them or one .rec file", file=path)
        else:
            files.append(path)
    return files


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error (ORT's and numpy's run to many), shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__
