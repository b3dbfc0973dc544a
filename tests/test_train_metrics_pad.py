"""Train-set metrics count each real row once: the last batch's padding (its repeats) is left
out. With the learning rate 0 the weights stay fixed, so the epoch's train metrics must equal
the fixed model's metrics over exactly the training split, computed here with numpy."""
import mxnet as mx
import numpy as np
import pytest

import helpers
from symbuilder import proof
from symbuilder.data import load_data
from symbuilder.spec.load import load_spec
from symbuilder.training import train
from symbuilder.training.metrics import TrainingMetrics

FIXED = """\
    name: fixed
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 8}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, label: benign}}
    train: {epochs: 2, batch_size: 32, optimizer: sgd, optimizer_params: {learning_rate: 0.0},
            eval_metric: [acc, ce]}
    """


@pytest.mark.parametrize("devices", ["[cpu(0)]", "[cpu(0), cpu(1), cpu(2)]"])
def test_train_metrics_of_a_fixed_model_equal_numpys_over_the_real_rows(tmp_path, devices):
    """One device, and three (each batch of 32 split 11 + 11 + 10; the metrics read the
    labels from the iterator's host copy at each slice's offset)."""
    spec = load_spec(helpers.write_spec(tmp_path, FIXED.replace(
        "eval_metric: [acc, ce]}", f"eval_metric: [acc, ce], context: {devices}}}")))
    data = load_data(spec)
    assert len(data.train) % 32 != 0  # 456 rows: the last batch is padded with 24 repeats
    result = train(spec, data)
    probs = proof.mxnet_forward(result.symbol, result.arg_params, result.aux_params,
                                {"data": data.train.inputs["data"]})[0]
    probs = np.asarray(probs, dtype=np.float64)
    labels = data.train.labels.astype(int)
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    cross_entropy = float(np.mean(-np.log(probs[np.arange(len(labels)), labels] + 1e-12)))
    last = result.history[-1]["train"]
    assert last["accuracy"] == accuracy
    assert abs(last["cross-entropy"] - cross_entropy) < 1e-5


def test_a_padded_batch_split_over_devices_keeps_only_its_real_rows():
    # A batch of 8 with 3 repeats, scored as two device slices of 4: 4 + 1 real rows.
    batch = mx.io.DataBatch(data=[mx.nd.zeros((8, 1))], label=[mx.nd.zeros((8,))], pad=3)
    metric = TrainingMetrics(["acc"])
    metric.current_batch = batch
    preds = mx.nd.array([[0.0, 1.0]] * 4)
    metric.update([mx.nd.array([1, 1, 1, 1])], [preds])   # rows 0-3: all real, all right
    metric.update([mx.nd.array([0, 1, 1, 1])], [preds])   # rows 4-7: row 4 real, wrong
    assert metric.get_global() == (["accuracy"], [0.8])   # 4 of 5, not 7 of 8
    assert metric.metrics[0].global_num_inst == 5


def test_host_labels_are_read_at_each_device_slices_offset():
    # The NDArray labels Module passes are wrong on purpose: the host copy must be the one read.
    batch = mx.io.DataBatch(data=[mx.nd.zeros((8, 1))], label=[mx.nd.zeros((8,))], pad=3)
    batch.host_label = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=np.float32)
    metric = TrainingMetrics(["acc"])
    metric.current_batch = batch
    preds = mx.nd.array([[0.0, 1.0]] * 4)
    metric.update([mx.nd.zeros((4,))], [preds])   # rows 0-3: 1 1 0 1, three right
    metric.update([mx.nd.zeros((4,))], [preds])   # rows 4-7: row 4 real (0), wrong
    assert metric.get_global() == (["accuracy"], [0.6])   # 3 of 5 real rows
