"""train.eval_metric entries with parameters (top_k_accuracy with top_k) and symbuilder's
multi-class macro-F1: the values equal numpy's on the validation split, every place a
metric is reported uses MXNet's reported name, and every mistake is one located line."""
import json
import os
import re
import shutil

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import ROOT, write_spec
from symbuilder.cli import main
from symbuilder.data import load_data
from symbuilder.spec.load import load_spec
from symbuilder.training import train

DIGITS = """\
    name: digits_metrics
    input: {{shape: [64]}}
    layers:
      - {{op: FullyConnected, name: fc1, num_hidden: 16}}
      - {{op: Activation, name: relu1, act_type: relu}}
      - {{op: FullyConnected, name: fc2, num_hidden: {classes}}}
    output: {{op: SoftmaxOutput, name: softmax}}
    data:
      train: {{path: digits.csv, label: digit}}
    train:
      epochs: {epochs}
      batch_size: 64
      optimizer: adam
      optimizer_params: {{learning_rate: 0.003}}
      eval_metric: {metrics}
    {extra}"""


def digits_spec(folder, metrics, *, classes=10, epochs=2, extra=""):
    path = write_spec(folder, DIGITS.format(metrics=metrics, classes=classes, epochs=epochs,
                                            extra=extra))
    shutil.copy(os.path.join(ROOT, "specs", "data", "digits.csv"), os.path.join(folder, "digits.csv"))
    return path


def top_k_accuracy(probs, truth, k):
    """Independent: a row is a hit when its label is among its k largest outputs."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == truth[:, None]).any(axis=1).mean())


def macro_f1(predicted, truth, classes):
    """Independent: per-class F1 from its own tp/fp/fn, averaged over the classes."""
    scores = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def val_probabilities(result, data):
    ex = result.symbol.simple_bind(mx.cpu(), grad_req="null", data=data.val.features.shape)
    ex.copy_params_from(result.arg_params, result.aux_params, allow_extra_params=True)
    return ex.forward(is_train=False, data=data.val.features)[0].asnumpy()


def test_top_k_accuracy_and_macro_f1_equal_numpy_on_the_validation_split(tmp_path):
    spec = load_spec(digits_spec(tmp_path, "[acc, {name: top_k_accuracy, top_k: 3}, f1_macro]"))
    data = load_data(spec)
    assert len(data.classes) == 10 and set(data.val.labels.astype(int)) == set(range(10))
    result = train(spec, data)
    probs = val_probabilities(result, data)  # the last epoch's params: the exported ones
    truth = data.val.labels.astype(np.int64)
    val = result.history[-1]["val"]
    assert sorted(val) == ["accuracy", "f1_macro", "top_k_accuracy_3"]
    assert val["top_k_accuracy_3"] == pytest.approx(top_k_accuracy(probs, truth, 3), abs=1e-12)
    assert val["f1_macro"] == pytest.approx(macro_f1(probs.argmax(axis=1), truth, 10), abs=1e-12)
    # top-3 is not accuracy: the check above compares a distinct figure
    assert val["top_k_accuracy_3"] > val["accuracy"]
    assert sorted(result.history[-1]["train"]) == sorted(val)


def test_train_f1_macro_is_exact_over_every_training_row_across_flushes(tmp_path):
    """The training figure flushes in pieces (here every few batches): the confusion matrix
    is summed over them, so the epoch's macro-F1 is that of all training rows."""
    from symbuilder.training.metrics import TrainingMetrics
    rng = np.random.RandomState(0)
    probs = rng.rand(1000, 10).astype(np.float32)
    truth = rng.randint(0, 10, size=1000).astype(np.float32)
    metric = TrainingMetrics(["f1_macro", {"name": "top_k_accuracy", "top_k": 4}],
                             flush_values=640)
    for start in range(0, 1000, 64):
        metric.update([mx.nd.array(truth[start:start + 64])], [mx.nd.array(probs[start:start + 64])])
    names, values = metric.get_global()
    assert names == ["f1_macro", "top_k_accuracy_4"]
    assert values[0] == pytest.approx(macro_f1(probs.argmax(axis=1), truth.astype(int), 10),
                                      abs=1e-12)
    assert values[1] == pytest.approx(top_k_accuracy(probs, truth.astype(int), 4), abs=1e-12)


