"""input.dtype: uint8: the data variable is declared uint8 and cast to float32 before the
input layer. The checkpoint (through a user's own Module), the deploy symbol, the ONNX model
and Triton take raw bytes; training computes what the float32 graph computes; data that a
byte cannot hold are refused at their line and column."""
import io
import json
import os
import shutil

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import ROOT
from serving_cases import run
from symbuilder.graph import build_symbol
from symbuilder.pipeline import build
from symbuilder.spec.load import load_spec, loads_spec

DIGITS = os.path.join(ROOT, "specs", "data", "digits.csv")  # 64 pixels 0..16, label digit

SPEC = """\
name: {name}
input: {{shape: [1, 8, 8]{dtype}}}
layers:
  - {{op: Convolution, name: conv, num_filter: 4, kernel: [3, 3]}}
  - {{op: Activation, name: relu, act_type: relu}}
  - {{op: Flatten, name: flat}}
  - {{op: FullyConnected, name: fc, num_hidden: 10}}
output: {{op: SoftmaxOutput, name: softmax}}
data:
  train: {{path: {data}, label: digit}}
train: {{epochs: 2, batch_size: 64, optimizer: adam, optimizer_params: {{learning_rate: 0.01}},
        seed: 3}}
export: {{formats: [checkpoint, onnx, triton]}}
"""


def spec_text(name, dtype="uint8", data="digits.csv"):
    return SPEC.format(name=name, dtype=f", dtype: {dtype}" if dtype else "", data=data)


def write(folder, text):
    shutil.copy(DIGITS, folder / "digits.csv")
    path = folder / "spec.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The same network built from the same data, float32 and uint8 input."""
    out = {}
    for dtype in ("float32", "uint8"):
        folder = tmp_path_factory.mktemp(dtype)
        spec = load_spec(write(folder, spec_text("digits_" + dtype, dtype)))
        out[dtype] = build(spec, out_dir=str(folder / "export")), folder / "export"
    return out


def digit_rows(n=50):
    values = np.loadtxt(DIGITS, delimiter=",", skiprows=1)
    return values[:n, :64].reshape(n, 1, 8, 8)  # label digit is the last column


def test_dtype_defaults_to_float32_and_takes_only_float32_or_uint8(tmp_path, capsys):
    assert loads_spec(spec_text("t", dtype=None)).input.dtype == "float32"
    path = write(tmp_path, spec_text("t", dtype="int8"))
    code, _, err = run(["validate", path], capsys)
    assert code == 2
    assert err.strip() == (f"{path}:2:27: input.dtype: expected one of float32, uint8, "
                           "received 'int8' (string) (did you mean 'uint8'?)"), err


def test_the_symbol_declares_uint8_and_casts_before_the_input_layer():
    symbol = build_symbol(loads_spec(spec_text("t")))
    arg_types, _, _ = symbol.infer_type()
    types = dict(zip(symbol.list_arguments(), arg_types))
    assert types["data"] == np.uint8 and types["data_norm_gamma"] == np.float32
    nodes = json.loads(symbol.tojson())["nodes"]
    by_name = {n["name"]: n for n in nodes}
    cast = by_name["data_float32"]
    assert cast["op"] == "Cast" and cast["attrs"]["dtype"] == "float32"
    assert nodes[cast["inputs"][0][0]]["name"] == "data"
    assert nodes[by_name["data_norm"]["inputs"][0][0]]["name"] == "data_float32"


def test_a_layer_named_like_the_cast_is_one_located_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, spec_text("t").replace("name: conv,", "name: data_float32,"))
    code, _, err = run(["validate", "spec.yaml"], capsys)
    assert code == 2
    assert err == ("spec.yaml:4:23: layers[0].name: 'data_float32', which is already the name "
                   "of the float32 cast of input 'data'; rename one of them\n")


def test_training_on_bytes_gives_the_float32_models_parameters(exports):
    """The same pixel values reach the input layer: the same seed trains to the same
    parameters, bit for bit."""
    floats, _ = exports["float32"]
    bytes_, _ = exports["uint8"]
    assert set(floats.result.arg_params) == set(bytes_.result.arg_params)
    for name, value in floats.result.arg_params.items():
        np.testing.assert_array_equal(bytes_.result.arg_params[name].asnumpy(), value.asnumpy(),
                                      name)
    assert floats.manifest["metrics"] == bytes_.manifest["metrics"]


