"""Serving: `symbuilder export` of any checkpoint, the parity suite, Triton layouts, `predict`,
`verify`, and legacy MXNet use of an export.

Every check compares with an independent computation: MXNet's own Module/Gluon outputs,
ONNX Runtime run directly here, numpy min/max, hashlib, the ONNX model's own graph.
"""
import csv
import hashlib
import io
import json
import os
import re
import shutil

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import write_spec

from symbuilder import proof
from symbuilder.export import triton
from symbuilder.export.folder import write_manifest
from symbuilder.serving import audit, legacy
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


# ------------------------------------------------------------------------------------------
# A checkpoint written by plain mx.sym code, not by symbuilder


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


def test_plain_mxnet_conv_checkpoint_exports_and_matches_module_predict(plain_conv, tmp_path,
                                                                        capsys):
    prefix, X = plain_conv
    _, arg_params, _ = mx.model.load_checkpoint(prefix, 2)
    assert not np.allclose(arg_params["bn1_gamma"].asnumpy(), 1.0)  # fix_gamma really matters
    out = str(tmp_path / "conv.onnx")
    code, stdout, err = run(["export", prefix, "2", "--input", "data=1,3,8,8", "--out", out],
                            capsys)
    assert code == 0, err
    assert stdout.startswith(f"{out}: verified against MXNet: max|diff|=")
    assert "64 random samples, batch 1 and 64" in stdout
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["data"]  # the label is not an input
    x = X[:7]
    expected = module_predict(prefix, 2, x)
    for batch in (x[:1], x):  # dynamic batch axis
        np.testing.assert_allclose(ort_run(out, batch), expected[: len(batch)], atol=1e-5, rtol=0)


def test_export_with_real_samples_checks_them_and_random_ones_in_their_range(plain_conv,
                                                                              tmp_path):
    prefix, X = plain_conv
    report = legacy.export_checkpoint(prefix, 2, {"data": (1, 3, 8, 8)},
                                       out=str(tmp_path / "m.onnx"),
                                       data={"data": X[:10].reshape(10, -1)}, random_samples=12)
    parity = report["parity"]
    assert parity["inputs"]["held_out"]["samples"] == 10
    assert parity["inputs"]["random"]["samples"] == 12
    rows = {(d["inputs"], d["batch"], d["ort_level"]) for d in parity["details"]}
    assert rows == {(s, b, lvl) for s, b in (("held_out", 1), ("held_out", 10), ("random", 1),
                                             ("random", 12))
                    for lvl in ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL")}
    # The recorded range is numpy's per-feature min/max of the samples.
    np.testing.assert_array_equal(np.array(parity["random_range"]["data"]["low"]),
                                  X[:10].min(axis=0))
    np.testing.assert_array_equal(np.array(parity["random_range"]["data"]["high"]),
                                  X[:10].max(axis=0))
    # And the figures are real: ORT run here against MXNet's Module on the same samples.
    got = ort_run(str(tmp_path / "m.onnx"), X[:10])
    direct = float(np.abs(got - module_predict(prefix, 2, X[:10])).max())
    assert parity["inputs"]["held_out"]["max_abs"] >= direct
    assert parity["max_abs"] <= 1e-5


def test_random_inputs_stay_inside_the_given_range_and_are_seeded():
    low = np.array([[0.0, -5.0], [10.0, 3.0]])
    high = np.array([[1.0, -4.0], [10.0, 7.0]])
    ranges = {"x": {"low": low.tolist(), "high": high.tolist()}}
    a = proof.random_inputs({"x": (2, 2)}, 500, seed=4, ranges=ranges)["x"]
    b = proof.random_inputs({"x": (2, 2)}, 500, seed=4, ranges=ranges)["x"]
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (500, 2, 2)
    assert np.all(a >= low.astype(np.float32)) and np.all(a <= high.astype(np.float32))
    assert np.all(a[:, 1, 0] == 10.0)  # a constant feature stays constant
    assert a[:, 0, 0].max() - a[:, 0, 0].min() > 0.9  # and the range is really covered


def _erfinv_checkpoint(folder):
    data = mx.sym.var("data")
    net = mx.sym.erfinv(mx.sym.FullyConnected(data, num_hidden=2, name="fc"), name="odd_node")
    mod = mx.mod.Module(net, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 3))], for_training=False)
    mod.init_params()
    prefix = os.path.join(folder, "odd")
    mod.save_checkpoint(prefix, 0)
    return prefix


