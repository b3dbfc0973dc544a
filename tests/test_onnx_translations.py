"""Every registered MXNet->ONNX translation against MXNet itself (is_train=False), through ONNX Runtime.

The reference is MXNet's own executor, bound here directly (not symbuilder.proof), so a bug in
the parity helper cannot hide a bug in a translation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Mapping, Tuple

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from symbuilder.errors import ExportError
from symbuilder.onnx import SUPPORTED_OPSETS, check_translatable, register, registered_ops, to_onnx
from symbuilder.onnx.registry import opset_ranges
from symbuilder.proof import compare_distribution, random_outputs
from onnx_cases import CASES, Case, all_cases, positive, random_param

BATCH = 5


def _ops_in(symbol: mx.sym.Symbol) -> List[str]:
    return [n["op"] for n in json.loads(symbol.tojson())["nodes"] if n["op"] != "null"]


def _params(symbol: mx.sym.Symbol, shapes: Mapping[str, Tuple[int, ...]], seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = symbol.infer_shape(**shapes)
    params = {}
    for name, shape in list(zip(symbol.list_arguments(), arg_shapes)) + list(
        zip(symbol.list_auxiliary_states(), aux_shapes)
    ):
        if name not in shapes and not name.endswith("_label"):
            params[name] = random_param(rng, name, shape)
    return params


def _case_params(c: Case, shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    # The given values' shapes help shape inference (take's table cannot be inferred from its output).
    given = {k: v.shape for k, v in c.params.items()}
    random = _params(c.symbol, {**shapes, **given})
    return {**{k: v for k, v in random.items() if k not in given}, **c.params}


def _inputs(c: Case, batch: int, seed: int = 1) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    out = {}
    for name, sample in c.sample_shapes.items():
        shape = (batch,) + tuple(sample)
        make = c.input_makers.get(name, c.make_input)
        out[name] = make(rng, shape) if make else rng.randn(*shape).astype(np.float32)
    return out


def mxnet_reference(symbol: mx.sym.Symbol, params: Mapping[str, np.ndarray],
                    inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
    """MXNet inference outputs; label variables bound to zeros (they do not affect the forward pass)."""
    known = {k: v.shape for k, v in params.items() if k in symbol.list_arguments()}
    arg_shapes, _, _ = symbol.infer_shape(**known, **{k: v.shape for k, v in inputs.items()})
    args = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        value = inputs.get(name, params.get(name))
        args[name] = mx.nd.array(value) if value is not None else mx.nd.zeros(shape)
    aux = {name: mx.nd.array(params[name]) for name in symbol.list_auxiliary_states()}
    exe = symbol.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")
    return [o.asnumpy() for o in exe.forward(is_train=False)]


def ort_run(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], optimize: bool = True) -> List[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: inputs[i.name] for i in sess.get_inputs()})


def export_case(c: Case, opset: int = 17, dynamic_batch: bool = True) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray]]:
    shapes = {k: (BATCH,) + tuple(v) for k, v in c.sample_shapes.items()}
    params = _case_params(c, shapes)
    model = to_onnx(c.symbol, params, shapes, opset=opset, dynamic_batch=dynamic_batch)
    onnx.checker.check_model(model, full_check=True)
    return model, params


def assert_matches_mxnet(c: Case, model: onnx.ModelProto, params: Mapping[str, np.ndarray]) -> None:
    drawn = random_outputs(c.symbol) if c.random else [False] * len(c.symbol.list_outputs())
    assert any(drawn) == c.random
    for batch in c.batches:
        inputs = _inputs(c, batch)
        expected = mxnet_reference(c.reference if c.reference is not None else c.symbol, params, inputs)
        for optimize in (True, False):
            got = ort_run(model, inputs, optimize)
            assert len(got) == len(expected)
            for g, e, random in zip(got, expected, drawn):
                assert g.shape == e.shape, f"batch {batch}: ONNX shape {g.shape} != MXNet {e.shape}"
                assert g.dtype == e.dtype, f"batch {batch}: ONNX dtype {g.dtype} != MXNet {e.dtype}"
                if random:  # a fresh draw: only its law can match (proof.DISTRIBUTION_RULE)
                    row = compare_distribution(e, g)
                    assert row["passed"], f"batch {batch}, ORT optimize={optimize}: {row}"
                    continue
                np.testing.assert_allclose(g, e, rtol=0, atol=c.atol,
                                           err_msg=f"batch {batch}, ORT optimize={optimize}")


# ---- the registry and the case table cover each other ----------------------------------------


@pytest.mark.parametrize("op", registered_ops())
def test_every_registered_op_has_a_case(op: str) -> None:
    assert CASES.get(op), f"translation for '{op}' has no case in tests/onnx_cases.py"


@pytest.mark.parametrize("op", sorted(CASES))
def test_every_case_op_is_registered(op: str) -> None:
    assert op in registered_ops()


# ---- each translation against MXNet ----------------------------------------------------------


# The opsets every case runs at: the range ends, the default, 18 (Reduce* axes became inputs) and
# the first opset of each version of the case's op (where its translation switches).
_KEY_OPSETS = (13, 17, 18, 21)


def _case_opsets(op: str) -> List[int]:
    ranges = opset_ranges(op)
    wanted = set(_KEY_OPSETS) | {lo for lo, _ in ranges}
    return sorted(o for o in wanted if any(lo <= o <= hi for lo, hi in ranges))


_OP_CASE_OPSETS = [(op, c, o) for op, c in all_cases() for o in _case_opsets(op) if o >= c.min_opset]


@pytest.mark.parametrize("op,c,opset", _OP_CASE_OPSETS, ids=[f"{op}-{c.id}-opset{o}" for op, c, o in _OP_CASE_OPSETS])
def test_translation_matches_mxnet(op: str, c: Case, opset: int) -> None:
    assert op in _ops_in(c.symbol), f"case {c.id} does not contain op {op}"
    model, params = export_case(c, opset=opset)
    assert model.opset_import[0].version == opset
    assert_matches_mxnet(c, model, params)


@pytest.mark.parametrize("op", registered_ops())
def test_every_version_of_an_op_is_exercised(op: str) -> None:
    ranges = opset_ranges(op)
    assert all(any(lo <= o <= hi for o in _case_opsets(op)) for lo, hi in ranges), ranges


def _representative_net() -> Case:
    d = mx.sym.Variable("data")
    x = mx.sym.BatchNorm(d, fix_gamma=False, use_global_stats=True, name="input_bn")
    x = mx.sym.Convolution(x, kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv1")
    x = mx.sym.BatchNorm(x, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="relu1")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="avg", name="pool1")
    x = mx.sym.Reshape(x, shape=(0, -1), name="flat")
    x = mx.sym.FullyConnected(x, num_hidden=8, name="fc1")
    x = mx.sym.LayerNorm(x, name="ln1")
    x = mx.sym.LeakyReLU(x, act_type="gelu", name="gelu1")
    x = mx.sym.Dropout(x, p=0.5, name="drop1")
    x = mx.sym.FullyConnected(x, num_hidden=3, name="fc2")
    return Case("net", mx.sym.SoftmaxOutput(x, name="softmax"), {"data": (2, 6, 6)}, atol=1e-5)


@pytest.mark.parametrize("opset", SUPPORTED_OPSETS)
def test_representative_net_every_opset(opset: int) -> None:
    c = _representative_net()
    model, params = export_case(c, opset=opset)
    assert model.opset_import[0].version == opset
    assert_matches_mxnet(c, model, params)


def _opset_sensitive_net() -> Case:
    """Every op whose ONNX form changes with the opset (Reduce* axes, Squeeze/Unsqueeze axes)."""
    d = mx.sym.Variable("data")
    heads = [getattr(mx.sym, op)(d, axis=2, keepdims=True, name=f"{op}_k") for op in ("sum", "mean", "max", "min", "prod")]
    heads.append(mx.sym.mean(d, name="mean_all"))
    heads.append(mx.sym.squeeze(mx.sym.expand_dims(d, axis=1, name="ed"), axis=1, name="sq"))
    heads.append(mx.sym.softmax(d, axis=1, temperature=2.5, name="sm_t"))  # ReduceMax before the division
    heads.append(mx.sym.Pooling(mx.sym.expand_dims(d, axis=1, name="ed4"), kernel=(1, 1), global_pool=True,
                                pool_type="sum", name="gsum"))
    return Case("opset_sensitive", mx.sym.Group(heads), {"data": (3, 4)}, positive, atol=1e-5)


@pytest.mark.parametrize("opset", SUPPORTED_OPSETS)
def test_opset_sensitive_ops_every_opset(opset: int) -> None:
    c = _opset_sensitive_net()
    model, params = export_case(c, opset=opset)
    assert_matches_mxnet(c, model, params)


def test_supported_opsets_cover_13_to_19() -> None:
    assert set(range(13, 20)) <= set(SUPPORTED_OPSETS)


# ---- graph contract ---------------------------------------------------------------------------


def test_label_is_dropped_and_names_are_mxnets() -> None:
    c = _representative_net()
    model, _ = export_case(c)
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == c.symbol.list_outputs() == ["softmax_output"]
    consumed = {i for n in model.graph.node for i in n.input}
    assert "softmax_label" not in consumed
    assert "softmax_label" not in {t.name for t in model.graph.initializer}
    node_names = {n.name for n in model.graph.node}
    assert {"conv1", "bn1", "fc1", "fc2", "softmax"} <= node_names
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [2, 6, 6]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_dynamic_batch_runs_at_other_batch_sizes() -> None:
    c = _representative_net()
    model, params = export_case(c)
    for batch in (2, 7):
        inputs = _inputs(c, batch, seed=batch)
        got = ort_run(model, inputs)[0]
        np.testing.assert_allclose(got, mxnet_reference(c.symbol, params, inputs)[0], rtol=0, atol=1e-5)
        assert got.shape == (batch, 3)


def test_static_batch_when_asked() -> None:
    c = _representative_net()
    model, _ = export_case(c, dynamic_batch=False)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == BATCH
    with pytest.raises(Exception):
        ort_run(model, _inputs(c, 2))


def test_batchnorm_fix_gamma_exports_ones_not_the_stored_gamma() -> None:
    d = mx.sym.Variable("data")
    sym = mx.sym.BatchNorm(d, name="bn")  # fix_gamma absent: MXNet's default True
    shapes = {"data": (4, 3)}
    params = {"bn_gamma": np.array([5.0, -2.0, 0.5], np.float32), "bn_beta": np.array([0.1, 0.2, 0.3], np.float32),
              "bn_moving_mean": np.array([1.0, -1.0, 2.0], np.float32),
              "bn_moving_var": np.array([4.0, 0.25, 2.0], np.float32)}
    x = np.random.RandomState(3).randn(4, 3).astype(np.float32)
    # Independent reference: numpy with gamma = 1 and MXNet's eps default 1e-3.
    expected = (x - params["bn_moving_mean"]) / np.sqrt(params["bn_moving_var"] + 1e-3) + params["bn_beta"]
    mx_out = mxnet_reference(sym, params, {"data": x})[0]
    np.testing.assert_allclose(mx_out, expected, rtol=0, atol=1e-5)
    model = to_onnx(sym, params, shapes)
    np.testing.assert_allclose(ort_run(model, {"data": x})[0], expected, rtol=0, atol=1e-5)
    assert "bn_gamma" not in {t.name for t in model.graph.initializer}
    # The folded scale carries MXNet's eps default (1e-3), not ONNX's 1e-5.
    scale = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}["bn/scale"]
    np.testing.assert_allclose(scale.reshape(-1), 1 / np.sqrt(params["bn_moving_var"] + 1e-3), rtol=1e-6)


def test_batchnorm_with_a_computed_parameter_is_refused() -> None:
    # The exact form folds the scale at export time, from stored values.
    d = mx.sym.Variable("data")
    gamma = mx.sym.Variable("g") * 2
    sym = mx.sym.BatchNorm(d, gamma=gamma, fix_gamma=False, name="bn")
    with pytest.raises(ExportError, match=r"node 'bn'.*input '_mulscalar\d+_output' must be a stored parameter"):
        to_onnx(sym, {"g": np.ones(3, np.float32), "bn_beta": np.zeros(3, np.float32),
                      "bn_moving_mean": np.zeros(3, np.float32), "bn_moving_var": np.ones(3, np.float32)},
                {"data": (2, 3)})


def test_unknown_op_names_the_op_and_node() -> None:
    sym = mx.sym.sort(mx.sym.Variable("data"), name="my_sorter")
    for call in (lambda: to_onnx(sym, {}, {"data": (2, 3)}), lambda: check_translatable(sym)):
        with pytest.raises(ExportError) as info:
            call()
        message = str(info.value)
        assert "'sort'" in message and "'my_sorter'" in message and "FullyConnected" in message


def test_check_translatable_accepts_a_known_graph() -> None:
    check_translatable(_representative_net().symbol)


def test_duplicate_registration_is_an_error() -> None:
    before = registered_ops()
    with pytest.raises(ExportError, match="duplicate"):
        register("FullyConnected")(lambda ctx: None)
    assert registered_ops() == before


def test_deconvolution_target_shape_twin_is_native_mxnet(tmp_path) -> None:
    """MXNet's oneDNN kernel cannot run target_shape here; its native kernel can (in a subprocess,
    since MXNET_MKLDNN_ENABLED is read once per process). The twin used as reference must match it."""
    script = tmp_path / "twin.py"
    script.write_text(
        "import mxnet as mx, numpy as np\n"
        "rng = np.random.RandomState(0)\n"
        "x = mx.nd.array(rng.randn(2, 2, 4, 5)); w = mx.nd.array(rng.randn(2, 2, 4, 4))\n"
        "kw = dict(kernel=(4, 4), stride=(2, 2), num_filter=2, no_bias=True)\n"
        "a = mx.nd.Deconvolution(x, w, target_shape=(9, 10), **kw).asnumpy()\n"
        "b = mx.nd.Deconvolution(x, w, pad=(1, 1), adj=(1, 0), **kw).asnumpy()\n"
        "print(a.shape == b.shape == (2, 2, 9, 10), float(np.abs(a - b).max()))\n"
    )
    env = dict(os.environ, MXNET_MKLDNN_ENABLED="0", MXNET_SUBGRAPH_VERBOSE="0")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    same_shape, max_diff = done.stdout.split()[-2:]
    assert same_shape == "True" and float(max_diff) == 0.0


def test_softmax_output_4d_without_mode_is_refused() -> None:
    sym = mx.sym.SoftmaxOutput(mx.sym.Variable("data"), name="softmax")
    with pytest.raises(ExportError, match="backend-dependent"):
        to_onnx(sym, {}, {"data": (2, 3, 4, 5)})


def test_dropout_always_is_refused() -> None:
    sym = mx.sym.Dropout(mx.sym.Variable("data"), mode="always", name="drop")
    with pytest.raises(ExportError, match="always"):
        to_onnx(sym, {}, {"data": (2, 3)})


def test_missing_input_shape_is_reported() -> None:
    sym = mx.sym.elemwise_add(mx.sym.Variable("data"), mx.sym.Variable("other"), name="add")
    with pytest.raises(ExportError, match="other"):
        to_onnx(sym, {}, {"data": (2, 3)})


def test_unsupported_opset_is_refused() -> None:
    with pytest.raises(ExportError, match="opset"):
        to_onnx(_representative_net().symbol, {}, {"data": (1, 2, 6, 6)}, opset=9)


def test_priority_ops_are_registered() -> None:
    needed = {"FullyConnected", "Convolution", "Pooling", "Activation", "LeakyReLU", "BatchNorm", "Dropout",
              "Flatten", "Concat", "elemwise_add", "SoftmaxOutput", "LinearRegressionOutput",
              "LogisticRegressionOutput", "Deconvolution", "LayerNorm", "InstanceNorm", "Reshape", "transpose",
              "slice_axis", "clip", "softmax", "log_softmax", "Embedding", "MAERegressionOutput"}
    assert needed <= set(registered_ops())
    assert registered_ops() == sorted(registered_ops())


def test_int64_input_dtype_for_embedding() -> None:
    sym = mx.sym.Embedding(mx.sym.Variable("data"), input_dim=6, output_dim=2, name="emb")
    weight = np.random.RandomState(0).randn(6, 2).astype(np.float32)
    model = to_onnx(sym, {"emb_weight": weight}, {"data": (3, 4)}, input_dtypes={"data": "int64"})
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    idx = np.array([[0, 5, 2, 2], [1, 1, 3, 4]], dtype=np.int64)
    np.testing.assert_array_equal(ort_run(model, {"data": idx})[0], weight[idx])


def test_group_outputs_keep_mxnet_names_and_internal_reuse() -> None:
    d = mx.sym.Variable("data")
    hidden = mx.sym.FullyConnected(d, num_hidden=4, name="fc1")
    out = mx.sym.FullyConnected(mx.sym.Activation(hidden, act_type="relu", name="r"), num_hidden=2, name="fc2")
    sym = mx.sym.Group([mx.sym.LinearRegressionOutput(out, name="reg"), hidden])
    c = Case("group", sym, {"data": (3,)})
    model, params = export_case(c)
    assert [o.name for o in model.graph.output] == sym.list_outputs() == ["reg_output", "fc1_output"]
    assert [i.name for i in model.graph.input] == ["data"]
    inputs = _inputs(c, BATCH)
    reg, fc1 = ort_run(model, inputs)
    np.testing.assert_allclose(reg, mxnet_reference(sym, params, inputs)[0], rtol=0, atol=1e-5)
    # fc1_output against numpy, not MXNet: MXNet 1.9.1's oneDNN subgraph fuses fc1+relu and then
    # reports the fused (post-ReLU) values as fc1_output at batch 5 (max diff 2.08, measured;
    # exact with MXNET_SUBGRAPH_BACKEND=NONE).
    x = inputs["data"].astype(np.float64)
    expected = x @ params["fc1_weight"].T.astype(np.float64) + params["fc1_bias"]
    np.testing.assert_allclose(fc1, expected, rtol=0, atol=1e-5)


def test_export_is_deterministic() -> None:
    c = _representative_net()
    a, _ = export_case(c)
    b, _ = export_case(c)
    assert a.SerializeToString() == b.SerializeToString()


def test_fixed_reshape_needs_static_batch() -> None:
    sym = mx.sym.Reshape(mx.sym.Variable("data"), shape=(20,), name="rs")
    with pytest.raises(ExportError, match="dynamic_batch=False"):
        to_onnx(sym, {}, {"data": (5, 4)})
    model = to_onnx(sym, {}, {"data": (5, 4)}, dynamic_batch=False)
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    np.testing.assert_array_equal(ort_run(model, {"data": x})[0], x.reshape(20))


def test_unknown_input_name_is_reported() -> None:
    sym = mx.sym.relu(mx.sym.Variable("data"), name="r")
    with pytest.raises(ExportError, match="'nope'"):
        to_onnx(sym, {}, {"data": (2, 3), "nope": (2, 3)})
