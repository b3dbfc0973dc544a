"""symbuilder.proof: parity passes on a correct export, and FAILS (with figures) on a corrupted
one; the tolerance rule is relative to each output's scale, and its defaults still fail a
corrupted weight, a wrong epsilon and a wrong axis."""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from symbuilder.errors import ExportError
from symbuilder.onnx import to_onnx
from symbuilder.proof import (DEFAULT_ATOL, DEFAULT_RANDOM_SAMPLES, DEFAULT_RTOL, DEFAULT_SEED,
                              TOLERANCE_RULE, ParityReport, compare, mxnet_forward, onnx_forward,
                              parity_or_fail, parity_suite, random_inputs, verify_parity)

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


# ------------------------------------------------------------------------------------------
# The tolerance rule: max|ort - mxnet| <= atol + rtol * scale, scale = max|mxnet| per output


def test_the_rule_is_relative_to_the_outputs_scale_not_to_each_element() -> None:
    ref = np.array([[1e6, 0.0, -3.0]], np.float32)
    within = ref + np.array([[0.0, 5.0, 0.0]], np.float32)  # 5 <= 1e-5 + 1e-5 * 1e6 = 10
    beyond = ref + np.array([[0.0, 11.0, 0.0]], np.float32)
    ok = compare(ref, within, DEFAULT_ATOL, DEFAULT_RTOL)
    assert ok["passed"] and ok["scale"] == 1e6 and ok["max_abs"] == 5.0
    assert ok["max_rel"] == pytest.approx(5e-6)  # elementwise it would be 5 / 0: meaningless
    assert not np.allclose(within, ref, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL)  # numpy's rule
    assert not compare(ref, beyond, DEFAULT_ATOL, DEFAULT_RTOL)["passed"]
    # An output that is zero everywhere is held to atol alone.
    zero = np.zeros((2, 3), np.float32)
    assert compare(zero, zero + 9e-6, DEFAULT_ATOL, DEFAULT_RTOL)["passed"]
    assert not compare(zero, zero + 2e-5, DEFAULT_ATOL, DEFAULT_RTOL)["passed"]


def test_the_defaults_are_the_measured_ones_and_one_of_each() -> None:
    from symbuilder import cli, defaults
    from symbuilder.spec.model import VerifySpec
    # zoo-figures: worst max|ort - mx| / scale over the gluon model zoo was 3.2e-6 (vgg19_bn):
    # the default rtol keeps 3x headroom over it.
    assert DEFAULT_RTOL == 1e-5 and DEFAULT_ATOL == 1e-5 and 3 * 3.2e-6 <= DEFAULT_RTOL
    assert (VerifySpec().atol, VerifySpec().rtol) == (defaults.DEFAULT_ATOL, defaults.DEFAULT_RTOL)
    args = cli.make_parser().parse_args(["export", "p", "0", "--input", "data=1,2"])
    assert (args.atol, args.rtol, args.random) == (DEFAULT_ATOL, DEFAULT_RTOL,
                                                   DEFAULT_RANDOM_SAMPLES)


@pytest.fixture(scope="module")
def deep() -> tuple:
    """A regression net whose outputs reach ~1e5 at random He-like weights (as the zoo's deep
    nets do at random weights): float32 rounding alone is then far above any fixed atol."""
    d = mx.sym.Variable("data")
    x = d
    for k in range(4):
        x = mx.sym.FullyConnected(x, num_hidden=256, name=f"fc{k}")
        x = mx.sym.Activation(x, act_type="relu", name=f"relu{k}")
    sym = mx.sym.FullyConnected(x, num_hidden=10, name="out")
    rng = np.random.RandomState(1)
    arg_shapes, _, _ = sym.infer_shape(data=(BATCH, 256))
    arg = {n: (rng.randn(*s) * (4.0 / np.sqrt(s[-1]))).astype(np.float32)
           for n, s in zip(sym.list_arguments(), arg_shapes) if n != "data"}
    model = to_onnx(sym, arg, {"data": (BATCH, 256)})
    return sym, arg, model, {"data": rng.randn(BATCH, 256).astype(np.float32) * 10}


def test_a_large_output_within_its_scale_passes_the_defaults_and_not_a_fixed_atol(deep) -> None:
    sym, arg, model, inputs = deep
    report = verify_parity(sym, arg, {}, model, inputs)  # the defaults
    # Independent figures: both runtimes' outputs, the error and the scale, recomputed here.
    ref = mxnet_forward(sym, arg, {}, inputs)[0].astype(np.float64)
    err = np.abs(onnx_forward(model, inputs, optimize=False)[0] - ref).max()
    scale = np.abs(ref).max()
    assert scale > 1e4 and err > DEFAULT_ATOL  # rounding alone fails a fixed atol ...
    assert err / scale < DEFAULT_RTOL / 3  # ... and is far inside the relative bound
    assert report.passed, report.to_dict()
    assert report.rtol == DEFAULT_RTOL and report.max_rel < DEFAULT_RTOL / 3
    assert not verify_parity(sym, arg, {}, model, inputs, rtol=0.0).passed


def _with_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    for k, init in enumerate(bad.graph.initializer):
        if init.name == name:
            bad.graph.initializer[k].CopyFrom(numpy_helper.from_array(value.astype(np.float32),
                                                                      name))
            return bad
    raise AssertionError(f"no initializer {name}")