@pytest.mark.parametrize("argv, expected", [
    (["{conv}", "7", "--input", "data=1,3,8,8"],
     "{conv}-0007.params: no such checkpoint file (epochs present: 0002)"),
    (["{tmp}/none", "1", "--input", "data=1,3,8,8"], "{tmp}/none-symbol.json: no such checkpoint file"),
    (["{conv}", "2", "--input", "data=1,3,x,8"],
     "symbuilder: error: --input 'data=1,3,x,8': expected NAME=D0,D1,... with positive dims"),
    (["{conv}", "2", "--input", "dat=1,3,8,8"],
     "symbuilder: error: --input dat: not an input of {conv}-symbol.json (its inputs: data, "
     "softmax_label)"),
    (["{conv}", "2", "--input", "data=1,3,8"],
     "{conv}-symbol.json: --input data=1,3,8: operator 'conv1' rejects the shapes: Input data "
     "should be 4D in batch-num_filter-y-x (3 vs. 4)"),
    (["{odd}", "0", "--input", "data=1,3"],
     "{odd}-symbol.json: no ONNX translation for MXNet op 'erfinv' (node 'odd_node'); "
     "symbuilder translates: "),
])
def test_export_mistakes_are_one_located_line_and_exit_2(plain_conv, tmp_path, capsys, argv,
                                                        expected):
    odd = _erfinv_checkpoint(str(tmp_path))
    subst = {"conv": plain_conv[0], "tmp": str(tmp_path), "odd": odd}
    out = str(tmp_path / "x.onnx")
    code, stdout, err = run(["export"] + [a.format(**subst) for a in argv] + ["--out", out],
                            capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(**subst)), err
    assert not os.path.exists(out) and stdout == ""


@pytest.mark.parametrize("value", ["-1e-5", "inf", "nan", "x"])
def test_a_bad_rtol_is_one_line_exit_2_and_writes_nothing(plain_conv, tmp_path, capsys, value):
    out = str(tmp_path / "x.onnx")
    with pytest.raises(SystemExit) as exit_:
        main(["export", plain_conv[0], "2", "--input", "data=1,3,8,8", "--out", out,
              f"--rtol={value}"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert captured.err.strip() == (f"symbuilder export: error: argument --rtol: expected a "
                                    f"number >= 0, received '{value}' (see symbuilder export "
                                    f"--help)")
    assert os.listdir(tmp_path) == []


def test_export_parity_failure_is_exit_1_with_figures_and_writes_nothing(plain_conv, tmp_path,
                                                                         capsys):
    out = str(tmp_path / "x.onnx")
    code, _, err = run(["export", plain_conv[0], "2", "--input", "data=1,3,8,8", "--out", out,
                        "--atol", "1e-30", "--rtol", "0"], capsys)
    assert code == 1
    assert re.match(r"symbuilder: failed: ONNX Runtime disagrees with MXNet: max abs difference "
                    r"\S+ > atol 1e-30 \+ rtol 0 x scale \S+ \(max rel \S+ of the output's "
                    r"scale; random: \S+ on 64 samples; worst: output "
                    r"'softmax_output' at batch (1|64), ORT_(ENABLE|DISABLE)_ALL", err), err
    assert not os.path.exists(out)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".x.onnx")]


# ------------------------------------------------------------------------------------------
# Triton


