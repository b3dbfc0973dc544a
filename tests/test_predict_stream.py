"""predict: --keep passes id columns through exactly, '-' reads standard input, and a long
CSV streams in blocks at bounded memory with the same output as one pass."""
import csv
import io
import os
import sys
import tracemalloc

import numpy as np
import pytest

import helpers
from symbuilder import build
from symbuilder.cli import main
from symbuilder.serving.predict import predict, predict_blocks
from symbuilder.spec.load import load_spec

SPEC = """\
    name: two
    input: {shape: [2], columns: [mean_radius, mean_texture]}
    layers:
      - {op: FullyConnected, name: fc, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, label: benign}}
    train: {epochs: 1, batch_size: 64}
    """


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    out = str(folder / "out")
    build(load_spec(helpers.write_spec(folder, SPEC)), out_dir=out)
    return out


def _rows_csv(path, n, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.uniform(5, 30, size=(n, 2))
    with open(path, "w", newline="") as f:
        f.write("id,ts,mean_radius,mean_texture\n")
        for i in range(n):
            f.write(f"{i:07d},2024-01-01T00:00:{i % 60:02d}Z,{x[i, 0]:.4f},{x[i, 1]:.4f}\n")
    return str(path)


def _read(text):
    return list(csv.reader(io.StringIO(text)))


def test_keep_puts_the_named_columns_first_exactly_as_in_the_input(export, tmp_path, capsys):
    path = str(tmp_path / "rows.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["mean_texture", "ts", "mean_radius", "id"],
                                 ["10.5", " 2024-01-01 ", "14", "007"],
                                 ["20", "x,y", "9.25", "0"]])
    assert main(["predict", export, path, "--keep", "id,ts"]) == 0
    kept = _read(capsys.readouterr().out)
    assert main(["predict", export, path]) == 0
    plain = _read(capsys.readouterr().out)
    assert kept[0] == ["id", "ts"] + plain[0]
    assert [r[:2] for r in kept[1:]] == [["007", " 2024-01-01 "], ["0", "x,y"]]
    assert [r[2:] for r in kept[1:]] == plain[1:]


def test_keep_of_a_missing_column_is_located_with_a_suggestion(export, tmp_path, capsys):
    path = _rows_csv(tmp_path / "rows.csv", 3)
    out = tmp_path / "p.csv"
    assert main(["predict", export, path, "--keep", "idd", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}:1: --keep 'idd': no such column (did you mean 'id'?)"]
    assert not out.exists() and os.listdir(tmp_path) == ["rows.csv"]


def test_a_dash_reads_standard_input(export, tmp_path, capsys, monkeypatch):
    path = _rows_csv(tmp_path / "rows.csv", 50)
    assert main(["predict", export, path, "--keep", "id"]) == 0
    from_file = capsys.readouterr().out
    with open(path, "rb") as raw:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
        assert main(["predict", export, "-", "--keep", "id"]) == 0
    assert capsys.readouterr().out == from_file and len(_read(from_file)) == 51


@pytest.mark.slow  # ~15 s: 200k rows twice, one pass under tracemalloc
def test_a_long_csv_streams_at_bounded_memory_and_matches_one_pass(export, tmp_path):
    path = _rows_csv(tmp_path / "rows.csv", 200_000)
    one = predict(export, path, keep=["id"])
    whole = io.StringIO()
    one.write_csv(whole)
    streamed = tmp_path / "streamed.csv"
    blocks = predict_blocks(export, path, keep=["id"], block_rows=8192)
    tracemalloc.start()
    try:
        with open(streamed, "w", newline="") as f:
            for k, block in enumerate(blocks):
                assert len(block.values) <= 8192
                block.write_csv(f, header=k == 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert streamed.read_text() == whole.getvalue()
    assert len(one.values) == 200_000
    # 200k rows held at once take ~50 MB as Python lists; one block of 8192 a few MB.
    assert peak < 12 * 2 ** 20, peak
