"""The build's stages, each run once and forward only: the graph is built once (a Model)
and every later stage receives it; statistics are their own stage, handed to training.

Independent references: a spy that counts the real graph construction (build_head, the
last step of every graph build), the real numpy statistics of the training split, and the
exact error text and exit code of a spec whose head is narrower than its classes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import helpers

from symbuilder.cli import main
from symbuilder.data import load_data
from symbuilder.errors import DataError
from symbuilder.graph import Model, build_model, layers
from symbuilder.inputlayer import calibrate
from symbuilder.moments import array_stats
from symbuilder.spec.load import load_spec
from symbuilder.training import train

MLP = """\
    name: mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 8}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, label: benign}}
    train: {epochs: 1, batch_size: 64, seed: 3}
    export: {formats: [checkpoint]}
    """


@pytest.fixture
def graph_builds(monkeypatch):
    """How many times the graph is built: every build ends in layers.build_head."""
    calls = []
    real = layers.build_head

    def counting(spec, body):
        calls.append(spec.name)
        return real(spec, body)
    monkeypatch.setattr(layers, "build_head", counting)
    return calls


def test_the_model_carries_what_later_stages_read(tmp_path):
    spec = load_spec(helpers.write_spec(tmp_path, MLP))
    model = build_model(spec)
    assert isinstance(model, Model)
    assert model.layer_names == ("fc1", "relu1", "fc2")
    assert model.data_names == ("data",) and model.label_name == "softmax_label"
    assert model.output_name == "softmax_output"
    assert model.shapes["fc1_weight"] == (8, 30)  # batch 1, every argument
    assert model.shapes["data_norm_moving_mean"] == (30,)  # and every aux state
    assert model.output_shape == (1, 2) and model.num_outputs == 2
    with pytest.raises(AttributeError):  # frozen: built once, never changed by a stage
        model.num_outputs = 3


def test_a_build_builds_the_graph_once(tmp_path, graph_builds):
    path = helpers.write_spec(tmp_path, MLP)
    assert main(["build", path, "--out", str(tmp_path / "out"), "-q"]) == 0
    assert graph_builds == ["mlp"]  # before issue 12: three (pipeline, data, train)


def test_validate_builds_the_graph_once(tmp_path, graph_builds, capsys):
    path = helpers.write_spec(tmp_path, MLP)
    assert main(["validate", path]) == 0
    assert graph_builds == ["mlp"]  # before issue 12: twice (validate, data's class count)
    assert "2 classes" in capsys.readouterr().out


def test_load_data_takes_the_class_count_from_the_model_and_builds_no_graph(
        tmp_path, graph_builds):
    spec = load_spec(helpers.write_spec(tmp_path, MLP))
    data = load_data(spec, num_outputs=2)
    assert data.classes == [0, 1] and graph_builds == []
    with pytest.raises(DataError) as caught:
        load_data(spec, num_outputs=1)
    assert "the labels have 2 classes ([0, 1]), but the network outputs 1 values" in str(
        caught.value)
    assert graph_builds == []


def test_a_head_narrower_than_the_classes_is_one_located_line_and_nothing_written(
        tmp_path, capsys):
    path = helpers.write_spec(tmp_path, MLP.replace("num_hidden: 2", "num_hidden: 1"))
    out = tmp_path / "out"
    assert main(["build", path, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{path}:") and err[0].endswith(
        "data.train.label: the labels have 2 classes ([0, 1]), but the network outputs 1 values")
    assert sorted(os.listdir(tmp_path)) == ["bc.csv", "spec.yaml"]  # nothing written


def test_statistics_are_a_stage_train_uses_the_ones_it_is_given(tmp_path, monkeypatch):
    spec = load_spec(helpers.write_spec(tmp_path, MLP))
    model = build_model(spec)
    data = load_data(spec, num_outputs=model.num_outputs)
    stats = calibrate(model, data)
    features = data.train.inputs["data"].astype(np.float64)
    np.testing.assert_allclose(stats["data"].mean, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["data"].var, features.var(axis=0), rtol=1e-9)
    # Training must not calibrate again: array_stats is the statistics stage's alone.
    import symbuilder.inputlayer as inputlayer
    monkeypatch.setattr(inputlayer, "array_stats", lambda *a, **k: pytest.fail("calibrated"))
    result = train(spec, data, model=model, stats=stats, bar=False)
    report = result.input_stats["data"]
    assert report["exact_mean"] == stats["data"].mean.tolist()
    assert report["count"] == len(data.train)
    assert result.model is model and result.symbol is model.symbol


def test_train_refuses_a_model_of_another_spec(tmp_path):
    spec = load_spec(helpers.write_spec(tmp_path, MLP))
    other = load_spec(helpers.write_spec(tmp_path / "o", MLP.replace("epochs: 1", "epochs: 2")))
    data = load_data(spec, num_outputs=2)
    with pytest.raises(ValueError, match="built from another spec"):
        train(spec, data, model=build_model(other))


def test_the_zero_variance_warning_comes_from_the_statistics_stage(tmp_path):
    spec = load_spec(helpers.write_spec(tmp_path, MLP))
    model = build_model(spec)
    data = load_data(spec, num_outputs=2)
    data.train.inputs["data"][:, 3] = 7.0  # one constant feature
    said = []
    calibrate(model, data, said.append)
    assert said == [f"warning: feature '{data.columns['data'][3]}' has zero variance in the "
                    "training data; the input layer divides by sqrt(eps=0.001)"]


def test_the_cli_exit_path_imports_the_dist_module_without_mxnet():
    probe = ("import sys\n"
             "from symbuilder.training.distributed import exit_failed_worker\n"
             "exit_failed_worker(0)\n"
             "print('mxnet' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=helpers.ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
