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


@pytest.fixture(scope="module")
def embedding(tmp_path_factory):
    """Embedding (100 rows) -> FullyConnected, bound with an int64 `ids` input."""
    ids = mx.sym.var("ids")
    net = mx.sym.FullyConnected(mx.sym.Embedding(ids, input_dim=100, output_dim=8, name="emb"),
                                num_hidden=3, name="fc")
    return _save(net, tmp_path_factory.mktemp("emb"), "emb",
                 [mx.io.DataDesc("ids", (1, 16), np.int64)])


def test_an_int64_index_input_exports_with_its_range_and_matches_mxnet(embedding, tmp_path,
                                                                       capsys):
    out = str(tmp_path / "emb.onnx")
    code, stdout, err = run(["export", embedding, "0", "--input", "ids=1,16:int64",
                             "--input-range", "ids=0:99", "--out", out], capsys)
    assert code == 0, err
    assert "  input ids (int64): random samples integers in [0, 99] (--input-range)\n" in stdout
    assert "  output fc_output: max|diff|=" in stdout
    model = onnx.load(out)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    # Rows 0 and 99 (the ends of the range) and everything between, against MXNet's Module.
    ids = np.concatenate([np.arange(100), np.arange(99, 87, -1)]).astype(np.int64).reshape(7, 16)
    np.testing.assert_allclose(_ort(out, {"ids": ids})[0], _module_forward(embedding,
                               {"ids": ids})[0], atol=1e-5, rtol=1e-5)


def test_an_integer_input_without_a_range_takes_0_to_9_and_says_so(embedding, tmp_path,
                                                                   capsys):
    code, stdout, err = run(["export", embedding, "0", "--input", "ids=1,16:int64", "--out",
                             str(tmp_path / "e.onnx")], capsys)
    assert code == 0, err
    assert ("  input ids (int64): random samples integers in [0, 9] (default, --input-range "
            "to change)\n") in stdout


def test_random_integer_samples_cover_the_range_inclusive_and_repeat():
    from symbuilder import proof
    draw = proof.random_inputs({"ids": (16,)}, 500, seed=5, ranges={"ids": {"low": 3,
                                                                            "high": 7}},
                               dtypes={"ids": "int64"})["ids"]
    assert draw.dtype == np.int64 and draw.shape == (500, 16)
    counts = np.bincount(draw.ravel(), minlength=8)
    assert counts[:3].sum() == 0 and np.all(counts[3:] > 0.15 * draw.size)  # ~0.2 each
    again = proof.random_inputs({"ids": (16,)}, 500, seed=5, ranges={"ids": {"low": 3,
                                                                             "high": 7}},
                                dtypes={"ids": "int64"})["ids"]
    np.testing.assert_array_equal(draw, again)


@pytest.mark.parametrize("extra, expected", [
    (["--input", "ids=1,16:int46"], "symbuilder: error: --input 'ids=1,16:int46': unknown "
     "dtype 'int46' (one of float32, float16, float64, int8, int32, int64, uint8, bool); did "
     "you mean 'int64'?"),
    (["--input", "ids=1,16:int64", "--input-range", "ids=9:0"],
     "symbuilder: error: --input-range 'ids=9:0': low 9 > high 0"),
    (["--input", "ids=1,16:int64", "--input-range", "ids=0-9"],
     "symbuilder: error: --input-range 'ids=0-9': expected NAME=LOW:HIGH with finite numbers"),
    (["--input", "ids=1,16:int64", "--input-range", "idx=0:9"],
     "symbuilder: error: --input-range idx: not an --input (the inputs: ids)"),
    (["--input", "ids=1,16:uint8", "--input-range", "ids=0:999"],
     "symbuilder: error: --input-range ids=0:999: a uint8 input takes integer bounds in "
     "[0, 255]"),
    (["--input", "ids=1,16:int64", "--input-range", "ids=0:9.5"],
     "symbuilder: error: --input-range ids=0:9.5: an int64 input takes integer bounds in"),
])
def test_bad_input_dtypes_and_ranges_are_one_line_exit_2(embedding, tmp_path, capsys, extra,
                                                         expected):
    out = str(tmp_path / "x.onnx")
    code, stdout, err = run(["export", embedding, "0", "--out", out] + extra, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), err
    assert stdout == "" and os.listdir(tmp_path) == []


def test_a_float64_input_is_bound_as_float64_in_mxnet_and_onnx(tmp_path):
    from symbuilder import proof
    from symbuilder.serving import legacy
    x = mx.sym.var("x")
    prefix = _save(mx.sym.sqrt(mx.sym.abs(x)) * 3, tmp_path, "f64",
                   [mx.io.DataDesc("x", (1, 4), np.float64)])
    report = legacy.export_checkpoint(prefix, 0, {"x": (1, 4)}, input_dtypes={"x": "float64"})
    # A float32 reference (the old cast) would differ from ORT's float64 by ~1e-7.
    assert report["parity"]["max_abs"] < 1e-12
    feed = np.array([[0.5, 2.0, -9.0, 1e-3]])
    want = np.sqrt(np.abs(feed)) * 3
    np.testing.assert_allclose(_ort(report["onnx"], {"x": feed})[0], want, rtol=1e-15)
    sym, _, _ = mx.model.load_checkpoint(prefix, 0)
    got = proof.mxnet_forward(sym, {}, {}, {"x": feed}, {"x": "float64"})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-15)
    # Without an explicit dtype, float64 samples still go in as float32 (float32 graphs).
    assert proof.mxnet_forward(mx.sym.abs(x), {}, {}, {"x": feed})[0].dtype == np.float32


