"""What the serving tests share: the CLI runner, independent references (MXNet's Module
predict, ONNX Runtime run directly), a plain-MXNet checkpoint and a symbuilder build with every
format. The fixtures are imported by test_legacy.py, test_predict.py and test_audit.py.
"""
import csv
import io
import os

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import mlp_spec, write_spec

from symbuilder.cli import main


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "specs", "data", "breast_cancer.csv")


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ort_run(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def module_predict(prefix, epoch, x, data_names=("data",), label_names=("softmax_label",)):
    """MXNet's own Module.predict on `x` (the independent reference)."""
    mod = mx.mod.Module.load(prefix, epoch, data_names=list(data_names),
                             label_names=list(label_names), context=mx.cpu())
    it = mx.io.NDArrayIter(data={data_names[0]: x}, batch_size=len(x))
    # Bound for inference without label shapes, as a serving user binds it: MXNet warns that
    # the label names have no shapes, which is the point here.
    with pytest.warns(UserWarning, match="label_shapes don't match names specified by "
                      "label_names"):
        mod.bind(data_shapes=it.provide_data, for_training=False)
    return mod.predict(it).asnumpy()


@pytest.fixture(scope="module")
def plain_conv(tmp_path_factory):
    """A conv net with a SoftmaxOutput head, trained 2 epochs by Module.fit with weight decay:
    its BatchNorm has MXNet's default fix_gamma=True, so the stored gamma drifts from 1 while
    MXNet computes with 1 (the trap mx.onnx falls into)."""
    folder = tmp_path_factory.mktemp("plain")
    prefix = str(folder / "convnet")
    mx.random.seed(3)
    rng = np.random.RandomState(3)
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name="conv1")
    x = mx.sym.BatchNorm(x, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="relu1")
    x = mx.sym.Pooling(x, pool_type="max", kernel=(2, 2), stride=(2, 2), name="pool1")
    x = mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), name="conv2", no_bias=True)
    x = mx.sym.Flatten(x, name="flat")
    x = mx.sym.FullyConnected(x, num_hidden=4, name="fc")
    net = mx.sym.SoftmaxOutput(x, name="softmax")
    X = (rng.rand(64, 3, 8, 8) * 255).astype(np.float32)
    y = rng.randint(0, 4, 64).astype(np.float32)
    mod = mx.mod.Module(net, context=mx.cpu())
    mod.fit(mx.io.NDArrayIter(X, y, batch_size=16, label_name="softmax_label"), num_epoch=2,
            optimizer="sgd", optimizer_params={"learning_rate": 0.01, "wd": 0.05},
            initializer=mx.init.Xavier())
    mod.save_checkpoint(prefix, 2)
    return prefix, X


SPEC = mlp_spec("srv_mlp", export="formats: [checkpoint, onnx, triton], verify: {samples: 40}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from symbuilder.pipeline import build
    from symbuilder.spec.load import load_spec
    folder = tmp_path_factory.mktemp("srv")
    write_spec(folder, SPEC)
    spec = load_spec(str(folder / "spec.yaml"))
    out = str(folder / "export" / "srv_mlp")
    result = build(spec, out_dir=out)
    return spec, out, result


def prefix_of(built):
    spec, out, result = built
    return os.path.join(out, spec.name), result.result.epoch


def val_rows(built):
    from symbuilder.data import load_data
    return load_data(built[0]).val.features


def csv_of(built, rows, *, with_label, reverse=False):
    spec, out, result = built
    names = list(result.manifest["feature_names"])
    table = [["row_id"] + names + (["benign"] if with_label else [])]  # row_id: not read
    table += [[str(i)] + [repr(float(v)) for v in row] + (["1"] if with_label else [])
              for i, row in enumerate(rows)]
    if reverse:  # columns are matched by name, not position
        table = [list(reversed(r)) for r in table]
    text = io.StringIO()
    csv.writer(text).writerows(table)
    return text.getvalue()