def parse_pbtxt(text):
    """A small protobuf text-format reader (fields, messages, lists), independent of the writer:
    repeated fields become lists."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if tok.startswith('"'):
            return tok[1:-1]
        return int(tok) if re.fullmatch(r"-?\d+", tok) else tok

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            out.setdefault(key, []).append(value())
        pos += 1
        return {k: v[0] if len(v) == 1 else v for k, v in out.items()}

    return message(None)


@pytest.mark.parametrize("dynamic", [True, False])
def test_triton_config_matches_the_onnx_models_names_types_and_shapes(plain_conv, tmp_path,
                                                                      dynamic):
    prefix, _ = plain_conv
    onnx_path = str(tmp_path / "m.onnx")
    legacy.export_checkpoint(prefix, 2, {"data": (3, 3, 8, 8)}, out=onnx_path,
                              dynamic_batch=dynamic, random_samples=3)
    with open(onnx_path, "rb") as f:
        files = triton.write_triton(str(tmp_path / "repo"), "convnet", f.read())
    assert files == ["triton/convnet/config.pbtxt", "triton/convnet/1/model.onnx"]
    config = parse_pbtxt(open(tmp_path / "repo" / files[0]).read())
    session = ort.InferenceSession(str(tmp_path / "repo" / files[1]),
                                   providers=["CPUExecutionProvider"])
    assert config["name"] == "convnet" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == (triton.TRITON_MAX_BATCH if dynamic else 0)
    for section, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
        entries = config[section]
        assert [e["name"] for e in entries] == [v.name for v in values]
        for entry, v in zip(entries, values):
            assert entry["data_type"] == "TYPE_FP32" and v.type == "tensor(float)"
            dims = entry["dims"]
            if dynamic:
                assert isinstance(v.shape[0], str) and dims == list(v.shape[1:])
            else:
                assert dims == list(v.shape) and v.shape[0] == 3
    assert config["input"][0]["dims"] == ([3, 8, 8] if dynamic else [3, 3, 8, 8])


# ------------------------------------------------------------------------------------------
# A symbuilder build with every format: manifest parity, predict, verify, legacy use


SPEC = """\
    name: srv_mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: bc.csv, label: benign}
    train: {epochs: 3, batch_size: 32, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
    export: {formats: [checkpoint, onnx, triton], verify: {samples: 40}}
    """


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from symbuilder.pipeline import build
    from symbuilder.spec.model import load_spec
    folder = tmp_path_factory.mktemp("srv")
    write_spec(folder, SPEC)
    spec = load_spec(str(folder / "spec.yaml"))
    out = str(folder / "export" / "srv_mlp")
    result = build(spec, out_dir=out)
    return spec, out, result


def _prefix(built):
    spec, out, result = built
    return os.path.join(out, spec.name), result.result.epoch


def _val_rows(built):
    from symbuilder.data import load_data
    return load_data(built[0]).val.features


@pytest.mark.slow
def test_build_manifest_records_parity_on_held_out_and_ranged_random_samples(built):
    manifest = built[2].manifest
    parity = manifest["parity"]
    assert parity["passed"] and parity["max_abs"] <= 1e-5 and parity["atol"] == 1e-5
    assert parity["rtol"] == 1e-5 and parity["rule"].startswith("max|ort - mxnet| <= atol + "
                                                                "rtol * scale")
    # 40 held-out samples (export.verify.samples) plus the 64 random ones every check draws.
    assert parity["batches"] == [1, 40, 64]
    assert set(parity["ort_levels"]) == {"ORT_ENABLE_ALL", "ORT_DISABLE_ALL"}
    assert {k: v["samples"] for k, v in parity["inputs"].items()} == {"held_out": 40,
                                                                      "random": 64}
    held = _val_rows(built)[:40]
    np.testing.assert_allclose(parity["random_range"]["data"]["low"], held.min(axis=0))
    np.testing.assert_allclose(parity["random_range"]["data"]["high"], held.max(axis=0))
    assert parity["max_abs"] == max(d["max_abs"] for d in parity["details"])
    assert parity["max_rel"] == max(d["max_rel"] for d in parity["details"])
    assert len(parity["details"]) == 8  # 2 input sets x 2 batches x 2 ORT levels x 1 output


@pytest.mark.slow
def test_build_writes_a_triton_repository_listed_in_the_manifest(built):
    spec, out, result = built
    triton = os.path.join(out, "triton", "srv_mlp")
    assert sorted(os.listdir(triton)) == ["1", "config.pbtxt"]
    model_file = os.path.join(triton, "1", "model.onnx")
    assert open(model_file, "rb").read() == open(os.path.join(out, "srv_mlp.onnx"), "rb").read()
    files = json.load(open(os.path.join(out, "manifest.json")))["files"]
    for rel in ("triton/srv_mlp/config.pbtxt", "triton/srv_mlp/1/model.onnx"):
        assert files[rel]["sha256"] == hashlib.sha256(
            open(os.path.join(out, rel), "rb").read()).hexdigest()
    config = parse_pbtxt(open(os.path.join(triton, "config.pbtxt")).read())
    assert config["input"] == [{"name": "data", "data_type": "TYPE_FP32", "dims": [30]}]
    assert config["output"] == [{"name": "softmax_output", "data_type": "TYPE_FP32",
                                 "dims": [2]}]


def _csv_of(built, rows, *, with_label, reverse=False):
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


@pytest.mark.slow
@pytest.mark.parametrize("use_checkpoint", [False, True])
def test_predict_equals_module_predict_on_the_same_rows(built, tmp_path, capsys,
                                                        use_checkpoint):
    rows = _val_rows(built)[:25]
    path = tmp_path / "rows.csv"
    path.write_text(_csv_of(built, rows, with_label=True, reverse=True))
    argv = ["predict", built[1], str(path)] + (["--checkpoint"] if use_checkpoint else [])
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    got = list(csv.reader(io.StringIO(stdout)))
    assert got[0] == ["class", "p_0", "p_1"]
    probs = np.array([[float(v) for v in r[1:]] for r in got[1:]])
    expected = module_predict(*_prefix(built), rows)
    np.testing.assert_allclose(probs, expected, atol=1e-6, rtol=0)
    assert [int(r[0]) for r in got[1:]] == list(expected.argmax(axis=1))


@pytest.mark.slow
def test_predict_writes_a_file_from_the_onnx_path_without_label(built, tmp_path, capsys):
    rows = _val_rows(built)[:5]
    (tmp_path / "rows.csv").write_text(_csv_of(built, rows, with_label=False))
    out = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", os.path.join(built[1], "srv_mlp.onnx"),
                             str(tmp_path / "rows.csv"), "--out", str(out)], capsys)
    assert code == 0 and stdout == "" and err.strip() == f"{out}: 5 predictions"
    got = np.loadtxt(out, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got[:, 1:], module_predict(*_prefix(built), rows), atol=1e-6)


@pytest.mark.slow
def test_predict_names_wrong_and_missing_columns(built, tmp_path, capsys):
    names = list(built[2].manifest["feature_names"])
    rows = _val_rows(built)[:2]
    keep = [i for i, n in enumerate(names) if n != "worst_symmetry"]
    header = ["mean_radios" if names[i] == "mean_radius" else names[i] for i in keep]
    text = "\n".join([",".join(header)] + [",".join(repr(float(r[i])) for i in keep)
                                           for r in rows]) + "\n"
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, stdout, err = run(["predict", built[1], str(path)], capsys)
    assert code == 2 and stdout == ""
    assert err.strip() == (f"{path}:1: missing columns 'mean_radius' (did you mean "
                           "'mean_radios'?), 'worst_symmetry'; unexpected column 'mean_radios' "
                           "(the model takes 30 features, and ignores 'benign')")


@pytest.mark.slow
def test_verify_passes_then_names_every_changed_missing_and_extra_file(built, tmp_path, capsys):
    folder = str(tmp_path / "copy")
    shutil.copytree(built[1], folder)
    code, stdout, err = run(["verify", folder], capsys)
    assert code == 0, err
    assert stdout.startswith(f"{folder}: ok (9 files match the manifest; srv_mlp.onnx vs "
                             "checkpoint max|diff|=")
    assert stdout.rstrip().endswith("on 64 random)")
    with open(os.path.join(folder, "triton", "srv_mlp", "config.pbtxt"), "a") as f:
        f.write("# edited\n")
    os.remove(os.path.join(folder, "train_log.jsonl"))
    open(os.path.join(folder, "notes.txt"), "w").close()
    code, stdout, err = run(["verify", folder], capsys)
    assert code == 1 and stdout == ""
    assert err.splitlines() == [
        f"{folder}: train_log.jsonl: missing",
        f"{folder}: triton/srv_mlp/config.pbtxt: changed (sha256 differs from the manifest)",
        f"{folder}: notes.txt: not in the manifest",
        f"symbuilder: failed: {folder}: 3 problem(s)"]


@pytest.mark.slow
def test_verify_catches_an_onnx_model_that_disagrees_with_the_checkpoint(built, tmp_path):
    # Re-sign the manifest after changing a weight: hashes pass, parity must not.
    folder = str(tmp_path / "copy")
    shutil.copytree(built[1], folder)
    prefix = os.path.join(folder, "srv_mlp")
    epoch = built[2].result.epoch
    sym, args, auxs = mx.model.load_checkpoint(prefix, epoch)
    bias = args["fc2_bias"].asnumpy()
    bias[0] += 0.5  # one class only: a shift of every logit would leave softmax unchanged
    args["fc2_bias"] = mx.nd.array(bias)
    mx.model.save_checkpoint(prefix, epoch, sym, args, auxs)
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    write_manifest(folder, manifest)
    report = audit.verify_export(folder)
    assert not report["passed"]
    p = report["parity"]["srv_mlp.onnx"]
    assert p["max_abs"] > 1e-3 and not p["passed"]
    worst = max(p["details"], key=lambda d: d["max_abs"])
    scale = worst["scale"]  # probabilities: the largest is in (1/K, 1]
    assert 0.5 < scale <= 1.0 and p["rtol"] == 1e-5
    assert report["problems"] == [f"srv_mlp.onnx: ONNX Runtime disagrees with the checkpoint: "
                                  f"max abs difference {p['max_abs']:.3g} > atol 1e-05 + rtol "
                                  f"1e-05 x scale {scale:.3g} (max rel {p['max_rel']:.3g} of the "
                                  f"output's scale; random: {p['max_abs']:.3g} on 64 samples; "
                                  f"worst: output 'softmax_output' at batch {worst['batch']}, "
                                  f"{worst['ort_level']}, random inputs)"]


@pytest.mark.slow
def test_verify_holds_a_manifest_without_rtol_to_the_rule_it_was_built_with(built, tmp_path):
    # An export written before rtol existed passed max|ort - mxnet| <= atol: verify applies
    # exactly that (rtol 0), not today's looser default.
    folder = str(tmp_path / "old")
    shutil.copytree(built[1], folder)
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    for key in ("rtol", "rule"):
        del manifest["parity"][key]
    write_manifest(folder, manifest)
    report = audit.verify_export(folder)
    assert report["passed"], report["problems"]
    assert {p["rtol"] for p in report["parity"].values()} == {0.0}
    assert {p["atol"] for p in report["parity"].values()} == {manifest["parity"]["atol"]}


@pytest.mark.slow
def test_verify_adds_real_samples_from_a_csv_with_the_label_column(built, tmp_path):
    (tmp_path / "rows.csv").write_text(_csv_of(built, _val_rows(built)[:9], with_label=True))
    report = audit.verify_export(built[1], data=str(tmp_path / "rows.csv"))
    assert report["passed"]
    assert report["parity"]["srv_mlp.onnx"]["inputs"]["held_out"]["samples"] == 9


def test_verify_of_a_folder_without_manifest_is_exit_2(tmp_path, capsys):
    code, _, err = run(["verify", str(tmp_path)], capsys)
    assert code == 2 and err.strip() == f"{tmp_path}: not an export folder: no manifest.json"
    code, _, err = run(["verify", str(tmp_path / "nope")], capsys)
    assert code == 2 and err.strip() == f"{tmp_path / 'nope'}: no such export folder"


# ------------------------------------------------------------------------------------------
# Legacy interop (README: "Using the outputs from a legacy Module pipeline")


@pytest.mark.slow
def test_module_load_continues_training_with_beta_and_gamma_frozen_by_the_json(built):
    prefix, epoch = _prefix(built)
    from symbuilder.data import load_data
    data = load_data(built[0])
    mod = mx.mod.Module.load(prefix, epoch, data_names=["data"], label_names=["softmax_label"],
                             context=mx.cpu())
    it = mx.io.NDArrayIter(data.train.features, data.train.labels, batch_size=32,
                           label_name="softmax_label", shuffle=True)
    mod.fit(it, num_epoch=1, optimizer="sgd",
            optimizer_params={"learning_rate": 0.1, "wd": 0.01})
    args, _ = mod.get_params()
    _, before, _ = mx.model.load_checkpoint(prefix, epoch)
    assert not np.array_equal(args["fc1_weight"].asnumpy(), before["fc1_weight"].asnumpy())
    assert np.all(args["data_norm_beta"].asnumpy() == 0.0)
    assert np.all(args["data_norm_gamma"].asnumpy() == 1.0)


@pytest.mark.slow
def test_gluon_symbolblock_imports_the_export_and_matches_the_checkpoint(built):
    prefix, epoch = _prefix(built)
    x = _val_rows(built)[:12]
    expected = module_predict(prefix, epoch, x)
    # 1. The label variable as a second input, fed anything of the right shape.
    net = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data", "softmax_label"],
                                       f"{prefix}-{epoch:04d}.params")
    got = net(mx.nd.array(x), mx.nd.zeros(len(x))).asnumpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # 2. The head replaced by its inference op: a data-only block for serving.
    sym = mx.sym.load(f"{prefix}-symbol.json")
    logits = sym.get_children()[0]  # SoftmaxOutput's inputs: (logits, softmax_label)
    net = mx.gluon.SymbolBlock(mx.sym.softmax(logits), mx.sym.var("data"))
    net.collect_params().load(f"{prefix}-{epoch:04d}.params", ctx=mx.cpu(), ignore_extra=True)
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), expected, atol=1e-6, rtol=0)
    # 3. Without the label, imports refuses: the README says why.
    with pytest.raises(AssertionError, match="softmax_label"):
        mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"],
                                     f"{prefix}-{epoch:04d}.params")