@pytest.mark.parametrize("which", ["net", "deep"])
def test_one_weight_with_its_sign_flipped_fails_the_defaults_in_every_layer(net, deep,
                                                                             which) -> None:
    # A single corrupted value (a flipped sign bit) in any weight matrix, the largest element
    # of it, so that the corruption is not a no-op on a weight near zero.
    sym, arg, aux, model, inputs = net if which == "net" else (deep[0], deep[1], {}, deep[2],
                                                                 deep[3])
    weights = [i for i in model.graph.initializer if i.name.endswith("_weight")]
    assert len(weights) == (2 if which == "net" else 5)
    for init in weights:
        value = numpy_helper.to_array(init).copy()
        value.flat[np.abs(value).argmax()] *= -1
        report = verify_parity(sym, arg, aux, _with_initializer(model, init.name, value), inputs)
        assert not report.passed, (init.name, report.max_rel)


def test_a_batchnorm_translated_with_onnxs_epsilon_fails_the_defaults(net) -> None:
    # MXNet's BatchNorm eps defaults to 1e-3, ONNX's to 1e-5: the classic wrong translation.
    sym, arg, aux, model, inputs = net
    gamma, var = arg["bn0_gamma"].asnumpy(), aux["bn0_moving_var"].asnumpy()
    shape = numpy_helper.to_array(next(i for i in model.graph.initializer
                                       if i.name == "bn0/scale")).shape
    wrong = (gamma / np.sqrt(var.astype(np.float64) + 1e-5)).reshape(shape)
    report = verify_parity(sym, arg, aux, _with_initializer(model, "bn0/scale", wrong), inputs)
    assert not report.passed and report.max_rel > 10 * DEFAULT_RTOL


def test_a_softmax_over_the_wrong_axis_fails_the_defaults(net) -> None:
    sym, arg, aux, model, inputs = net
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    softmax = next(n for n in bad.graph.node if n.op_type == "Softmax")
    next(a for a in softmax.attribute if a.name == "axis").i = 0  # the batch axis
    report = verify_parity(sym, arg, aux, bad, inputs)
    assert not report.passed
    assert all(not d["passed"] for d in report.details)


def test_the_suite_records_the_rule_it_applied(net) -> None:
    sym, arg, aux, model, inputs = net
    figures = parity_suite(sym, arg, aux, model, held_out=inputs, random_samples=8)
    assert (figures["atol"], figures["rtol"], figures["rule"]) == (
        DEFAULT_ATOL, DEFAULT_RTOL, TOLERANCE_RULE)
    assert figures["inputs"]["random"]["seed"] == DEFAULT_SEED
    ref = mxnet_forward(sym, arg, aux, {"data": inputs["data"][:1]})[0]
    row = next(d for d in figures["details"] if d["inputs"] == "held_out" and d["batch"] == 1)
    assert row["scale"] == pytest.approx(float(np.abs(ref).max()))


def test_parity_or_fail_names_the_bound_it_broke(net) -> None:
    sym, arg, aux, model, inputs = net
    with pytest.raises(ExportError, match=r"^ONNX Runtime disagrees with MXNet: max abs "
                       r"difference \S+ > atol 1e-05 \+ rtol 1e-05 x scale 0\.\d+ \(max rel "):
        parity_or_fail(sym, arg, aux, _corrupt(model, "fc2_weight", 0.5), held_out=inputs,
                       random_samples=0)


def test_random_inputs_stay_inside_the_given_range_and_are_seeded():
    low = np.array([[0.0, -5.0], [10.0, 3.0]])
    high = np.array([[1.0, -4.0], [10.0, 7.0]])
    ranges = {"x": {"low": low.tolist(), "high": high.tolist()}}
    a = random_inputs({"x": (2, 2)}, 500, seed=4, ranges=ranges)["x"]
    b = random_inputs({"x": (2, 2)}, 500, seed=4, ranges=ranges)["x"]
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (500, 2, 2)
    assert np.all(a >= low.astype(np.float32)) and np.all(a <= high.astype(np.float32))
    assert np.all(a[:, 1, 0] == 10.0)  # a constant feature stays constant
    assert a[:, 0, 0].max() - a[:, 0, 0].min() > 0.9  # and the range is really covered


def test_a_float16_output_is_held_to_a_tolerance_fit_for_half_precision() -> None:
    from symbuilder.proof import FLOAT16_RTOL, compare
    ref = np.linspace(-2, 2, 50).astype(np.float16)
    one_ulp = np.nextafter(ref, np.float16(np.inf), dtype=np.float16)
    assert compare(ref, one_ulp, DEFAULT_ATOL, DEFAULT_RTOL)["passed"]
    # The same one-unit step in float32 terms fails float32's defaults...
    assert not compare(ref.astype(np.float32), one_ulp.astype(np.float32), DEFAULT_ATOL,
                       DEFAULT_RTOL)["passed"]
    # ...and a real error in half precision still fails.
    assert not compare(ref, (ref * 1.01).astype(np.float16), DEFAULT_ATOL, DEFAULT_RTOL)["passed"]
    assert FLOAT16_RTOL == pytest.approx(4 * 2.0 ** -10)