def test_a_users_module_binds_the_checkpoint_with_uint8_data(exports):
    result, folder = exports["uint8"]
    epoch = result.manifest["epoch"]
    x = digit_rows()
    for prefix in ("digits_uint8", "digits_uint8-deploy"):
        symbol, arg, aux = mx.model.load_checkpoint(str(folder / prefix), epoch)
        labels = ["softmax_label"] if prefix == "digits_uint8" else []
        mod = mx.mod.Module(symbol, data_names=["data"], label_names=labels, context=mx.cpu())
        mod.bind(data_shapes=[mx.io.DataDesc("data", x.shape, np.uint8)], for_training=False,
                 label_shapes=[("softmax_label", (len(x),))] if labels else None)
        mod.set_params(arg, aux)
        mod.forward(mx.io.DataBatch([mx.nd.array(x, dtype="uint8")]), is_train=False)
        assert mod._exec_group.execs[0].arg_dict["data"].dtype == np.uint8
        got = mod.get_outputs()[0].asnumpy()
        # Independent: the float32 export's ONNX model on the same pixels as float32.
        want = ort.InferenceSession(str(exports["float32"][1] / "digits_float32.onnx")).run(
            None, {"data": x.astype(np.float32)})[0]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_onnx_triton_and_manifest_take_uint8(exports, capsys):
    result, folder = exports["uint8"]
    model = onnx.load(str(folder / "digits_uint8.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    config = (folder / "triton" / "digits_uint8" / "config.pbtxt").read_text()
    assert 'name: "data"\n    data_type: TYPE_UINT8' in config
    assert result.manifest["inputs"][0]["dtype"] == "uint8"
    parity = result.manifest["parity"]
    assert parity["passed"] and parity["inputs"]["held_out"]["samples"] > 0
    # The proof's random samples were bytes: whole numbers inside the held-out range.
    assert all(float(v).is_integer() for v in np.ravel(parity["random_range"]["data"]["low"]))
    x = digit_rows().astype(np.uint8)
    session = ort.InferenceSession(str(folder / "digits_uint8.onnx"))
    floats = ort.InferenceSession(str(exports["float32"][1] / "digits_float32.onnx"))
    np.testing.assert_allclose(session.run(None, {"data": x})[0],
                               floats.run(None, {"data": x.astype(np.float32)})[0], atol=1e-6)
    code, out, err = run(["verify", str(folder)], capsys)
    assert code == 0 and ": ok (" in out + err, err


def _write_rows(folder, edit):
    values = np.loadtxt(DIGITS, delimiter=",", skiprows=1)
    edit(values)
    header = open(DIGITS).readline()
    lines = [",".join(f"{v:g}" for v in row) for row in values]
    (folder / "digits.csv").write_text(header + "\n".join(lines) + "\n")


@pytest.mark.parametrize("value, shown", [(12.5, "12.5"), (256, "256"), (-1, "-1")])
@pytest.mark.parametrize("command", ["validate", "build"])
def test_csv_values_a_byte_cannot_hold_are_refused_at_their_line(tmp_path, capsys, monkeypatch,
                                                                 value, shown, command):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, spec_text("t"))
    _write_rows(tmp_path, lambda v: v.__setitem__((6, 9), value))  # row 6 = file line 8
    before = sorted(os.listdir(tmp_path))
    code, _, err = run([command, "spec.yaml"] + (["--out", "out", "-q"]
                                                 if command == "build" else []), capsys)
    assert code == 2
    assert err == (f"digits.csv:8: column 'px1_1': {shown} is not a whole number in 0..255, "
                   "which input 'data' (dtype: uint8) takes\n")
    assert sorted(os.listdir(tmp_path)) == before  # no export, no cache


def test_npz_values_are_checked_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = digit_rows(100).reshape(100, 64)
    x[40, 3] = 300
    y = np.loadtxt(DIGITS, delimiter=",", skiprows=1)[:100, 64]
    np.savez(tmp_path / "d.npz", X=x, y=y)
    path = write(tmp_path, spec_text("t", data="d.npz").replace(", label: digit", ""))
    code, _, err = run(["validate", "spec.yaml"], capsys)
    assert code == 2
    assert err == ("d.npz: row 40, column 'x3': 300 is not a whole number in 0..255, which "
                   "input 'data' (dtype: uint8) takes\n")


def test_float32_inputs_take_any_values(tmp_path, capsys):
    path = write(tmp_path, spec_text("t", dtype="float32"))
    _write_rows(tmp_path, lambda v: v.__setitem__((6, 9), 12.5))
    code, _, err = run(["validate", path], capsys)
    assert code == 0, err


def test_predict_refuses_csv_cells_a_byte_cannot_hold(exports, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_rows(tmp_path, lambda v: v.__setitem__((3, 9), 12.5))
    code, out, err = run(["predict", str(exports["uint8"][1]), "digits.csv", "--out", "p.csv"],
                         capsys)
    assert code == 2 and out == ""
    assert err == ("digits.csv: column 'px1_1': 12.5 is not a whole number in 0..255, which "
                   "input 'data' (dtype: uint8) takes\n")
    assert not os.path.exists("p.csv")
    # Whole bytes predict as the float32 model does on the same values.
    _write_rows(tmp_path, lambda v: None)
    outs = [run(["predict", str(exports[d][1]), "digits.csv"], capsys) for d in exports]
    assert [o[0] for o in outs] == [0, 0]
    floats, bytes_ = (np.loadtxt(io.StringIO(o[1]), delimiter=",", skiprows=1) for o in outs)
    np.testing.assert_allclose(bytes_, floats, atol=1e-6)


def test_verify_data_refuses_values_a_byte_cannot_hold(exports, tmp_path, capsys):
    x = digit_rows(5)
    np.save(tmp_path / "ok.npy", x)
    code, out, err = run(["verify", str(exports["uint8"][1]), "--data", str(tmp_path / "ok.npy")],
                         capsys)
    assert code == 0, err
    x[2, 0, 1, 1] = 300
    np.save(tmp_path / "bad.npy", x)
    code, out, err = run(["verify", str(exports["uint8"][1]), "--data",
                          str(tmp_path / "bad.npy")], capsys)
    assert code == 2
    assert err == (f"{tmp_path / 'bad.npy'}: row 2, column 'px1_1': 300 is not a whole number in 0..255, which "
                   "input 'data' (dtype: uint8) takes\n"), err