def test_early_stopping_on_a_parameterized_metric_and_evaluate_report_it(tmp_path, capsys):
    spec = digits_spec(tmp_path, "[{name: top_k_accuracy, top_k: 3}, f1_macro, ce]", epochs=3,
                       extra="  early_stopping: {metric: top_k_accuracy, patience: 3}\n")
    export = str(tmp_path / "export")
    assert main(["build", spec, "--out", export, "-q"]) == 0
    capsys.readouterr()
    manifest = json.load(open(os.path.join(export, "manifest.json")))
    assert sorted(manifest["history"][-1]["val"]) == ["cross-entropy", "f1_macro",
                                                      "top_k_accuracy_3"]
    # `evaluate` on rows of the file: the same metrics, from ONNX Runtime's outputs.
    held_out = tmp_path / "held_out.csv"
    lines = open(os.path.join(tmp_path, "digits.csv")).readlines()
    held_out.write_text("".join(lines[:1] + lines[-300:]))
    assert main(["evaluate", export, str(held_out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    table = np.loadtxt(str(held_out), delimiter=",", skiprows=1)
    label = lines[0].strip().split(",").index("digit")
    x, truth = np.delete(table, label, axis=1), table[:, label].astype(np.int64)
    session = ort.InferenceSession(os.path.join(export, "digits_metrics.onnx"),
                                   providers=["CPUExecutionProvider"])
    probs = session.run(None, {"data": x.astype(np.float32)})[0]
    assert report["metrics"]["top_k_accuracy_3"] == pytest.approx(
        top_k_accuracy(probs, truth, 3), abs=1e-12)
    assert report["metrics"]["f1_macro"] == pytest.approx(
        macro_f1(probs.argmax(axis=1), truth, 10), abs=1e-12)
    assert report["metrics"]["f1_macro"] == pytest.approx(report["macro"]["f1"], abs=1e-12)


def tree(folder):
    return sorted(os.path.relpath(os.path.join(top, n), folder)
                  for top, dirs, files in os.walk(folder) for n in dirs + files)


# (id, eval_metric, changes, located key, message, a text on the offending line)
REFUSALS = [
    ("unknown-parameter", "[acc, {name: top_k_accuracy, topk: 3}]", {},
     "train.eval_metric[1].topk",
     "unknown parameter of metric top_k_accuracy; did you mean 'top_k'?", "topk"),
    ("top-k-not-an-integer", "[acc, {name: top_k_accuracy, top_k: 2.5}]", {},
     "train.eval_metric[1].top_k", "expected an integer, received 2.5 (number)", "top_k"),
    ("top-k-a-string", "[acc, {name: top_k_accuracy, top_k: three}]", {},
     "train.eval_metric[1].top_k", "expected a number, received 'three' (string)", "top_k"),
    ("top-k-one", "[acc, {name: top_k_accuracy, top_k: 1}]", {},
     "train.eval_metric[1].top_k",
     "expected an integer >= 2 (top_k 1 is plain accuracy: use acc), received 1 (integer)",
     "top_k"),
    ("top-k-not-below-the-outputs", "[acc, {name: top_k_accuracy, top_k: 10}]", {},
     "train.eval_metric[1].top_k", "expected a top_k below the head's 10 outputs (the top 10 "
     "would hold every class), received 10", "top_k"),
    ("top-k-not-below-the-classes", "[acc, {name: top_k_accuracy, top_k: 10}]",
     dict(classes=12), "train.eval_metric[1].top_k", "expected a top_k below the labels' 10 "
     "classes (the top 10 would hold every class), received 10", "top_k"),
    ("average-misspelt", "[acc, {name: f1, average: macr}]", {},
     "train.eval_metric[1].average",
     "expected one of macro, micro, received 'macr' (string) (did you mean 'macro'?)", "macr"),
    ("binary-f1-with-average-on-ten-classes", "[acc, {name: f1, average: macro}]", {},
     "train.eval_metric[1]", "'f1' is a binary metric, but the labels have 10 classes; use "
     "f1_macro (macro-F1 over the classes), acc, ce or pcc", "f1"),
    ("owned-parameter", "[acc, {name: top_k_accuracy, top_k: 3, output_names: [x]}]", {},
     "train.eval_metric[1].output_names", "'output_names' is set by symbuilder (symbuilder "
     "hands each metric the head's one output)", "output_names"),
    ("entry-without-name", "[acc, {top_k: 3}]", {}, "train.eval_metric[1]",
     "missing required key 'name' (the metric: acc, top_k_accuracy, f1_macro, ...)", "top_k"),
    ("unknown-name-in-mapping", "[acc, {name: top_k_acuracy, top_k: 3}]", {},
     "train.eval_metric[1].name", "unknown metric 'top_k_acuracy' (did you mean "
     "'top_k_accuracy'?)", "top_k_acuracy"),
    ("missing-required-parameter", "[acc, {name: perplexity}]", {}, "train.eval_metric[1]",
     "metric perplexity needs the parameter ignore_label", "perplexity"),
    ("early-stopping-ambiguous",
     "[{name: top_k_accuracy, top_k: 3}, {name: top_k_accuracy, top_k: 5}]",
     dict(extra="  early_stopping: {metric: top_k_accuracy}\n"),
     "train.early_stopping.metric", "'top_k_accuracy' names several of train.eval_metric "
     "(top_k_accuracy_3, top_k_accuracy_5); give one of these reported names", "early_stopping"),
    ("early-stopping-absent", "[acc, {name: top_k_accuracy, top_k: 3}]",
     dict(extra="  early_stopping: {metric: f1_macro}\n"), "train.early_stopping.metric",
     "'f1_macro' is not among train.eval_metric; it watches one of: acc (accuracy), "
     "top_k_accuracy (top_k_accuracy_3)", "early_stopping"),
]


@pytest.mark.parametrize("metrics,changes,key,message,needle", [c[1:] for c in REFUSALS],
                         ids=[c[0] for c in REFUSALS])
def test_validate_and_build_refuse_with_one_located_line(tmp_path, monkeypatch, capsys,
                                                        metrics, changes, key, message, needle):
    monkeypatch.chdir(tmp_path)
    spec = digits_spec(tmp_path, metrics, **changes)
    text = open(spec).read()
    line = next(i for i, t in enumerate(text.splitlines(), 1)
                if needle in t and ("early" in key) == ("early_stopping" in t))
    expected = re.compile(rf"{re.escape(spec)}:{line}:\d+: {re.escape(key)}: "
                          rf"{re.escape(message)}\n")
    before = tree(tmp_path)
    for argv in (["validate", spec], ["build", spec, "--out", str(tmp_path / "out"), "-q"]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert (code, out) == (2, ""), err
        assert expected.fullmatch(err), err
    assert tree(tmp_path) == before  # nothing written


def test_plain_names_and_a_single_mapping_still_validate(tmp_path, capsys):
    for metrics in ("[acc, ce]", "acc", "{name: top_k_accuracy, top_k: 5}",
                    "[{name: f1_macro}, {name: ce, eps: 1.0e-8}]"):
        spec = digits_spec(tmp_path, metrics)
        assert main(["validate", spec]) == 0, capsys.readouterr().err
        assert capsys.readouterr().err == ""


def test_f1_macro_counts_every_position_of_a_multi_output_head():
    """SoftmaxOutput with multi_output outputs (N, K, d) and labels (N, d): each of the
    N * d positions is one classified row."""
    from symbuilder.spec.metrics import create_metric
    rng = np.random.RandomState(1)
    probs = rng.rand(50, 4, 3).astype(np.float32)
    truth = rng.randint(0, 4, size=(50, 3))
    metric = create_metric("f1_macro")
    metric.update([mx.nd.array(truth)], [mx.nd.array(probs)])
    expected = macro_f1(probs.argmax(axis=1).ravel(), truth.ravel(), 4)
    assert metric.get() == ("f1_macro", pytest.approx(expected, abs=1e-12))
