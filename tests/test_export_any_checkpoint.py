"""`symbuilder export` takes any checkpoint Module.save_checkpoint writes: no parameters at all,
inputs of any dtype with value ranges for index-like ones, several outputs, integer outputs.

The reference is MXNet's own executor (Module.forward on the checkpoint, bound here), and ONNX
Runtime is run directly on the written file.
"""
import os

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serving_cases import run


def _save(symbol, folder, name, data_shapes, params=None):
    """A checkpoint exactly as Module.save_checkpoint writes it."""
    mod = mx.mod.Module(symbol, data_names=[n for n, _ in data_shapes], label_names=None,
                        context=mx.cpu())
    mod.bind(data_shapes=data_shapes, for_training=False)
    mod.init_params(mx.init.Uniform(1.0), arg_params=params, allow_missing=True)
    prefix = os.path.join(str(folder), name)
    mod.save_checkpoint(prefix, 0)
    return prefix


def _module_forward(prefix, feeds):
    """MXNet's Module on the saved checkpoint: the independent reference, every output."""
    sym, args, aux = mx.model.load_checkpoint(prefix, 0)
    mod = mx.mod.Module(sym, data_names=list(feeds), label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[mx.io.DataDesc(k, v.shape, v.dtype) for k, v in feeds.items()],
             for_training=False)
    mod.set_params(args, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(v, dtype=v.dtype) for v in feeds.values()]),
                is_train=False)
    return [o.asnumpy() for o in mod.get_outputs()]


def _ort(path, feeds):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_a_graph_without_parameters_exports_and_matches_mxnet(tmp_path, capsys):
    x = mx.sym.var("x")
    prefix = _save(mx.sym.relu(x) * 2, tmp_path, "free", [("x", (1, 4))])
    assert mx.nd.load(f"{prefix}-0000.params") == []  # what MXNet writes for no parameters
    code, stdout, err = run(["export", prefix, "0", "--input", "x=1,4"], capsys)
    assert code == 0, err
    assert stdout.startswith(f"{prefix}-0000.onnx: verified against MXNet")
    feed = {"x": np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)}
    got = _ort(f"{prefix}-0000.onnx", feed)[0]
    np.testing.assert_array_equal(got, np.maximum(feed["x"], 0) * 2)
    np.testing.assert_array_equal(got, _module_forward(prefix, feed)[0])
