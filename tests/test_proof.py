"""symbuilder.proof: parity passes on a correct export, and FAILS (with figures) on a corrupted one."""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from symbuilder.onnx import to_onnx
from symbuilder.proof import ParityReport, mxnet_forward, onnx_forward, verify_parity

BATCH = 6


@pytest.fixture(scope="module")
def net():
    """A small classifier with a BatchNorm (aux params) and a SoftmaxOutput head (a label variable)."""
    d = mx.sym.Variable("data")
    x = mx.sym.BatchNorm(d, fix_gamma=False, name="bn0")
    x = mx.sym.FullyConnected(x, num_hidden=8, name="fc1")
    x = mx.sym.Activation(x, act_type="tanh", name="act1")
    x = mx.sym.FullyConnected(x, num_hidden=3, name="fc2")
    sym = mx.sym.SoftmaxOutput(x, name="softmax")
    rng = np.random.RandomState(0)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(BATCH, 5))
    arg = {n: mx.nd.array(rng.randn(*s) * 0.5) for n, s in zip(sym.list_arguments(), arg_shapes)
           if n not in ("data", "softmax_label")}
    aux = {"bn0_moving_mean": mx.nd.array(rng.randn(5)), "bn0_moving_var": mx.nd.array(rng.uniform(0.5, 2, 5))}
    params = {k: v.asnumpy() for k, v in {**arg, **aux}.items()}
    model = to_onnx(sym, params, {"data": (BATCH, 5)})
    x = rng.randn(BATCH, 5).astype(np.float32)
    return sym, arg, aux, model, {"data": x}


def test_mxnet_forward_is_an_inference_pass(net) -> None:
    sym, arg, aux, _, inputs = net
    out = mxnet_forward(sym, arg, aux, inputs)[0]
    # Independent computation in numpy float64: moving stats (not batch stats) and softmax rows.
    p = {k: v.asnumpy().astype(np.float64) for k, v in {**arg, **aux}.items()}
    x = inputs["data"].astype(np.float64)
    h = (x - p["bn0_moving_mean"]) / np.sqrt(p["bn0_moving_var"] + 1e-3) * p["bn0_gamma"] + p["bn0_beta"]
    h = np.tanh(h @ p["fc1_weight"].T + p["fc1_bias"])
    z = h @ p["fc2_weight"].T + p["fc2_bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=0, atol=1e-6)


def test_mxnet_forward_accepts_numpy_params(net) -> None:
    sym, arg, aux, _, inputs = net
    as_np = mxnet_forward(sym, {k: v.asnumpy() for k, v in arg.items()}, {k: v.asnumpy() for k, v in aux.items()},
                          inputs)
    np.testing.assert_array_equal(as_np[0], mxnet_forward(sym, arg, aux, inputs)[0])


def test_onnx_forward_accepts_proto_bytes_and_path(net, tmp_path) -> None:
    _, _, _, model, inputs = net
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    a = onnx_forward(model, inputs)[0]
    b = onnx_forward(model.SerializeToString(), inputs, optimize=False)[0]
    c = onnx_forward(str(path), inputs)[0]
    assert a.shape == (BATCH, 3)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a, c)


def test_parity_passes_on_a_correct_export(net) -> None:
    sym, arg, aux, model, inputs = net
    report = verify_parity(sym, arg, aux, model, inputs, atol=1e-5)
    assert isinstance(report, ParityReport)
    assert report.passed, report.to_dict()
    assert 0.0 <= report.max_abs <= 1e-5
    # One row per (output, batch size, ORT level): 1 output x {1, BATCH} x {all, none}.
    rows = {(d["output"], d["batch"], d["ort_level"]) for d in report.details}
    assert rows == {("softmax_output", b, lvl) for b in (1, BATCH) for lvl in ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL")}
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def _corrupt(model: onnx.ModelProto, name: str, delta: float) -> onnx.ModelProto:
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    for k, init in enumerate(bad.graph.initializer):
        if init.name == name:
            value = numpy_helper.to_array(init).copy()
            value.flat[0] += delta
            bad.graph.initializer[k].CopyFrom(numpy_helper.from_array(value, name))
            return bad
    raise AssertionError(f"no initializer {name}")


def test_parity_fails_when_a_weight_is_corrupted(net) -> None:
    sym, arg, aux, model, inputs = net
    bad = _corrupt(model, "fc2_weight", 0.5)
    report = verify_parity(sym, arg, aux, bad, inputs, atol=1e-5)
    assert not report.passed
    assert report.max_abs > 1e-3 and report.max_rel > 1e-3
    assert all(not d["passed"] for d in report.details)
    # The reported figure is the real disagreement, recomputed here independently.
    expected = np.abs(onnx_forward(bad, inputs)[0] - mxnet_forward(sym, arg, aux, inputs)[0]).max()
    assert report.max_abs == pytest.approx(float(expected), rel=1e-6)


def test_parity_fails_when_an_aux_stat_is_corrupted(net) -> None:
    sym, arg, aux, model, inputs = net
    # The BatchNorm is exported as (x - mean) * scale + beta: its moving mean is "bn0/mean".
    report = verify_parity(sym, arg, aux, _corrupt(model, "bn0/mean", 1.0), inputs, atol=1e-5)
    assert not report.passed and report.max_abs > 1e-4


def test_rtol_loosens_the_bound(net) -> None:
    sym, arg, aux, model, inputs = net
    bad = _corrupt(model, "fc2_bias", 1e-4)
    strict = verify_parity(sym, arg, aux, bad, inputs, atol=1e-7)
    loose = verify_parity(sym, arg, aux, bad, inputs, atol=1e-7, rtol=1e-2)
    assert not strict.passed and loose.passed
    assert strict.max_abs == pytest.approx(loose.max_abs)


def test_shape_mismatch_fails() -> None:
    # An ONNX model whose output has the wrong shape must not pass by broadcasting.
    d = mx.sym.Variable("data")
    sym = mx.sym.FullyConnected(d, num_hidden=2, name="fc")
    params = {"fc_weight": np.ones((2, 3), np.float32), "fc_bias": np.zeros(2, np.float32)}
    wrong = to_onnx(mx.sym.FullyConnected(d, num_hidden=2, flatten=False, name="fc"), params, {"data": (2, 1, 3)})
    report = verify_parity(sym, params, {}, wrong, {"data": np.ones((2, 1, 3), np.float32)}, atol=1e-3)
    assert not report.passed
    assert report.max_abs == float("inf")
    assert "shape" in report.details[0]["reason"]


def test_float64_inputs_are_accepted(net) -> None:
    sym, arg, aux, model, inputs = net
    report = verify_parity(sym, arg, aux, model, {"data": inputs["data"].astype(np.float64)}, atol=1e-5)
    assert report.passed, report.to_dict()