def test_a_dtype_the_graph_rejects_is_one_located_line(tmp_path, capsys):
    x = mx.sym.var("x")
    prefix = _save(mx.sym.FullyConnected(x, num_hidden=2, name="fc"), tmp_path, "fc",
                   [("x", (1, 4))])
    before = sorted(os.listdir(tmp_path))
    code, stdout, err = run(["export", prefix, "0", "--input", "x=1,4:float16"], capsys)
    assert code == 2 and stdout == ""
    assert err.strip().splitlines() == [
        f"{prefix}-symbol.json: --input x:float16: operator 'fc' rejects the dtypes: "
        "assign(&dattr, vec.at(i)): Incompatible attr in node fc at 1-th input: expected "
        "float16, got float32"]
    assert sorted(os.listdir(tmp_path)) == before


def test_two_outputs_are_both_compared_and_the_integer_one_exactly(tmp_path, capsys):
    x = mx.sym.var("x")
    scores = mx.sym.FullyConnected(x, num_hidden=5, name="fc")
    best = mx.sym.Cast(mx.sym.argmax(scores, axis=1), dtype="int32", name="best")
    top = mx.sym.topk(scores, k=2, ret_typ="indices", dtype="int32", name="top")
    prefix = _save(mx.sym.Group([scores, best, top]), tmp_path, "multi", [("x", (1, 6))])
    out = str(tmp_path / "multi.onnx")
    code, stdout, err = run(["export", prefix, "0", "--input", "x=1,6", "--out", out], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[-3].startswith("  output fc_output: max|diff|=")
    assert lines[-3].endswith(", compared within tolerance")
    assert lines[-2] == "  output best_output: max|diff|=0, compared exactly (integer)"
    assert lines[-1] == "  output top_output: max|diff|=0, compared exactly (integer)"
    feed = {"x": np.random.RandomState(1).standard_normal((9, 6)).astype(np.float32)}
    got, ref = _ort(out, feed), _module_forward(prefix, feed)
    assert [g.dtype for g in got] == [np.float32, np.int32, np.int32]
    np.testing.assert_allclose(got[0], ref[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[2], ref[2])
    np.testing.assert_array_equal(got[1], ref[0].argmax(axis=1))  # numpy's own argmax


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_outputs_are_compared_exactly_whatever_the_tolerance(dtype):
    from symbuilder import proof
    ref = np.array([[0, 1, 1, 0]], dtype=dtype)
    got = ref.copy()
    got[0, 0] = 1
    row = proof.compare(ref, got, atol=10.0, rtol=10.0)
    assert row["exact"] and not row["passed"] and row["max_abs"] == 1.0
    assert proof.compare(ref, ref.copy(), atol=0.0, rtol=0.0)["passed"]
    # The same difference in a float output is within that tolerance.
    assert proof.compare(ref.astype(np.float32), got.astype(np.float32), 10.0, 10.0)["passed"]


def test_int64_outputs_beyond_float64_precision_are_still_compared_exactly():
    from symbuilder import proof
    ref = np.array([2 ** 62], dtype=np.int64)
    assert not proof.compare(ref, ref + 1, atol=0.0, rtol=0.0)["passed"]


def test_to_onnx_is_documented_argument_by_argument_and_in_the_readme():
    import inspect
    from symbuilder.onnx import to_onnx
    doc = inspect.getdoc(to_onnx)
    for name in inspect.signature(to_onnx).parameters:
        assert f"``{name}``" in doc, name
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")).read()
    assert "`symbuilder.onnx.to_onnx(symbol, params, input_shapes,\n*, opset=17, " \
           "dynamic_batch=True, model_name=\"symbuilder\", input_dtypes=None)`" in readme


def test_half_precision_inputs_and_outputs_export_with_their_dtype(tmp_path, capsys):
    d = mx.sym.Variable("data", dtype="float16")
    hidden = mx.sym.FullyConnected(mx.sym.Cast(d, dtype="float32"), num_hidden=3, name="fc")
    half = mx.sym.Cast(mx.sym.tanh(hidden), dtype="float16", name="half")
    prefix = str(tmp_path / "half")
    rng = np.random.RandomState(0)
    mx.model.save_checkpoint(prefix, 0, mx.sym.Group([hidden, half]),
                             {"fc_weight": mx.nd.array(rng.randn(3, 4)),
                              "fc_bias": mx.nd.zeros(3)}, {})
    code, out, err = run(["export", prefix, "0", "--input", "data=1,4:float16"], capsys)
    assert code == 0, err
    assert "  input data (float16): random samples standard normal" in out
    model = onnx.load(f"{prefix}-0000.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [
        onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16]
    x = rng.randn(5, 4).astype(np.float16)
    session = ort.InferenceSession(f"{prefix}-0000.onnx", providers=["CPUExecutionProvider"])
    got = session.run(None, {"data": x})[1]
    weight = np.random.RandomState(0).randn(3, 4)  # the first draw above: fc_weight
    want = np.tanh(x.astype(np.float64) @ weight.T)
    np.testing.assert_allclose(got.astype(np.float64), want, atol=4e-3, rtol=0)
