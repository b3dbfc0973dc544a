"""The CSV reader parses only the columns the inputs select: a text column no input reads
builds; a bad cell in a selected column is still located; the cache is keyed by the columns."""
import csv
import os

import numpy as np
import pytest

from helpers import DATA, write_spec
from symbuilder.data import load_data
from symbuilder.errors import DataError
from symbuilder.spec.load import load_spec

SPEC = """\
    name: cols
    input: {shape: [%d], columns: [%s]}
    layers:
      - {op: FullyConnected, name: fc, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: bc.csv, label: benign%s}
    train: {epochs: 1, batch_size: 32}
    """


def _with_city(folder, bad_line=None):
    """bc.csv with a text column 'city' in front; `bad_line`: that file line's mean_radius
    becomes text."""
    with open(DATA, newline="") as f:
        rows = list(csv.reader(f))
    rows[0] = ["city"] + rows[0]
    for k, row in enumerate(rows[1:], start=2):
        row.insert(0, "Oslo" if k % 2 else "Lima")
        if k == bad_line:
            row[rows[0].index("mean_radius")] = "Bergen"
    with open(os.path.join(folder, "bc.csv"), "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return rows


def _spec(folder, columns, extra=""):
    return write_spec(folder, SPEC % (len(columns), ", ".join(f'"{c}"' for c in columns), extra))


def test_a_text_column_left_out_is_never_parsed(tmp_path):
    path = _spec(tmp_path, ["mean_radius", "worst_area"])
    rows = _with_city(tmp_path)
    data = load_data(load_spec(path))
    header = rows[0]
    want = np.array([[float(r[header.index("mean_radius")]), float(r[header.index("worst_area")])]
                     for r in rows[1:]], dtype=np.float32)
    got = np.concatenate([data.train.inputs["data"], data.val.inputs["data"]])
    assert data.feature_names == ["mean_radius", "worst_area"]
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))


def test_a_bad_cell_in_a_selected_column_is_still_located(tmp_path):
    path = _spec(tmp_path, ["mean_*"])
    _with_city(tmp_path, bad_line=7)
    with pytest.raises(DataError) as info:
        load_data(load_spec(path))
    assert str(info.value).endswith("bc.csv:7: column 'mean_radius': not a number: 'Bergen'")


def test_a_misspelt_pattern_suggests_from_every_column(tmp_path):
    path = _spec(tmp_path, ["mean_radius", "citty"])
    _with_city(tmp_path)
    with pytest.raises(DataError) as info:
        load_data(load_spec(path))
    assert "input.columns[1]: no feature column matches 'citty' (did you mean 'city'?) " \
        "(closest: city, " in str(info.value)


def test_the_stream_cache_is_keyed_by_the_selected_columns(tmp_path):
    _with_city(tmp_path)
    cache = str(tmp_path / "cache")
    first = load_data(load_spec(_spec(tmp_path, ["mean_radius"], ", stream: true")),
                      cache_dir=cache)
    second = load_data(load_spec(_spec(tmp_path, ["worst_area"], ", stream: true")),
                       cache_dir=cache)
    assert first.feature_names == ["mean_radius"] and second.feature_names == ["worst_area"]
    assert not np.array_equal(np.asarray(first.train.inputs["data"]),
                              np.asarray(second.train.inputs["data"]))
