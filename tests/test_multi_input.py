"""Several data inputs: keys, column selection, located mistakes, training, ONNX and predict.

The independent computations: numpy float64 statistics of the chosen CSV columns, read with
the csv module; ONNX Runtime against MXNet's executor on the same rows.
"""
import csv
import json

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import DATA, write_spec
from symbuilder import load_spec
from symbuilder.cli import main
from symbuilder.data import load_data


SPEC = """\
    name: two_inputs
    inputs:
      - {name: means, shape: [10], columns: ["mean_*"]}
      - name: worst
        shape: [2, 5]
        columns: [worst_area, worst_radius, "worst_t*", worst_symmetry, "worst_c*",
                  worst_perimeter, worst_smoothness, worst_fractal_dimension]
        normalize: {stats: running, momentum: 0.9}
    layers:
      - {op: FullyConnected, name: a, num_hidden: 8, inputs: [means]}
      - {op: FullyConnected, name: b, num_hidden: 8, inputs: [worst]}
      - {op: Concat, name: ab, dim: 1, inputs: [a, b]}
      - {op: Activation, name: r, act_type: relu}
      - {op: FullyConnected, name: fc, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: bc.csv, label: benign}
    train: {epochs: 4, batch_size: 32, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
    """


def header():
    with open(DATA, newline="") as f:
        return next(csv.reader(f))


def column_values(names):
    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[n]) for n in names] for r in rows])


def test_columns_are_chosen_by_name_and_glob_in_the_order_given(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC))
    data = load_data(spec)
    names = header()
    means = [n for n in names if n.startswith("mean_")]
    worst_t = [n for n in names if n.startswith("worst_t")]
    worst_c = [n for n in names if n.startswith("worst_c")]
    worst = (["worst_area", "worst_radius"] + worst_t + ["worst_symmetry"] + worst_c
             + ["worst_perimeter", "worst_smoothness", "worst_fractal_dimension"])
    assert data.columns == {"means": means, "worst": worst}
    assert data.train.inputs["worst"].shape[1:] == (2, 5)
    # The split is shared: the same rows in both inputs, matching the CSV row by row.
    every = np.concatenate([data.train.inputs["means"], data.val.inputs["means"]])
    table = column_values(means)
    assert sorted(map(tuple, every.astype(np.float64).round(6))) == \
        sorted(map(tuple, table.astype(np.float32).astype(np.float64).round(6)))


@pytest.mark.parametrize("edit, where, message", [
    (("columns: [\"mean_*\"]", "columns: [\"men_*\"]"), ":3:32: inputs[0].columns",
     "no feature column matches 'men_*'"),
    (("shape: [10]", "shape: [11]"), ":3:19: inputs[0].shape",
     "shape [11] needs 11 features per sample, but bc.csv gives this input 10 (mean_radius"),
])
def test_data_mistakes_are_located_at_the_input(tmp_path, capsys, monkeypatch, edit, where,
                                                message):
    monkeypatch.chdir(tmp_path)  # data paths are shown as openable from the working folder
    path = write_spec(tmp_path, SPEC.replace(*edit))
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert where in err and message in err, err


@pytest.mark.parametrize("body, fragment", [
    (SPEC.replace(', columns: ["mean_*"]', ""),
     "inputs[0]: missing required key 'columns' (with several inputs, each names the csv "
     "columns it reads)"),
    (SPEC.replace("name: worst\n", "name: means\n"),
     "inputs[1].name: duplicate input name 'means' (also inputs[0])"),
    (SPEC.replace("    inputs:\n", "    input: {shape: [30]}\n    inputs:\n"),
     "give either input (one data input) or inputs (a list), not both"),
    (SPEC.replace("inputs: [worst]", "inputs: [wrost]"), "layers[1].inputs"),
    (SPEC.replace(", inputs: [means]}", "}"),
     "layers[0]: missing required key 'inputs': with several inputs (means, worst), the first "
     "layer names the ones it reads"),
])
def test_structure_mistakes_are_one_located_line_exit_2(tmp_path, capsys, body, fragment):
    out = tmp_path / "out"
    path = write_spec(tmp_path, body)
    assert main(["build", path, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(path + ":"), err
    assert fragment in err, err
    assert not out.exists()


@pytest.mark.slow
def test_two_inputs_train_export_to_onnx_and_predict(tmp_path, capsys):
    path = write_spec(tmp_path / "spec", SPEC)
    out = tmp_path / "out"
    assert main(["build", path, "--out", str(out), "-q"]) == 0
    manifest = json.load(open(out / "manifest.json"))
    spec = load_spec(path)
    data = load_data(spec)

    # Each input's own statistics: numpy float64 over its columns of the training split.
    for name in ("means", "worst"):
        x = data.train.inputs[name].reshape(len(data.train), -1).astype(np.float64)
        report = manifest["input_normalization"][name]
        if name == "means":  # (C,) per feature
            np.testing.assert_allclose(report["exact_mean"], x.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(report["exact_var"], x.var(axis=0), rtol=1e-12)
        else:  # (2, 5): two channels of five values
            x = x.reshape(-1, 2, 5)
            np.testing.assert_allclose(report["exact_mean"], x.mean(axis=(0, 2)), rtol=1e-12)
            np.testing.assert_allclose(report["exact_var"], x.var(axis=(0, 2)), rtol=1e-12)
    assert [i["name"] for i in manifest["inputs"]] == ["means", "worst"]
    assert manifest["inputs"][1]["columns"] == data.columns["worst"]

    # ONNX: two inputs, no label, matching MXNet's executor on held-out rows.
    session = ort.InferenceSession(str(out / "two_inputs.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("means", [10]),
                                                                     ("worst", [2, 5])]
    symbol, args, auxs = mx.model.load_checkpoint(str(out / "two_inputs"), manifest["epoch"])
    feed = {n: data.val.inputs[n] for n in ("means", "worst")}
    ex = symbol.simple_bind(mx.cpu(), grad_req="null", **{n: v.shape for n, v in feed.items()})
    ex.copy_params_from(args, auxs, allow_extra_params=True)
    expected = ex.forward(is_train=False, **feed)[0].asnumpy()
    np.testing.assert_allclose(session.run(None, feed)[0], expected, atol=1e-5, rtol=0)

    # predict on the raw CSV: each input takes its own columns by name, whatever the order.
    capsys.readouterr()
    rows = list(csv.reader(open(DATA, newline="")))
    shuffled = tmp_path / "shuffled.csv"
    order = list(reversed(range(len(rows[0]) - 1)))  # features reversed, label dropped
    with open(shuffled, "w", newline="") as f:
        csv.writer(f).writerows([[r[k] for k in order] for r in rows])
    target = tmp_path / "pred.csv"
    assert main(["predict", str(out), str(shuffled), "--out", str(target)]) == 0
    predicted = list(csv.DictReader(open(target, newline="")))
    assert len(predicted) == len(rows) - 1
    full = {n: column_values(data.columns[n]).astype(np.float32) for n in ("means", "worst")}
    full["worst"] = full["worst"].reshape(-1, 2, 5)
    probs = session.run(None, full)[0]
    prob_columns = [c for c in predicted[0] if c.startswith("p")]
    got = np.array([[float(r[c]) for c in prob_columns] for r in predicted])
    np.testing.assert_allclose(got, probs, atol=1e-5)
