"""`symbuilder evaluate`: figures that agree with independent computations on exactly the rows
given, for a binary and a multi-class classifier and a regression."""
import csv
import itertools
import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from helpers import DATA, ROOT, mlp_spec, write_spec
from symbuilder.serving import evaluate as evaluation
from symbuilder.cli import main

DIGITS = os.path.join(ROOT, "specs", "data", "digits.csv")


# -- the figures, against brute force --------------------------------------------------------

def brute_auc(positive, score):
    """P(score of a positive > score of a negative) + half the ties, over every pair."""
    pos = [s for s, p in zip(score, positive) if p]
    neg = [s for s, p in zip(score, positive) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_the_pairwise_definition_and_the_curves_area(seed):
    rng = np.random.RandomState(seed)
    positive = rng.rand(60) < 0.4
    score = np.round(rng.rand(60) + 0.3 * positive, 1)  # rounded: many ties
    auc = evaluation.roc_auc(positive, score)
    assert auc == pytest.approx(brute_auc(positive, score), abs=1e-12)
    points = evaluation.roc_points(positive, score)
    assert points["fpr"][0] == 0 and points["tpr"][0] == 0
    assert points["fpr"][-1] == 1 and points["tpr"][-1] == 1
    assert np.trapz(points["tpr"], points["fpr"]) == pytest.approx(auc, abs=1e-12)


def test_auc_needs_both_kinds():
    assert evaluation.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_per_class_figures_equal_their_definitions():
    rng = np.random.RandomState(0)
    truth = rng.randint(0, 4, 200)
    predicted = np.where(rng.rand(200) < 0.6, truth, rng.randint(0, 4, 200))
    predicted[predicted == 3] = 2  # class 3 is never predicted: precision 0, not NaN
    probabilities = np.eye(4)[predicted]
    report = evaluation.classification_report(truth, probabilities, ["a", "b", "c", "d"])
    for i, c in enumerate("abcd"):
        tp = sum(1 for t, p in zip(truth, predicted) if t == i and p == i)
        pred_i = sum(1 for p in predicted if p == i)
        true_i = sum(1 for t in truth if t == i)
        precision = tp / pred_i if pred_i else 0.0
        recall = tp / true_i
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        row = report["per_class"][c]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == \
            pytest.approx((precision, recall, f1, true_i))
        assert report["confusion_matrix"][i] == [
            sum(1 for t, p in zip(truth, predicted) if t == i and p == j) for j in range(4)]
    rows = report["per_class"].values()
    assert report["macro"]["f1"] == pytest.approx(np.mean([r["f1"] for r in rows]))
    assert report["weighted"]["recall"] == pytest.approx(report["accuracy"])


def test_regression_figures_equal_their_definitions():
    rng = np.random.RandomState(1)
    truth = rng.randn(50) * 3 + 2
    predicted = truth + rng.randn(50) * 0.5
    report = evaluation.regression_report(truth, predicted)
    residual = [p - t for p, t in zip(predicted, truth)]
    mean = sum(truth) / len(truth)
    assert report["mae"] == pytest.approx(sum(abs(r) for r in residual) / 50)
    assert report["rmse"] == pytest.approx((sum(r * r for r in residual) / 50) ** 0.5)
    assert report["r2"] == pytest.approx(1 - sum(r * r for r in residual)
                                         / sum((t - mean) ** 2 for t in truth))
    assert report["residuals"]["median"] == pytest.approx(sorted(residual)[24:26][0] / 2
                                                          + sorted(residual)[24:26][1] / 2)


# -- the command, on real exports -------------------------------------------------------------

BINARY = mlp_spec("ev_binary", train_extra=", eval_metric: [acc, ce]")


def onnx_outputs(export, name, rows):
    session = ort.InferenceSession(os.path.join(export, f"{name}.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"data": rows.astype(np.float32)})[0].astype(np.float64)


def read(path, label):
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    k = header.index(label)
    x = np.array([[float(c) for j, c in enumerate(r) if j != k] for r in body])
    return x, [r[k] for r in body]


@pytest.mark.slow
def test_evaluate_a_binary_classifier_against_onnx_runtime_and_numpy(tmp_path, capsys):
    spec = write_spec(tmp_path, BINARY)
    export = str(tmp_path / "export")
    assert main(["build", spec, "--out", export, "-q"]) == 0
    capsys.readouterr()
    held_out = tmp_path / "held_out.csv"  # 100 rows the command must take exactly as given
    with open(DATA) as f:
        lines = f.readlines()
    held_out.write_text("".join(lines[:1] + lines[-100:]))
    out_dir = str(tmp_path / "eval")
    assert main(["evaluate", export, str(held_out), "--json", "--out", out_dir]) == 0
    report = json.loads(capsys.readouterr().out)
    x, labels = read(str(held_out), "benign")
    probabilities = onnx_outputs(export, "ev_binary", x)
    truth = np.array([int(v) for v in labels])
    predicted = probabilities.argmax(axis=1)
    assert report["rows"] == 100
    assert report["accuracy"] == pytest.approx(float((predicted == truth).mean()))
    assert report["metrics"]["accuracy"] == pytest.approx(report["accuracy"])
    assert report["confusion_matrix"] == [[int(((truth == i) & (predicted == j)).sum())
                                           for j in range(2)] for i in range(2)]
    assert report["roc_auc"]["binary"] == pytest.approx(
        brute_auc(truth == 1, probabilities[:, 1]), abs=1e-9)
    ce = -np.mean(np.log(probabilities[np.arange(100), truth]))
    assert report["metrics"]["cross-entropy"] == pytest.approx(ce, rel=1e-4)
    assert sorted(os.listdir(out_dir)) == ["confusion_matrix.png", "evaluation.json", "roc.png"]
    # Never overwritten: a second run into the same folder is refused, files unchanged.
    before = open(os.path.join(out_dir, "evaluation.json")).read()
    assert main(["evaluate", export, str(held_out), "--out", out_dir]) == 2
    assert "evaluate never overwrites a file" in capsys.readouterr().err
    assert open(os.path.join(out_dir, "evaluation.json")).read() == before


MULTI = """\
    name: ev_digits
    input: {shape: [64]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 32}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 10}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: digits.csv, label: digit}
    train: {epochs: 2, batch_size: 64, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
    """


@pytest.mark.slow
def test_evaluate_a_ten_class_classifier_one_vs_rest(tmp_path, capsys):
    spec = write_spec(tmp_path, MULTI)
    with open(DIGITS) as src, open(tmp_path / "digits.csv", "w") as dst:
        dst.write(src.read())
    export = str(tmp_path / "export")
    assert main(["build", spec, "--out", export, "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", export, str(tmp_path / "digits.csv")]) == 0
    text = capsys.readouterr().out
    assert main(["evaluate", export, str(tmp_path / "digits.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    x, labels = read(str(tmp_path / "digits.csv"), "digit")
    probabilities = onnx_outputs(export, "ev_digits", x)
    classes = report["classes"]
    truth = np.array([classes.index(v) for v in labels])
    for i, c in enumerate(classes):
        assert report["roc_auc"][c] == pytest.approx(
            evaluation.roc_auc(truth == i, probabilities[:, i]), abs=1e-12)
        assert report["per_class"][c]["support"] == int((truth == i).sum())
    assert report["roc_auc"]["macro_ovr"] == pytest.approx(
        np.mean([report["roc_auc"][c] for c in classes]))
    assert f"accuracy {report['accuracy']:.4f}" in text and "macro avg" in text


def test_a_label_the_model_never_saw_is_located(tmp_path):
    with pytest.raises(evaluation.DataError, match=r"labels 'x' are not among the model's"):
        evaluation.class_indices(np.array(["0", "x"]), [0, 1], "rows.csv")


REGRESSION = """\
    name: ev_regression
    input: {shape: [29], columns: ["mean_texture", "mean_perimeter", "mean_area", "*_error",
                                   "worst_*", "mean_s*", "mean_c*", "mean_fractal_dimension"]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 1}
    output: {op: LinearRegressionOutput, name: regression}
    data:
      train: {path: bc.csv, label: mean_radius}
    train: {epochs: 3, batch_size: 32, optimizer: adam, optimizer_params: {learning_rate: 0.01},
            eval_metric: [mse]}
    """


@pytest.mark.slow
def test_evaluate_a_regression_against_numpy(tmp_path, capsys):
    spec = write_spec(tmp_path, REGRESSION)
    export = str(tmp_path / "export")
    assert main(["build", spec, "--out", export, "-q"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", export, str(tmp_path / "bc.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    manifest = json.load(open(os.path.join(export, "manifest.json")))
    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = manifest["inputs"][0]["columns"]
    x = np.array([[float(r[c]) for c in columns] for r in rows])
    truth = np.array([float(r["mean_radius"]) for r in rows])
    predicted = onnx_outputs(export, "ev_regression", x)[:, 0]
    residual = predicted - truth
    assert report["task"] == "regression" and report["rows"] == len(rows)
    assert report["mae"] == pytest.approx(np.abs(residual).mean(), rel=1e-5)
    assert report["rmse"] == pytest.approx(np.sqrt((residual ** 2).mean()), rel=1e-5)
    assert report["metrics"]["mse"] == pytest.approx((residual ** 2).mean(), rel=1e-4)
