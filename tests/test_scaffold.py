"""`symbuilder init`: the spec it writes is valid, builds as written, and says what it left out."""
import csv
import os

import numpy as np
import pytest

from helpers import DATA
from symbuilder.cli import main
from symbuilder.spec.load import load_spec


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def header_and_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture
def mixed_csv(tmp_path):
    """Breast cancer features, a text column, and a three-class text label."""
    header, rows = header_and_rows(DATA)
    radius = np.array([float(r[header.index("mean_radius")]) for r in rows])
    cuts = np.quantile(radius, [1 / 3, 2 / 3])
    path = tmp_path / "data" / "tumours.csv"
    path.parent.mkdir()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["city"] + [h for h in header if h != "benign"] + ["size class"])
        for i, (r, value) in enumerate(zip(rows, radius)):
            label = ["small", "medium", "large"][int(np.searchsorted(cuts, value))]
            w.writerow([["Oslo", "Lima"][i % 2]] + [c for h, c in zip(header, r)
                                                    if h != "benign"] + [label])
    return str(path)


def test_init_writes_a_spec_that_validates_and_builds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("data")
    data = os.path.join("data", "bc.csv")
    with open(DATA) as src, open(data, "w") as dst:
        dst.write(src.read())
    code, text, err = run(["init", data, "--label", "benign"], capsys)
    assert code == 0 and err == ""
    with open("spec.yaml", "w") as f:
        f.write(text)
    spec = load_spec("spec.yaml")
    header, rows = header_and_rows(DATA)
    assert list(spec.input.shape) == [len(header) - 1]
    assert spec.output.op == "SoftmaxOutput"
    assert spec.layers[-1].attrs["num_hidden"] == len({r[header.index("benign")] for r in rows})
    assert spec.data.train.path == data and spec.data.train.label == "benign"
    assert main(["validate", "spec.yaml"]) == 0
    assert main(["build", "spec.yaml", "--epochs", "2", "-q", "--out", "out"]) == 0
    assert os.path.exists(os.path.join("out", "manifest.json"))


def test_a_text_column_is_left_out_by_name_and_text_labels_make_a_classifier(
        mixed_csv, tmp_path, capsys):
    spec_path = str(tmp_path / "spec.yaml")
    code, _, err = run(["init", mixed_csv, "--label", "size class", "--out", spec_path], capsys)
    assert code == 0 and err.strip() == f"{spec_path}: written; next: symbuilder build {spec_path}"
    text = open(spec_path).read()
    assert ("# Column 'city' is left out: it is not numeric (line 2: 'Oslo'). Encode it as "
            "numbers") in text
    spec = load_spec(spec_path)
    header, _ = header_and_rows(mixed_csv)
    features = [h for h in header if h not in ("city", "size class")]
    assert list(spec.input.columns) == features and list(spec.input.shape) == [len(features)]
    assert spec.layers[-1].attrs["num_hidden"] == 3
    assert spec.data.train.path == os.path.join("data", "tumours.csv")  # relative to the spec


def test_a_spec_with_a_text_column_left_out_builds(mixed_csv, tmp_path, capsys):
    spec_path = str(tmp_path / "spec.yaml")
    assert main(["init", mixed_csv, "--label", "size class", "--out", spec_path]) == 0
    assert main(["build", spec_path, "--epochs", "2", "-q", "--out", str(tmp_path / "out")]) == 0


def test_a_numeric_label_with_many_values_makes_a_regression(tmp_path, capsys):
    code, text, _ = run(["init", DATA, "--label", "mean_radius"], capsys)
    assert code == 0
    assert "output: {op: LinearRegressionOutput, name: regression}" in text
    assert "eval_metric: [mse, mae]" in text
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(text.replace(f"path: {os.path.relpath(DATA)}", f"path: {DATA}"))
    spec = load_spec(str(spec_path))
    assert spec.layers[-1].attrs["num_hidden"] == 1
    assert main(["build", str(spec_path), "--epochs", "2", "-q", "--out", str(tmp_path / "o")]) == 0


def test_task_regression_on_text_labels_is_located(mixed_csv, capsys):
    code, out, err = run(["init", mixed_csv, "--label", "size class", "--task", "regression"],
                         capsys)
    assert code == 2 and out == ""
    assert err.strip() == (f"{mixed_csv}:2: --task regression needs a numeric label, but "
                           "column 'size class' holds 'large'")


def test_a_wrong_label_suggests_the_closest_columns(capsys):
    code, out, err = run(["init", DATA, "--label", "benig"], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"symbuilder: error: --label 'benig': no such column in {DATA} "
                          "(closest: benign")


def test_init_never_overwrites_a_file(tmp_path, capsys):
    target = tmp_path / "spec.yaml"
    target.write_text("mine\n")
    code, _, err = run(["init", DATA, "--label", "benign", "--out", str(target)], capsys)
    assert code == 2 and target.read_text() == "mine\n"
    assert err.strip() == (f"{target}: already exists; init never overwrites a file (choose "
                           "another --out, or remove it yourself)")


def test_a_missing_csv_is_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope.csv")
    code, out, err = run(["init", missing, "--label", "y"], capsys)
    assert code == 2 and out == "" and err.strip() == f"{missing}: no such CSV file"
