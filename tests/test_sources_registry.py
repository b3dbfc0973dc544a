"""Every registered data source, tested automatically: each one must read the breast cancer
data, written in its format, to the values the csv module reads from the CSV (independent of
symbuilder's parsers), in memory and streamed through the cache.

A new `@register_source` fails test_every_source_has_a_writer until a writer is added here."""
import csv
import dataclasses
import os

import numpy as np
import pytest

import image_data
from helpers import DATA
from symbuilder.data.images import IMAGE_FORMATS, ImageReadOptions
from symbuilder.data.sources import SOURCES, ReadOptions, read_table


def reference():
    """Features (float64) and labels from the CSV, parsed by the csv module."""
    with open(DATA, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    label = header.index("benign")
    x = np.array([[float(v) for i, v in enumerate(r) if i != label] for r in body])
    y = np.array([int(r[label]) for r in body])
    return x, y


def write_csv(folder, x, y):
    path = os.path.join(folder, "d.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(x.shape[1])] + ["benign"])
        for row, label in zip(x, y):
            w.writerow([repr(v) for v in row] + [label])
    return path, {"label": "benign"}


def write_npz(folder, x, y):
    path = os.path.join(folder, "d.npz")
    np.savez(path, X=x.astype(np.float32), y=y)
    return path, {"label": None}


def write_npy(folder, x, y):
    path = os.path.join(folder, "d.npy")
    np.save(path, x.astype(np.float32))
    np.save(os.path.join(folder, "labels.npy"), y)
    return path, {"label": "labels.npy"}


def write_libsvm(folder, x, y):
    path = os.path.join(folder, "d.libsvm")
    with open(path, "w") as f:
        for row, label in zip(x, y):
            # sparse: zeros left out, indices counting from 1
            cells = " ".join(f"{i + 1}:{v!r}" for i, v in enumerate(row) if v != 0)
            f.write(f"{label} {cells}\n")
    return path, {"label": None}


def as_pixels(x):
    """Image formats hold 8-bit pixels: each row as a 1x30 grey image of its values rounded
    and clipped to 0..255 (what the test then expects back)."""
    return np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(len(x), 1, -1)


def write_recordio(folder, x, y):
    path = image_data.write_recordio(os.path.join(folder, "d"), as_pixels(x), y)
    return path, {"label": None, "expected": (as_pixels(x).reshape(len(x), -1), y)}


def write_image_folder(folder, x, y):
    """Class folders 0/ and 1/, files named by row: read back class by class."""
    root = image_data.write_image_folder(os.path.join(folder, "d"), as_pixels(x), y)
    order = np.argsort(y, kind="stable")
    return root, {"label": None, "expected": (as_pixels(x).reshape(len(x), -1)[order],
                                              y[order])}


WRITERS = {"csv": write_csv, "npz": write_npz, "npy": write_npy, "libsvm": write_libsvm,
           "recordio": write_recordio, "image_folder": write_image_folder}


def test_every_source_has_a_writer():
    assert set(WRITERS) == set(SOURCES)


@pytest.mark.parametrize("stream", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize("fmt", sorted(SOURCES))
def test_each_source_reads_the_csv_values(fmt, stream, tmp_path):
    x, y = reference()
    path, kwargs = WRITERS[fmt](str(tmp_path), x, y)
    x, y = kwargs.pop("expected", (x, y))
    options = ReadOptions(cache_dir=str(tmp_path / "cache"), stream=stream)
    if fmt in IMAGE_FORMATS:  # they need the sample shape (C, H, W) from the spec
        options = ImageReadOptions(**dataclasses.asdict(options), shape=(1, 1, x.shape[1]))
    table = read_table(path, fmt, options=options, **kwargs)
    got = np.asarray(table.features).reshape(len(table), -1)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got, x.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(table.labels).astype(np.int64), y)
    if stream:
        assert table.on_disk  # memory-mapped, never loaded whole
