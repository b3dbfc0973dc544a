"""`symbuilder predict` (serving/predict.py): an export on the rows of a CSV, against MXNet's
own Module predict.
"""
import csv
import io
import os

import numpy as np
import pytest

from serving_cases import csv_of, module_predict, prefix_of, run, val_rows
from serving_cases import built  # noqa: F401 (fixtures)


@pytest.mark.slow
@pytest.mark.parametrize("use_checkpoint", [False, True])
def test_predict_equals_module_predict_on_the_same_rows(built, tmp_path, capsys,
                                                        use_checkpoint):
    rows = val_rows(built)[:25]
    path = tmp_path / "rows.csv"
    path.write_text(csv_of(built, rows, with_label=True, reverse=True))
    argv = ["predict", built[1], str(path)] + (["--checkpoint"] if use_checkpoint else [])
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    got = list(csv.reader(io.StringIO(stdout)))
    assert got[0] == ["class", "p_0", "p_1"]
    probs = np.array([[float(v) for v in r[1:]] for r in got[1:]])
    expected = module_predict(*prefix_of(built), rows)
    np.testing.assert_allclose(probs, expected, atol=1e-6, rtol=0)
    assert [int(r[0]) for r in got[1:]] == list(expected.argmax(axis=1))


@pytest.mark.slow
def test_predict_writes_a_file_from_the_onnx_path_without_label(built, tmp_path, capsys):
    rows = val_rows(built)[:5]
    (tmp_path / "rows.csv").write_text(csv_of(built, rows, with_label=False))
    out = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", os.path.join(built[1], "srv_mlp.onnx"),
                             str(tmp_path / "rows.csv"), "--out", str(out)], capsys)
    assert code == 0 and stdout == "" and err.strip() == f"{out}: 5 predictions"
    got = np.loadtxt(out, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got[:, 1:], module_predict(*prefix_of(built), rows), atol=1e-6)


@pytest.mark.slow
def test_predict_names_wrong_and_missing_columns(built, tmp_path, capsys):
    names = list(built[2].manifest["feature_names"])
    rows = val_rows(built)[:2]
    keep = [i for i, n in enumerate(names) if n != "worst_symmetry"]
    header = ["mean_radios" if names[i] == "mean_radius" else names[i] for i in keep]
    text = "\n".join([",".join(header)] + [",".join(repr(float(r[i])) for i in keep)
                                           for r in rows]) + "\n"
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, stdout, err = run(["predict", built[1], str(path)], capsys)
    assert code == 2 and stdout == ""
    assert err.strip() == (f"{path}:1: missing columns 'mean_radius' (did you mean "
                           "'mean_radios'?), 'worst_symmetry'; unexpected column 'mean_radios' "
                           "(the model takes 30 features, and ignores 'benign')")
